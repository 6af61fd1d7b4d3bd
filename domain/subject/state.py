"""What a subject holds (set by its events), its id, and the guards every command shares:
status, lock and post-lock edit point, an existing record, a valid time."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID, uuid5

from domain.clock import require_aware
from domain.envelope import Envelope
from domain.errors import InvalidInput, InvalidState, Locked, NotFound
from domain.records import Record, copy_json
from domain.study import StudyDefinition, study_uuid

if TYPE_CHECKING:
    # The commands run on Subject, an eventsourcing Aggregate (trigger_event, version...):
    # to the type checker, the state it starts from is one.
    from eventsourcing.domain import Aggregate as AggregateBase
else:
    AggregateBase = object

SEXES = ("F", "M", "U")


@lru_cache(maxsize=65536)  # every command asks; a SHA-1 each time is not nothing
def subject_uuid(study_id: str, subject_code: str) -> UUID:
    """The aggregate id of a subject: stable, derived from the study and subject code."""
    return uuid5(study_uuid(study_id), f"subject/{subject_code}")


class SubjectState(AggregateBase):
    """A subject's state and shared guards; the command classes beside this one build on it,
    and :class:`~domain.subject.aggregate.Subject` is all of them."""

    # The study's protocol, for the soft checks of a command: not state (nothing stored says
    # it), handed over by whoever creates the subject or loads it to run a command.
    protocol: StudyDefinition | None = None

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
        # Redaction requests by id (domain.subject.redaction), approved or not yet.
        self.redactions: dict[str, dict[str, Any]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        """A copy for a command to change (the aggregate cache hands out copies).

        Field by field, far cheaper than ``copy.deepcopy`` on a long casebook: scalars, dates
        and strings are shared, being immutable, and so are the records, which events never
        change in place (copy on write). A new mutable attribute must be copied here too (a
        test checks this).
        """
        clone: Self = object.__new__(type(self))
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
        clone.redactions = copy_json(self.redactions)
        return clone

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
