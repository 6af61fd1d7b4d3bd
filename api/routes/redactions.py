"""Redaction of identifying values entered by mistake: a data manager requests, an admin
(another person) approves; the approval destroys the keys of the values covered."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal
from api.schemas import PROBLEM_RESPONSES, RedactionIn, written_response
from api.writes import IfMatch, reason_of, service_of, written
from domain.commands import ApproveRedaction, RequestRedaction

router = APIRouter(tags=["redactions"], responses=PROBLEM_RESPONSES)


@router.post("/v1/studies/{study}/subjects/{subject}/redactions", status_code=201,
             responses={201: written_response("Requested; the ETag is the new version")})
def request_redaction(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                      if_match: IfMatch, body: RedactionIn) -> JSONResponse:
    """Ask that identifying values be redacted (data manager; reason required)."""
    return written(service_of(request).handle(RequestRedaction(
        study=study, subject=subject, expected_version=if_match, request_id=body.request_id,
        record_id=body.record_id, field=body.field, reason=reason_of(body.reason)),
        principal.caller), body.record_id, 201)


@router.post("/v1/studies/{study}/subjects/{subject}/redactions/{request_id}/approve",
             responses={200: written_response("Approved and carried out: the keys of the "
                                              "values are destroyed")})
def approve_redaction(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                      request_id: str, if_match: IfMatch) -> JSONResponse:
    """Approve a redaction request (admin; never its requester)."""
    return written(service_of(request).handle(ApproveRedaction(
        study=study, subject=subject, expected_version=if_match, request_id=request_id),
        principal.caller), None)
