"""Soft checks and protocol deviations. A value that is plausible but suspicious (outside
the study's range, a dose off the protocol's, a visit outside its window) is stored as
entered, flagged, and queried; a departure from the protocol is recorded as a deviation,
found by a check or reported by a person. The checks themselves are in :mod:`domain.checks`."""

from __future__ import annotations

from datetime import date, datetime

from domain import checks, limits
from domain.clock import require_aware
from domain.envelope import Actor, Envelope
from domain.errors import InvalidInput, InvalidState, Problem
from domain.sdtm import is_sdtm_kind
from domain.study import StudyDefinition
from domain.subject.events import DeviationRecorded, QueryOpened, RecordChecked
from domain.subject.state import SubjectState


class SoftChecks(SubjectState):
    """The subject's soft checks, run after each entry or correction, and its deviations."""

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
        self.trigger_event(DeviationRecorded, timestamp=require_aware("recorded_at", at),
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
        self.trigger_event(RecordChecked, timestamp=recorded, envelope=system,
                           record_id=record_id, findings=findings)
        for finding in findings:
            text = f"Automatic check: {finding['message']}"
            # One late visit shows on each of its records: it is queried, and a deviation,
            # once.
            if (finding["check"], finding["field"]) in flagged or any(
                    q["text"] == text and q["status"] != "closed" for q in self.queries.values()):
                continue
            query_id = f"SC-{self.version + 1}"
            self.trigger_event(QueryOpened, timestamp=recorded, envelope=system,
                               query_id=query_id, on_record=record_id, on_field=finding["field"],
                               text=text)
            if finding["deviation"] is not None:
                self.trigger_event(DeviationRecorded, timestamp=recorded, envelope=system,
                                   deviation_id=f"DV-{self.version + 1}",
                                   category=finding["deviation"],
                                   description=finding["message"],
                                   occurred_on=record.observed_at.date(),
                                   severity=finding["severity"], detected_by="system",
                                   on_record=record_id)
