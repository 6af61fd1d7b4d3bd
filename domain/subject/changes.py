"""Changes to a record already entered. A dated clinical evolution (a therapy's new dose
or stop, an adverse event worsening or resolving) is a new fact with its own valid time; a
correction or removal says what was entered was wrong and needs a reason, and so does a
changed judgement of an adverse event (:data:`AE_FIELDS_NEEDING_REASON`). The old value
stays in history either way."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain import limits
from domain.clock import require_aware
from domain.envelope import Envelope
from domain.errors import InvalidInput, InvalidState
from domain.records import Context, Record, copy_json, validate
from domain.sdtm import is_sdtm_kind
from domain.subject.derivations import Derivations
from domain.subject.events import (
    AdverseEventResolved,
    AdverseEventUpdated,
    RecordChanged,
    RecordCorrected,
    RecordRemoved,
    TherapyChanged,
    TherapyStopped,
)
from domain.subject.fields import get_field, set_field
from domain.subject.soft_checks import SoftChecks

# What an adverse event is, as opposed to how it evolves: an update changing one of these
# needs a reason (grade and action taken are dated clinical facts and need none).
AE_FIELDS_NEEDING_REASON = frozenset({
    "term", "category", "relationship", "serious", "seriousness_criteria", "outcome",
    "meddra_pt", "meddra_llt"})


class RecordChanges(SoftChecks, Derivations):
    """The subject's commands changing or removing a record."""

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
        self._change(TherapyChanged, record, given, envelope, at,
                     observed_at=observed_at)

    def stop_therapy(
        self, record_id: str, observed_at: datetime, envelope: Envelope, at: datetime
    ) -> None:
        """Stop a running course at ``observed_at``."""
        record = self._record(record_id, "therapies")
        if record.fields.get("stopped_at"):
            raise InvalidState(f"therapy {record_id} has already stopped")
        observed = self._valid_time(observed_at, at, not_before=record.observed_at)
        self._change(TherapyStopped, record, {"stopped_at": observed.isoformat()},
                     envelope, at, observed_at=observed)

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
        self._change(AdverseEventUpdated, record, changes, envelope, at,
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
        self._change(AdverseEventResolved, record,
                     {"ended_at": ended.isoformat(), "outcome": outcome}, envelope, at,
                     observed_at=ended)

    def correct(
        self, record_id: str, field: str, new_value: Any, envelope: Envelope, at: datetime
    ) -> None:
        """Correct one field of what was entered; the reason is mandatory."""
        envelope.require_reason()
        record = self._record(record_id)
        self._change(RecordCorrected, record, {field: new_value}, envelope, at)
        self._check_softly(record_id, envelope, at)

    def remove(self, record_id: str, envelope: Envelope, at: datetime) -> None:
        """Remove a record; the reason is mandatory and its values stay in history."""
        envelope.require_reason()
        envelope = self._check_editable(envelope)
        record = self._record(record_id)
        self.trigger_event(
            RecordRemoved,
            timestamp=require_aware("recorded_at", at),
            envelope=envelope,
            record_id=record_id,
            removed_fields=copy_json(record.fields),
        )
        self._follow_inputs(RecordRemoved, record_id, envelope, at)

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
            old = get_field(record.fields, name)
            set_field(merged, name, value)
            if old != value:
                changes[name] = {"old": old, "new": value}
        if not changes:
            raise InvalidInput(next(iter(new_values), "value"), "is unchanged")
        clean, derived = validate(record.kind, merged, Context(self.bsa_at(record.observed_at)))
        # Store what validation normalised (e.g. 5 -> 5.0), so replay gives the same record.
        for name, change in changes.items():
            change["new"] = get_field(clean, name)
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
