"""The events of a subject's casebook: what is stored, and how each changes the subject.

Each class declares its stored name (``TOPIC``, see :mod:`domain.topics`); its fields are a
versioned contract, never edited once stored. :class:`~domain.subject.aggregate.Subject` names
every one as its attribute (``Subject.RecordCorrected``), as eventsourcing expects of an
aggregate's events. Each ``apply`` folds the event into the subject; the rules deciding whether
an event may happen live in the command modules beside this one.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from domain.envelope import Actor, Envelope
from domain.records import Record, copy_json
from domain.redaction import marker
from domain.subject.fields import set_field

if TYPE_CHECKING:
    from domain.subject.aggregate import Subject


class Event(Aggregate.Event):
    """Base of subject events: each carries the envelope; its timestamp is recorded_at."""

    envelope: Envelope

    @property
    def recorded_at(self) -> datetime:
        """When the system recorded the event (server clock, UTC)."""
        return self.timestamp


class Created(Event, Aggregate.Created):
    """eventsourcing's generic creation event, never triggered (each creation names
    its own event); declared to give it a stored name, as eventsourcing requires of
    every event class of an aggregate with one."""
    TOPIC = "Subject.Created.v1"


# --- Consent, screening, enrolment; a subject loaded from SDTM -------------------------------

class Consented(Event, Aggregate.Created):
    """Informed consent was given; the subject exists from here on."""
    TOPIC = "Subject.Consented.v1"

    study_id: str
    subject_code: str
    site: str
    date_of_birth: date
    sex: str
    disease: str
    consent_date: date


class Imported(Event, Aggregate.Created):
    """The subject was loaded from an SDTM data set (its DM row); the subject exists from
    here on. ``demographics`` holds the DM variables as given; ``arm`` and ``actual_arm``
    are ARMCD and ACTARMCD (both kept: they differ when a subject received another arm
    than planned); a screen failure is kept, with that status."""
    TOPIC = "Subject.Imported.v1"

    study_id: str
    subject_code: str
    site: str
    sex: str
    demographics: dict[str, Any]
    arm: str | None
    actual_arm: str | None
    status: str
    enrolled_on: date | None


class Screened(Event):
    """Every eligibility criterion was evaluated against the screening facts, and met."""
    TOPIC = "Subject.Screened.v1"

    facts: dict[str, Any]
    criteria: list[dict[str, Any]]

    def apply(self, subject: Subject) -> None:
        subject.screening_facts = dict(self.facts)
        subject.status = "screened"


class Enrolled(Event):
    """The subject was enrolled into an arm."""
    TOPIC = "Subject.Enrolled.v1"

    arm: str
    enrolled_on: date

    def apply(self, subject: Subject) -> None:
        subject.arm = self.arm
        subject.enrolled_on = self.enrolled_on
        subject.status = "enrolled"


# --- First entries of records ----------------------------------------------------------------

class RecordEntered(Event):
    """Base of first entries of a record."""
    TOPIC = "Subject.RecordEntered.v1"

    record_id: str
    kind: str
    observed_at: datetime
    visit: str | None
    fields: dict[str, Any]
    derived: dict[str, Any]
    # The UTC offset observed_at was entered with (``+08:00``): the site's wall clock. Kept
    # since this attribute exists; absent (None) from entries stored before it.
    observed_offset: str | None = None

    def apply(self, subject: Subject) -> None:
        subject.records[self.record_id] = Record(
            record_id=self.record_id,
            kind=self.kind,
            observed_at=self.observed_at,
            visit=self.visit,
            fields=copy_json(self.fields),
            derived=copy_json(self.derived),
            entered_at=self.timestamp,
            observed_offset=self.observed_offset,
            timeline=[{"observed_at": self.observed_at.isoformat(),
                       "fields": copy_json(self.fields)}],
        )
        subject.data_changed(self)


class VitalSignsRecorded(RecordEntered):
    """Vital signs were measured (BSA derived when height and weight are present)."""
    TOPIC = "Subject.VitalSignsRecorded.v1"


class DoseAdministered(RecordEntered):
    """A dose of the investigational product was given (IU and IU/m²)."""
    TOPIC = "Subject.DoseAdministered.v1"


class TherapyStarted(RecordEntered):
    """A steroid or immunosuppressant course started (mg/day; prednisone-equivalent)."""
    TOPIC = "Subject.TherapyStarted.v1"


class LabResultRecorded(RecordEntered):
    """A lab result (code, value, unit, reference range, collected at)."""
    TOPIC = "Subject.LabResultRecorded.v1"


class AssessmentRecorded(RecordEntered):
    """A disease-activity assessment (SELENA-SLEDAI or ESSDAI) with its derived total."""
    TOPIC = "Subject.AssessmentRecorded.v1"


class AdverseEventReported(RecordEntered):
    """An adverse event was reported."""
    TOPIC = "Subject.AdverseEventReported.v1"


class RowImported(RecordEntered):
    """A row of an SDTM data set was loaded as a record (its kind is the SDTM domain);
    where it came from travels in the envelope's provenance."""
    TOPIC = "Subject.RowImported.v1"

    def apply(self, subject: Subject) -> None:
        # As RecordEntered, with one copy of the fields shared by the record and its
        # first timeline entry: an import makes a hundred thousand of these, and every
        # change copies the record before touching either. A row's values are text,
        # numbers or None (check_row), so a shallow copy is a whole one.
        fields = dict(self.fields)
        subject.records[self.record_id] = Record(
            record_id=self.record_id, kind=self.kind, observed_at=self.observed_at,
            visit=self.visit, fields=fields, derived=copy_json(self.derived),
            entered_at=self.timestamp,
            observed_offset=self.observed_offset,
            timeline=[{"observed_at": self.observed_at.isoformat(), "fields": fields}],
        )
        subject.data_changed(self)


# --- Changes to recorded records: clinical evolution, corrections, removals ------------------

class RecordChanged(Event):
    """Base of changes to an existing record: each names the fields, old and new."""
    TOPIC = "Subject.RecordChanged.v1"

    record_id: str
    changes: dict[str, dict[str, Any]]
    derived: dict[str, Any]

    def apply(self, subject: Subject) -> None:
        # Copy on write: copies of the subject share unchanged records (see __deepcopy__).
        record = subject.records[self.record_id] = subject.records[self.record_id].copy()
        observed: datetime | None = getattr(self, "observed_at", None)
        if observed is not None:
            record.timeline.append({"observed_at": observed.isoformat(), "fields": {}})
        for name, change in self.changes.items():
            set_field(record.fields, name, copy_json(change["new"]))
            head = name.partition(".")[0]
            entry = record.timeline[-1] if observed is not None else next(
                e for e in reversed(record.timeline) if head in e["fields"])
            if head not in entry["fields"]:
                entry["fields"][head] = copy_json(record.fields[head])
            else:
                set_field(entry["fields"], name, copy_json(change["new"]))
        record.derived = copy_json(self.derived)
        record.revisions += 1
        subject.data_changed(self)


class TherapyChanged(RecordChanged):
    """A therapy's daily dose changed from ``observed_at`` on (a new clinical fact)."""
    TOPIC = "Subject.TherapyChanged.v1"

    observed_at: datetime


class TherapyStopped(RecordChanged):
    """A therapy course ended at ``observed_at``."""
    TOPIC = "Subject.TherapyStopped.v1"

    observed_at: datetime


class AdverseEventUpdated(RecordChanged):
    """An adverse event evolved (grade, seriousness, action...) as of ``observed_at``."""
    TOPIC = "Subject.AdverseEventUpdated.v1"

    observed_at: datetime


class AdverseEventResolved(RecordChanged):
    """An adverse event ended at ``observed_at`` with its outcome."""
    TOPIC = "Subject.AdverseEventResolved.v1"

    observed_at: datetime


class RecordCorrected(RecordChanged):
    """What was entered was wrong: one field, old -> new, with the envelope's reason."""
    TOPIC = "Subject.RecordCorrected.v1"


class RecordRemoved(Event):
    """A record was removed (entered in error, duplicate...); its values stay in history."""
    TOPIC = "Subject.RecordRemoved.v1"

    record_id: str
    removed_fields: dict[str, Any]

    def apply(self, subject: Subject) -> None:
        record = subject.records[self.record_id] = subject.records[self.record_id].copy()
        record.removed = True
        subject.data_changed(self)


# --- Derived values following their inputs; soft checks and protocol deviations --------------

class DerivedValueRecomputed(Event):
    """A record's derived values were computed again because an input they read from
    another record changed (a height corrected, a weight removed: the BSA in force moved).

    ``derived`` are the record's derived values now, each with its method and inputs;
    ``previous`` what they were; ``trigger`` the change that moved them (its stored event
    name, the subject version it made, the record it changed). Recorded with that
    change, in the same commit, under its envelope: no value derived from superseded
    inputs is ever current.
    """
    TOPIC = "Subject.DerivedValueRecomputed.v1"

    record_id: str
    derived: dict[str, Any]
    previous: dict[str, Any]
    trigger: dict[str, Any]

    def apply(self, subject: Subject) -> None:
        record = subject.records[self.record_id] = subject.records[self.record_id].copy()
        record.derived = copy_json(self.derived)
        subject.data_changed(self)


class RecordChecked(Event):
    """The soft checks, run by the system on the record as it then stood, found
    ``findings`` (an empty list: the record is clean again). The value stays as entered;
    each new finding has a query of its own."""
    TOPIC = "Subject.RecordChecked.v1"

    record_id: str
    findings: list[dict[str, Any]]

    def apply(self, subject: Subject) -> None:
        record = subject.records[self.record_id] = subject.records[self.record_id].copy()
        record.flags = copy_json(self.findings)


class DeviationRecorded(Event):
    """A departure from the protocol: found by a soft check (``detected_by`` system) or
    reported by a person (their role)."""
    TOPIC = "Subject.DeviationRecorded.v1"

    deviation_id: str
    category: str
    description: str
    occurred_on: date
    severity: str
    detected_by: str
    on_record: str | None

    def apply(self, subject: Subject) -> None:
        subject.deviations[self.deviation_id] = {
            "deviation_id": self.deviation_id, "category": self.category,
            "description": self.description, "occurred_on": self.occurred_on.isoformat(),
            "severity": self.severity, "detected_by": self.detected_by,
            "record_id": self.on_record, "recorded_at": self.timestamp.isoformat(),
            "recorded_by": self.envelope.actor.printed_name,
        }


# --- End of participation, locks -------------------------------------------------------------

class Withdrawn(Event):
    """The subject left the study early."""
    TOPIC = "Subject.Withdrawn.v1"

    observed_at: datetime
    withdrawal_reason: str

    def apply(self, subject: Subject) -> None:
        subject.status = "withdrawn"
        subject.data_changed(self)


class Completed(Event):
    """The subject completed the study."""
    TOPIC = "Subject.Completed.v1"

    observed_at: datetime

    def apply(self, subject: Subject) -> None:
        subject.status = "completed"
        subject.data_changed(self)


class SubjectLocked(Event):
    """The casebook was locked: edits are refused until unlocked."""
    TOPIC = "Subject.SubjectLocked.v1"

    def apply(self, subject: Subject) -> None:
        subject.locked = True
        subject.was_locked = True


class SubjectUnlocked(Event):
    """The casebook was unlocked (with a reason); later edits are post-lock edits."""
    TOPIC = "Subject.SubjectUnlocked.v1"

    def apply(self, subject: Subject) -> None:
        subject.locked = False


# --- Signatures, queries, source-data verification -------------------------------------------

class Signed(Event):
    """A Part 11 e-signature on the casebook as it stood at ``signed_version``.

    The signer re-authenticated to sign; the signature is bound to a SHA-256 of the
    signed content. A later change to that content invalidates it (the history keeps both).
    """
    TOPIC = "Subject.Signed.v1"

    signature_id: str
    meaning: str
    meaning_text: str
    signer: Actor
    signed_version: int
    content_sha256: str

    def apply(self, subject: Subject) -> None:
        subject.signatures[self.signature_id] = {
            "signature_id": self.signature_id,
            "meaning": self.meaning,
            "meaning_text": self.meaning_text,
            "user_id": self.signer.user_id,
            "printed_name": self.signer.printed_name,
            "role": self.signer.role,
            "signed_at": self.timestamp.isoformat(),
            "signed_version": self.signed_version,
            "content_sha256": self.content_sha256,
            "status": "valid",
            "invalidated_at": None,
            "invalidated_by_version": None,
        }


class QueryOpened(Event):
    """A monitor or data manager questioned one field of one record."""
    TOPIC = "Subject.QueryOpened.v1"

    query_id: str
    on_record: str
    on_field: str
    text: str

    def apply(self, subject: Subject) -> None:
        subject.queries[self.query_id] = {
            "query_id": self.query_id, "record_id": self.on_record, "field": self.on_field,
            "text": self.text, "status": "open", "opened_at": self.timestamp.isoformat(),
            "opened_by": self.envelope.actor.printed_name, "answers": [],
            "closed_at": None, "closed_by": None, "closing_text": None,
        }


class QueryAnswered(Event):
    """The site answered a query (``correction_version``: the correction made in answer)."""
    TOPIC = "Subject.QueryAnswered.v1"

    query_id: str
    text: str
    correction_version: int | None

    def apply(self, subject: Subject) -> None:
        query = subject.queries[self.query_id]
        query["status"] = "answered"
        query["answers"].append({
            "text": self.text, "answered_at": self.timestamp.isoformat(),
            "answered_by": self.envelope.actor.printed_name,
            "correction_version": self.correction_version,
        })


class QueryClosed(Event):
    """Whoever may raise queries closed it."""
    TOPIC = "Subject.QueryClosed.v1"

    query_id: str
    text: str

    def apply(self, subject: Subject) -> None:
        query = subject.queries[self.query_id]
        query.update(status="closed", closed_at=self.timestamp.isoformat(),
                     closed_by=self.envelope.actor.printed_name, closing_text=self.text)


class SourceVerified(Event):
    """A monitor verified the record against source documents, at ``record_revision``."""
    TOPIC = "Subject.SourceVerified.v1"

    on_record: str
    record_revision: int

    def apply(self, subject: Subject) -> None:
        subject.sdv[self.on_record] = {
            "revision": self.record_revision, "verified_at": self.timestamp.isoformat(),
            "verified_by": self.envelope.actor.printed_name,
        }


# --- Redaction of identifying values entered by mistake (two-person) -------------------------

class RedactionRequested(Event):
    """A data manager asked that identifying values be redacted: ``items`` are the
    (record_id, field) pairs covered; the reason is the envelope's."""
    TOPIC = "Subject.RedactionRequested.v1"

    request_id: str
    items: list[dict[str, str]]

    def apply(self, subject: Subject) -> None:
        reason = self.envelope.reason
        subject.redactions[self.request_id] = {
            "request_id": self.request_id, "items": copy_json(self.items),
            "reason": reason.text if reason else "", "status": "requested",
            "requested_at": self.timestamp.isoformat(),
            "requested_by": self.envelope.actor.user_id,
            "requested_by_name": self.envelope.actor.printed_name,
            "approved_at": None, "approved_by": None, "approved_by_name": None,
        }


class RedactionApproved(Event):
    """An admin (not the requester) approved a redaction: from here on each covered value
    reads as the redaction marker, and its key is destroyed (crypto-shredding)."""
    TOPIC = "Subject.RedactionApproved.v1"

    request_id: str

    def apply(self, subject: Subject) -> None:
        request = subject.redactions[self.request_id]
        request.update(status="approved", approved_at=self.timestamp.isoformat(),
                       approved_by=self.envelope.actor.user_id,
                       approved_by_name=self.envelope.actor.printed_name)
        text = marker(self.timestamp.date(), request["reason"])
        for item in request["items"]:
            name = item["field"]
            record = subject.records[item["record_id"]] = subject.records[item["record_id"]].copy()
            # Not a clinical change (signatures stay valid): the value is made unreadable.
            if name in record.fields:
                record.fields[name] = text
            for entry in record.timeline:
                if name in entry["fields"]:
                    entry["fields"][name] = text
