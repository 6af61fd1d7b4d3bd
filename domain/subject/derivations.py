"""Derived values following their inputs: the body-surface area in force, and the values
of other records re-derived when it moves (a height corrected, a weight removed)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from datetime import datetime

from domain.clock import require_aware
from domain.envelope import Envelope
from domain.records import BSA_DEPENDENT_KINDS, Record, copy_json, rederive
from domain.subject.events import DerivedValueRecomputed, Event
from domain.subject.state import SubjectState


class Derivations(SubjectState):
    """The subject's derived values that read other records."""

    def bsa_at(self, when: datetime) -> float | None:
        """The body-surface area in force at ``when``: the latest one measured by then."""
        latest: Record | None = None
        for record in self.records.values():
            if (record.kind == "vitals" and not record.removed and "bsa" in record.derived
                    and record.observed_at <= when
                    and (latest is None or record.observed_at >= latest.observed_at)):
                latest = record
        return None if latest is None else float(latest.derived["bsa"]["value"])

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
                self.trigger_event(DerivedValueRecomputed,
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
