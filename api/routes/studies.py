"""Studies and their subjects: set-up, enrollment, casebooks now and as of a past time,
locks, the audit trail and its review, outcome tables and diffs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from api.auth import CurrentPrincipal, Forbidden, Principal
from api.blinded import mask_of, refuse_blind, shown, view_key
from api.etags import NOT_MODIFIED, IfNoneMatch, etag, not_modified
from api.read_headers import READ_FROM, tell
from api.responses import (
    AuditPage,
    Casebook,
    Change,
    OutcomeCell,
    Outcomes,
    StudyOut,
    StudySummary,
    SubjectSummary,
)
from api.schemas import (
    ETAG,
    PROBLEM_RESPONSES,
    AuditReviewIn,
    EnrollmentIn,
    ReasonOnly,
    StudyIn,
    UnblindingIn,
    written_response,
)
from api.writes import IfMatch, reason_of, runtime_of, service_of, study_app, written
from domain.clock import require_aware
from domain.commands import (
    EnrolSubject,
    LockCasebook,
    LockStudy,
    RegisterStudy,
    SignOffAuditReview,
    UnblindSubject,
    UnlockCasebook,
    UnlockStudy,
)
from domain.errors import InvalidInput
from domain.permissions import Action, readable_sites
from domain.review import REVIEW_FILTERS, review_filter
from domain.study import Study
from infra.postgres import schema_for_study
from projections.casebook import at_valid_time, casebook
from projections.queries import AuditQuery, audit_page, diff, subject_list

router = APIRouter(tags=["studies"], responses=PROBLEM_RESPONSES)

AsOf = Annotated[datetime | None, Query(
    description="Recorded time (ISO 8601 with offset): what the system showed then")]
ValidAt = Annotated[datetime | None, Query(
    description="Clinical time (ISO 8601 with offset): what held then")]
Cursor = Annotated[str | None, Query(
    max_length=200, description="The next_cursor of the previous page (none: the first page)")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Entries per page")]
ReviewName = Literal["after-signature", "after-lock", "sponsor-staff", "late-entry",
                     "frequent-critical"]
REVIEW_DESCRIPTION = "A review filter: " + "; ".join(
    f"{name}: {meaning}" for name, meaning in REVIEW_FILTERS.items())


def _typed(model: Any, description: str, **extra: Any) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "description": description, **extra}}


def _study_view(request: Request, principal: Principal, study: Study) -> dict[str, Any]:
    view = {"study_id": study.definition.study_id, "definition": study.definition_data,
            "locked": study.locked, "audit_reviewed_through": study.reviewed_through,
            "audit_reviews": dict(study.reviews), "version": study.version}
    return shown(request, principal, study.definition.study_id, view)


@router.get("/v1/studies", response_model=list[StudySummary])
def list_studies(request: Request, principal: CurrentPrincipal) -> list[StudySummary]:
    """The studies you hold a role in (every study of the deployment for a role at every
    study), by id."""
    grants = principal.user.grants
    return [StudySummary(study_id=study, roles=sorted({g.role for g in grants
                                                       if g.study in ("*", study)}))
            for study, _ in sorted(runtime_of(request).studies())
            if any(g.study in ("*", study) for g in grants)]


@router.post("/v1/studies", status_code=201, response_model=None,
             responses={201: {"model": StudyOut, "description": "Registered"}})
def register_study(request: Request, principal: CurrentPrincipal,
                   body: StudyIn) -> dict[str, Any]:
    """Register a study from its definition (an admin of that study id)."""
    # The optional declarations are stored only when made (a definition keeps its shape).
    definition = body.model_dump(mode="json", exclude={
        name for name in ("audit_review", "blinding") if getattr(body, name) is None})
    return _study_view(request, principal, service_of(request).handle(
        RegisterStudy(study=body.study_id, definition=definition), principal.caller))


@router.get("/v1/studies/{study}", response_model=None,
            responses=_typed(StudyOut, "The study"))
def get_study(request: Request, principal: CurrentPrincipal, study: str) -> dict[str, Any]:
    """A study's definition, lock and audit-review state (anyone with a role in it)."""
    if not any(g.study in ("*", study) for g in principal.user.grants):
        raise Forbidden(f"{principal.user.username} holds no role at {study}")
    return _study_view(request, principal, study_app(request, study).study())


@router.post("/v1/studies/{study}/subjects", status_code=201,
             responses={201: written_response("Enrolled; the ETag is its version")})
def enroll_subject(request: Request, principal: CurrentPrincipal, study: str,
                   body: EnrollmentIn) -> JSONResponse:
    """Consent, screen (every criterion) and enroll a subject — all stored, or nothing."""
    return written(service_of(request).handle(EnrolSubject(
        study=study, subject=body.subject, site=body.site, date_of_birth=body.date_of_birth,
        sex=body.sex, disease=body.disease, consent_date=body.consent_date,
        screening_answers=body.screening, arm=body.arm, enrolled_on=body.enrolled_on),
        principal.caller), None, 201)


@router.get("/v1/studies/{study}/subjects", response_model=None,
            responses=_typed(list[SubjectSummary], "The subjects, by code"))
def list_subjects(request: Request, principal: CurrentPrincipal,
                  study: str) -> list[dict[str, Any]]:
    """Subjects at the sites you may read, with status, arm, version and lock."""
    study_app(request, study)
    principal.grant_for_any_site(Action.READ, study)
    sites = readable_sites(principal.user.grants, study)
    runtime = runtime_of(request)
    runtime.project(study)
    with runtime.primary_read() as conn:
        return shown(request, principal, study, subject_list(conn, schema_for_study(study),
                                                            sites))


@router.get("/v1/studies/{study}/subjects/{subject}", response_model=None,
            responses={**_typed(Casebook, "The casebook", headers=ETAG), **NOT_MODIFIED})
def get_casebook(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                 if_none_match: IfNoneMatch = None, as_of: AsOf = None,
                 valid_at: ValidAt = None) -> Response:
    """A subject's casebook now, or as the system showed it at ``as_of``; with ``valid_at``,
    what it said held at that clinical time. The ETag of the current casebook is the version
    to send as If-Match; each ``as_of``/``valid_at`` view has an ETag of its own."""
    app = study_app(request, study)
    current = app.subject(subject)
    principal.grant_for(Action.READ, study, current.site)
    clinical = require_aware("valid_at", valid_at) if valid_at is not None else None
    if as_of is None:
        subject_then = current
        when = None
    else:
        when = require_aware("as_of", as_of)
        subject_then = app.subject_as_of(subject, when)
    tag = etag(subject_then.version, when, clinical,
               view_key(mask_of(request, principal, study), subject))
    unchanged = not_modified(if_none_match, tag)
    if unchanged is not None:
        return unchanged
    book = casebook(subject_then, as_of=when)
    if clinical is not None:
        book = at_valid_time(book, clinical)
    return JSONResponse(shown(request, principal, study, book), headers={"ETag": tag})


@router.get("/v1/studies/{study}/subjects/{subject}/history", response_model=None,
            responses={**_typed(AuditPage, "One page of the subject's audit trail",
                                headers={**ETAG, **READ_FROM}), **NOT_MODIFIED})
def get_subject_history(request: Request, principal: CurrentPrincipal, study: str,
                        subject: str, if_none_match: IfNoneMatch = None,
                        cursor: Cursor = None, limit: Limit = 100) -> Response:
    """The subject's audit trail: every field-level change with who, role, when, why; one
    page at a time (``next_cursor``). The ETag changes with the subject's version."""
    app = study_app(request, study)
    current = app.subject(subject)
    principal.grant_for(Action.READ, study, current.site)
    tag = etag(current.version, "history", cursor, limit,
               view_key(mask_of(request, principal, study), subject))
    unchanged = not_modified(if_none_match, tag)
    if unchanged is not None:
        return unchanged
    runtime = runtime_of(request)
    runtime.project(study)
    with runtime.reading(study) as (conn, source):
        page = audit_page(conn, schema_for_study(study),
                          AuditQuery({"subject_code": subject}), cursor, limit)
    tell(request)(source)
    return JSONResponse(shown(request, principal, study, page), headers={"ETag": tag})


@router.get("/v1/studies/{study}/audit", response_model=None,
            responses=_typed(AuditPage, "One page of the audit trail", headers=READ_FROM))
def get_audit_trail(
    request: Request, principal: CurrentPrincipal, study: str,
    site: str | None = None, subject: str | None = None, record_id: str | None = None,
    field: str | None = None, user_id: str | None = None, event_type: str | None = None,
    recorded_from: Annotated[datetime | None, Query(alias="from")] = None,
    recorded_to: Annotated[datetime | None, Query(alias="to")] = None,
    cursor: Cursor = None, limit: Limit = 100,
    # (After the others: the console passes those by position.)
    review: Annotated[ReviewName | None, Query(description=REVIEW_DESCRIPTION)] = None,
    late_days: Annotated[int | None, Query(
        ge=1, le=100_000, description="review=late-entry: recorded more than this many days "
                                      "after the observation (default: the study's)")] = None,
    min_changes: Annotated[int | None, Query(
        ge=1, le=100_000, description="review=frequent-critical: a critical field of one "
                                      "subject changed at least this often (default: the "
                                      "study's)")] = None,
) -> dict[str, Any]:
    """The study's audit trail in commit order, filtered, one page at a time; with
    ``review``, only the changes that review filter selects (ICH E6(R3) audit-trail review).

    Whoever reads only some sites must name one of them in ``site``.
    """
    app = study_app(request, study)
    principal.grant_for_any_site(Action.READ, study)
    sites = readable_sites(principal.user.grants, study)
    if sites is not None and site not in sites:
        raise Forbidden(f"{principal.user.username} reads only sites {sorted(sites)}: "
                        "name one in site=")
    filters = {k: v for k, v in {"site": site, "subject_code": subject, "record_id": record_id,
                                 "field": field, "user_id": user_id,
                                 "event_type": event_type}.items() if v is not None}
    rules = app.study().definition.review
    query = AuditQuery(filters,
                       require_aware("from", recorded_from) if recorded_from else None,
                       require_aware("to", recorded_to) if recorded_to else None,
                       None if review is None else review_filter(review, rules, late_days,
                                                                 min_changes))
    if review is None and (late_days is not None or min_changes is not None):
        raise InvalidInput("review", "is required with late_days or min_changes")
    runtime = runtime_of(request)
    runtime.project(study)
    with runtime.reading(study, query.recorded_to) as (conn, source):
        page = audit_page(conn, schema_for_study(study), query, cursor, limit)
    tell(request)(source)
    return shown(request, principal, study, page)


@router.post("/v1/studies/{study}/audit/reviews", status_code=201, response_model=None,
             responses={201: {"model": StudyOut, "description": "Signed off"}})
def review_audit_trail(request: Request, principal: CurrentPrincipal, study: str,
                       body: AuditReviewIn) -> dict[str, Any]:
    """Sign off the audit trail as reviewed through a log position (one the log holds),
    all of it or as one review filter selects it (``review``, with the thresholds it was
    read with); the sign-off names its filter and thresholds."""
    return _study_view(request, principal, service_of(request).handle(SignOffAuditReview(
        study=study, through_position=body.through_position, comment=body.comment,
        review=body.review, late_days=body.late_days, min_changes=body.min_changes),
        principal.caller))


@router.post("/v1/studies/{study}/unblindings", status_code=201, response_model=None,
             responses={201: {"model": StudyOut, "description": "Unblinded to you"}})
def unblind_subject(request: Request, principal: CurrentPrincipal, study: str,
                    body: UnblindingIn) -> dict[str, Any]:
    """Disclose one subject's blinded items (arm, drug identity) to you, in a blinded study,
    with a reason (e.g. an emergency): a role the study declares may unblind, at the
    subject's site. Recorded in the audit trail; afterwards you see that subject unmasked."""
    return _study_view(request, principal, service_of(request).handle(UnblindSubject(
        study=study, subject=body.subject, reason=reason_of(body.reason)), principal.caller))


@router.get("/v1/studies/{study}/outcomes", response_model=None,
            responses=_typed(Outcomes, "The outcome tables", headers=READ_FROM))
def get_outcomes(request: Request, principal: CurrentPrincipal, study: str,
                 as_of: AsOf = None, valid_at: ValidAt = None) -> dict[str, Any]:
    """The study's outcome tables as of ``as_of`` (default: now); with ``valid_at``, of what
    the records said held at that clinical time."""
    study_app(request, study)
    principal.grant_for(Action.READ, study, None)
    refuse_blind(request, principal, study, "the outcome tables (by arm)")
    when = require_aware("as_of", as_of) if as_of is not None else None
    valid = require_aware("valid_at", valid_at) if valid_at is not None else None
    result: dict[str, Any] = runtime_of(request).outcomes(
        study, when, valid, told=tell(request))
    return result


@router.get("/v1/studies/{study}/outcomes/cell", response_model=None,
            responses=_typed(OutcomeCell, "The subjects and records behind the cell",
                             headers=READ_FROM))
def get_outcome_cell(request: Request, principal: CurrentPrincipal, study: str,
                 cell: Annotated[str, Query(alias="id", max_length=500,
                                            description="The cell's id, as the tables give it")],
                 as_of: AsOf = None, valid_at: ValidAt = None) -> dict[str, Any]:
    """The subjects and records behind one cell of the outcome tables as of ``as_of`` (and
    ``valid_at``), each record with the log positions of its events (their inclusion proofs:
    the ledger routes)."""
    study_app(request, study)
    principal.grant_for(Action.READ, study, None)
    refuse_blind(request, principal, study, "an outcome cell (by arm)")
    when = require_aware("as_of", as_of) if as_of is not None else None
    valid = require_aware("valid_at", valid_at) if valid_at is not None else None
    result: dict[str, Any] = runtime_of(request).outcome_cell(
        study, cell, when, valid, told=tell(request))
    return result


@router.get("/v1/studies/{study}/diff", response_model=None,
            responses=_typed(list[Change], "What changed, by subject and record",
                             headers=READ_FROM))
def get_changes(
    request: Request, principal: CurrentPrincipal, study: str,
    since: Annotated[datetime, Query(alias="from", description="Older recorded time")],
    until: Annotated[datetime, Query(alias="to", description="Newer recorded time")],
) -> list[dict[str, Any]]:
    """Every header or record whose rendering changed between two recorded times."""
    study_app(request, study)
    principal.grant_for(Action.READ, study, None)
    runtime = runtime_of(request)
    runtime.project(study)
    with runtime.reading(study, until) as (conn, source):
        changes = diff(conn, schema_for_study(study), since, until)
    tell(request)(source)
    return shown(request, principal, study, changes)


@router.post("/v1/studies/{study}/lock", response_model=None,
             responses=_typed(StudyOut, "Locked"))
def lock_study(request: Request, principal: CurrentPrincipal, study: str,
               body: ReasonOnly) -> dict[str, Any]:
    """Lock the study: every casebook edit is refused (423) until it is unlocked."""
    return _study_view(request, principal, service_of(request).handle(
        LockStudy(study=study, reason=reason_of(body.reason)), principal.caller))


@router.post("/v1/studies/{study}/unlock", response_model=None,
             responses=_typed(StudyOut, "Unlocked"))
def unlock_study(request: Request, principal: CurrentPrincipal, study: str,
                 body: ReasonOnly) -> dict[str, Any]:
    """Unlock the study (reason required)."""
    return _study_view(request, principal, service_of(request).handle(
        UnlockStudy(study=study, reason=reason_of(body.reason)), principal.caller))


@router.post("/v1/studies/{study}/subjects/{subject}/lock",
             responses={200: written_response("Locked; the ETag is the new version")})
def lock_subject(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                 if_match: IfMatch, body: ReasonOnly) -> JSONResponse:
    """Lock a casebook (reason required)."""
    return written(service_of(request).handle(LockCasebook(
        study=study, subject=subject, expected_version=if_match,
        reason=reason_of(body.reason)), principal.caller), None)


@router.post("/v1/studies/{study}/subjects/{subject}/unlock",
             responses={200: written_response("Unlocked; the ETag is the new version")})
def unlock_subject(request: Request, principal: CurrentPrincipal, study: str, subject: str,
                   if_match: IfMatch, body: ReasonOnly) -> JSONResponse:
    """Unlock a casebook (reason required); later edits are post-lock edits."""
    return written(service_of(request).handle(UnlockCasebook(
        study=study, subject=subject, expected_version=if_match,
        reason=reason_of(body.reason)), principal.caller), None)
