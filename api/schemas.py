"""Request and response bodies of the HTTP API (pydantic v2).

Every request body forbids unknown fields (a typo must not be silently dropped from a
clinical record) and every timestamp must carry its UTC offset. Every text declares its
longest value and every vocabulary its values, taken from the domain (``domain.limits`` and
the clinical vocabularies), which checks them again whoever calls it; every request body
carries an example the server accepts (a test posts each).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from domain import checks, identifiers, limits
from domain.envelope import REASON_CODES
from domain.records import DOSE_UNITS, INSTRUMENTS, THERAPY_CATEGORIES
from domain.rules import ctcae, dosing, essdai, sledai, units
from domain.user import PERSON_ROLES

# The vocabularies, as enums: a client learns them from the schema, not from refusals.
ReasonCode = Literal[REASON_CODES]  # type: ignore[valid-type]
DeviationCategory = Literal[checks.DEVIATION_CATEGORIES]  # type: ignore[valid-type]
Severity = Literal[checks.SEVERITIES]  # type: ignore[valid-type]
Role = Literal[PERSON_ROLES]  # type: ignore[valid-type]
AeCategory = Literal[ctcae.AE_CATEGORIES]  # type: ignore[valid-type]
Relationship = Literal[ctcae.RELATIONSHIPS]  # type: ignore[valid-type]
ActionTaken = Literal[ctcae.ACTIONS_TAKEN]  # type: ignore[valid-type]
AeOutcome = Literal[ctcae.OUTCOMES]  # type: ignore[valid-type]
SeriousnessCriterion = Literal[ctcae.SERIOUSNESS_CRITERIA]  # type: ignore[valid-type]
TherapyCategory = Literal[THERAPY_CATEGORIES]  # type: ignore[valid-type]
Instrument = Literal[INSTRUMENTS]  # type: ignore[valid-type]
DoseUnit = Literal[DOSE_UNITS]  # type: ignore[valid-type]
DoseFrequency = Literal[dosing.FREQUENCY_CODES]  # type: ignore[valid-type]
_LAB_UNITS = tuple(sorted({u for t in units.LAB_TESTS.values() for u in t.units}))
_VITAL_UNITS = tuple(sorted({v.unit for v in units.VITAL_SIGNS.values()}))
_LAB_CODES = tuple(units.LAB_TESTS)
_VITAL_SIGNS = tuple(units.VITAL_SIGNS)
_ITEMS = (*sledai.SLEDAI_DESCRIPTORS, *essdai.ESSDAI_WEIGHTS)
LabCode = Literal[_LAB_CODES]  # type: ignore[valid-type]
LabUnit = Literal[_LAB_UNITS]  # type: ignore[valid-type]
VitalSign = Literal[_VITAL_SIGNS]  # type: ignore[valid-type]
VitalUnit = Literal[_VITAL_UNITS]  # type: ignore[valid-type]
AssessmentItem = Literal[_ITEMS]  # type: ignore[valid-type]

Name = Field(min_length=1, max_length=limits.NAME)
Code = Field(min_length=1, max_length=limits.ID)
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=limits.ID)]
RecordValue = Annotated[str, StringConstraints(max_length=limits.RECORD_VALUE)]
ScreeningText = Annotated[str, StringConstraints(max_length=limits.SCREENING_TEXT)]

def _identifier(problem_of: Callable[[str, object], Any]) -> Callable[[str], str]:
    def check(value: str) -> str:
        problem = problem_of("value", value)
        if problem is not None:
            raise ValueError(problem.message)
        return value
    return check


# The pattern is stated for clients (OpenAPI); the domain's rule (domain.identifiers)
# enforces it, so that a refusal and the domain's own check never differ.
StudyId = Annotated[str, Field(
    min_length=1, max_length=identifiers.STUDY_ID,
    json_schema_extra={"pattern": identifiers.STUDY_ID_PATTERN},
    examples=["NCT04397107"],
    description="A study id: letters, digits, '-' and '_', starting with a letter or digit, "
                f"at most {identifiers.STUDY_ID} characters (its PostgreSQL schema's name must "
                "fit 63 bytes); not a device name Windows reserves (CON, PRN, AUX, NUL, "
                "COM0-9, LPT0-9)"), AfterValidator(_identifier(identifiers.study_id_problem))]
SubjectCode = Annotated[str, Field(
    min_length=1, max_length=identifiers.SUBJECT_CODE,
    json_schema_extra={"pattern": identifiers.SUBJECT_CODE_PATTERN},
    examples=["047", "01-701-1015"],
    description="A subject code, safe in a URL and as a file name on every OS: letters, "
                "digits, '.', '-' and '_', starting with a letter or digit, not ending in '.', "
                f"at most {identifiers.SUBJECT_CODE} characters; not a device name Windows "
                "reserves (CON, PRN, AUX, NUL, COM0-9, LPT0-9, with or without an extension)"),
    AfterValidator(_identifier(identifiers.subject_code_problem))]

def _representable(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the range of times the server can represent (years 1 "
                         "to 9999 in UTC)") from None
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_representable)]
"""A timestamp with its UTC offset that the server can represent in UTC (every request
time): ``9999-12-31T23:59:59-14:00`` is refused (422), not an overflow."""

MAX_BODY_BYTES = 256 * 1024
"""The largest request body (413 beyond). The largest legitimate one is a study definition
(the demo's is 4 kB); a clinical write is a few kB at most, whatever its texts hold."""


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
    key_state: Literal["in_flight", "applied"] | None = Field(
        None, description="On a 409 answering an Idempotency-Key seen before, without its "
        "answer: ``in_flight`` (its request is running, or was cut off and will be taken "
        "over after its lease) or ``applied`` (its writes are stored and its answer was lost: "
        "it will not run again; read the resource)")
    applied_at: AwareDatetime | None = Field(
        None, description="With ``key_state`` ``applied``: when its writes were stored")


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again",
                               "schema": {"type": "integer", "examples": [5]}}}
ETAG = {"ETag": {"description": "The subject's version: send it as If-Match to write on it",
                 "schema": {"type": "string", "examples": ['"7"']}}}


def _problem(status: int, title: str, description: str, detail: str,
             headers: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    # The model registers the Problem schema; the content says what is actually sent.
    example = {"type": "about:blank", "title": title, "status": status, "detail": detail,
               **extra}
    return {"description": description, "model": Problem, "headers": headers or {},
            "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}, "example": example}}}


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem(400, "Bad request", "The body is not JSON in UTF-8", "There was an error "
                  "parsing the body", errors=[{"field": "body",
                                               "message": "is not valid JSON in UTF-8"}]),
    401: _problem(401, "Unauthorized", "No valid bearer token, or a wrong password",
                  "no valid bearer token", headers={"WWW-Authenticate": {
                      "description": "Bearer", "schema": {"type": "string"}}}),
    403: _problem(403, "Forbidden", "The person's roles do not allow this here",
                  "lwei holds no role that may enter data at JLU2"),
    404: _problem(404, "Not found", "No such study, subject, record, query or user",
                  "no subject 099"),
    409: _problem(409, "Conflict", "Conflicts with the current state (already exists, "
                  "already locked...); or another's write came first (with Retry-After: send "
                  "it again, with its Idempotency-Key); or the Idempotency-Key's request is in "
                  "flight, or was applied and its answer lost (it will not run again)",
                  "query Q1 is closed", headers={"Retry-After": {
                      "description": "seconds to wait before sending the same write again "
                                     "(only when another's write came first)",
                      "schema": {"type": "integer"}}}),
    412: _problem(412, "Precondition failed", "If-Match names a version that is no longer "
                  "current", "subject 001 is at version 8, not 7: read it again"),
    413: _problem(413, "Content too large",
                  f"The body is larger than {MAX_BODY_BYTES // 1024} KiB",
                  f"the body is larger than {MAX_BODY_BYTES} bytes"),
    422: _problem(422, "Invalid input", "Invalid input; each bad field is named",
                  "the request is invalid",
                  errors=[{"field": "observed_at", "message": "must carry a UTC offset"}]),
    423: _problem(423, "Locked", "The casebook or study is locked", "casebook 001 is locked"),
    503: _problem(503, "Service unavailable", "The database is not reachable, or a write "
                  "timed out: nothing was stored (see Retry-After)", "the database is not "
                  "reachable; nothing was stored, retry later", headers=RETRY_AFTER),
}

TOO_MANY: dict[int | str, dict[str, Any]] = {429: _problem(
    429, "Too many requests", "Too many sign-in attempts for the account or from the address "
    "(see Retry-After)", "too many failed sign-ins: try again in 60 s", headers=RETRY_AFTER)}


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


def _scalar(value: Any, limit: int) -> Any:
    """``value`` if it is a number, true/false, null or text of at most ``limit`` characters.

    Run before the union type is checked, so a refusal names the field once, not once per
    type the union lists."""
    if isinstance(value, str):
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters (got {len(value)})")
    elif value is not None and not isinstance(value, bool | int | float):
        raise ValueError("must be a number, true/false, text or null")
    return value


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
    text: str = Field(min_length=1, max_length=limits.TEXT,
                      examples=["Value transcribed from the wrong line of the lab report"])


def _example(example: dict[str, Any]) -> ConfigDict:
    """A request body's configuration with a whole example of it (which the server accepts
    as written, against the demo study)."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


class ReasonOnly(Body):
    """A body carrying only a reason (removals, locks, unlocks)."""

    model_config = _example({"reason": {"code": "entered_in_error",
                                        "text": "Entered in the wrong casebook"}})
    reason: ReasonIn


class UnblindingIn(Body):
    """Which subject to unblind to you, and why (e.g. an emergency)."""

    model_config = _example({"subject": "001", "reason": {
        "code": "other", "text": "Emergency: treatment of a serious adverse event depends "
                                 "on the arm"}})
    subject: SubjectCode
    reason: ReasonIn


# --- auth and people -----------------------------------------------------------------------

class TokenRequest(Body):
    """Sign in. An API client adds its own credential; the token then names both."""

    model_config = _example({"username": "lwei", "password": "correct horse battery"})
    username: str = Field(min_length=1, max_length=64, examples=["lwei"])
    password: str = Field(min_length=1, max_length=1024)
    client_id: str | None = Field(default=None, max_length=64, examples=["edc-app"])
    client_secret: str | None = Field(default=None, max_length=1024)
    totp: str | None = Field(default=None, min_length=6, max_length=10, examples=["492039"],
                             description="The current code of your TOTP second factor, when "
                                         "yours is asked for")



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

    model_config = _example({"role": "coordinator", "study": "NCT04397107", "site": "JLU1"})
    role: Role = Field(examples=["coordinator"])
    study: str = Field(min_length=1, max_length=64, examples=["NCT04397107"])
    site: str = Field(min_length=1, max_length=64, examples=["JLU1"])


class UserIn(Body):
    """A person to register, with the roles they start with."""

    model_config = _example({
        "username": "mchen", "full_name": "Chen Mei", "password": "a long pass phrase",
        "roles": [{"role": "monitor", "study": "NCT04397107", "site": "JLU1"}],
        "identity_verified_by": "passport checked in person by the admin"})
    username: str = Field(min_length=1, max_length=64, examples=["mchen"])
    full_name: str = Field(min_length=1, max_length=200, examples=["Chen Mei"])
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
    totp_enabled: bool
    roles: list[GrantIn]


class IdentityIn(Body):
    """How a person's identity was verified."""

    model_config = _example({"method": "passport checked in person by the admin"})
    method: str = Field(min_length=1, max_length=200)


class PasswordChangeIn(Body):
    """A new password, with the current one."""

    model_config = _example({"current_password": "correct horse battery",
                             "new_password": "battery staple horse"})
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=12, max_length=1024)
    totp: str | None = Field(default=None, min_length=6, max_length=10, examples=["492039"],
                             description="The current code of your TOTP second factor, when "
                                         "yours is asked for")


class TotpIn(Body):
    """Your username and password (and, to replace a second factor in force, its code; to
    confirm a new one, a code from the new secret)."""

    model_config = _example({"username": "lwei", "password": "correct horse battery"})
    username: str = Field(min_length=1, max_length=64, examples=["lwei"])
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(default=None, min_length=6, max_length=10, examples=["492039"],
                             description="The current code of your TOTP second factor, when "
                                         "yours is asked for")


class TotpOut(BaseModel):
    """A new TOTP secret, shown once: put it in an authenticator app, then confirm a code."""

    secret: str
    otpauth_uri: str


class ClientIn(Body):
    """An API client to register."""

    model_config = _example({"client_id": "edc-app", "name": "Site data-entry app"})
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
    text: str = Field(min_length=1, max_length=limits.TERM)
    fact: str = Code
    op: Literal["lt", "le", "gt", "ge", "eq", "is_true", "is_false"]
    value: float | int | str | bool | None = None


class MeaningIn(Body):
    """A signature meaning (Part 11 §11.50)."""

    code: str = Code
    text: str = Field(min_length=1, max_length=limits.TERM)


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
    study_id: StudyId
    title: str = Field(min_length=1, max_length=limits.TERM)
    start_date: date
    end_date: date
    arms: list[ArmIn] = Field(min_length=1, max_length=50)
    diseases: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    sites: list[SiteIn] = Field(min_length=1, max_length=500)
    visits: list[VisitIn] = Field(min_length=1, max_length=200)
    eligibility: list[CriterionIn] = Field(min_length=1, max_length=200)
    signature_meanings: list[MeaningIn] = Field(default_factory=list, max_length=20)
    products: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    ranges: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, max_length=2,
        description="Soft ranges: vitals|labs -> code -> {low, high, unit}; a value outside "
                    "is kept, flagged and queried")
    audit_review: dict[str, Any] | None = Field(
        default=None, description="Audit-review rules (domain/review.py): late_days, "
                                  "min_changes, sponsor_roles, critical_fields [{kind, field, "
                                  "code?}]; none: the defaults")
    blinding: dict[str, Any] | None = Field(
        default=None, description="Blinding (domain/blinding.py): items (field or "
                                  "kind.field), roles blinded, unblinding_roles; none: open")
    endpoints: list[dict[str, Any]] = Field(
        default_factory=list, max_length=50,
        description="The outcome measures (domain/endpoints.py: id, type, title, measure, "
                    "population, timepoints, unit, derivation, statistic, comparison, "
                    "parameters); none: the study has no outcome tables")
    identifying_items: dict[str, list[str]] = Field(
        default_factory=dict, max_length=20,
        description="Record kind -> fields that may identify a person (free text, "
                    "initials...): stored sealed, each value under a key of its own that a "
                    "two-person redaction destroys")


class EnrollmentIn(Body):
    """Consent, screening answers and the arm: all stored, or nothing."""

    model_config = _example({
        "subject": "047", "site": "JLU1", "date_of_birth": "2010-05-01", "sex": "F",
        "disease": "SLE", "consent_date": "2021-01-10",
        "screening": {"meets_classification_criteria": True, "hiv_negative": True,
                      "hbv_negative": True, "hcv_negative": True, "nyha_class": 1,
                      "alt_u_l": 25.0, "alt_uln_u_l": 40.0, "ast_u_l": 28.0,
                      "ast_uln_u_l": 40.0, "creatinine_clearance_ml_min": 110.0,
                      "severe_infection": False, "malignancy": False,
                      "recent_steroid_pulse_or_iv": False, "biologic_agent_used": False,
                      "compliance_interfering_condition": False,
                      "unable_to_comply_il2": False},
        "arm": "IL2", "enrolled_on": "2021-01-10"})
    subject: SubjectCode
    site: str = Field(min_length=1, max_length=limits.ID, examples=["JLU1"])
    date_of_birth: date
    sex: Literal["F", "M", "U"]
    disease: str = Field(min_length=1, max_length=limits.ID, examples=["SLE"])
    consent_date: date
    screening: dict[ShortText, float | int | bool | ScreeningText | None] = Field(
        max_length=limits.SCREENING_ANSWERS,
        description="Answers to the screening questions (facts the criteria test)")
    arm: str = Field(min_length=1, max_length=limits.ID, examples=["IL2"])
    enrolled_on: date

    @field_validator("screening", mode="before")
    @classmethod
    def _answers(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, answer in value.items():
                try:
                    _scalar(answer, limits.SCREENING_TEXT)
                except ValueError as e:
                    raise ValueError(f"{str(name)[:limits.ID]}: {e}") from None
        return value


class WrittenOut(BaseModel):
    """What a write committed: the subject's new version (its ETag) and when."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"subject": "001", "version": 8, "record_id": "LB1",
         "recorded_at": "2021-03-01T07:00:12.345678+00:00"}]})
    subject: str
    version: int
    record_id: str | None = None
    recorded_at: AwareDatetime


def written_response(description: str = "Committed; the ETag is the new version"
                     ) -> dict[str, Any]:
    """The OpenAPI response of a committed write to a subject."""
    return {"model": WrittenOut, "description": description, "headers": ETAG}


# --- records -------------------------------------------------------------------------------

class RecordIn(Body):
    """Fields every new record has."""

    record_id: str | None = Field(default=None, min_length=1, max_length=limits.ID,
                                  description="Your id for the record; made up if absent")
    observed_at: Instant = Field(
        description="Clinical (valid) time: when measured, given, drawn or begun")


class Measurement(Body):
    """One measured value with its unit (each vital sign has one unit)."""

    value: float
    unit: VitalUnit


class VitalsIn(RecordIn):
    """Vital signs (HEIGHT cm, WEIGHT kg, ...); BSA is derived."""

    model_config = _example({
        "record_id": "VS-1", "observed_at": "2021-01-11T08:00:00+08:00", "visit": "BASELINE",
        "measurements": {"HEIGHT": {"value": 142.0, "unit": "cm"},
                         "WEIGHT": {"value": 36.5, "unit": "kg"}}})
    visit: str | None = Field(default=None, max_length=limits.ID)
    measurements: dict[VitalSign, Measurement] = Field(min_length=1, max_length=20)


class DoseIn(RecordIn):
    """A dose of the investigational product."""

    model_config = _example({
        "record_id": "EX-1", "observed_at": "2021-01-11T09:00:00+08:00", "visit": "BASELINE",
        "drug": "IL2", "dose": 600000, "unit": "IU", "route": "SC", "frequency": "QD"})
    visit: str | None = Field(default=None, max_length=limits.ID)
    drug: str = Field(min_length=1, max_length=limits.DRUG)
    dose: float
    unit: DoseUnit
    route: str = Field(min_length=1, max_length=limits.UNIT)
    frequency: DoseFrequency | None = Field(
        default=None, description="The regimen's dose frequency (CDISC EXDOSFRQ)")


class TherapyIn(RecordIn):
    """A steroid or immunosuppressant course: ``dose_mg`` per administration with its
    ``frequency`` (methotrexate 15 mg QW), or a daily total ``dose_mg_per_day``."""

    model_config = _example({
        "record_id": "CM-1", "observed_at": "2021-01-11T09:00:00+08:00",
        "drug": "methotrexate", "category": "immunosuppressant", "dose_mg": 15,
        "frequency": "QW", "route": "PO"})
    drug: str = Field(min_length=1, max_length=limits.DRUG)
    category: TherapyCategory
    dose_mg: float | None = Field(default=None, description="mg per administration")
    dose_mg_per_day: float | None = Field(default=None, description="mg per day in all")
    frequency: DoseFrequency | None = Field(
        default=None, description="Dose frequency (CDISC CMDOSFRQ); required with dose_mg")
    route: str = Field(min_length=1, max_length=limits.UNIT)


class LabIn(RecordIn):
    """A lab result (``observed_at``: when the sample was drawn)."""

    model_config = _example({
        "record_id": "LB-1", "observed_at": "2021-01-11T08:30:00+08:00", "visit": "BASELINE",
        "code": "C3", "value": 0.62, "unit": "g/L", "reference_low": 0.9,
        "reference_high": 1.8})
    visit: str | None = Field(default=None, max_length=limits.ID)
    code: LabCode
    value: float
    unit: LabUnit
    reference_low: float | None = None
    reference_high: float | None = None


class AssessmentIn(RecordIn):
    """A SELENA-SLEDAI (items: descriptor -> present) or ESSDAI (domain -> level) assessment."""

    model_config = _example({
        "record_id": "QS-1", "observed_at": "2021-01-11T10:00:00+08:00", "visit": "BASELINE",
        "instrument": "SLEDAI", "items": {"arthritis": True, "rash": True}})
    visit: str | None = Field(default=None, max_length=limits.ID)
    instrument: Instrument
    items: dict[AssessmentItem, bool | int] = Field(max_length=30)


class AdverseEventIn(RecordIn):
    """An adverse event (``observed_at``: onset)."""

    model_config = _example({
        "record_id": "AE-1", "observed_at": "2021-01-12T20:00:00+08:00",
        "term": "Injection site reaction", "category": "injection_site_reaction", "grade": 1,
        "serious": False, "seriousness_criteria": [], "relationship": "probable",
        "action_taken": "none", "outcome": "recovering"})
    term: str = Field(min_length=1, max_length=limits.TERM)
    category: AeCategory
    grade: int = Field(ge=1, le=5, description="CTCAE v5 grade")
    serious: bool
    seriousness_criteria: list[SeriousnessCriterion] = Field(
        default_factory=list, max_length=limits.SERIOUSNESS_CRITERIA)
    relationship: Relationship = Field(description="Relationship to the study drug")
    action_taken: ActionTaken
    outcome: AeOutcome
    meddra_pt: str | None = Field(default=None, max_length=limits.NAME)
    meddra_llt: str | None = Field(default=None, max_length=limits.NAME)


class CorrectionIn(Body):
    """A correction of one field: the new value and the reason (and the query it answers).

    The value is held to what a first entry of the record's kind may hold in that field."""

    model_config = _example({
        "field": "value", "value": 0.72,
        "reason": {"code": "transcription_error",
                   "text": "Value transcribed from the wrong line of the lab report"},
        "query_id": "Q-1"})
    field: str = Field(min_length=1, max_length=limits.ID)
    value: float | int | bool | RecordValue | None
    reason: ReasonIn
    query_id: str | None = Field(default=None, max_length=limits.ID,
                                 description="The query this correction answers")

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, value: Any) -> Any:
        return _scalar(value, limits.RECORD_VALUE)


class TherapyChangeIn(Body):
    """A new dose from ``observed_at`` on (e.g. a taper step), in the course's own terms:
    ``dose_mg`` for a course dosed per administration, else ``dose_mg_per_day``."""

    model_config = _example({"observed_at": "2021-02-11T09:00:00+08:00", "dose_mg": 10})
    observed_at: Instant
    dose_mg: float | None = None
    dose_mg_per_day: float | None = None


class EndIn(Body):
    """When something ended (a therapy stopped, the subject completed)."""

    model_config = _example({"observed_at": "2021-03-11T09:00:00+08:00"})
    observed_at: Instant


class AdverseEventChanges(Body):
    """What changed in an adverse event (only the fields given). A change of its term,
    coding, category, relationship, seriousness or outcome needs a reason."""

    term: str | None = Field(default=None, min_length=1, max_length=limits.TERM)
    category: AeCategory | None = None
    grade: int | None = Field(default=None, ge=1, le=5)
    serious: bool | None = None
    seriousness_criteria: list[SeriousnessCriterion] | None = Field(
        default=None, max_length=limits.SERIOUSNESS_CRITERIA)
    relationship: Relationship | None = None
    action_taken: ActionTaken | None = None
    outcome: AeOutcome | None = None
    meddra_pt: str | None = Field(default=None, max_length=limits.NAME)
    meddra_llt: str | None = Field(default=None, max_length=limits.NAME)

    @model_validator(mode="after")
    def _something(self) -> AdverseEventChanges:
        if not self.model_fields_set:
            raise ValueError("name at least one field that changed")
        return self

    def given(self) -> dict[str, Any]:
        """The fields the client gave (a null given is kept: it clears the field)."""
        return self.model_dump(exclude_unset=True)


class AdverseEventUpdateIn(Body):
    """How an adverse event evolved as of ``observed_at`` (with a reason when its term,
    coding, category, relationship, seriousness or outcome changes)."""

    model_config = _example({"observed_at": "2021-01-13T08:00:00+08:00",
                             "changes": {"grade": 2, "action_taken": "dose_reduced"}})
    observed_at: Instant
    changes: AdverseEventChanges
    reason: ReasonIn | None = None


class AdverseEventResolutionIn(Body):
    """The adverse event ended, with its outcome."""

    model_config = _example({"observed_at": "2021-01-15T08:00:00+08:00",
                             "outcome": "recovered"})
    observed_at: Instant
    outcome: AeOutcome


class WithdrawalIn(Body):
    """The subject left the study early."""

    model_config = _example({"observed_at": "2021-03-12T09:00:00+08:00",
                             "reason": "The family moved away"})
    observed_at: Instant
    reason: str = Field(min_length=1, max_length=limits.WITHDRAWAL_REASON)


# --- monitoring ----------------------------------------------------------------------------

class SignatureIn(Body):
    """An e-signature: its meaning, and the signer's username and password, every time."""

    model_config = _example({"meaning": "authorship", "username": "lwei",
                             "password": "correct horse battery", "signature_id": "SIG-1"})
    meaning: str = Field(min_length=1, max_length=limits.ID,
                         description="One of the study's signature meanings")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    signature_id: str | None = Field(default=None, min_length=1, max_length=limits.ID)
    totp: str | None = Field(default=None, min_length=6, max_length=10, examples=["492039"],
                             description="The current code of your TOTP second factor, when "
                                         "yours is asked for")


class QueryIn(Body):
    """A query on one field of one record."""

    model_config = _example({"record_id": "LB-1", "field": "value",
                             "text": "Please check C3 against the lab report",
                             "query_id": "Q-1"})
    record_id: str = Field(min_length=1, max_length=limits.ID)
    field: str = Field(min_length=1, max_length=limits.ID)
    text: str = Field(min_length=1, max_length=limits.TEXT)
    query_id: str | None = Field(default=None, min_length=1, max_length=limits.ID)


class DeviationIn(Body):
    """A protocol deviation a person found."""

    model_config = _example({"category": "missed_visit", "severity": "major",
                             "occurred_on": "2021-02-09",
                             "description": "Month 1 visit missed: family travelling",
                             "deviation_id": "DV-1"})
    category: DeviationCategory
    severity: Severity
    occurred_on: date
    description: str = Field(min_length=1, max_length=limits.TEXT)
    record_id: str | None = Field(default=None, min_length=1, max_length=limits.ID,
                                  description="The record it concerns, if any")
    deviation_id: str | None = Field(default=None, min_length=1, max_length=limits.ID)


class TextIn(Body):
    """A free-text answer or closing remark."""

    model_config = _example({"text": "Checked against the source document"})
    text: str = Field(min_length=1, max_length=limits.TEXT)


class SdvIn(Body):
    """Mark a record verified against source."""

    model_config = _example({"record_id": "LB-1"})
    record_id: str = Field(min_length=1, max_length=limits.ID)


class AuditReviewIn(Body):
    """Audit-trail review sign-off."""

    model_config = _example({"through_position": 1,
                             "comment": "Reviewed: no unexplained changes"})
    through_position: int = Field(ge=1, le=2**62)
    comment: str = Field(default="", max_length=limits.TEXT)
    review: Literal["after-signature", "after-lock", "sponsor-staff", "late-entry",
                    "frequent-critical"] | None = Field(
        default=None, description="The review filter signed off (none: the whole trail)")
    late_days: int | None = Field(default=None, ge=1, le=100_000,
                                  description="review=late-entry's threshold, if not the "
                                              "study's")
    min_changes: int | None = Field(default=None, ge=1, le=100_000,
                                    description="review=frequent-critical's threshold, if "
                                                "not the study's")


class RedactionIn(Body):
    """A request that identifying values entered by mistake be redacted: one declared
    field of one record, or (neither given) every identifying value of the subject."""

    model_config = _example({"request_id": "RD-1", "record_id": "AE-1", "field": "term",
                             "reason": {"code": "entered_in_error",
                                        "text": "patient name typed into the term"}})
    request_id: str = Field(min_length=1, max_length=limits.ID)
    record_id: str | None = Field(default=None, min_length=1, max_length=limits.ID)
    field: str | None = Field(default=None, min_length=1, max_length=limits.ID)
    reason: ReasonIn
