"""The monitor's source-data verification worklist: the records at their sites never
verified or changed since, each marked verified through the API's own route function (the
same service, permission and rule: a record is verified at its current revision once)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.auth import Principal
from api.console.pages import call, error_page, page, refusal, study_zones
from api.console.session import check_csrf, signed_in
from api.routes import monitoring
from api.schemas import SdvIn
from api.writes import runtime_of, study_app
from domain.errors import DomainError
from domain.permissions import Action, permitting_grant, readable_sites
from infra.postgres import schema_for_study
from projections.monitoring_lists import sdv_worklist

router = APIRouter(prefix="/ui", include_in_schema=False)

SHOWN = 200  # rows of the worklist on the page (all are counted)


def _worklist(request: Request, principal: Principal, study: str
              ) -> tuple[int, list[dict[str, Any]]]:
    """The worklist at the sites the person may read (the read tables caught up)."""
    study_app(request, study)
    principal.grant_for_any_site(Action.READ, study)
    runtime = runtime_of(request)
    runtime.project(study)
    with runtime.primary_read() as conn:
        return sdv_worklist(conn, schema_for_study(study),
                            readable_sites(principal.user.grants, study), SHOWN)


async def _page(request: Request, principal: Principal, csrf: str, study: str, *,
                status: int = 200, error: str = "") -> HTMLResponse:
    try:
        total, rows = await call(_worklist, request, principal, study)
        zones = await call(study_zones, request, principal, study)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    # The button only where the person holds the permission the write will ask for.
    verifiable = {r["site"] for r in rows
                  if permitting_grant(principal.user.grants, Action.SDV, study, r["site"])}
    return page(request, "sdv.html", status, principal=principal, csrf=csrf, study=study,
                total=total, rows=rows, shown=SHOWN, error=error, verifiable=verifiable,
                zones=zones,
                done=request.query_params.get("done", ""))


@router.get("/studies/{study}/sdv")
async def worklist(request: Request, study: str) -> HTMLResponse:
    """The records awaiting source-data verification at your sites."""
    principal, csrf = await signed_in(request)
    return await _page(request, principal, csrf, study)


@router.post("/studies/{study}/sdv")
async def mark_verified(request: Request, study: str, subject: str = Form(""),
                        record_id: str = Form(""), csrf: str = Form("")) -> Response:
    """Mark one record, as it stands, verified against source (``POST …/sdv``)."""
    principal, expected = await signed_in(request)
    check_csrf(request, expected, csrf)
    try:
        await call(lambda: monitoring.verify_source(request, principal, study, subject, None,
                                                    SdvIn(record_id=record_id)))
    except (DomainError, ValidationError) as e:
        status, message = refusal(e)
        return await _page(request, principal, expected, study, status=status, error=message)
    done = urlencode({"done": f"{subject} {record_id} marked verified"})
    return RedirectResponse(f"/ui/studies/{study}/sdv?{done}", status_code=303)
