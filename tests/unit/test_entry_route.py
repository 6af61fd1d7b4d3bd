"""Every first entry takes the shortcut past FastAPI's dependency solving (a renamed
parameter would silently send them all the slow way); other routes do not."""

from __future__ import annotations

from fastapi.routing import APIRoute

from api.routes import records


def _shortcut(route: APIRoute) -> bool:
    return route.get_route_handler().__name__ == "first_entry"


def test_first_entries_take_the_shortcut_and_nothing_else_does() -> None:
    routes = [r for r in records.router.routes if isinstance(r, APIRoute)]
    first_entries = {r.path for r in routes if r.status_code == 201}
    assert len(first_entries) == 6, first_entries  # vitals, doses, therapies, labs, ...
    assert {r.path for r in routes if _shortcut(r)} == first_entries
