"""ETags of reads, and ``If-None-Match``: a client that holds a view gets 304, not it again."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Header, Response

IfNoneMatch = Annotated[str | None, Header(
    alias="If-None-Match", description="ETags you hold (comma-separated, or *): 304 without "
    "a body if the answer would carry one of them", examples=['"7"'])]

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {
    "description": "Not modified: the ETag you sent in If-None-Match is still the answer's"}}


def etag(version: int, *qualifiers: object) -> str:
    """The ETag of a view of the subject at ``version``: the bare version for the current
    casebook (the ``If-Match`` of a write), else one per qualifier (``as_of``, ``valid_at``,
    page), so two different views never share one."""
    if all(q is None for q in qualifiers):
        return f'"{version}"'
    digest = hashlib.sha256(repr(qualifiers).encode()).hexdigest()[:16]
    return f'"{version}-{digest}"'


def not_modified(if_none_match: str | None, tag: str) -> Response | None:
    """304 if ``If-None-Match`` names ``tag`` (weakly, as RFC 9110 compares for GET) or is
    ``*``; None otherwise."""
    if if_none_match is None:
        return None
    held = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    if "*" in held or tag in held:
        return Response(status_code=304, headers={"ETag": tag})
    return None
