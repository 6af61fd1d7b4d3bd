"""What the client sends and gets back, as typed models of its own (it imports nothing from
the server). Unknown fields in answers are ignored, so a server that adds fields keeps
working with an older client."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

RecordKind = Literal["vitals", "doses", "therapies", "labs", "assessments", "adverse-events"]
"""The kinds of record a casebook holds (the path segment of corrections and removals)."""

ExportFormat = Literal["odm-snapshot", "odm-archive", "csv", "dataset-json", "dataset-ndjson",
                       "xpt", "casebook", "bundle"]
"""The formats ``GET /v1/studies/{study}/exports/{format}`` streams."""

Json = Any
"""A JSON value as the server gave it (a record's fields, derived values, outcome cells)."""


class Model(BaseModel):
    """Base of the models: immutable, extra fields ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Reason(Model):
    """Why a change is made: a coded reason (``transcription_error``, ...) and free text."""

    code: str
    text: str


class Measurement(Model):
    """One vital sign's value with its unit (``HEIGHT`` 142 ``cm``)."""

    value: float
    unit: str


class Token(Model):
    """A bearer token from ``POST /v1/auth/token``."""

    access_token: str
    token_type: str
    expires_at: datetime
    idle_timeout_seconds: int
    username: str
    full_name: str
    client: str


class Written(Model):
    """What a write committed: the subject's new version (sent as If-Match next) and when.

    ``replayed`` is true when the server answered a retry with the first attempt's answer."""

    subject: str
    version: int
    record_id: str | None = None
    recorded_at: datetime
    replayed: bool = False


class Record(Model):
    """One record of a casebook as it stands (or stood at ``as_of``/``valid_at``)."""

    record_id: str
    observed_at: datetime
    visit: str | None = None
    fields: dict[str, Json]
    derived: dict[str, Json] = {}
    entered_at: datetime
    changes: int = 0
    """How many times the record was corrected."""
    timeline: list[dict[str, Json]] = []
    flags: list[dict[str, Json]] = []


class Casebook(Model):
    """A subject's casebook: header, workflow (signatures, queries, SDV, deviations) and
    records by kind. ``version`` is what If-Match carries."""

    study_id: str
    subject: str
    site: str
    status: str
    arm: str | None = None
    disease: str | None = None
    sex: str | None = None
    date_of_birth: date | None = None
    consent_date: date | None = None
    enrolled_on: date | None = None
    locked: bool
    version: int
    as_of: datetime | None = None
    valid_at: datetime | None = None
    signatures: dict[str, dict[str, Json]] = {}
    queries: dict[str, dict[str, Json]] = {}
    sdv: dict[str, dict[str, Json]] = {}
    deviations: dict[str, dict[str, Json]] = {}
    records: dict[str, list[Record]] = {}

    def record(self, record_id: str) -> Record:
        """The record with ``record_id``, whatever its kind (KeyError if absent)."""
        for records in self.records.values():
            for record in records:
                if record.record_id == record_id:
                    return record
        raise KeyError(record_id)


class SubjectSummary(Model):
    """A subject in the study's list: status, arm, lock and version."""

    subject: str
    site: str
    status: str
    arm: str | None = None
    disease: str | None = None
    locked: bool
    version: int


class AuditEntry(Model):
    """One row of the audit trail: a field-level change with who, role, when and why."""

    position: int
    recorded_at: datetime
    event_type: str
    subject_id: str | None = None
    subject_code: str | None = None
    site: str | None = None
    record_id: str | None = None
    record_kind: str | None = None
    field: str | None = None
    old_value: Json = None
    new_value: Json = None
    observed_at: datetime | None = None
    user_id: str | None = None
    printed_name: str | None = None
    role: str | None = None
    actor_site: str | None = None
    client: str | None = None
    source: str | None = None
    request_id: str | None = None
    edit_point: str | None = None
    reason_code: str | None = None
    reason_text: str | None = None


class AuditPage(Model):
    """One page of an audit trail and the cursor of the next (None: the last page)."""

    entries: list[AuditEntry]
    next_cursor: str | None = None


class Study(Model):
    """A study: its definition, lock and how far its audit trail was reviewed."""

    study_id: str
    definition: dict[str, Json]
    locked: bool
    audit_reviewed_through: int | None = None
    # The last position signed off per review filter ("all": the whole trail).
    audit_reviews: dict[str, int] = {}
    version: int


class User(Model):
    """A person (never a password hash) with the roles held."""

    username: str
    user_id: str
    full_name: str
    active: bool
    locked_out: bool
    identity_verified: bool
    totp_enabled: bool
    roles: list[dict[str, str]]
