"""The audit trail's filtered view as a CSV file: every row the filters select, page after
page of the API's own audit route, each cell safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any, cast

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from api.console import casebook_view as view
from api.console.pages import call, error_page
from api.console.session import signed_in
from api.routes import studies
from api.routes.studies import ReviewName
from domain.csv_cells import neutralised
from domain.errors import DomainError
from domain.permissions import readable_sites

router = APIRouter(prefix="/ui", include_in_schema=False)

COLUMNS = ("position", "recorded_at", "event_type", "subject_code", "site", "record_id",
           "field", "old_value", "new_value", "user_id", "printed_name", "role",
           "reason_code", "reason_text")
BATCH = 1000  # rows fetched a page at a time (the API's largest page)


def _cell(value: Any) -> Any:
    """A value as a CSV cell: nothing empty, numbers and text as they are, anything else
    as JSON; then neutralised (no formula a spreadsheet would run)."""
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        value = orjson.dumps(value).decode()
    return neutralised(value)


def _lines(rows: list[dict[str, Any]], header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    writer.writerows([_cell(row.get(c)) for c in COLUMNS] for row in rows)
    return out.getvalue().encode()


@router.get("/studies/{study}/audit.csv")
async def audit_csv(request: Request, study: str, site: str = "", subject: str = "",
                    user_id: str = "", field: str = "", event_type: str = "",
                    recorded_from: str = "", recorded_to: str = "",
                    review: str = "") -> Response:
    """The audit trail as the page's filters (a review filter too) select it, every row, as
    CSV (RFC 4180)."""
    principal, csrf = await signed_in(request)
    sites = readable_sites(principal.user.grants, study)
    if not site and sites is not None and len(sites) == 1:
        site = next(iter(sites))

    def fetch(cursor: str | None) -> dict[str, Any]:
        return studies.get_audit_trail(
            request, principal, study, site or None, subject or None, None, field or None,
            user_id or None, event_type or None,
            view.typed_time(recorded_from, "recorded_from"),
            view.typed_time(recorded_to, "recorded_to"), cursor, BATCH,
            # The route checks the name (a console query string is any text).
            review=cast("ReviewName | None", review or None))

    try:
        # The first page is read before the answer starts: a refusal is a page, not a file.
        first = await call(fetch, None)
    except DomainError as e:
        return error_page(request, principal, csrf, e)

    def stream() -> Iterator[bytes]:
        trail = first
        yield _lines(trail["entries"], header=True)
        while trail["next_cursor"]:
            trail = fetch(trail["next_cursor"])
            yield _lines(trail["entries"], header=False)

    return StreamingResponse(stream(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{study}-audit-trail.csv"'})
