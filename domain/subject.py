"""A subject's casebook: one consistency boundary for its records, status and lock.

Nothing is updated in place. A correction is an event naming the record, the field, the old
and new value, and the reason; a removal is an event too, and the removed value stays in history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from bisect import bisect_right
from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain import checks, limits
from domain.clock import require_aware
from domain.envelope import Actor, Envelope
from domain.errors import (
    EligibilityRefused,
    InvalidInput,
    InvalidState,
    Locked,
    NotFound,
    Problem,
)
from domain.identifiers import subject_code_problem
from domain.records import (
    BSA_DEPENDENT_KINDS,
    Context,
    Record,
    copy_json,
    rederive,
    validate,
    vitals_from_measurements,
)
from domain.rules.derivation import RuleError
from domain.rules.eligibility import Criterion, derive_screening_facts, evaluate_eligibility
from domain.sdtm import CheckedRow, check_row, is_sdtm_kind
from domain.study import StudyDefinition, study_uuid

SEXES = ("F", "M", "U")
# What an adverse event is, as opposed to how it evolves: an update changing one of these
# needs a reason (grade and action taken are dated clinical facts and need none).
AE_FIELDS_NEEDING_REASON = frozenset({
    "term", "category", "relationship", "serious", "seriousness_criteria", "outcome",
    "meddra_pt", "meddra_llt"})
SCREEN_FAILURE_ARM = "Scrnfail"  # SDTM's ARMCD of a screened subject never randomised


@lru_cache(maxsize=65536)  # every command asks; a SHA-1 each time is not nothing
def subject_uuid(study_id: str, subject_code: str) -> UUID:
    """The aggregate id of a subject: stable, derived from the study and subject code."""
    return uuid5(study_uuid(study_id), f"subject/{subject_code}")


class Subject(Aggregate):
    """One child in the study: consent, screening, enrollment, records, withdrawal, lock."""
    TOPIC = "Subject.v1"

    # The study's protocol, for the soft checks of a command: not state (nothing stored says
    # it), handed over by whoever creates the subject or loads it to run a command.
    protocol: StudyDefinition | None = None

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

    class RecordEntered(Event):
        """Base of first entries of a record."""
        TOPIC = "Subject.RecordEntered.v1"

        record_id: str
        kind: str
        observed_at: datetime
        visit: str | None
        fields: dict[str, Any]
        derived: dict[str, Any]

        def apply(self, subject: Subject) -> None:
            subject.records[self.record_id] = Record(
                record_id=self.record_id,
                kind=self.kind,
                observed_at=self.observed_at,
                visit=self.visit,
                fields=copy_json(self.fields),
                derived=copy_json(self.derived),
                entered_at=self.timestamp,
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
                timeline=[{"observed_at": self.observed_at.isoformat(), "fields": fields}],
            )
            subject.data_changed(self)

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
                _set_field(record.fields, name, copy_json(change["new"]))
                head = name.partition(".")[0]
                entry = record.timeline[-1] if observed is not None else next(
                    e for e in reversed(record.timeline) if head in e["fields"])
                if head not in entry["fields"]:
                    entry["fields"][head] = copy_json(record.fields[head])
                else:
                    _set_field(entry["fields"], name, copy_json(change["new"]))
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

    def __init__(
        self,
        study_id: str,
        subject_code: str,
        site: str,
        sex: str,
        envelope: Envelope,
        date_of_birth: date | None = None,
        disease: str = "",
        consent_date: date | None = None,
        demographics: dict[str, Any] | None = None,
        arm: str | None = None,
        actual_arm: str | None = None,
        status: str = "consented",
        enrolled_on: date | None = None,
    ) -> None:
        # Consented gives date of birth, disease and consent date; Imported gives what an
        # SDTM DM row holds (no date of birth or consent date in CDISCPILOT01) and the arms.
        self.study_id = study_id
        self.subject_code = subject_code
        self.site = site
        self.date_of_birth = date_of_birth
        self.sex = sex
        self.disease = disease
        self.consent_date = consent_date
        self.status = status
        self.screening_facts: dict[str, Any] = {}
        self.arm = arm
        self.actual_arm = actual_arm
        self.demographics = demographics
        self.enrolled_on = enrolled_on
        self.records: dict[str, Record] = {}
        self.locked = False
        self.was_locked = False  # once locked, every later edit is a post-lock edit
        self.signatures: dict[str, dict[str, Any]] = {}
        self.queries: dict[str, dict[str, Any]] = {}
        self.sdv: dict[str, dict[str, Any]] = {}
        self.deviations: dict[str, dict[str, Any]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Subject:
        """A copy for a command to change (the aggregate cache hands out copies).

        Field by field, far cheaper than ``copy.deepcopy`` on a long casebook: scalars, dates
        and strings are shared, being immutable, and so are the records, which events never
        change in place (copy on write). A new mutable attribute must be copied here too (a
        test checks this).
        """
        clone: Subject = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._pending_events = list(self._pending_events)
        clone.screening_facts = copy_json(self.screening_facts)
        clone.demographics = copy_json(self.demographics)
        # Records are shared: every event that changes one replaces it with a copy first.
        clone.records = dict(self.records)
        clone.signatures = copy_json(self.signatures)
        clone.queries = copy_json(self.queries)
        clone.sdv = copy_json(self.sdv)
        clone.deviations = copy_json(self.deviations)
        return clone

    # --- consent, screening, enrollment -------------------------------------------------

    @classmethod
    def consent(
        cls,
        study: StudyDefinition,
        subject_code: str,
        site: str,
        date_of_birth: date,
        sex: str,
        disease: str,
        consent_date: date,
        envelope: Envelope,
        at: datetime,
    ) -> Subject:
        """Record informed consent: the subject's casebook starts here."""
        at = require_aware("recorded_at", at)
        limits.check_texts(("site", site, limits.ID), ("disease", disease, limits.ID))
        problems = []
        if (code_problem := subject_code_problem("subject_code", subject_code)) is not None:
            problems.append((code_problem.field, code_problem.message))
        if site not in study.sites:
            problems.append(("site", f"unknown site {site!r}"))
        if sex not in SEXES:
            problems.append(("sex", f"must be one of {', '.join(SEXES)}"))
        if study.diseases and disease not in study.diseases:
            problems.append(("disease", f"must be one of {', '.join(study.diseases)}"))
        if date_of_birth > at.date():
            problems.append(("date_of_birth", "is in the future"))
        if consent_date > at.date():
            problems.append(("consent_date", "is in the future"))
        if consent_date < date_of_birth:
            problems.append(("consent_date", "is before the date of birth"))
        if problems:
            raise InvalidInput(problems=[Problem(f, m) for f, m in problems])
        subject: Subject = cls._create(
            cls.Consented,
            id=subject_uuid(study.study_id, subject_code),
            timestamp=at,
            envelope=envelope,
            study_id=study.study_id,
            subject_code=subject_code.strip(),
            site=site,
            date_of_birth=date_of_birth,
            sex=sex,
            disease=disease,
            consent_date=consent_date,
        )
        subject.protocol = study
        return subject

    @classmethod
    def import_from_sdtm(
        cls,
        study: StudyDefinition,
        subject_code: str,
        site: str,
        sex: str,
        demographics: Mapping[str, Any],
        arm: str | None,
        actual_arm: str | None,
        enrolled_on: date | None,
        envelope: Envelope,
        at: datetime,
    ) -> Subject:
        """Load a subject from its SDTM DM row. A screen failure (ARMCD ``Scrnfail``, or no
        reference start) is kept as a subject with status ``screen_failure``."""
        at = require_aware("recorded_at", at)
        problems = []
        if envelope.source != "import":
            problems.append(Problem("source", "an SDTM load is recorded with source 'import'"))
        if (code_problem := subject_code_problem("USUBJID", subject_code)) is not None:
            problems.append(code_problem)
        if site not in study.sites:
            problems.append(Problem("SITEID", f"unknown site {site!r}"))
        if sex not in SEXES:
            problems.append(Problem("SEX", f"must be one of {', '.join(SEXES)}"))
        for name, value in (("ARMCD", arm), ("ACTARMCD", actual_arm)):
            if value and value not in study.arms:
                problems.append(Problem(name, f"unknown arm {value!r}"))
        if problems:
            raise InvalidInput(problems=problems)
        screen_failure = arm == SCREEN_FAILURE_ARM or enrolled_on is None
        subject: Subject = cls._create(
            cls.Imported,
            id=subject_uuid(study.study_id, subject_code),
            timestamp=at,
            envelope=envelope,
            study_id=study.study_id,
            subject_code=subject_code.strip(),
            site=site,
            sex=sex,
            demographics=copy_json(dict(demographics)),
            arm=arm or None,
            actual_arm=actual_arm or None,
            status="screen_failure" if screen_failure else "enrolled",
            enrolled_on=enrolled_on,
        )
        subject.protocol = study
        return subject

    def import_record(self, study: StudyDefinition, record_id: str, row: CheckedRow,
                      observed_at: datetime, visit: str | None, envelope: Envelope,
                      at: datetime) -> None:
        """Load one SDTM row as a record of its domain. The row was checked by
        :func:`domain.sdtm.check_row`; against another declaration than the study's own
        SDTM vocabulary, it is checked again. A screen failure's rows are loaded too."""
        if envelope.source != "import":
            raise InvalidInput("source", "an SDTM load is recorded with source 'import'")
        if row.declaration is not study.sdtm:
            row = check_row(row.kind, row.fields, study.sdtm)
        envelope = self._check_editable(envelope)
        if not record_id or not record_id.strip():
            raise InvalidInput("record_id", "is required")
        if record_id in self.records:
            raise InvalidInput("record_id", f"record {record_id!r} already exists")
        observed = self._valid_time(observed_at, at)
        self.trigger_event(self.RowImported, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, record_id=record_id, kind=row.kind,
                           observed_at=observed, visit=visit, fields=row.fields, derived={})

    def screen(
        self,
        criteria: tuple[Criterion, ...],
        answers: Mapping[str, Any],
        envelope: Envelope,
        at: datetime,
    ) -> None:
        """Evaluate every criterion; refuse (naming each failed one) unless all are met."""
        self._require_status("consented")
        limits.check_screening(answers)
        born, consented = self._consent_dates()
        try:
            facts = derive_screening_facts(born, consented, answers)
        except RuleError as e:
            raise InvalidInput(e.field, e.message) from e
        failures = evaluate_eligibility(criteria, facts)
        if failures:
            raise EligibilityRefused(
                [(f.criterion.id, f.criterion.text, f.reason) for f in failures]
            )
        self.trigger_event(
            self.Screened,
            timestamp=require_aware("recorded_at", at),
            envelope=envelope,
            facts=facts,
            criteria=[{"id": c.id, "kind": c.kind, "met": True} for c in criteria],
        )

    def enroll(
        self, study: StudyDefinition, arm: str, enrolled_on: date, envelope: Envelope,
        at: datetime,
    ) -> None:
        """Enroll the screened subject into an arm."""
        self._require_status("screened")
        at = require_aware("recorded_at", at)
        limits.check_text("arm", arm, limits.ID)
        if arm not in study.arms:
            raise InvalidInput("arm", f"must be one of {', '.join(study.arms)}")
        if enrolled_on < self._consent_dates()[1]:
            raise InvalidInput("enrolled_on", "is before consent")
        if enrolled_on > at.date():
            raise InvalidInput("enrolled_on", "is in the future")
        self.trigger_event(
            self.Enrolled, timestamp=at, envelope=envelope, arm=arm, enrolled_on=enrolled_on
        )

    # --- records ---------------------------------------------------------------------

    def record_vital_signs(
        self,
        record_id: str,
        observed_at: datetime,
        measurements: Mapping[str, tuple[float, str]],
        envelope: Envelope,
        at: datetime,
        visit: str | None = None,
    ) -> None:
        """Record vital signs, each as (value, unit); BSA derived from height and weight."""
        fields = vitals_from_measurements(measurements)
        self._enter(self.VitalSignsRecorded, "vitals", record_id, observed_at, visit,
                    fields, envelope, at)

    def administer_dose(
        self,
        record_id: str,
        observed_at: datetime,
        drug: str,
        dose: float,
        unit: str,
        route: str,
        envelope: Envelope,
        at: datetime,
        visit: str | None = None,
        *,
        frequency: str | None = None,
    ) -> None:
        """Record a dose of the investigational product; IU/m² from the BSA in force.
        ``frequency`` (CDISC EXDOSFRQ) is the regimen's: QD on induction days, Q2W after."""
        fields = {"drug": drug, "dose": dose, "unit": unit, "route": route,
                  "frequency": frequency}
        self._enter(self.DoseAdministered, "doses", record_id, observed_at, visit,
                    fields, envelope, at)

    def start_therapy(
        self,
        record_id: str,
        observed_at: datetime,
        drug: str,
        category: str,
        dose_mg_per_day: float | None,
        route: str,
        envelope: Envelope,
        at: datetime,
        *,
        dose_mg: float | None = None,
        frequency: str | None = None,
    ) -> None:
        """Start a glucocorticoid or immunosuppressant course: ``dose_mg`` per administration
        at ``frequency`` (methotrexate 15 mg QW), or a daily total ``dose_mg_per_day``."""
        dose: dict[str, Any] = ({"dose_mg_per_day": dose_mg_per_day} if dose_mg is None
                                else {"dose_mg": dose_mg, "dose_mg_per_day": dose_mg_per_day})
        fields = {"drug": drug, "category": category, **dose, "frequency": frequency,
                  "route": route, "stopped_at": None}
        self._enter(self.TherapyStarted, "therapies", record_id, observed_at, None,
                    fields, envelope, at)

    def change_therapy(
        self, record_id: str, observed_at: datetime, dose_mg_per_day: float | None,
        envelope: Envelope, at: datetime, *, dose_mg: float | None = None,
    ) -> None:
        """Change a running course's dose from ``observed_at`` on (e.g. a taper step), in the
        course's own terms: ``dose_mg`` if it is dosed per administration, else per day."""
        record = self._record(record_id, "therapies")
        if record.fields.get("stopped_at"):
            raise InvalidState(f"therapy {record_id} has stopped")
        name = "dose_mg" if "dose_mg" in record.fields else "dose_mg_per_day"
        given = {n: v for n, v in (("dose_mg", dose_mg), ("dose_mg_per_day", dose_mg_per_day))
                 if v is not None}
        if set(given) != {name}:
            raise InvalidInput(name, f"therapy {record_id} is dosed in {name}: give the new "
                                     f"{name} alone")
        self._change(self.TherapyChanged, record, given, envelope, at,
                     observed_at=observed_at)

    def stop_therapy(
        self, record_id: str, observed_at: datetime, envelope: Envelope, at: datetime
    ) -> None:
        """Stop a running course at ``observed_at``."""
        record = self._record(record_id, "therapies")
        if record.fields.get("stopped_at"):
            raise InvalidState(f"therapy {record_id} has already stopped")
        observed = self._valid_time(observed_at, at, not_before=record.observed_at)
        self._change(self.TherapyStopped, record, {"stopped_at": observed.isoformat()},
                     envelope, at, observed_at=observed)

    def record_lab_result(
        self,
        record_id: str,
        collected_at: datetime,
        code: str,
        value: float,
        unit: str,
        envelope: Envelope,
        at: datetime,
        reference_low: float | None = None,
        reference_high: float | None = None,
        visit: str | None = None,
    ) -> None:
        """Record a lab result: test code, value, unit, reference range, collection time."""
        fields = {"code": code, "value": value, "unit": unit,
                  "reference_low": reference_low, "reference_high": reference_high}
        self._enter(self.LabResultRecorded, "labs", record_id, collected_at, visit,
                    fields, envelope, at)

    def record_sledai(
        self, record_id: str, observed_at: datetime, items: Mapping[str, bool],
        envelope: Envelope, at: datetime, visit: str | None = None,
    ) -> None:
        """Record a SELENA-SLEDAI assessment; the total (0-105) is derived."""
        fields = {"instrument": "SLEDAI", "items": dict(items)}
        self._enter(self.AssessmentRecorded, "assessments", record_id, observed_at, visit,
                    fields, envelope, at)

    def record_essdai(
        self, record_id: str, observed_at: datetime, domains: Mapping[str, int],
        envelope: Envelope, at: datetime, visit: str | None = None,
    ) -> None:
        """Record an ESSDAI assessment; the total (0-123) and activity level are derived."""
        fields = {"instrument": "ESSDAI", "items": dict(domains)}
        self._enter(self.AssessmentRecorded, "assessments", record_id, observed_at, visit,
                    fields, envelope, at)

    def report_adverse_event(
        self, record_id: str, onset_at: datetime, details: Mapping[str, Any],
        envelope: Envelope, at: datetime,
    ) -> None:
        """Report an adverse event (term, category, CTCAE grade, seriousness, relationship...)."""
        fields = {"seriousness_criteria": [], "meddra_pt": None, "meddra_llt": None,
                  "ended_at": None, **details}
        self._enter(self.AdverseEventReported, "adverse-events", record_id, onset_at, None,
                    fields, envelope, at)

    def update_adverse_event(
        self, record_id: str, observed_at: datetime, changes: Mapping[str, Any],
        envelope: Envelope, at: datetime,
    ) -> None:
        """The adverse event evolved as of ``observed_at`` (e.g. worsened, a dose withdrawn).

        A change of what the event is (:data:`AE_FIELDS_NEEDING_REASON`: its term, coding,
        category, relationship, seriousness or outcome) is a judgement revised, not a dated
        clinical fact, and needs the envelope's reason; a new grade or action taken does not.
        """
        record = self._record(record_id, "adverse-events")
        if "ended_at" in changes:
            raise InvalidInput("ended_at", "use resolve_adverse_event to end an event")
        judged = sorted(AE_FIELDS_NEEDING_REASON.intersection(changes))
        if envelope.reason is not None:
            envelope.require_reason()  # a reason given is held to every reason's limits
        elif judged:
            raise InvalidInput("reason", f"changing {', '.join(judged)} of an adverse event "
                                         "needs a reason")
        self._change(self.AdverseEventUpdated, record, changes, envelope, at,
                     observed_at=observed_at)

    def resolve_adverse_event(
        self, record_id: str, ended_at: datetime, outcome: str, envelope: Envelope,
        at: datetime,
    ) -> None:
        """The adverse event ended at ``ended_at`` with ``outcome``."""
        record = self._record(record_id, "adverse-events")
        if record.fields.get("ended_at"):
            raise InvalidState(f"adverse event {record_id} is already resolved")
        ended = self._valid_time(ended_at, at, not_before=record.observed_at)
        self._change(self.AdverseEventResolved, record,
                     {"ended_at": ended.isoformat(), "outcome": outcome}, envelope, at,
                     observed_at=ended)

    def correct(
        self, record_id: str, field: str, new_value: Any, envelope: Envelope, at: datetime
    ) -> None:
        """Correct one field of what was entered; the reason is mandatory."""
        envelope.require_reason()
        record = self._record(record_id)
        self._change(self.RecordCorrected, record, {field: new_value}, envelope, at)
        self._check_softly(record_id, envelope, at)

    def remove(self, record_id: str, envelope: Envelope, at: datetime) -> None:
        """Remove a record; the reason is mandatory and its values stay in history."""
        envelope.require_reason()
        envelope = self._check_editable(envelope)
        record = self._record(record_id)
        self.trigger_event(
            self.RecordRemoved,
            timestamp=require_aware("recorded_at", at),
            envelope=envelope,
            record_id=record_id,
            removed_fields=copy_json(record.fields),
        )
        self._follow_inputs(self.RecordRemoved, record_id, envelope, at)


    # --- soft checks and protocol deviations ---------------------------------------------

    def use_protocol(self, protocol: StudyDefinition) -> None:
        """Check this subject's next commands against ``protocol`` (the study's definition);
        the application service does this whenever it loads a subject for a command."""
        self.protocol = protocol

    def record_deviation(self, deviation_id: str, category: str, description: str,
                         occurred_on: date, severity: str, envelope: Envelope, at: datetime,
                         record_id: str | None = None) -> None:
        """Record a protocol deviation a person found (investigator, monitor, data manager)."""
        limits.check_texts(("deviation_id", deviation_id, limits.ID),
                           ("description", description, limits.TEXT),
                           ("record_id", record_id, limits.ID))
        envelope = self._check_editable(envelope)
        problems = []
        if not deviation_id.strip():
            problems.append(Problem("deviation_id", "is required"))
        elif deviation_id in self.deviations:
            problems.append(Problem("deviation_id", f"deviation {deviation_id!r} already exists"))
        if category not in checks.DEVIATION_CATEGORIES:
            problems.append(Problem("category",
                                    f"must be one of {', '.join(checks.DEVIATION_CATEGORIES)}"))
        if severity not in checks.SEVERITIES:
            problems.append(Problem("severity", f"must be one of {', '.join(checks.SEVERITIES)}"))
        if not description.strip():
            problems.append(Problem("description", "is required"))
        if occurred_on > require_aware("recorded_at", at).date():
            problems.append(Problem("occurred_on", "is in the future"))
        if problems:
            raise InvalidInput(problems=problems)
        if record_id is not None:
            self._record(record_id)
        if self.status in ("consented", "screened"):
            raise InvalidState(f"subject is {self.status}: not yet in the study")
        self.trigger_event(self.DeviationRecorded, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, deviation_id=deviation_id, category=category,
                           description=description, occurred_on=occurred_on,
                           severity=severity, detected_by=envelope.actor.role,
                           on_record=record_id)

    def _check_softly(self, record_id: str, envelope: Envelope, at: datetime) -> None:
        """Run the soft checks on the record as it now stands. When they find something
        other than the record's flags, the system records the findings; raises a query for
        each new one, visible to the monitor; and records each new departure from the
        protocol as a deviation. The value itself stays as entered."""
        record = self.records[record_id]
        if is_sdtm_kind(record.kind):
            return
        findings = [f.to_dict() for f in checks.soft_findings(
            self.protocol, self.enrolled_on, record, self.records.values())]
        if findings == record.flags:
            return
        flagged = {(f["check"], f["field"]) for f in record.flags}
        system = Envelope(actor=Actor("system", "TrialLedger soft check", "system", self.site),
                          client=envelope.client, source="system",
                          request_id=envelope.request_id, edit_point=envelope.edit_point)
        recorded = require_aware("recorded_at", at)
        self.trigger_event(self.RecordChecked, timestamp=recorded, envelope=system,
                           record_id=record_id, findings=findings)
        for finding in findings:
            text = f"Automatic check: {finding['message']}"
            # One late visit shows on each of its records: it is queried, and a deviation,
            # once.
            if (finding["check"], finding["field"]) in flagged or any(
                    q["text"] == text and q["status"] != "closed" for q in self.queries.values()):
                continue
            query_id = f"SC-{self.version + 1}"
            self.trigger_event(self.QueryOpened, timestamp=recorded, envelope=system,
                               query_id=query_id, on_record=record_id, on_field=finding["field"],
                               text=text)
            if finding["deviation"] is not None:
                self.trigger_event(self.DeviationRecorded, timestamp=recorded, envelope=system,
                                   deviation_id=f"DV-{self.version + 1}",
                                   category=finding["deviation"],
                                   description=finding["message"],
                                   occurred_on=record.observed_at.date(),
                                   severity=finding["severity"], detected_by="system",
                                   on_record=record_id)

    # --- signatures, queries, source-data verification ---------------------------------

    def sign(self, signature_id: str, meaning: str, meanings: Mapping[str, str],
             signer: Actor, envelope: Envelope, at: datetime) -> None:
        """Apply an e-signature with ``meaning`` (one of the study's ``meanings``).

        The caller has re-authenticated ``signer`` with username and password.
        """
        limits.check_texts(("meaning", meaning, limits.ID),
                           ("signature_id", signature_id, limits.ID))
        if meaning not in meanings:
            raise InvalidInput("meaning", f"must be one of {', '.join(meanings)}")
        if not signature_id.strip():
            raise InvalidInput("signature_id", "is required")
        if signature_id in self.signatures:
            raise InvalidInput("signature_id", f"signature {signature_id!r} already exists")
        if self.status in ("consented", "screened"):
            raise InvalidState(f"subject is {self.status}: nothing to sign yet")
        self.trigger_event(self.Signed, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, signature_id=signature_id, meaning=meaning,
                           meaning_text=meanings[meaning], signer=signer,
                           signed_version=self.version, content_sha256=self.content_digest())

    def open_query(self, query_id: str, record_id: str, field: str, text: str,
                   envelope: Envelope, at: datetime) -> None:
        """Question one field of one record."""
        limits.check_texts(("query_id", query_id, limits.ID), ("record_id", record_id, limits.ID),
                           ("field", field, limits.ID), ("text", text, limits.TEXT))
        envelope = self._check_editable(envelope)
        record = self._record(record_id)
        if field not in record.fields and field.partition(".")[0] not in record.fields:
            raise InvalidInput("field", f"record {record_id} has no field {field!r}")
        if not query_id.strip():
            raise InvalidInput("query_id", "is required")
        if query_id in self.queries:
            raise InvalidInput("query_id", f"query {query_id!r} already exists")
        if not text.strip():
            raise InvalidInput("text", "the question is required")
        self.trigger_event(self.QueryOpened, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, query_id=query_id, on_record=record_id,
                           on_field=field, text=text)

    def answer_query(self, query_id: str, text: str, envelope: Envelope, at: datetime,
                     correction_version: int | None = None) -> None:
        """Answer an open query (optionally naming the correction made in answer)."""
        limits.check_text("text", text, limits.TEXT)
        envelope = self._check_editable(envelope)
        query = self._query(query_id)
        if query["status"] == "closed":
            raise InvalidState(f"query {query_id} is closed")
        if not text.strip():
            raise InvalidInput("text", "the answer is required")
        self.trigger_event(self.QueryAnswered, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, query_id=query_id, text=text,
                           correction_version=correction_version)

    def correct_in_answer(self, query_id: str, record_id: str, field: str, new_value: Any,
                          envelope: Envelope, at: datetime) -> None:
        """Correct a field in answer to a query: the correction and the answer are linked."""
        query = self._query(query_id)
        if query["status"] == "closed":
            raise InvalidState(f"query {query_id} is closed")
        self.correct(record_id, field, new_value, envelope, at)
        self.answer_query(query_id, envelope.require_reason().text, envelope, at,
                          correction_version=self.version)

    def close_query(self, query_id: str, text: str, envelope: Envelope, at: datetime) -> None:
        """Close a query."""
        limits.check_text("text", text, limits.TEXT)
        envelope = self._check_editable(envelope)
        query = self._query(query_id)
        if query["status"] == "closed":
            raise InvalidState(f"query {query_id} is already closed")
        self.trigger_event(self.QueryClosed, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, query_id=query_id, text=text)

    def verify_source(self, record_id: str, envelope: Envelope, at: datetime) -> None:
        """Mark the record, as it stands now, verified against source documents."""
        envelope = self._check_editable(envelope)
        record = self._record(record_id)
        done = self.sdv.get(record_id)
        if done is not None and done["revision"] == record.revisions:
            raise InvalidState(f"record {record_id} is already verified at this revision")
        self.trigger_event(self.SourceVerified, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, on_record=record_id,
                           record_revision=record.revisions)

    def data_changed(self, event: Subject.Event) -> None:
        """Clinical content changed: every valid signature on the old content is invalidated."""
        for signature in self.signatures.values():
            if signature["status"] == "valid":
                signature.update(status="invalidated",
                                 invalidated_at=event.timestamp.isoformat(),
                                 invalidated_by_version=event.originator_version)

    def content_digest(self) -> str:
        """SHA-256 of the casebook's clinical content (header and every record, as folded)."""
        content = {
            "study_id": self.study_id, "subject": self.subject_code, "site": self.site,
            "date_of_birth": self.date_of_birth, "sex": self.sex, "disease": self.disease,
            "consent_date": self.consent_date, "status": self.status, "arm": self.arm,
            "enrolled_on": self.enrolled_on,
            "records": {rid: [r.kind, r.observed_at, r.visit, r.fields, r.derived, r.removed]
                        for rid, r in self.records.items()},
        }
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    # --- end of participation, locks -----------------------------------------------

    def withdraw(self, observed_at: datetime, reason: str, envelope: Envelope,
                 at: datetime) -> None:
        """The subject withdrew (or was withdrawn) at ``observed_at``."""
        envelope = self._check_editable(envelope)
        self._require_status("enrolled")
        if not reason.strip():
            raise InvalidInput("withdrawal_reason", "is required")
        limits.check_text("withdrawal_reason", reason, limits.WITHDRAWAL_REASON)
        observed = self._valid_time(observed_at, at)
        self.trigger_event(self.Withdrawn, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, observed_at=observed, withdrawal_reason=reason)

    def complete(self, observed_at: datetime, envelope: Envelope, at: datetime) -> None:
        """The subject completed the study at ``observed_at``."""
        envelope = self._check_editable(envelope)
        self._require_status("enrolled")
        observed = self._valid_time(observed_at, at)
        self.trigger_event(self.Completed, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, observed_at=observed)

    def lock(self, envelope: Envelope, at: datetime) -> None:
        """Lock the casebook (reason required)."""
        envelope.require_reason()
        if self.locked:
            raise InvalidState("subject is already locked")
        self.trigger_event(self.SubjectLocked, timestamp=require_aware("recorded_at", at),
                           envelope=envelope)

    def unlock(self, envelope: Envelope, at: datetime) -> None:
        """Unlock the casebook (reason required)."""
        envelope.require_reason()
        if not self.locked:
            raise InvalidState("subject is not locked")
        self.trigger_event(self.SubjectUnlocked, timestamp=require_aware("recorded_at", at),
                           envelope=envelope)

    # --- queries ---------------------------------------------------------------------

    def bsa_at(self, when: datetime) -> float | None:
        """The body-surface area in force at ``when``: the latest one measured by then."""
        latest: Record | None = None
        for record in self.records.values():
            if (record.kind == "vitals" and not record.removed and "bsa" in record.derived
                    and record.observed_at <= when
                    and (latest is None or record.observed_at >= latest.observed_at)):
                latest = record
        return None if latest is None else float(latest.derived["bsa"]["value"])

    # --- internals -------------------------------------------------------------------

    def _consent_dates(self) -> tuple[date, date]:
        """Date of birth and consent date, which a consented subject has (an imported one
        may not, and is never screened or enrolled by command)."""
        if self.date_of_birth is None or self.consent_date is None:
            raise InvalidState(f"subject {self.subject_code} has no consent on record")
        return self.date_of_birth, self.consent_date

    def _require_status(self, *statuses: str) -> None:
        if self.status not in statuses:
            raise InvalidState(f"subject is {self.status}; expected {' or '.join(statuses)}")

    def _check_editable(self, envelope: Envelope) -> Envelope:
        """Refuse an edit while the casebook is locked; return the envelope the edit is
        recorded under: once a casebook has been locked, every later edit is a post-lock
        edit, whoever makes it and however the caller named its edit point."""
        if self.locked:
            raise Locked(f"subject {self.subject_code} is locked")
        if self.was_locked and envelope.edit_point != "post_lock":
            return dataclasses.replace(envelope, edit_point="post_lock")
        return envelope

    def _query(self, query_id: str) -> dict[str, Any]:
        query = self.queries.get(query_id)
        if query is None:
            raise NotFound(f"no query {query_id!r} for subject {self.subject_code}")
        return query

    def _record(self, record_id: str, kind: str | None = None) -> Record:
        record = self.records.get(record_id)
        if record is None or (kind is not None and record.kind != kind):
            raise NotFound(f"no {kind or 'record'} {record_id!r} for subject {self.subject_code}")
        if record.removed:
            raise InvalidState(f"record {record_id} was removed")
        return record

    def _valid_time(self, observed_at: datetime, at: datetime,
                    not_before: datetime | None = None) -> datetime:
        observed = require_aware("observed_at", observed_at)
        recorded = require_aware("recorded_at", at)
        if observed > recorded:
            raise InvalidInput("observed_at", "is after the time it is recorded (in the future)")
        if self.date_of_birth is not None and observed.date() < self.date_of_birth:
            raise InvalidInput("observed_at", "is before the subject's date of birth")
        if self.consent_date is not None and observed.date() < self.consent_date:
            raise InvalidInput("observed_at", "is before informed consent")
        if not_before is not None and observed < not_before:
            raise InvalidInput("observed_at", "is before the record it changes began")
        return observed

    def _enter(
        self,
        event_class: type[RecordEntered],
        kind: str,
        record_id: str,
        observed_at: datetime,
        visit: str | None,
        fields: dict[str, Any],
        envelope: Envelope,
        at: datetime,
        sdtm: Mapping[str, Any] | None = None,
    ) -> None:
        envelope = self._check_editable(envelope)
        if self.status != "enrolled" and not is_sdtm_kind(kind):
            raise InvalidState(f"subject is {self.status}: records need an enrolled subject")
        if not record_id or not record_id.strip():
            raise InvalidInput("record_id", "is required")
        limits.check_texts(("record_id", record_id, limits.ID), ("visit", visit, limits.ID))
        if not is_sdtm_kind(kind):
            limits.check_record_values(kind, fields)
        if record_id in self.records:
            raise InvalidInput("record_id", f"record {record_id!r} already exists")
        observed = self._valid_time(observed_at, at)
        # An SDTM row derives nothing from the BSA in force (and looking it up is a scan).
        bsa = None if is_sdtm_kind(kind) else self.bsa_at(observed)
        clean, derived = validate(kind, fields, Context(bsa, sdtm))
        self.trigger_event(
            event_class,
            timestamp=require_aware("recorded_at", at),
            envelope=envelope,
            record_id=record_id,
            kind=kind,
            observed_at=observed,
            visit=visit,
            fields=clean,
            derived=derived,
        )
        self._follow_inputs(event_class, record_id, envelope, at)
        self._check_softly(record_id, envelope, at)

    def _change(
        self,
        event_class: type[RecordChanged],
        record: Record,
        new_values: Mapping[str, Any],
        envelope: Envelope,
        at: datetime,
        **extra: Any,
    ) -> None:
        envelope = self._check_editable(envelope)
        if not is_sdtm_kind(record.kind):
            # The same limits as the record's first entry: a change may not write what an
            # entry could not.
            limits.check_record_values(record.kind, new_values)
        if "observed_at" in extra:
            extra["observed_at"] = self._valid_time(extra["observed_at"], at,
                                                    not_before=record.observed_at)
        merged = copy_json(record.fields)
        changes: dict[str, dict[str, Any]] = {}
        for name, value in new_values.items():
            old = _get_field(record.fields, name)
            _set_field(merged, name, value)
            if old != value:
                changes[name] = {"old": old, "new": value}
        if not changes:
            raise InvalidInput(next(iter(new_values), "value"), "is unchanged")
        clean, derived = validate(record.kind, merged, Context(self.bsa_at(record.observed_at)))
        # Store what validation normalised (e.g. 5 -> 5.0), so replay gives the same record.
        for name, change in changes.items():
            change["new"] = _get_field(clean, name)
        self.trigger_event(
            event_class,
            timestamp=require_aware("recorded_at", at),
            envelope=envelope,
            record_id=record.record_id,
            changes=changes,
            derived=derived,
            **extra,
        )
        self._follow_inputs(event_class, record.record_id, envelope, at)

    def _follow_inputs(self, event_class: type[Event], record_id: str, envelope: Envelope,
                       at: datetime) -> None:
        """After ``event_class`` changed ``record_id``: re-derive every value of another
        record that reads it (today the BSA in force, read by doses and therapies), each
        that moved as a :class:`DerivedValueRecomputed` naming that change as its trigger."""
        if self.records[record_id].kind != "vitals":
            return
        trigger = {"event": str(vars(event_class)["TOPIC"]), "version": self.version,
                   "record_id": record_id}
        in_force = self._bsa_in_force()
        for record in list(self.records.values()):
            if record.removed or record.kind not in BSA_DEPENDENT_KINDS:
                continue
            derived = rederive(record.kind, record.fields, in_force(record.observed_at))
            if derived != record.derived:
                self.trigger_event(self.DerivedValueRecomputed,
                                   timestamp=require_aware("recorded_at", at),
                                   envelope=envelope, record_id=record.record_id,
                                   derived=derived, previous=copy_json(record.derived),
                                   trigger=trigger)

    def _bsa_in_force(self) -> Callable[[datetime], float | None]:
        """:meth:`bsa_at` for many times at once: the measurements sorted once, each time
        looked up by bisection (a tie goes to the later entry, as in :meth:`bsa_at`)."""
        measured = sorted(((r.observed_at, float(r.derived["bsa"]["value"]))
                           for r in self.records.values()
                           if r.kind == "vitals" and not r.removed and "bsa" in r.derived),
                          key=lambda m: m[0])
        times = [when for when, _ in measured]

        def at(when: datetime) -> float | None:
            index = bisect_right(times, when)
            return measured[index - 1][1] if index else None

        return at


def _get_field(fields: Mapping[str, Any], path: str) -> Any:
    """A field by name; ``items.<name>`` reaches into an assessment's items."""
    head, _, rest = path.partition(".")
    if head not in fields:
        raise InvalidInput("field", f"unknown field {path!r}")
    value = fields[head]
    if rest:
        if not isinstance(value, Mapping):
            raise InvalidInput("field", f"unknown field {path!r}")
        return value.get(rest)
    return value


def _set_field(fields: dict[str, Any], path: str, value: Any) -> None:
    head, _, rest = path.partition(".")
    if rest:
        fields[head] = {**fields[head], rest: value}
    else:
        fields[head] = value

