"""Studies and their subjects: set-up, enrollment, casebooks now and as of a past time,
locks, the audit trail and its review, outcome tables and diffs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal, Forbidden
from api.schemas import PROBLEM_RESPONSES, AuditReviewIn, EnrollmentIn, ReasonOnly, StudyIn
from api.writes import expected_version, reason_of, runtime_of, service_of, study_app, written
from domain.clock import require_aware
from domain.commands import (
    EnrolSubject,
    LockCasebook,
    LockStudy,
    RegisterStudy,
    SignOffAuditReview,
    UnlockCasebook,
    UnlockStudy,
)
from domain.permissions import Action, readable_sites
from domain.study import Study
from infra.postgres import connect, schema_for_study
from projections.casebook import at_valid_time, casebook
from projections.queries import AuditQuery, audit_page, diff, subject_list

router = APIRouter(tags=["studies"], responses=PROBLEM_RESPONSES)

AsOf = Annotated[datetime | None, Query(
    description="Recorded time (ISO 8601 with offset): what the system showed then")]
ValidAt = Annotated[datetime | None, Query(
    description="Clinical time (ISO 8601 with offset): what held then")]


def _study_view(study: Study) -> dict[str, Any]:
    return {"study_id": study.definition.study_id, "definition": study.definition_data,
            "locked": study.locked, "audit_reviewed_through": study.reviewed_through,
            "version": study.version}


@router.post("/v1/studies", status_code=201)
def register_study(request: Request, principal: CurrentPrincipal,
                   body: StudyIn) -> dict[str, Any]:
    """Register a study from its definition (an admin of that study id)."""
    return _study_view(service_of(request).handle(
        RegisterStudy(study=body.study_id, definition=body.model_dump(mode="json")),
        principal.caller))


@router.get("/v1/studies/{study}")
def get_study(request: Request, principal: CurrentPrincipal, study: str) -> dict[str, Any]:
    """A study's definition, lock and audit-review state (anyone with a role in it)."""
    if not any(g.study in ("*", study) for g in principal.user.grants):
        raise Forbidden(f"{principal.user.username} holds no role at {study}")
    return _study_view(study_app(request, study).study())


@router.post("/v1/studies/{study}/subjects", status_code=201)
def enroll_subject(request: Request, principal: CurrentPrincipal, study: str,
                   body: EnrollmentIn) -> JSONResponse:
    """Consent, screen (every criterion) and enroll a subject — all stored, or nothing."""
    return written(service_of(request).handle(EnrolSubject(
        study=study, subject=body.subject, site=body.site, date_of_birth=body.date_of_birth,
        sex=body.sex, disease=body.disease, consent_date=body.consent_date,
        screening_answers=body.screening, arm=body.arm, enrolled_on=body.enrolled_on),
        principal.caller), None, 201)


@router.get("/v1/studies/{study}/subjects")
def list_subjects(request: Request, principal: CurrentPrincipal,
                  study: str) -> list[dict[str, Any]]:
    """Subjects at the sites you may read, with status, arm, version and lock."""
    study_app(request, study)
    principal.grant_for_any_site(Action.READ, study)
    sites = readable_sites(principal.user.grants, study)
    runtime = runtime_of(request)
    runtime.project(study)
    with connect(runtime.url) as conn:
        return subject_list(conn, schema_for_study(study), sites)


@router.get("/v1/studies/{study}/subjects/{subject}")
def get_subject(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                as_of: AsOf = None, valid_at: ValidAt = None) -> JSONResponse:
    """A subject's casebook now, or as the system showed it at ``as_of``; with ``valid_at``,
    what it said held at that clinical time. The ETag is the version to send as If-Match."""
    app = study_app(request, study)
    current = app.subject(subject)
    principal.grant_for(Action.READ, study, current.site)
    if as_of is None:
        book = casebook(current)
    else:
        when = require_aware("as_of", as_of)
        book = casebook(app.subject_as_of(subject, when), as_of=when)
    if valid_at is not None:
        book = at_valid_time(book, require_aware("valid_at", valid_at))
    return JSONResponse(book, headers={"ETag": f'"{book["version"]}"'})


@router.get("/v1/studies/{study}/subjects/{subject}/history")
def subject_history(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                    cursor: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """The subject's audit trail: every field-level change with who, role, when, why."""
    app = study_app(request, study)
    principal.grant_for(Action.READ, study, app.subject(subject).site)
    runtime = runtime_of(request)
    runtime.project(study)
    with connect(runtime.url) as conn:
        return audit_page(conn, schema_for_study(study),
                          AuditQuery({"subject_code": subject}), cursor, limit)


@router.get("/v1/studies/{study}/audit")
def study_audit(
    request: Request, principal: CurrentPrincipal, study: str,
    site: str | None = None, subject: str | None = None, record_id: str | None = None,
    field: str | None = None, user_id: str | None = None, event_type: str | None = None,
    recorded_from: Annotated[datetime | None, Query(alias="from")] = None,
    recorded_to: Annotated[datetime | None, Query(alias="to")] = None,
    cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The study's audit trail in commit order, filtered, one page at a time.

    Whoever reads only some sites must name one of them in ``site``.
    """
    study_app(request, study)
    principal.grant_for_any_site(Action.READ, study)
    sites = readable_sites(principal.user.grants, study)
    if sites is not None and site not in sites:
        raise Forbidden(f"{principal.user.username} reads only sites {sorted(sites)}: "
                        "name one in site=")
    filters = {k: v for k, v in {"site": site, "subject_code": subject, "record_id": record_id,
                                 "field": field, "user_id": user_id,
                                 "event_type": event_type}.items() if v is not None}
    query = AuditQuery(filters,
                       require_aware("from", recorded_from) if recorded_from else None,
                       require_aware("to", recorded_to) if recorded_to else None)
    runtime = runtime_of(request)
    runtime.project(study)
    with connect(runtime.url) as conn:
        return audit_page(conn, schema_for_study(study), query, cursor, limit)


@router.post("/v1/studies/{study}/audit/reviews", status_code=201)
def review_audit_trail(request: Request, principal: CurrentPrincipal, study: str,
                       body: AuditReviewIn) -> dict[str, Any]:
    """Sign off the audit trail as reviewed through a log position."""
    return _study_view(service_of(request).handle(SignOffAuditReview(
        study=study, through_position=body.through_position, comment=body.comment),
        principal.caller))


@router.get("/v1/studies/{study}/outcomes")
def outcomes(request: Request, principal: CurrentPrincipal, study: str,
             as_of: AsOf = None, valid_at: ValidAt = None) -> dict[str, Any]:
    """The study's outcome tables as of ``as_of`` (default: now); with ``valid_at``, of what
    the records said held at that clinical time."""
    study_app(request, study)
    principal.grant_for(Action.READ, study, None)
    when = require_aware("as_of", as_of) if as_of is not None else None
    valid = require_aware("valid_at", valid_at) if valid_at is not None else None
    result: dict[str, Any] = runtime_of(request).outcomes(study, when, valid)
    return result


@router.get("/v1/studies/{study}/outcomes/cell")
def outcome_cell(request: Request, principal: CurrentPrincipal, study: str,
                 cell: Annotated[str, Query(alias="id", max_length=500,
                                            description="The cell's id, as the tables give it")],
                 as_of: AsOf = None, valid_at: ValidAt = None) -> dict[str, Any]:
    """The subjects and records behind one cell of the outcome tables as of ``as_of`` (and
    ``valid_at``), each record with the log positions of its events (their inclusion proofs:
    the ledger routes)."""
    study_app(request, study)
    principal.grant_for(Action.READ, study, None)
    when = require_aware("as_of", as_of) if as_of is not None else None
    valid = require_aware("valid_at", valid_at) if valid_at is not None else None
    result: dict[str, Any] = runtime_of(request).outcome_cell(study, cell, when, valid)
    return result


@router.get("/v1/studies/{study}/diff")
def changes_between(
    request: Request, principal: CurrentPrincipal, study: str,
    since: Annotated[datetime, Query(alias="from", description="Older recorded time")],
    until: Annotated[datetime, Query(alias="to", description="Newer recorded time")],
) -> list[dict[str, Any]]:
    """Every header or record whose rendering changed between two recorded times."""
    study_app(request, study)
    principal.grant_for(Action.READ, study, None)
    runtime = runtime_of(request)
    runtime.project(study)
    with connect(runtime.url) as conn:
        return diff(conn, schema_for_study(study), since, until)


@router.post("/v1/studies/{study}/lock")
def lock_study(request: Request, principal: CurrentPrincipal, study: str,
               body: ReasonOnly) -> dict[str, Any]:
    """Lock the study: every casebook edit is refused (423) until it is unlocked."""
    return _study_view(service_of(request).handle(
        LockStudy(study=study, reason=reason_of(body.reason)), principal.caller))


@router.post("/v1/studies/{study}/unlock")
def unlock_study(request: Request, principal: CurrentPrincipal, study: str,
                 body: ReasonOnly) -> dict[str, Any]:
    """Unlock the study (reason required)."""
    return _study_view(service_of(request).handle(
        UnlockStudy(study=study, reason=reason_of(body.reason)), principal.caller))


@router.post("/v1/studies/{study}/subjects/{subject}/lock")
def lock_subject(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                 body: ReasonOnly) -> JSONResponse:
    """Lock a casebook (reason required)."""
    return written(service_of(request).handle(LockCasebook(
        study=study, subject=subject, expected_version=expected_version(request),
        reason=reason_of(body.reason)), principal.caller), None)


@router.post("/v1/studies/{study}/subjects/{subject}/unlock")
def unlock_subject(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                   body: ReasonOnly) -> JSONResponse:
    """Unlock a casebook (reason required); later edits are post-lock edits."""
    return written(service_of(request).handle(UnlockCasebook(
        study=study, subject=subject, expected_version=expected_version(request),
        reason=reason_of(body.reason)), principal.caller), None)
