"""Response bodies of the HTTP API's reads (pydantic v2), as the OpenAPI describes them.

The reads answer from the projections' dicts; these models document those dicts (a test
checks every answer against them), and allow further keys, so a new key is not a break.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class View(BaseModel):
    """A read's answer: the keys below, and possibly more."""

    model_config = ConfigDict(extra="allow")


class Health(View):
    """Liveness."""

    status: str = Field(examples=["ok"])


class Readiness(Health):
    """Readiness, and why not."""

    detail: str | None = Field(None, description="What failed, while not ready")


class StudyOut(View):
    """A study: its definition, lock and audit-review state."""

    study_id: str = Field(examples=["NCT04397107"])
    definition: dict[str, Any]
    locked: bool
    audit_reviewed_through: int | None
    audit_reviews: dict[str, int] = Field(
        default_factory=dict, description="The last position signed off per review filter "
                                          "('all': the whole trail)")
    version: int


class StudySummary(View):
    """A study the caller may read."""

    study_id: str = Field(examples=["NCT04397107"])
    roles: list[str] = Field(description="The caller's roles in the study",
                             examples=[["monitor"]])


class SubjectSummary(View):
    """A subject as it stands."""

    subject: str = Field(examples=["001"])
    site: str = Field(examples=["JLU1"])
    status: str = Field(examples=["enrolled"])
    arm: str | None
    disease: str | None
    locked: bool
    version: int = Field(description="The version to send as If-Match")


class RecordView(View):
    """One record of a casebook, with its changes."""

    record_id: str
    observed_at: str
    visit: str | None = None
    fields: dict[str, Any]
    derived: dict[str, Any]
    entered_at: str


class Casebook(View):
    """A subject's casebook: header, workflow marks and current records by kind."""

    study_id: str = Field(examples=["NCT04397107"])
    subject: str = Field(examples=["001"])
    site: str = Field(examples=["JLU1"])
    status: str = Field(examples=["enrolled"])
    locked: bool
    version: int = Field(description="The version (also the ETag) to send as If-Match")
    as_of: str | None = Field(description="The recorded time asked for (null: now)")
    valid_at: str | None = Field(None, description="The clinical time asked for, if any")
    signatures: dict[str, dict[str, Any]]
    queries: dict[str, dict[str, Any]]
    sdv: dict[str, dict[str, Any]]
    deviations: dict[str, dict[str, Any]]
    records: dict[str, list[RecordView]]


class AuditEntry(View):
    """One field-level change of the audit trail: who, role, when, why."""

    position: int = Field(description="The event's log position (its inclusion proof)")
    recorded_at: str
    event_type: str
    subject_code: str | None
    site: str | None
    record_id: str | None
    field: str | None
    old_value: Any = None
    new_value: Any = None
    user_id: str | None
    printed_name: str | None
    role: str | None
    reason_code: str | None
    reason_text: str | None


class AuditPage(View):
    """One page of an audit trail in commit order."""

    entries: list[AuditEntry]
    next_cursor: str | None = Field(description="Send as ?cursor= for the next page; null on "
                                                "the last page")


class Change(View):
    """A subject header (record_id "") or record whose rendering changed; null: it did not
    exist, or was removed."""

    subject: str
    record_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class Outcomes(View):
    """The study's outcome tables."""

    study_id: str
    as_of: str | None
    method: str
    endpoints: dict[str, Any] = Field(description="Each endpoint's tables, by endpoint id")


class OutcomeCell(View):
    """The subjects and records behind one cell of the outcome tables."""

    study_id: str
    cell: str
    as_of: str | None
    subjects: list[dict[str, Any]]


class DeviationOut(View):
    """A protocol deviation."""

    subject: str
    site: str
    deviation_id: str
    category: str | None
    severity: str | None
    occurred_on: str | None
    description: str | None


class QueryOut(View):
    """A query on one field of one record, with its answers."""

    subject: str = Field(examples=["001"])
    site: str = Field(examples=["JLU1"])
    query_id: str
    record_id: str
    field: str
    text: str
    status: str = Field(examples=["open"])
    opened_at: str
    opened_by: str | None
    answers: list[dict[str, Any]]
    age_days: int = Field(description="Whole days since the query was opened")


class SignatureOut(View):
    """An e-signature's manifestation and whether a later change invalidated it."""

    subject: str = Field(examples=["001"])
    site: str = Field(examples=["JLU1"])
    signature_id: str
    meaning: str
    printed_name: str
    role: str
    signed_at: str
    signed_version: int
    status: str = Field(examples=["valid"])


class Checkpoint(View):
    """A signed checkpoint (C2SP signed note) of a study's ledger."""

    origin: str = Field(examples=["trialledger/NCT04397107"])
    tree_size: int
    root: str = Field(description="Base64 of the Merkle tree's root hash")
    note: str


class InclusionProof(View):
    """RFC 9162 inclusion proof of one event."""

    event: int
    leaf_index: int
    tree_size: int
    leaf_hash: str
    root: str
    proof: list[str]


class ConsistencyProof(View):
    """RFC 9162 consistency proof between two tree sizes."""

    from_: int = Field(alias="from")
    to: int
    from_root: str
    to_root: str
    proof: list[str]


class LedgerKey(View):
    """A key the study's log is signed with, and its validity."""

    key_id: str = Field(examples=["trialledger+1a2b3c4d"])
    vkey: str = Field(description="C2SP verifier key: <name>+<hex key hash>+<base64(0x01 ‖ "
                                  "Ed25519 key)>")
    public_key: str = Field(description="Base64 of the raw 32-byte Ed25519 key")
    status: str = Field(examples=["active"], description="active, retired or revoked")
    valid_from: AwareDatetime = Field(description="When the key was registered")
    valid_until: AwareDatetime | None = Field(
        description="Retired: nothing it signed after this is valid; revoked: nothing it "
                    "signed at or after this is valid")
