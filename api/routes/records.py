"""A casebook's records: first entry, dated clinical changes, corrections and removals."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal, Principal
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
    WrittenOut,
)
from api.writes import (
    SubjectCommand,
    study_app,
    study_app_async,
    write_subject,
    write_subject_async,
)
from domain.envelope import Envelope
from domain.errors import InvalidInput, NotFound
from domain.permissions import CODING_FIELDS, Action, permitting_grant
from domain.subject import Subject

router = APIRouter(tags=["records"], responses=PROBLEM_RESPONSES)

SUBJECT = "/v1/studies/{study}/subjects/{subject}"
Kind = Literal["vitals", "doses", "therapies", "labs", "assessments", "adverse-events"]
WRITTEN = {"model": WrittenOut, "description": "Committed; the ETag is the new version"}


# First entries are what data-entry clients send most: their endpoints run on the event loop
# (see write_subject_async), the others in worker threads.
async def _enter(request: Request, principal: Principal, study: str, subject: str,
                 record_id: str, visit: str | None, command: SubjectCommand) -> JSONResponse:
    """Enter a new record (after checking its visit against the study's schedule)."""
    if visit is not None:
        visits = [v.code for v in (await study_app_async(request, study)).definition().visits]
        if visit not in visits:
            raise InvalidInput("visit", f"must be one of {', '.join(visits)}")
    return await write_subject_async(request, principal, study, subject, Action.ENTER,
                                     command, record_id=record_id, status=201)


@router.post(SUBJECT + "/vitals", status_code=201, responses={201: WRITTEN})
async def record_vital_signs(request: Request, principal: CurrentPrincipal, study: str,
                       subject: str, body: VitalsIn) -> JSONResponse:
    """Record vital signs; BSA is derived from height and weight."""
    rid = body.record_id or str(uuid.uuid4())
    measurements = {code: (m.value, m.unit) for code, m in body.measurements.items()}
    return await _enter(request, principal, study, subject, rid, body.visit,
                  lambda s, env, t: s.record_vital_signs(rid, body.observed_at, measurements,
                                                         env, t, body.visit))


@router.post(SUBJECT + "/doses", status_code=201, responses={201: WRITTEN})
async def administer_dose(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                    body: DoseIn) -> JSONResponse:
    """Record a dose of the investigational product; IU/m² from the BSA in force."""
    rid = body.record_id or str(uuid.uuid4())
    return await _enter(request, principal, study, subject, rid, body.visit,
                  lambda s, env, t: s.administer_dose(rid, body.observed_at, body.drug,
                                                      body.dose, body.unit, body.route, env, t,
                                                      body.visit, frequency=body.frequency))


@router.post(SUBJECT + "/therapies", status_code=201, responses={201: WRITTEN})
async def start_therapy(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  body: TherapyIn) -> JSONResponse:
    """Start a glucocorticoid or immunosuppressant course."""
    rid = body.record_id or str(uuid.uuid4())
    return await _enter(request, principal, study, subject, rid, None,
                  lambda s, env, t: s.start_therapy(rid, body.observed_at, body.drug,
                                                    body.category, body.dose_mg_per_day,
                                                    body.route, env, t, dose_mg=body.dose_mg,
                                                    frequency=body.frequency))


@router.post(SUBJECT + "/labs", status_code=201, responses={201: WRITTEN})
async def record_lab_result(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                      body: LabIn) -> JSONResponse:
    """Record a lab result (``observed_at``: when the sample was drawn)."""
    rid = body.record_id or str(uuid.uuid4())
    return await _enter(request, principal, study, subject, rid, body.visit,
                  lambda s, env, t: s.record_lab_result(
                      rid, body.observed_at, body.code, body.value, body.unit, env, t,
                      body.reference_low, body.reference_high, body.visit))


@router.post(SUBJECT + "/assessments", status_code=201, responses={201: WRITTEN})
async def record_assessment(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                      body: AssessmentIn) -> JSONResponse:
    """Record a SELENA-SLEDAI or ESSDAI assessment; its total is derived."""
    rid = body.record_id or str(uuid.uuid4())

    if body.instrument == "SLEDAI":
        items = {k: bool(v) for k, v in body.items.items()}
        return await _enter(request, principal, study, subject, rid, body.visit,
                      lambda s, env, t: s.record_sledai(rid, body.observed_at, items, env, t,
                                                        body.visit))
    levels = {k: int(v) for k, v in body.items.items()}
    return await _enter(request, principal, study, subject, rid, body.visit,
                  lambda s, env, t: s.record_essdai(rid, body.observed_at, levels, env, t,
                                                    body.visit))


@router.post(SUBJECT + "/adverse-events", status_code=201, responses={201: WRITTEN})
async def report_adverse_event(request: Request, principal: CurrentPrincipal, study: str,
                         subject: str, body: AdverseEventIn) -> JSONResponse:
    """Report an adverse event (``observed_at``: onset)."""
    rid = body.record_id or str(uuid.uuid4())
    details = body.model_dump(exclude={"record_id", "observed_at"})
    return await _enter(request, principal, study, subject, rid, None,
                  lambda s, env, t: s.report_adverse_event(rid, body.observed_at, details,
                                                           env, t))


@router.post(SUBJECT + "/therapies/{record}/changes", responses={200: WRITTEN})
def change_therapy(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                   record: str, body: TherapyChangeIn) -> JSONResponse:
    """A new daily dose from ``observed_at`` on (a taper step is a new fact, not a fix)."""
    return write_subject(request, principal, study, subject, Action.ENTER,
                         lambda s, env, t: s.change_therapy(record, body.observed_at,
                                                            body.dose_mg_per_day, env, t,
                                                            dose_mg=body.dose_mg),
                         record_id=record)


@router.post(SUBJECT + "/therapies/{record}/stop", responses={200: WRITTEN})
def stop_therapy(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                 record: str, body: EndIn) -> JSONResponse:
    """The course stopped at ``observed_at``."""
    return write_subject(request, principal, study, subject, Action.ENTER,
                         lambda s, env, t: s.stop_therapy(record, body.observed_at, env, t),
                         record_id=record)


@router.post(SUBJECT + "/adverse-events/{record}/updates", responses={200: WRITTEN})
def update_adverse_event(request: Request, principal: CurrentPrincipal, study: str,
                         subject: str, record: str, body: AdverseEventUpdateIn) -> JSONResponse:
    """The adverse event evolved (grade, action taken...) as of ``observed_at``. Changing
    its term, coding, category, relationship, seriousness or outcome needs a ``reason``."""
    changes = body.changes.given()
    return write_subject(request, principal, study, subject, Action.ENTER,
                         lambda s, env, t: s.update_adverse_event(record, body.observed_at,
                                                                  changes, env, t),
                         reason=body.reason, record_id=record)


@router.post(SUBJECT + "/adverse-events/{record}/resolution", responses={200: WRITTEN})
def resolve_adverse_event(request: Request, principal: CurrentPrincipal, study: str,
                          subject: str, record: str,
                          body: AdverseEventResolutionIn) -> JSONResponse:
    """The adverse event ended at ``observed_at`` with its outcome."""
    return write_subject(request, principal, study, subject, Action.ENTER,
                         lambda s, env, t: s.resolve_adverse_event(record, body.observed_at,
                                                                   body.outcome, env, t),
                         record_id=record)


@router.patch(SUBJECT + "/{kind}/{record}", responses={200: WRITTEN})
def correct_record(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                   kind: Kind, record: str, body: CorrectionIn) -> JSONResponse:
    """Correct one field (reason required). With ``query_id`` the correction answers that
    query. A data manager may change only the medical coding of an adverse event."""
    action = Action.ENTER
    site = study_app(request, study).subject(subject).site
    if (permitting_grant(principal.user.grants, Action.ENTER, study, site) is None
            and kind == "adverse-events" and body.field in CODING_FIELDS):
        action = Action.CODE

    def correct(s: Subject, env: Envelope, t: datetime) -> None:
        _require_kind(s, kind, record)
        if body.query_id is not None:
            s.correct_in_answer(body.query_id, record, body.field, body.value, env, t)
        else:
            s.correct(record, body.field, body.value, env, t)

    return write_subject(request, principal, study, subject, action, correct,
                         reason=body.reason, record_id=record)


@router.delete(SUBJECT + "/{kind}/{record}", responses={200: WRITTEN})
def remove_record(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                  kind: Kind, record: str, body: ReasonOnly) -> JSONResponse:
    """Remove a record (reason required); its values stay in the history."""

    def remove(s: Subject, env: Envelope, t: datetime) -> None:
        _require_kind(s, kind, record)
        s.remove(record, env, t)

    return write_subject(request, principal, study, subject, Action.ENTER, remove,
                         reason=body.reason, record_id=record)


@router.post(SUBJECT + "/withdrawal", responses={200: WRITTEN})
def withdraw(request: Request, principal: CurrentPrincipal, study: str, subject: str,
             body: WithdrawalIn) -> JSONResponse:
    """The subject left the study early at ``observed_at``."""
    return write_subject(request, principal, study, subject, Action.ENTER,
                         lambda s, env, t: s.withdraw(body.observed_at, body.reason, env, t))


@router.post(SUBJECT + "/completion", responses={200: WRITTEN})
def complete(request: Request, principal: CurrentPrincipal, study: str, subject: str,
             body: EndIn) -> JSONResponse:
    """The subject completed the study at ``observed_at``."""
    return write_subject(request, principal, study, subject, Action.ENTER,
                         lambda s, env, t: s.complete(body.observed_at, env, t))


def _require_kind(subject: Subject, kind: str, record_id: str) -> None:
    record = subject.records.get(record_id)
    if record is None or record.kind != kind:
        raise NotFound(f"no {kind} record {record_id!r} for subject {subject.subject_code}")
