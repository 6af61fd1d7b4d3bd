"""A casebook's records: first entry, dated clinical changes, corrections and removals.

Each route builds the command and hands it to the trial service, which holds the rules."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal, Principal
from api.entry_route import FirstEntryRoute
from api.schemas import (
    PROBLEM_RESPONSES,
    AdverseEventIn,
    AdverseEventResolutionIn,
    AdverseEventUpdateIn,
    AssessmentIn,
    CorrectionIn,
    DoseIn,
    EndIn,
    LabIn,
    ReasonOnly,
    TherapyChangeIn,
    TherapyIn,
    VitalsIn,
    WithdrawalIn,
    written_response,
)
from api.writes import IfMatch, reason_of, service_of, written
from domain.commands import (
    AdministerDose,
    ChangeTherapy,
    Complete,
    CorrectRecord,
    RecordAssessment,
    RecordKind,
    RecordLabResult,
    RecordVitalSigns,
    RemoveRecord,
    ReportAdverseEvent,
    ResolveAdverseEvent,
    StartTherapy,
    StopTherapy,
    SubjectCommand,
    UpdateAdverseEvent,
    Withdraw,
)

# First entries, the bulk of the traffic, skip FastAPI's dependency solving when plain.
router = APIRouter(tags=["records"], responses=PROBLEM_RESPONSES, route_class=FirstEntryRoute)

SUBJECT = "/v1/studies/{study}/subjects/{subject}"
WRITTEN = written_response()


# First entries are what data-entry clients send most: their endpoints run on the event loop
# (see TrialService.handle_async), the others in worker threads.
async def _enter(request: Request, principal: Principal, command: SubjectCommand,
                 record_id: str) -> JSONResponse:
    subject = await service_of(request).handle_async(command, principal.caller)
    return written(subject, record_id, 201)


def _write(request: Request, principal: Principal, command: SubjectCommand,
           record_id: str | None = None) -> JSONResponse:
    return written(service_of(request).handle(command, principal.caller), record_id)


@router.post(SUBJECT + "/vitals", status_code=201, responses={201: WRITTEN})
async def record_vital_signs(request: Request, principal: CurrentPrincipal, study: str,
                             subject: str, if_match: IfMatch, body: VitalsIn) -> JSONResponse:
    """Record vital signs; BSA is derived from height and weight."""
    rid = body.record_id or str(uuid.uuid4())
    measurements = {code: (m.value, m.unit) for code, m in body.measurements.items()}
    return await _enter(request, principal, RecordVitalSigns(
        study=study, subject=subject, expected_version=if_match,
        record_id=rid, observed_at=body.observed_at, measurements=measurements,
        visit=body.visit), rid)


@router.post(SUBJECT + "/doses", status_code=201, responses={201: WRITTEN})
async def administer_dose(request: Request, principal: CurrentPrincipal, study: str,
                          subject: str, if_match: IfMatch, body: DoseIn) -> JSONResponse:
    """Record a dose of the investigational product; IU/m² from the BSA in force."""
    rid = body.record_id or str(uuid.uuid4())
    return await _enter(request, principal, AdministerDose(
        study=study, subject=subject, expected_version=if_match,
        record_id=rid, observed_at=body.observed_at, drug=body.drug, dose=body.dose,
        unit=body.unit, route=body.route, visit=body.visit, frequency=body.frequency), rid)


@router.post(SUBJECT + "/therapies", status_code=201, responses={201: WRITTEN})
async def start_therapy(request: Request, principal: CurrentPrincipal, study: str,
                        subject: str, if_match: IfMatch, body: TherapyIn) -> JSONResponse:
    """Start a glucocorticoid or immunosuppressant course."""
    rid = body.record_id or str(uuid.uuid4())
    return await _enter(request, principal, StartTherapy(
        study=study, subject=subject, expected_version=if_match,
        record_id=rid, observed_at=body.observed_at, drug=body.drug, category=body.category,
        route=body.route, dose_mg_per_day=body.dose_mg_per_day, dose_mg=body.dose_mg,
        frequency=body.frequency), rid)


@router.post(SUBJECT + "/labs", status_code=201, responses={201: WRITTEN})
async def record_lab_result(request: Request, principal: CurrentPrincipal, study: str,
                            subject: str, if_match: IfMatch, body: LabIn) -> JSONResponse:
    """Record a lab result (``observed_at``: when the sample was drawn)."""
    rid = body.record_id or str(uuid.uuid4())
    return await _enter(request, principal, RecordLabResult(
        study=study, subject=subject, expected_version=if_match,
        record_id=rid, observed_at=body.observed_at, code=body.code, value=body.value,
        unit=body.unit, reference_low=body.reference_low,
        reference_high=body.reference_high, visit=body.visit), rid)


@router.post(SUBJECT + "/assessments", status_code=201, responses={201: WRITTEN})
async def record_assessment(request: Request, principal: CurrentPrincipal, study: str,
                            subject: str, if_match: IfMatch, body: AssessmentIn) -> JSONResponse:
    """Record a SELENA-SLEDAI or ESSDAI assessment; its total is derived."""
    rid = body.record_id or str(uuid.uuid4())
    return await _enter(request, principal, RecordAssessment(
        study=study, subject=subject, expected_version=if_match,
        record_id=rid, observed_at=body.observed_at, instrument=body.instrument,
        items=dict(body.items), visit=body.visit), rid)


@router.post(SUBJECT + "/adverse-events", status_code=201, responses={201: WRITTEN})
async def report_adverse_event(request: Request, principal: CurrentPrincipal, study: str,
                               subject: str,
                               if_match: IfMatch, body: AdverseEventIn) -> JSONResponse:
    """Report an adverse event (``observed_at``: onset)."""
    rid = body.record_id or str(uuid.uuid4())
    details = body.model_dump(exclude={"record_id", "observed_at"})
    return await _enter(request, principal, ReportAdverseEvent(
        study=study, subject=subject, expected_version=if_match,
        record_id=rid, observed_at=body.observed_at, details=details), rid)


@router.post(SUBJECT + "/therapies/{record}/changes", responses={200: WRITTEN})
def change_therapy(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                   record: str, if_match: IfMatch, body: TherapyChangeIn) -> JSONResponse:
    """A new daily dose from ``observed_at`` on (a taper step is a new fact, not a fix)."""
    return _write(request, principal, ChangeTherapy(
        study=study, subject=subject, expected_version=if_match,
        record_id=record, observed_at=body.observed_at, dose_mg_per_day=body.dose_mg_per_day,
        dose_mg=body.dose_mg), record)


@router.post(SUBJECT + "/therapies/{record}/stop", responses={200: WRITTEN})
def stop_therapy(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                 record: str, if_match: IfMatch, body: EndIn) -> JSONResponse:
    """The course stopped at ``observed_at``."""
    return _write(request, principal, StopTherapy(
        study=study, subject=subject, expected_version=if_match,
        record_id=record, observed_at=body.observed_at), record)


@router.post(SUBJECT + "/adverse-events/{record}/updates", responses={200: WRITTEN})
def update_adverse_event(request: Request, principal: CurrentPrincipal, study: str,
                         subject: str, record: str,
                         if_match: IfMatch, body: AdverseEventUpdateIn) -> JSONResponse:
    """The adverse event evolved (grade, action taken...) as of ``observed_at``. Changing
    its term, coding, category, relationship, seriousness or outcome needs a ``reason``."""
    return _write(request, principal, UpdateAdverseEvent(
        study=study, subject=subject, expected_version=if_match,
        record_id=record, observed_at=body.observed_at, changes=body.changes.given(),
        reason=reason_of(body.reason)), record)


@router.post(SUBJECT + "/adverse-events/{record}/resolution", responses={200: WRITTEN})
def resolve_adverse_event(request: Request, principal: CurrentPrincipal, study: str,
                          subject: str, record: str,
                          if_match: IfMatch, body: AdverseEventResolutionIn) -> JSONResponse:
    """The adverse event ended at ``observed_at`` with its outcome."""
    return _write(request, principal, ResolveAdverseEvent(
        study=study, subject=subject, expected_version=if_match,
        record_id=record, observed_at=body.observed_at, outcome=body.outcome), record)


@router.patch(SUBJECT + "/{kind}/{record}", responses={200: WRITTEN})
def correct_record(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                   kind: RecordKind, record: str,
                   if_match: IfMatch, body: CorrectionIn) -> JSONResponse:
    """Correct one field (reason required). With ``query_id`` the correction answers that
    query. A data manager may change only the medical coding of an adverse event."""
    return _write(request, principal, CorrectRecord(
        study=study, subject=subject, expected_version=if_match, kind=kind,
        record_id=record, field=body.field, value=body.value, reason=reason_of(body.reason),
        query_id=body.query_id), record)


@router.delete(SUBJECT + "/{kind}/{record}", responses={200: WRITTEN})
def remove_record(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  kind: RecordKind, record: str,
                  if_match: IfMatch, body: ReasonOnly) -> JSONResponse:
    """Remove a record (reason required); its values stay in the history."""
    return _write(request, principal, RemoveRecord(
        study=study, subject=subject, expected_version=if_match, kind=kind,
        record_id=record, reason=reason_of(body.reason)), record)


@router.post(SUBJECT + "/withdrawal", responses={200: WRITTEN})
def withdraw_subject(request: Request, principal: CurrentPrincipal, study: str, subject: str,
             if_match: IfMatch, body: WithdrawalIn) -> JSONResponse:
    """The subject left the study early at ``observed_at``."""
    return _write(request, principal, Withdraw(
        study=study, subject=subject, expected_version=if_match,
        observed_at=body.observed_at, withdrawal_reason=body.reason))


@router.post(SUBJECT + "/completion", responses={200: WRITTEN})
def complete_subject(request: Request, principal: CurrentPrincipal, study: str, subject: str,
             if_match: IfMatch, body: EndIn) -> JSONResponse:
    """The subject completed the study at ``observed_at``."""
    return _write(request, principal, Complete(
        study=study, subject=subject, expected_version=if_match,
        observed_at=body.observed_at))
