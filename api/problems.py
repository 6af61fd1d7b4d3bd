"""Errors as RFC 9457 ``application/problem+json``, each naming the fields at fault."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from domain.errors import (
    AlreadyExists,
    Conflict,
    DomainError,
    EligibilityRefused,
    InvalidInput,
    InvalidState,
    Locked,
    NotFound,
)

PROBLEM_JSON = "application/problem+json"

_STATUS: dict[type[DomainError], tuple[int, str]] = {
    InvalidInput: (422, "Invalid input"),
    EligibilityRefused: (422, "Not eligible"),
    NotFound: (404, "Not found"),
    AlreadyExists: (409, "Already exists"),
    Conflict: (409, "Conflict"),
    Locked: (423, "Locked"),
    InvalidState: (409, "Not allowed in the current state"),
}


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def install(app: FastAPI) -> None:
    """Map domain refusals and request validation errors to problem+json."""

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        status, title = next(
            (v for k, v in _STATUS.items() if isinstance(exc, k)), (400, "Refused")
        )
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidInput):
            extra["errors"] = [{"field": p.field, "message": p.message} for p in exc.problems]
        if isinstance(exc, EligibilityRefused):
            extra["failed_criteria"] = [
                {"id": cid, "text": text, "reason": reason} for cid, text, reason in exc.failures
            ]
        return problem(status, title, str(exc), **extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
             "message": e["msg"]}
            for e in exc.errors()
        ]
        return problem(422, "Invalid input", "the request is invalid", errors=errors)
