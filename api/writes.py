"""How every write to a subject goes: find the study and subject, check the role at the
subject's site, compare ``If-Match``, build the envelope, commit, answer with the new version.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Principal
from api.schemas import ReasonIn, WrittenOut
from application.runtime import Runtime
from domain.envelope import Envelope, Reason
from domain.errors import InvalidInput, NotFound
from domain.permissions import Action
from domain.service import StudyApplication
from domain.study import study_uuid
from domain.subject import Subject
from domain.user import Grant

_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')

SubjectCommand = Callable[[Subject, Envelope, datetime], None]


def runtime_of(request: Request) -> Runtime:
    """The deployment the app serves."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def study_app(request: Request, study: str) -> StudyApplication:
    """The study's application; 404 if the deployment holds no such study."""
    runtime = runtime_of(request)
    if not runtime.has_study(study):
        raise NotFound(f"no study {study}")
    app: StudyApplication = runtime.study(study)
    return app


async def study_app_async(request: Request, study: str) -> StudyApplication:
    """:func:`study_app` for an event loop: at once if the study is open and cached here,
    otherwise from a worker thread (opening it reads the database)."""
    app: StudyApplication | None = runtime_of(request).opened_study(study)
    if app is not None and app.is_cached(study_uuid(study)):
        return app

    def ready() -> StudyApplication:
        opened = study_app(request, study)
        opened.definition()  # caches the study
        return opened

    return await run_in_threadpool(ready)


def expected_version(request: Request) -> int | None:
    """The version the client read, from ``If-Match`` (an ETag this API gave out)."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    match = _ETAG.match(header.strip())
    if match is None:
        raise InvalidInput("If-Match", "must be an ETag this API gave out, e.g. \"7\"")
    return int(match.group(1))


def reason_of(reason: ReasonIn | None) -> Reason | None:
    """The domain's reason from the request's."""
    return None if reason is None else Reason(reason.code, reason.text)


def write_subject(request: Request, principal: Principal, study: str, subject_code: str,
                  action: Action, command: SubjectCommand, *, reason: ReasonIn | None = None,
                  record_id: str | None = None, status: int = 200) -> JSONResponse:
    """Run one command on a subject on behalf of ``principal``; answer after the commit."""
    app = study_app(request, study)
    may_act, run = _as_principal(principal, study, action, command, reason)
    subject = app.on_subject(subject_code, run, expected_version=expected_version(request),
                             may_act=may_act)
    return written(subject, record_id, status)


async def write_subject_async(request: Request, principal: Principal, study: str,
                              subject_code: str, action: Action, command: SubjectCommand, *,
                              reason: ReasonIn | None = None, record_id: str | None = None,
                              status: int = 200) -> JSONResponse:
    """:func:`write_subject` for an event loop (see
    :meth:`~domain.service.StudyApplication.on_subject_async`)."""
    app = await study_app_async(request, study)
    may_act, run = _as_principal(principal, study, action, command, reason)
    subject = await app.on_subject_async(subject_code, run,
                                         expected_version=expected_version(request),
                                         may_act=may_act)
    return written(subject, record_id, status)


def _as_principal(principal: Principal, study: str, action: Action, command: SubjectCommand,
                  reason: ReasonIn | None) -> tuple[Callable[[Subject], Grant],
                                                    Callable[[Subject, datetime], None]]:
    """The role check and the command of a write by ``principal``."""
    domain_reason = reason_of(reason)

    def may_act(subject: Subject) -> Grant:
        return principal.grant_for(action, study, subject.site)

    def run(subject: Subject, at: datetime) -> None:
        command(subject, principal.envelope(may_act(subject), domain_reason), at)

    return may_act, run


def written(subject: Subject, record_id: str | None, status: int) -> JSONResponse:
    """The answer to a committed write, with the subject's new version as its ETag."""
    body = WrittenOut(subject=subject.subject_code, version=subject.version,
                      record_id=record_id, recorded_at=subject.modified_on)
    return JSONResponse(body.model_dump(mode="json"), status_code=status,
                        headers={"ETag": f'"{subject.version}"'})
