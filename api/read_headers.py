"""The headers that name the server a read came from (a standby or the primary, see
:mod:`infra.replica`): a route tells the request which server read for it;
:class:`api.middleware.Gateway` puts that in the answer's headers, whatever the route returns
(a dict, a stream)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from infra.replica import ReadSource

_KEY = "trialledger_read_source"


def tell(request: Request) -> Callable[[ReadSource], None]:
    """What a route hands the runtime to learn which server read for ``request``."""

    def tell(source: ReadSource) -> None:
        request.scope.setdefault("state", {})[_KEY] = source

    return tell


def read_source_headers(state: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The headers naming the server that read for the request whose scope's state this is
    (none if no route told, see :func:`tell`)."""
    source = state.get(_KEY)
    if not isinstance(source, ReadSource):
        return []
    return [(name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in source.headers().items()]


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


# The headers above as the OpenAPI document describes them.
READ_FROM: dict[str, Any] = {
    "TrialLedger-Read-From": _header(
        "The server that answered: `standby` (DATABASE_READ_URL) or `primary`"),
    "TrialLedger-Standby-LSN": _header("From a standby: the WAL position it had replayed"),
    "TrialLedger-Standby-Replayed-At": _header(
        "From a standby: the commit time of the last transaction it had replayed (the answer "
        "is the data as it stood then)"),
    "TrialLedger-Read-From-Reason": _header(
        "When the primary answered though a standby is configured: why (a later time asked "
        "about, tables not yet replayed, the standby did not answer)"),
}
