"""A typed Python client of the TrialLedger HTTP API, thin over httpx.

It signs in and keeps the token, sends a fresh ``Idempotency-Key`` with every write (reused
on that write's own retries), sends ``If-Match`` with the version of the subject it last saw,
and raises a typed exception naming the fields for every problem+json answer. It imports
nothing of the server.
"""

from trialledger_client.client import AsyncClient, Client
from trialledger_client.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    FieldProblem,
    Forbidden,
    InvalidInput,
    KeyInFlight,
    Locked,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    ServerError,
    ServiceUnavailable,
    StaleVersion,
    TooManyRequests,
    TrialLedgerError,
    Unauthorized,
    WriteApplied,
)
from trialledger_client.models import (
    AuditEntry,
    AuditPage,
    Casebook,
    ExportFormat,
    Measurement,
    Reason,
    Record,
    RecordKind,
    Study,
    SubjectSummary,
    Token,
    User,
    Written,
)

__all__ = [
    "AsyncClient", "AuditEntry", "AuditPage", "BadRequest", "Casebook", "Client", "Conflict",
    "ConnectionFailed", "ExportFormat", "FieldProblem", "Forbidden", "InvalidInput",
    "KeyInFlight", "Locked", "Measurement", "NotFound", "PayloadTooLarge", "ProblemError",
    "Reason", "Record", "RecordKind", "ServerError", "ServiceUnavailable", "StaleVersion",
    "Study", "SubjectSummary", "Token", "TooManyRequests", "TrialLedgerError", "Unauthorized",
    "User", "WriteApplied", "Written",
]
