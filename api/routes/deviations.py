"""Protocol deviations: reported by people on a subject, listed per study."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal
from api.schemas import PROBLEM_RESPONSES, DeviationIn, WrittenOut
from api.writes import runtime_of, study_app, write_subject
from domain.permissions import Action, readable_sites
from infra.postgres import connect, schema_for_study
from projections.deviations import deviation_list

router = APIRouter(tags=["deviations"], responses=PROBLEM_RESPONSES)

WRITTEN = {"model": WrittenOut, "description": "Committed; the ETag is the new version"}


@router.post("/v1/studies/{study}/subjects/{subject}/deviations", status_code=201,
             responses={201: WRITTEN})
def record_deviation(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                     body: DeviationIn) -> JSONResponse:
    """Record a protocol deviation (investigator, monitor or data manager at the subject's
    site). Those the soft checks find (a visit outside its window, a dose off the protocol's)
    are recorded by the system on their own."""
    deviation_id = body.deviation_id or str(uuid.uuid4())
    return write_subject(request, principal, study, subject, Action.DEVIATE,
                         lambda s, env, t: s.record_deviation(
                             deviation_id, body.category, body.description, body.occurred_on,
                             body.severity, env, t, body.record_id),
                         record_id=deviation_id, status=201)


@router.get("/v1/studies/{study}/deviations")
def list_deviations(request: Request, principal: CurrentPrincipal, study: str,
                    site: str | None = None, subject: str | None = None
                    ) -> list[dict[str, Any]]:
    """Every protocol deviation at the sites you may read, optionally of one site or
    subject, by subject and date."""
    study_app(request, study)
    principal.grant_for_any_site(Action.READ, study)
    sites = readable_sites(principal.user.grants, study)
    runtime = runtime_of(request)
    runtime.project(study)
    with connect(runtime.url) as conn:
        return deviation_list(conn, schema_for_study(study), sites, site, subject)
