"""First entries of records: vital signs, doses, therapies, labs, assessments, adverse
events. Each is validated (hard checks refuse), stored, then soft-checked and followed by
the values derived from it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain import limits
from domain.clock import entered_offset, require_aware
from domain.envelope import Envelope
from domain.errors import InvalidInput, InvalidState
from domain.records import BSA_DEPENDENT_KINDS, Context, validate, vitals_from_measurements
from domain.sdtm import is_sdtm_kind
from domain.subject.derivations import Derivations
from domain.subject.events import (
    AdverseEventReported,
    AssessmentRecorded,
    DoseAdministered,
    LabResultRecorded,
    RecordEntered,
    TherapyStarted,
    VitalSignsRecorded,
)
from domain.subject.soft_checks import SoftChecks


class RecordEntries(SoftChecks, Derivations):
    """The subject's commands entering a new record."""

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
        self._enter(VitalSignsRecorded, "vitals", record_id, observed_at, visit,
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
        self._enter(DoseAdministered, "doses", record_id, observed_at, visit,
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
        self._enter(TherapyStarted, "therapies", record_id, observed_at, None,
                    fields, envelope, at)

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
        self._enter(LabResultRecorded, "labs", record_id, collected_at, visit,
                    fields, envelope, at)

    def record_sledai(
        self, record_id: str, observed_at: datetime, items: Mapping[str, bool],
        envelope: Envelope, at: datetime, visit: str | None = None,
    ) -> None:
        """Record a SELENA-SLEDAI assessment; the total (0-105) is derived."""
        fields = {"instrument": "SLEDAI", "items": dict(items)}
        self._enter(AssessmentRecorded, "assessments", record_id, observed_at, visit,
                    fields, envelope, at)

    def record_essdai(
        self, record_id: str, observed_at: datetime, domains: Mapping[str, int],
        envelope: Envelope, at: datetime, visit: str | None = None,
    ) -> None:
        """Record an ESSDAI assessment; the total (0-123) and activity level are derived."""
        fields = {"instrument": "ESSDAI", "items": dict(domains)}
        self._enter(AssessmentRecorded, "assessments", record_id, observed_at, visit,
                    fields, envelope, at)

    def report_adverse_event(
        self, record_id: str, onset_at: datetime, details: Mapping[str, Any],
        envelope: Envelope, at: datetime,
    ) -> None:
        """Report an adverse event (term, category, CTCAE grade, seriousness, relationship...)."""
        fields = {"seriousness_criteria": [], "meddra_pt": None, "meddra_llt": None,
                  "ended_at": None, **details}
        self._enter(AdverseEventReported, "adverse-events", record_id, onset_at, None,
                    fields, envelope, at)

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
        # Only doses and therapies derive from the BSA in force (looking it up is a scan of
        # the casebook, as long as a lab's entry otherwise).
        bsa = self.bsa_at(observed) if kind in BSA_DEPENDENT_KINDS else None
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
            observed_offset=entered_offset(observed_at),
        )
        self._follow_inputs(event_class, record_id, envelope, at)
        self._check_softly(record_id, envelope, at)
