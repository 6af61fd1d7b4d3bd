"""The API's routers share no path: the order they are included in (hot routes first, for
speed) cannot change which route answers a request."""

from __future__ import annotations

import itertools

from fastapi.routing import APIRoute

from api.routes import exports, ledger, monitoring, operations, people, records, studies

ROUTERS = (records, operations, people, studies, monitoring, ledger, exports)


def _could_match_the_same_path(a: str, b: str) -> bool:
    """True if some concrete path matches both templates (``{x}`` is one segment)."""
    left, right = a.strip("/").split("/"), b.strip("/").split("/")
    if any(":path" in segment for segment in left + right):
        return True
    return len(left) == len(right) and all(
        x == y or x.startswith("{") or y.startswith("{") for x, y in zip(left, right,
                                                                          strict=True))


def test_no_path_of_one_router_matches_a_path_of_another() -> None:
    shared = [
        (one.__name__, a.path, other.__name__, b.path)
        for one, other in itertools.combinations(ROUTERS, 2)
        for a in one.router.routes for b in other.router.routes
        if isinstance(a, APIRoute) and isinstance(b, APIRoute)
        and _could_match_the_same_path(a.path, b.path)
    ]
    assert shared == []


def test_the_check_sees_a_shared_path() -> None:
    assert _could_match_the_same_path("/v1/studies/{study}/lock", "/v1/studies/S1/{action}")
    assert not _could_match_the_same_path("/v1/studies/{study}/lock", "/v1/studies/{s}/unlock")
    assert not _could_match_the_same_path("/v1/studies/{study}", "/v1/studies/{study}/lock")
