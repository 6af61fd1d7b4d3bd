"""The monitoring workflow: e-signatures, queries (and the monitor's work queue of them)
and source-data verification."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal
from api.blinded import shown
from api.responses import QueryOut, SignatureOut
from api.schemas import PROBLEM_RESPONSES, QueryIn, SdvIn, SignatureIn, TextIn, written_response
from api.writes import IfMatch, runtime_of, service_of, study_app, written
from domain.commands import AnswerQuery, CloseQuery, OpenQuery, SignCasebook, VerifySource
from domain.permissions import Action, readable_sites
from infra.postgres import schema_for_study
from projections.monitoring_lists import query_list, signature_list

router = APIRouter(tags=["monitoring"], responses=PROBLEM_RESPONSES)

SUBJECT = "/v1/studies/{study}/subjects/{subject}"
WRITTEN = written_response()


@router.post(SUBJECT + "/signatures", status_code=201, responses={201: WRITTEN})
def sign_casebook(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  if_match: IfMatch, body: SignatureIn) -> JSONResponse:
    """Sign the casebook (Part 11): the meaning, and the signer's own username and password
    in the body, checked again even though the request carries a token."""
    signature_id = body.signature_id or str(uuid.uuid4())
    signed = service_of(request).handle(SignCasebook(
        study=study, subject=subject, expected_version=if_match,
        signature_id=signature_id, meaning=body.meaning, username=body.username,
        password=body.password, totp=body.totp), principal.caller)
    return written(signed, signature_id, 201)


@router.post(SUBJECT + "/queries", status_code=201, responses={201: WRITTEN})
def open_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
               if_match: IfMatch, body: QueryIn) -> JSONResponse:
    """Open a query on one field of one record."""
    query_id = body.query_id or str(uuid.uuid4())
    return written(service_of(request).handle(OpenQuery(
        study=study, subject=subject, expected_version=if_match,
        query_id=query_id, record_id=body.record_id, field=body.field, text=body.text),
        principal.caller), query_id, 201)


@router.post(SUBJECT + "/queries/{query}/answer", responses={200: WRITTEN})
def answer_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                 query: str, if_match: IfMatch, body: TextIn) -> JSONResponse:
    """Answer a query (to correct the value in answer, PATCH the record with query_id)."""
    return written(service_of(request).handle(AnswerQuery(
        study=study, subject=subject, expected_version=if_match,
        query_id=query, text=body.text), principal.caller), query)


@router.post(SUBJECT + "/queries/{query}/close", responses={200: WRITTEN})
def close_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                query: str, if_match: IfMatch, body: TextIn) -> JSONResponse:
    """Close a query."""
    return written(service_of(request).handle(CloseQuery(
        study=study, subject=subject, expected_version=if_match,
        query_id=query, text=body.text), principal.caller), query)


@router.post(SUBJECT + "/sdv", status_code=201, responses={201: WRITTEN})
def verify_source(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  if_match: IfMatch, body: SdvIn) -> JSONResponse:
    """Mark a record, as it stands, verified against source documents."""
    return written(service_of(request).handle(VerifySource(
        study=study, subject=subject, expected_version=if_match,
        record_id=body.record_id), principal.caller), body.record_id, 201)


Site = Annotated[str | None, Query(max_length=100, description="Only this site")]
Subject = Annotated[str | None, Query(max_length=100, description="Only this subject")]


def _readable(request: Request, principal: CurrentPrincipal, study: str) -> set[str] | None:
    """The sites whose subjects the caller may read (None: every site); the read tables
    caught up."""
    study_app(request, study)
    principal.grant_for_any_site(Action.READ, study)
    runtime_of(request).project(study)
    return readable_sites(principal.user.grants, study)


@router.get("/v1/studies/{study}/queries", response_model=None,
            responses={200: {"model": list[QueryOut], "description": "The queries, oldest "
                                                                     "first"}})
def list_queries(
    request: Request, principal: CurrentPrincipal, study: str, site: Site = None,
    subject: Subject = None,
    status: Annotated[Literal["open", "answered", "closed"] | None, Query(
        description="Only queries in this state")] = None,
    older_than_days: Annotated[int | None, Query(
        ge=0, le=36500, description="Only queries opened at least this many days ago")] = None,
) -> list[dict[str, Any]]:
    """The queries across the subjects at the sites you may read, oldest first: with
    ``status=open``, the monitor's work queue."""
    sites = _readable(request, principal, study)
    now = study_app(request, study).clock.now()
    with runtime_of(request).primary_read() as conn:
        return shown(request, principal, study, query_list(
            conn, schema_for_study(study), sites, now, site=site, subject=subject,
            status=status, older_than_days=older_than_days))


@router.get("/v1/studies/{study}/signatures", response_model=None,
            responses={200: {"model": list[SignatureOut],
                             "description": "The signatures, by subject and time"}})
def list_signatures(request: Request, principal: CurrentPrincipal, study: str,
                    site: Site = None, subject: Subject = None) -> list[dict[str, Any]]:
    """The e-signatures across the subjects at the sites you may read, each valid or
    invalidated by a later change."""
    sites = _readable(request, principal, study)
    with runtime_of(request).primary_read() as conn:
        return shown(request, principal, study, signature_list(
            conn, schema_for_study(study), sites, site=site, subject=subject))
