"""The monitoring workflow: e-signatures, queries and source-data verification."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal, Forbidden
from api.routes.people import address_of
from api.schemas import PROBLEM_RESPONSES, QueryIn, SdvIn, SignatureIn, TextIn, WrittenOut
from api.writes import runtime_of, study_app, write_subject
from domain.permissions import Action

router = APIRouter(tags=["monitoring"], responses=PROBLEM_RESPONSES)

SUBJECT = "/v1/studies/{study}/subjects/{subject}"
WRITTEN = {"model": WrittenOut, "description": "Committed; the ETag is the new version"}


@router.post(SUBJECT + "/signatures", status_code=201, responses={201: WRITTEN})
def sign_casebook(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  body: SignatureIn) -> JSONResponse:
    """Sign the casebook (Part 11): the meaning, and the signer's own username and password
    in the body, checked again even though the request carries a token."""
    app = study_app(request, study)
    grant = principal.grant_for(Action.SIGN, study, app.subject(subject).site)
    if body.username.casefold() != principal.user.username.casefold():
        raise Forbidden("a signature is its signer's own: the username must be the token's")
    runtime_of(request).people().reauthenticate(body.username, body.password, body.totp,
                                                principal.client, principal.request_id,
                                                address_of(request))
    signature_id = body.signature_id or str(uuid.uuid4())
    meanings = app.definition().signature_meanings
    actor = principal.actor(grant)
    return write_subject(request, principal, study, subject, Action.SIGN,
                         lambda s, env, t: s.sign(signature_id, body.meaning, meanings, actor,
                                                  env, t),
                         record_id=signature_id, status=201)


@router.post(SUBJECT + "/queries", status_code=201, responses={201: WRITTEN})
def open_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
               body: QueryIn) -> JSONResponse:
    """Open a query on one field of one record."""
    query_id = body.query_id or str(uuid.uuid4())
    return write_subject(request, principal, study, subject, Action.QUERY,
                         lambda s, env, t: s.open_query(query_id, body.record_id, body.field,
                                                        body.text, env, t),
                         record_id=query_id, status=201)


@router.post(SUBJECT + "/queries/{query}/answer", responses={200: WRITTEN})
def answer_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                 query: str, body: TextIn) -> JSONResponse:
    """Answer a query (to correct the value in answer, PATCH the record with query_id)."""
    return write_subject(request, principal, study, subject, Action.ANSWER,
                         lambda s, env, t: s.answer_query(query, body.text, env, t),
                         record_id=query)


@router.post(SUBJECT + "/queries/{query}/close", responses={200: WRITTEN})
def close_query(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                query: str, body: TextIn) -> JSONResponse:
    """Close a query."""
    return write_subject(request, principal, study, subject, Action.QUERY,
                         lambda s, env, t: s.close_query(query, body.text, env, t),
                         record_id=query)


@router.post(SUBJECT + "/sdv", status_code=201, responses={201: WRITTEN})
def verify_source(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  body: SdvIn) -> JSONResponse:
    """Mark a record, as it stands, verified against source documents."""
    return write_subject(request, principal, study, subject, Action.SDV,
                         lambda s, env, t: s.verify_source(body.record_id, env, t),
                         record_id=body.record_id, status=201)
