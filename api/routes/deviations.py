"""Protocol deviations: reported by people on a subject, listed per study."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal
from api.blinded import shown
from api.responses import DeviationOut
from api.schemas import PROBLEM_RESPONSES, DeviationIn, written_response
from api.writes import IfMatch, runtime_of, service_of, study_app, written
from domain.commands import RecordDeviation
from domain.permissions import Action, readable_sites
from infra.postgres import schema_for_study
from projections.deviations import deviation_list

router = APIRouter(tags=["deviations"], responses=PROBLEM_RESPONSES)

WRITTEN = written_response()


@router.post("/v1/studies/{study}/subjects/{subject}/deviations", status_code=201,
             responses={201: WRITTEN})
def record_deviation(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                     if_match: IfMatch, body: DeviationIn) -> JSONResponse:
    """Record a protocol deviation (investigator, monitor or data manager at the subject's
    site). Those the soft checks find (a visit outside its window, a dose off the protocol's)
    are recorded by the system on their own."""
    deviation_id = body.deviation_id or str(uuid.uuid4())
    return written(service_of(request).handle(RecordDeviation(
        study=study, subject=subject, expected_version=if_match,
        deviation_id=deviation_id, category=body.category, description=body.description,
        occurred_on=body.occurred_on, severity=body.severity, record_id=body.record_id),
        principal.caller), deviation_id, 201)


@router.get("/v1/studies/{study}/deviations", response_model=None,
            responses={200: {"model": list[DeviationOut],
                             "description": "The deviations, by subject and date"}})
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
    with runtime.primary_read() as conn:
        return shown(request, principal, study,
                     deviation_list(conn, schema_for_study(study), sites, site, subject))
