"""The monitoring workflow: e-signatures, queries and source-data verification."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal
from api.schemas import PROBLEM_RESPONSES, QueryIn, SdvIn, SignatureIn, TextIn, WrittenOut
from api.writes import expected_version, service_of, written
from domain.commands import AnswerQuery, CloseQuery, OpenQuery, SignCasebook, VerifySource

router = APIRouter(tags=["monitoring"], responses=PROBLEM_RESPONSES)

SUBJECT = "/v1/studies/{study}/subjects/{subject}"
WRITTEN = {"model": WrittenOut, "description": "Committed; the ETag is the new version"}


@router.post(SUBJECT + "/signatures", status_code=201, responses={201: WRITTEN})
def sign_casebook(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  body: SignatureIn) -> JSONResponse:
    """Sign the casebook (Part 11): the meaning, and the signer's own username and password
    in the body, checked again even though the request carries a token."""
    signature_id = body.signature_id or str(uuid.uuid4())
    signed = service_of(request).handle(SignCasebook(
        study=study, subject=subject, expected_version=expected_version(request),
        signature_id=signature_id, meaning=body.meaning, username=body.username,
        password=body.password, totp=body.totp), principal.caller)
    return written(signed, signature_id, 201)


@router.post(SUBJECT + "/queries", status_code=201, responses={201: WRITTEN})
def open_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
               body: QueryIn) -> JSONResponse:
    """Open a query on one field of one record."""
    query_id = body.query_id or str(uuid.uuid4())
    return written(service_of(request).handle(OpenQuery(
        study=study, subject=subject, expected_version=expected_version(request),
        query_id=query_id, record_id=body.record_id, field=body.field, text=body.text),
        principal.caller), query_id, 201)


@router.post(SUBJECT + "/queries/{query}/answer", responses={200: WRITTEN})
def answer_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                 query: str, body: TextIn) -> JSONResponse:
    """Answer a query (to correct the value in answer, PATCH the record with query_id)."""
    return written(service_of(request).handle(AnswerQuery(
        study=study, subject=subject, expected_version=expected_version(request),
        query_id=query, text=body.text), principal.caller), query)


@router.post(SUBJECT + "/queries/{query}/close", responses={200: WRITTEN})
def close_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                query: str, body: TextIn) -> JSONResponse:
    """Close a query."""
    return written(service_of(request).handle(CloseQuery(
        study=study, subject=subject, expected_version=expected_version(request),
        query_id=query, text=body.text), principal.caller), query)


@router.post(SUBJECT + "/sdv", status_code=201, responses={201: WRITTEN})
def verify_source(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  body: SdvIn) -> JSONResponse:
    """Mark a record, as it stands, verified against source documents."""
    return written(service_of(request).handle(VerifySource(
        study=study, subject=subject, expected_version=expected_version(request),
        record_id=body.record_id), principal.caller), body.record_id, 201)
