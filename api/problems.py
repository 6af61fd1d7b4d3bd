"""Errors as RFC 9457 ``application/problem+json``, each naming the fields at fault."""

from __future__ import annotations

from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from application.database_away import RETRY_AFTER
from application.sign_in_limits import TooManyAttempts
from domain.errors import (
    AlreadyExists,
    ConcurrentWrite,
    Conflict,
    DomainError,
    EligibilityRefused,
    Forbidden,
    InvalidInput,
    InvalidState,
    Locked,
    NotFound,
    StaleVersion,
    Unauthenticated,
    Unverified,
)
from domain.group_commit import CommitTimedOut
from infra.logging import get_logger
from infra.signers import SigningKeyError

_log = get_logger("trialledger.api")

PROBLEM_JSON = "application/problem+json"
_TITLES = {400: "Bad request", 404: "Not found", 405: "Method not allowed"}

_STATUS: dict[type[DomainError], tuple[int, str]] = {
    InvalidInput: (422, "Invalid input"),
    EligibilityRefused: (422, "Not eligible"),
    NotFound: (404, "Not found"),
    AlreadyExists: (409, "Already exists"),
    StaleVersion: (412, "Precondition failed"),
    Conflict: (409, "Conflict"),
    Locked: (423, "Locked"),
    InvalidState: (409, "Not allowed in the current state"),
    Unauthenticated: (401, "Unauthorized"),
    Forbidden: (403, "Forbidden"),
}


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def status_of(exc: DomainError) -> tuple[int, str]:
    """The HTTP status and title answering a domain refusal (the API's and the console's)."""
    return next((v for k, v in _STATUS.items() if isinstance(exc, k)), (400, "Refused"))


def install(app: FastAPI) -> None:
    """Map domain refusals and request validation errors to problem+json."""

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        status, title = status_of(exc)
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidInput):
            extra["errors"] = [{"field": p.field, "message": p.message} for p in exc.problems]
        if isinstance(exc, EligibilityRefused):
            extra["failed_criteria"] = [
                {"id": cid, "text": text, "reason": reason} for cid, text, reason in exc.failures
            ]
        response = problem(status, title, str(exc), **extra)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, ConcurrentWrite):
            # Another's write came first: this one may simply be sent again (and its
            # Idempotency-Key is freed for that, see api.middleware.Idempotency). Not a stale
            # If-Match (412), which the same request can never pass.
            response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(Unverified)
    async def unverified(request: Request, exc: Unverified) -> JSONResponse:
        # Tampering with the directory: say so loudly, count it (an alarm), refuse.
        _log.error("directory.verification_failed", request_id=_request_id(request),
                   error=str(exc))
        request.app.state.metrics.directory_verification_failures.inc()
        return problem(403, "Forbidden", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (an unparseable body, an unknown route or method).
        extra: dict[str, Any] = {}
        if exc.status_code == 400:
            extra["errors"] = [{"field": "body", "message": "is not valid JSON in UTF-8"}]
        response = problem(exc.status_code, _TITLES.get(exc.status_code, "Refused"),
                           str(exc.detail), **extra)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(TooManyAttempts)
    async def too_many_attempts(_: Request, exc: TooManyAttempts) -> JSONResponse:
        response = problem(429, "Too many requests", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # eventsourcing's errors too: its recorders wrap psycopg's (a lock or statement
        # timeout of a write among them).
        _log.error("database unavailable", request_id=_request_id(request), error=str(exc))
        # Unreachable (not a lock or statement timeout)? Then the next requests are answered
        # at once until a probe finds it back (see api.middleware.Gateway).
        await run_in_threadpool(request.app.state.runtime.database_away.confirm)
        response = problem(503, "Service unavailable", "the database is not reachable; "
                           "nothing was stored, retry later")
        response.headers["Retry-After"] = str(RETRY_AFTER)
        return response

    @app.exception_handler(CommitTimedOut)
    async def commit_timed_out(request: Request, exc: CommitTimedOut) -> JSONResponse:
        _log.error("write timed out", request_id=_request_id(request), error=str(exc))
        response = problem(503, "Service unavailable", str(exc))
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(SigningKeyError)
    async def cannot_sign(request: Request, exc: SigningKeyError) -> JSONResponse:
        # The key may not sign (see docs/key-management.md) or its token failed: an
        # operator's matter, not the request's; nothing unsigned is ever stored.
        _log.error("signing key unavailable", request_id=_request_id(request), error=str(exc))
        return problem(503, "Service unavailable", f"the server cannot sign: {exc}; nothing "
                       "was stored")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        _log.exception("unexpected error", request_id=_request_id(request))
        return problem(500, "Internal error", "the request failed on the server; see the "
                       "server log under this request id",
                       request_id=_request_id(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
             "message": e["msg"]}
            for e in exc.errors()
        ]
        if not errors:
            errors = [{"field": "body", "message": "is not valid JSON"}]
        return problem(422, "Invalid input", "the request is invalid", errors=errors)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "unknown"))
