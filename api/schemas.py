"""Request and response bodies of the HTTP API (pydantic v2).

Every request body forbids unknown fields (a typo must not be silently dropped from a
clinical record) and every timestamp must carry its UTC offset.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from domain.envelope import REASON_CODES
from domain.user import PERSON_ROLES

ReasonCode = Literal[REASON_CODES]  # type: ignore[valid-type]
Role = Literal[PERSON_ROLES]  # type: ignore[valid-type]
Name = Field(min_length=1, max_length=200)
Code = Field(min_length=1, max_length=64)


class FieldError(BaseModel):
    """One bad field and what is wrong with it."""

    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem: every refusal, with each bad field named in ``errors``."""

    model_config = ConfigDict(extra="allow")
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


def _problem(description: str) -> dict[str, Any]:
    # The model registers the Problem schema; the content says what is actually sent.
    return {"description": description, "model": Problem, "content": {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("The body is not JSON in UTF-8"),
    401: _problem("No valid bearer token, or a wrong password"),
    403: _problem("The person's roles do not allow this here"),
    404: _problem("No such study, subject, record, query or user"),
    409: _problem("Conflicts with the current state (already exists, already locked...)"),
    412: _problem("If-Match names a version that is no longer current"),
    413: _problem("The body is larger than 1 MiB"),
    422: _problem("Invalid input; each bad field is named"),
    423: _problem("The casebook or study is locked"),
}


# Control characters (tab and line breaks aside) and lone surrogates: no clinical text needs
# them, and XML (the ODM exports) cannot carry them.
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _refuse_control_characters(value: object) -> None:
    if isinstance(value, str):
        if CONTROL_CHARACTERS.search(value):
            raise ValueError("must not contain control characters (tab and line breaks aside)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_control_characters(key)
            _refuse_control_characters(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_control_characters(item)


class Body(BaseModel):
    """Base of request bodies: unknown fields and control characters in text are refused."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        _refuse_control_characters(value)
        return value


class ReasonIn(Body):
    """Why a change is made: a coded reason and free text."""

    code: ReasonCode = Field(examples=["transcription_error"])
    text: str = Field(min_length=1, max_length=2000,
                      examples=["Value transcribed from the wrong line of the lab report"])


class ReasonOnly(Body):
    """A body carrying only a reason (removals, locks, unlocks)."""

    reason: ReasonIn


# --- auth and people -----------------------------------------------------------------------

class TokenRequest(Body):
    """Sign in. An API client adds its own credential; the token then names both."""

    username: str = Field(min_length=1, max_length=64, examples=["lwei"])
    password: str = Field(min_length=1, max_length=1024)
    client_id: str | None = Field(default=None, max_length=64, examples=["edc-app"])
    client_secret: str | None = Field(default=None, max_length=1024)


class TokenOut(BaseModel):
    """A bearer token."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: AwareDatetime
    idle_timeout_seconds: int
    username: str
    full_name: str
    client: str


class GrantIn(Body):
    """A role at a study (``*``: every study) and site (``*``: every site)."""

    role: Role = Field(examples=["coordinator"])
    study: str = Field(min_length=1, max_length=64, examples=["NCT04397107"])
    site: str = Field(min_length=1, max_length=64, examples=["JLU1"])


class UserIn(Body):
    """A person to register, with the roles they start with."""

    username: str = Field(min_length=1, max_length=64, examples=["lwei"])
    full_name: str = Field(min_length=1, max_length=200, examples=["Li Wei"])
    password: str = Field(min_length=12, max_length=1024)
    roles: list[GrantIn] = Field(default_factory=list, max_length=100)
    identity_verified_by: str | None = Field(
        default=None, max_length=200, examples=["passport checked in person by the admin"])


class UserOut(BaseModel):
    """A person (never their password hash)."""

    username: str
    user_id: str
    full_name: str
    active: bool
    locked_out: bool
    identity_verified: bool
    roles: list[GrantIn]


class IdentityIn(Body):
    """How a person's identity was verified."""

    method: str = Field(min_length=1, max_length=200)


class PasswordChangeIn(Body):
    """A new password, with the current one."""

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=12, max_length=1024)


class ClientIn(Body):
    """An API client to register."""

    client_id: str = Field(min_length=1, max_length=64, examples=["edc-app"])
    name: str = Field(min_length=1, max_length=200, examples=["Site data-entry app"])


class ClientOut(BaseModel):
    """A registered API client; its secret is shown once."""

    client_id: str
    name: str
    client_secret: str | None = None


# --- studies and subjects ------------------------------------------------------------------

class ArmIn(Body):
    """A treatment arm."""

    code: str = Code
    name: str = Name


class SiteIn(Body):
    """A site."""

    model_config = ConfigDict(extra="allow")
    code: str = Code
    name: str = Name


class VisitIn(Body):
    """A scheduled visit: target day after baseline and the window around it."""

    code: str = Code
    name: str = Name
    day: int = Field(ge=-365, le=3650)
    window_days: int = Field(ge=0, le=365)


class CriterionIn(Body):
    """An eligibility criterion as data: ``fact`` ``op`` ``value``."""

    id: str = Code
    kind: Literal["inclusion", "exclusion"]
    text: str = Field(min_length=1, max_length=1000)
    fact: str = Code
    op: Literal["lt", "le", "gt", "ge", "eq", "is_true", "is_false"]
    value: float | int | str | bool | None = None


class MeaningIn(Body):
    """A signature meaning (Part 11 §11.50)."""

    code: str = Code
    text: str = Field(min_length=1, max_length=500)


class StudyIn(Body):
    """A study definition: the protocol as data."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "study_id": "NCT00000001", "title": "A second study", "start_date": "2026-01-01",
        "end_date": "2027-12-31", "arms": [{"code": "A", "name": "Arm A"}],
        "sites": [{"code": "S1", "name": "Site 1"}],
        "visits": [{"code": "BASELINE", "name": "Baseline", "day": 0, "window_days": 7}],
        "eligibility": [{"id": "I1", "kind": "inclusion", "text": "age < 18",
                         "fact": "age_years", "op": "lt", "value": 18}],
        "signature_meanings": [{"code": "approval", "text": "I approve these data"}]}]})
    study_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    title: str = Field(min_length=1, max_length=500)
    start_date: date
    end_date: date
    arms: list[ArmIn] = Field(min_length=1, max_length=50)
    diseases: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    sites: list[SiteIn] = Field(min_length=1, max_length=500)
    visits: list[VisitIn] = Field(min_length=1, max_length=200)
    eligibility: list[CriterionIn] = Field(min_length=1, max_length=200)
    signature_meanings: list[MeaningIn] = Field(default_factory=list, max_length=20)
    products: list[dict[str, Any]] = Field(default_factory=list, max_length=50)


class EnrollmentIn(Body):
    """Consent, screening answers and the arm: all stored, or nothing."""

    subject: str = Field(min_length=1, max_length=64, examples=["047"])
    site: str = Field(min_length=1, max_length=64, examples=["JLU1"])
    date_of_birth: date
    sex: Literal["F", "M", "U"]
    disease: str = Field(min_length=1, max_length=64, examples=["SLE"])
    consent_date: date
    screening: dict[str, float | int | bool | str | None] = Field(
        description="Answers to the screening questions (facts the criteria test)")
    arm: str = Field(min_length=1, max_length=64, examples=["IL2"])
    enrolled_on: date


class WrittenOut(BaseModel):
    """What a write committed: the subject's new version (its ETag) and when."""

    subject: str
    version: int
    record_id: str | None = None
    recorded_at: AwareDatetime


# --- records -------------------------------------------------------------------------------

class RecordIn(Body):
    """Fields every new record has."""

    record_id: str | None = Field(default=None, min_length=1, max_length=64,
                                  description="Your id for the record; made up if absent")
    observed_at: AwareDatetime = Field(
        description="Clinical (valid) time: when measured, given, drawn or begun")


class Measurement(Body):
    """One measured value with its unit."""

    value: float
    unit: str = Field(min_length=1, max_length=32)


class VitalsIn(RecordIn):
    """Vital signs (HEIGHT cm, WEIGHT kg, ...); BSA is derived."""

    visit: str | None = Field(default=None, max_length=64)
    measurements: dict[str, Measurement] = Field(
        min_length=1, max_length=20,
        examples=[{"HEIGHT": {"value": 142.0, "unit": "cm"},
                   "WEIGHT": {"value": 36.5, "unit": "kg"}}])


class DoseIn(RecordIn):
    """A dose of the investigational product."""

    visit: str | None = Field(default=None, max_length=64)
    drug: str = Field(min_length=1, max_length=100, examples=["IL2"])
    dose: float = Field(examples=[600000])
    unit: str = Field(min_length=1, max_length=32, examples=["IU"])
    route: str = Field(min_length=1, max_length=32, examples=["SC"])


class TherapyIn(RecordIn):
    """A steroid or immunosuppressant course."""

    drug: str = Field(min_length=1, max_length=100, examples=["prednisone"])
    category: Literal["glucocorticoid", "immunosuppressant"]
    dose_mg_per_day: float
    route: str = Field(min_length=1, max_length=32, examples=["PO"])


class LabIn(RecordIn):
    """A lab result (``observed_at``: when the sample was drawn)."""

    visit: str | None = Field(default=None, max_length=64)
    code: str = Field(min_length=1, max_length=32, examples=["C3"])
    value: float = Field(examples=[0.62])
    unit: str = Field(min_length=1, max_length=32, examples=["g/L"])
    reference_low: float | None = None
    reference_high: float | None = None


class AssessmentIn(RecordIn):
    """A SELENA-SLEDAI (items: descriptor -> present) or ESSDAI (domain -> level) assessment."""

    visit: str | None = Field(default=None, max_length=64)
    instrument: Literal["SLEDAI", "ESSDAI"]
    items: dict[str, bool | int] = Field(max_length=30)


class AdverseEventIn(RecordIn):
    """An adverse event (``observed_at``: onset)."""

    term: str = Field(min_length=1, max_length=500, examples=["Injection site reaction"])
    category: str = Field(min_length=1, max_length=64, examples=["injection_site_reaction"])
    grade: int = Field(examples=[1])
    serious: bool
    seriousness_criteria: list[str] = Field(default_factory=list, max_length=10)
    relationship: str = Field(min_length=1, max_length=64, examples=["related"])
    action_taken: str = Field(min_length=1, max_length=64, examples=["none"])
    outcome: str = Field(min_length=1, max_length=64, examples=["recovered"])
    meddra_pt: str | None = Field(default=None, max_length=200)
    meddra_llt: str | None = Field(default=None, max_length=200)


class CorrectionIn(Body):
    """A correction of one field: the new value and the reason (and the query it answers)."""

    field: str = Field(min_length=1, max_length=64, examples=["value"])
    value: float | int | bool | str | None
    reason: ReasonIn
    query_id: str | None = Field(default=None, max_length=64,
                                 description="The query this correction answers")


class TherapyChangeIn(Body):
    """A new daily dose from ``observed_at`` on (e.g. a taper step)."""

    observed_at: AwareDatetime
    dose_mg_per_day: float


class EndIn(Body):
    """When something ended (a therapy stopped, the subject completed)."""

    observed_at: AwareDatetime


class AdverseEventUpdateIn(Body):
    """How an adverse event evolved as of ``observed_at``."""

    observed_at: AwareDatetime
    changes: dict[str, float | int | bool | str | list[str] | None] = Field(
        min_length=1, max_length=20, examples=[{"grade": 2}])


class AdverseEventResolutionIn(Body):
    """The adverse event ended, with its outcome."""

    observed_at: AwareDatetime
    outcome: str = Field(min_length=1, max_length=64, examples=["recovered"])


class WithdrawalIn(Body):
    """The subject left the study early."""

    observed_at: AwareDatetime
    reason: str = Field(min_length=1, max_length=1000)


# --- monitoring ----------------------------------------------------------------------------

class SignatureIn(Body):
    """An e-signature: its meaning, and the signer's username and password, every time."""

    meaning: str = Field(min_length=1, max_length=64, examples=["approval"])
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    signature_id: str | None = Field(default=None, min_length=1, max_length=64)


class QueryIn(Body):
    """A query on one field of one record."""

    record_id: str = Field(min_length=1, max_length=64)
    field: str = Field(min_length=1, max_length=64, examples=["value"])
    text: str = Field(min_length=1, max_length=2000)
    query_id: str | None = Field(default=None, min_length=1, max_length=64)


class TextIn(Body):
    """A free-text answer or closing remark."""

    text: str = Field(min_length=1, max_length=2000)


class SdvIn(Body):
    """Mark a record verified against source."""

    record_id: str = Field(min_length=1, max_length=64)


class AuditReviewIn(Body):
    """Audit-trail review sign-off."""

    through_position: int = Field(ge=1, le=2**62)
    comment: str = Field(default="", max_length=2000)
