"""A subject's casebook: one consistency boundary for its records, status and lock.

Nothing is updated in place. A correction is an event naming the record, the field, the old
and new value, and the reason; a removal is an event too, and the removed value stays in history.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any

from eventsourcing.domain import Aggregate

from domain import checks, limits
from domain.clock import require_aware
from domain.envelope import Actor, Envelope
from domain.errors import (
    InvalidInput,
    InvalidState,
    NotFound,
    Problem,
)
from domain.records import (
    BSA_DEPENDENT_KINDS,
    Context,
    Record,
    copy_json,
    rederive,
    validate,
    vitals_from_measurements,
)
from domain.sdtm import is_sdtm_kind
from domain.study import StudyDefinition
from domain.subject import events
from domain.subject.enrolment import Enrolment
from domain.subject.fields import get_field, set_field
from domain.subject.sdtm_loading import SdtmLoading

# What an adverse event is, as opposed to how it evolves: an update changing one of these
# needs a reason (grade and action taken are dated clinical facts and need none).
AE_FIELDS_NEEDING_REASON = frozenset({
    "term", "category", "relationship", "serious", "seriousness_criteria", "outcome",
    "meddra_pt", "meddra_llt"})


class Subject(Enrolment, SdtmLoading, Aggregate):
    """One child in the study: consent, screening, enrollment, records, withdrawal, lock."""
    TOPIC = "Subject.v1"

    # The events, stored under their TOPIC names (see domain/subject/events.py), by concern.
    Event = events.Event
    Created = events.Created
    # consent, screening, enrolment; a subject loaded from SDTM
    Consented = events.Consented
    Imported = events.Imported
    Screened = events.Screened
    Enrolled = events.Enrolled
    # first entries of records
    RecordEntered = events.RecordEntered
    VitalSignsRecorded = events.VitalSignsRecorded
    DoseAdministered = events.DoseAdministered
    TherapyStarted = events.TherapyStarted
    LabResultRecorded = events.LabResultRecorded
    AssessmentRecorded = events.AssessmentRecorded
    AdverseEventReported = events.AdverseEventReported
    RowImported = events.RowImported
    # changes to recorded records
    RecordChanged = events.RecordChanged
    TherapyChanged = events.TherapyChanged
    TherapyStopped = events.TherapyStopped
    AdverseEventUpdated = events.AdverseEventUpdated
    AdverseEventResolved = events.AdverseEventResolved
    RecordCorrected = events.RecordCorrected
    RecordRemoved = events.RecordRemoved
    # derived values following their inputs; soft checks and protocol deviations
    DerivedValueRecomputed = events.DerivedValueRecomputed
    RecordChecked = events.RecordChecked
    DeviationRecorded = events.DeviationRecorded
    # end of participation, locks
    Withdrawn = events.Withdrawn
    Completed = events.Completed
    SubjectLocked = events.SubjectLocked
    SubjectUnlocked = events.SubjectUnlocked
    # signatures, queries, source-data verification
    Signed = events.Signed
    QueryOpened = events.QueryOpened
    QueryAnswered = events.QueryAnswered
    QueryClosed = events.QueryClosed
    SourceVerified = events.SourceVerified

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

    def data_changed(self, event: events.Event) -> None:
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

    def _query(self, query_id: str) -> dict[str, Any]:
        query = self.queries.get(query_id)
        if query is None:
            raise NotFound(f"no query {query_id!r} for subject {self.subject_code}")
        return query

    def _enter(
        self,
        event_class: type[events.RecordEntered],
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
        event_class: type[events.RecordChanged],
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

    def _follow_inputs(self, event_class: type[events.Event], record_id: str, envelope: Envelope,
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

