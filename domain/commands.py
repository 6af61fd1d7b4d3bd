"""One command per use case: what a caller asks the trial service to do, as immutable data.

Commands carry no behaviour: the service (:mod:`application.trial_service`) decides who may
run them and what they do. Each carries its study; those on a casebook its subject, and
``expected_version``, the version the caller read (HTTP ``If-Match``), if it gave one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from domain.envelope import Reason
from domain.permissions import Action

# The kinds of record a casebook holds, as their routes name them.
RecordKind = Literal["vitals", "doses", "therapies", "labs", "assessments", "adverse-events"]



@dataclass(frozen=True, slots=True, kw_only=True)
class StudyCommand:
    """A command on a study as a whole."""

    study: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectCommand:
    """A command on one casebook."""

    study: str
    subject: str
    expected_version: int | None = None


# --- the study ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterStudy(StudyCommand):
    """Register a study from its definition (``study`` is the definition's ``study_id``)."""

    definition: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolSubject:
    """Consent, screen against every criterion and enrol a child, at ``site``."""

    study: str
    subject: str
    site: str
    date_of_birth: date
    sex: str
    disease: str
    consent_date: date
    screening_answers: Mapping[str, Any]
    arm: str
    enrolled_on: date


@dataclass(frozen=True, slots=True, kw_only=True)
class LockStudy(StudyCommand):
    """Lock the study: every casebook write is refused until it is unlocked."""

    reason: Reason | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlockStudy(StudyCommand):
    """Unlock the study."""

    reason: Reason | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignOffAuditReview(StudyCommand):
    """The audit trail was reviewed through a log position."""

    through_position: int
    comment: str = ""
    # The review filter signed off (domain.review; None: the whole trail) and its thresholds
    # where the reviewer read it with other than the study's.
    review: str | None = None
    late_days: int | None = None
    min_changes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnblindSubject(StudyCommand):
    """Disclose one subject's blinded items to the caller (e.g. emergency unblinding)."""

    subject: str
    reason: Reason | None


# --- first entries --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class RecordVitalSigns(SubjectCommand):
    """Vital signs, each measurement as (value, unit); BSA is derived."""

    record_id: str
    observed_at: datetime
    measurements: Mapping[str, tuple[float, str]]
    visit: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AdministerDose(SubjectCommand):
    """A dose of the investigational product."""

    record_id: str
    observed_at: datetime
    drug: str
    dose: float
    unit: str
    route: str
    visit: str | None = None
    frequency: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTherapy(SubjectCommand):
    """A glucocorticoid or immunosuppressant course started."""

    record_id: str
    observed_at: datetime
    drug: str
    category: str
    route: str
    dose_mg_per_day: float | None = None
    dose_mg: float | None = None
    frequency: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordLabResult(SubjectCommand):
    """A lab result (``observed_at``: when the sample was drawn)."""

    record_id: str
    observed_at: datetime
    code: str
    value: float
    unit: str
    reference_low: float | None = None
    reference_high: float | None = None
    visit: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordAssessment(SubjectCommand):
    """A SELENA-SLEDAI (items yes/no) or ESSDAI (domain levels) assessment."""

    record_id: str
    observed_at: datetime
    instrument: Literal["SLEDAI", "ESSDAI"]
    items: Mapping[str, bool | int]
    visit: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportAdverseEvent(SubjectCommand):
    """An adverse event (``observed_at``: onset) with its term, grade, relationship..."""

    record_id: str
    observed_at: datetime
    details: Mapping[str, Any]


# --- what happened later, and changes to what was entered -----------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeTherapy(SubjectCommand):
    """A running course's new dose from ``observed_at`` on (a taper step: a new fact)."""

    record_id: str
    observed_at: datetime
    dose_mg_per_day: float | None = None
    dose_mg: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StopTherapy(SubjectCommand):
    """A course stopped at ``observed_at``."""

    record_id: str
    observed_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAdverseEvent(SubjectCommand):
    """An adverse event evolved as of ``observed_at``; a change of judgement (term,
    causality...) needs ``reason``."""

    record_id: str
    observed_at: datetime
    changes: Mapping[str, Any]
    reason: Reason | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolveAdverseEvent(SubjectCommand):
    """An adverse event ended at ``observed_at`` with ``outcome``."""

    record_id: str
    observed_at: datetime
    outcome: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CorrectRecord(SubjectCommand):
    """Correct one field of a record of ``kind`` (reason required); with ``query_id`` the
    correction answers that query."""

    kind: RecordKind
    record_id: str
    field: str
    value: Any
    reason: Reason | None
    query_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveRecord(SubjectCommand):
    """Remove a record of ``kind`` (reason required); its values stay in the history."""

    kind: RecordKind
    record_id: str
    reason: Reason | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdraw(SubjectCommand):
    """The subject left the study early at ``observed_at``."""

    observed_at: datetime
    withdrawal_reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Complete(SubjectCommand):
    """The subject completed the study at ``observed_at``."""

    observed_at: datetime


# --- monitoring -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class SignCasebook(SubjectCommand):
    """A Part 11 e-signature: its meaning, and the signer's own username and password, which
    are checked again however the caller signed in."""

    signature_id: str
    meaning: str
    username: str
    password: str
    totp: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenQuery(SubjectCommand):
    """Question one field of one record."""

    query_id: str
    record_id: str
    field: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerQuery(SubjectCommand):
    """Answer an open query."""

    query_id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseQuery(SubjectCommand):
    """Close a query."""

    query_id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifySource(SubjectCommand):
    """Mark a record, as it stands, verified against source documents."""

    record_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordDeviation(SubjectCommand):
    """A protocol deviation a person found."""

    deviation_id: str
    category: str
    description: str
    occurred_on: date
    severity: str
    record_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LockCasebook(SubjectCommand):
    """Lock one casebook (reason required)."""

    reason: Reason | None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlockCasebook(SubjectCommand):
    """Unlock one casebook (reason required); later edits are post-lock edits."""

    reason: Reason | None


# --- redaction of identifying values entered by mistake (two-person) -------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRedaction(SubjectCommand):
    """Ask that a declared identifying value (``record_id`` and ``field``; neither: every
    one of the subject) be redacted, with the reason the redaction marker will show."""

    request_id: str
    record_id: str | None = None
    field: str | None = None
    reason: Reason | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApproveRedaction(SubjectCommand):
    """Approve a pending redaction request (another person than its requester): its
    values' keys are destroyed."""

    request_id: str


# What each command asks to do, in the terms of :mod:`domain.permissions` (a correction of
# an adverse event's medical coding may be coding instead: the service decides).
ACTIONS: dict[type[StudyCommand | EnrolSubject | SubjectCommand], Action] = {
    RegisterStudy: Action.SET_UP_STUDY,
    EnrolSubject: Action.ENTER,
    LockStudy: Action.LOCK,
    UnlockStudy: Action.LOCK,
    SignOffAuditReview: Action.REVIEW_AUDIT,
    UnblindSubject: Action.UNBLIND,
    RecordVitalSigns: Action.ENTER,
    AdministerDose: Action.ENTER,
    StartTherapy: Action.ENTER,
    RecordLabResult: Action.ENTER,
    RecordAssessment: Action.ENTER,
    ReportAdverseEvent: Action.ENTER,
    ChangeTherapy: Action.ENTER,
    StopTherapy: Action.ENTER,
    UpdateAdverseEvent: Action.ENTER,
    ResolveAdverseEvent: Action.ENTER,
    CorrectRecord: Action.ENTER,
    RemoveRecord: Action.ENTER,
    Withdraw: Action.ENTER,
    Complete: Action.ENTER,
    SignCasebook: Action.SIGN,
    OpenQuery: Action.QUERY,
    AnswerQuery: Action.ANSWER,
    CloseQuery: Action.QUERY,
    VerifySource: Action.SDV,
    RecordDeviation: Action.DEVIATE,
    LockCasebook: Action.LOCK,
    UnlockCasebook: Action.LOCK,
    RequestRedaction: Action.REQUEST_REDACTION,
    ApproveRedaction: Action.APPROVE_REDACTION,
}
