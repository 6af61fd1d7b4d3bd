"""The server's refusals (RFC 9457 problem+json) as typed exceptions, one class per status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class FieldProblem:
    """One bad field the server named, and what is wrong with it."""

    field: str
    message: str


class TrialLedgerError(Exception):
    """Base of everything this client raises."""


class ConnectionFailed(TrialLedgerError):
    """The server could not be reached, or the connection broke, after every retry."""


class ProblemError(TrialLedgerError):
    """A refusal the server answered with ``application/problem+json``.

    ``fields`` lists the fields it named (a 422 names each bad one); ``problem`` is the whole
    body, extensions included (``failed_criteria`` of an ineligible enrolment, ...)."""

    status: int = 0

    def __init__(self, status: int, title: str, detail: str, fields: tuple[FieldProblem, ...],
                 problem: dict[str, Any], retry_after: float | None = None) -> None:
        named = "; ".join(f"{f.field}: {f.message}" for f in fields)
        super().__init__(f"{status} {title}: {detail}" + (f" ({named})" if named else ""))
        self.status = status
        self.title = title
        self.detail = detail
        self.fields = fields
        self.problem = problem
        self.retry_after = retry_after

    @property
    def field_names(self) -> list[str]:
        """The names of the fields the server found at fault."""
        return [f.field for f in self.fields]


class BadRequest(ProblemError):
    """400: the body is not JSON in UTF-8."""


class Unauthorized(ProblemError):
    """401: no valid token, or a wrong password (sign-in, e-signature)."""


class Forbidden(ProblemError):
    """403: the person's roles do not allow this here."""


class NotFound(ProblemError):
    """404: no such study, subject, record, query, user or cell."""


class Conflict(ProblemError):
    """409: conflicts with the current state (already exists, an idempotency key in flight)."""


class KeyInFlight(Conflict):
    """409: this write's ``Idempotency-Key`` belongs to a request still running, or cut off
    (taken over once its lease runs out): read the resource to see whether it was written."""


class WriteApplied(Conflict):
    """409: this write was stored (at ``applied_at``) but its answer was lost, and it will not
    run again: do not enter it again; read the resource to see the result."""

    @property
    def applied_at(self) -> datetime | None:
        """When the write was stored, as the server said."""
        value = self.problem.get("applied_at")
        try:
            return datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None


class StaleVersion(ProblemError):
    """412: the subject changed since the version this client last read; read it again."""


class PayloadTooLarge(ProblemError):
    """413: the body is larger than the server takes."""


class InvalidInput(ProblemError):
    """422: invalid input; ``fields`` names each bad field."""


class Locked(ProblemError):
    """423: the casebook or the study is locked."""


class TooManyRequests(ProblemError):
    """429: too many sign-in attempts; ``retry_after`` says when to try again."""


class ServiceUnavailable(ProblemError):
    """503: the database is away or a write timed out; nothing was stored."""


class ServerError(ProblemError):
    """Any other status: the request failed on the server."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    412: StaleVersion, 413: PayloadTooLarge, 422: InvalidInput, 423: Locked,
    429: TooManyRequests, 503: ServiceUnavailable,
}

# A 409 answering an Idempotency-Key seen before says which of the two it is.
_BY_KEY_STATE: dict[str, type[Conflict]] = {"in_flight": KeyInFlight, "applied": WriteApplied}


def problem_error(status: int, body: Any, retry_after: float | None) -> ProblemError:
    """The exception for an answer of ``status`` whose (decoded) body is ``body``."""
    problem = body if isinstance(body, dict) else {}
    fields = tuple(FieldProblem(str(e.get("field", "")), str(e.get("message", "")))
                   for e in problem.get("errors") or () if isinstance(e, dict))
    kind = _BY_STATUS.get(status, ServerError)
    if kind is Conflict:
        kind = _BY_KEY_STATE.get(str(problem.get("key_state")), Conflict)
    return kind(status, str(problem.get("title", "HTTP error")),
                str(problem.get("detail", body if isinstance(body, str) else "")), fields,
                problem, retry_after)
