"""The study's outcome tables as of any recorded time, each figure opening the subjects and
records behind it (the API's ``GET …/outcomes`` and ``GET …/outcomes/cell``)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from api.console import casebook_view as view
from api.console.pages import call, error_page, page
from api.console.session import signed_in
from api.routes import studies
from domain.errors import DomainError

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/studies/{study}/outcomes")
async def outcome_tables(request: Request, study: str, as_of: str = "",
                         valid_at: str = "") -> HTMLResponse:
    """Every endpoint's table as of ``as_of`` (default now), optionally of what held at
    clinical time ``valid_at``; each figure links to the records behind it."""
    principal, csrf = await signed_in(request)
    try:
        when = view.typed_time(as_of, "as_of")
        valid = view.typed_time(valid_at, "valid_at")
        tables = await call(studies.get_outcomes, request, principal, study, when, valid)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    times = {k: v for k, v in {"as_of": as_of, "valid_at": valid_at}.items() if v}
    return page(request, "outcomes.html", principal=principal, csrf=csrf, study=study,
                tables=tables, as_of=view.input_text(when), valid_at=view.input_text(valid),
                cell_url=lambda cell: f"/ui/studies/{study}/outcomes/cell?"
                                      + urlencode({"id": cell, **times}))


@router.get("/studies/{study}/outcomes/cell")
async def outcome_cell(request: Request, study: str, cell_id: str = Query("", alias="id"),
                       as_of: str = "", valid_at: str = "") -> HTMLResponse:
    """The subjects and records behind one figure, each record with the log positions of
    its events (each opens its inclusion proof)."""
    principal, csrf = await signed_in(request)
    try:
        when = view.typed_time(as_of, "as_of")
        valid = view.typed_time(valid_at, "valid_at")
        cell = await call(studies.get_outcome_cell, request, principal, study, cell_id, when,
                          valid)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    return page(request, "outcome_cell.html", principal=principal, csrf=csrf, study=study,
                cell=cell, when=when,
                times={k: v for k, v in {"as_of": as_of, "valid_at": valid_at}.items() if v})
