"""What every write route shares: the trial service, ``If-Match`` in, the new version out.

The rules of a write (who may, the envelope, the checks) are the trial service's
(:mod:`application.trial_service`); a route builds the command and answers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse

from api.schemas import ReasonIn, WrittenOut
from application.runtime import Runtime
from application.trial_service import TrialService
from domain.envelope import Reason
from domain.errors import InvalidInput, NotFound
from domain.service import StudyApplication
from domain.subject import Subject

# The version, then (an as_of/valid_at view's or a history page's ETag) its view's digest.
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})(?:-[0-9a-f]{16})?"?$')


def runtime_of(request: Request) -> Runtime:
    """The deployment the app serves."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def service_of(request: Request) -> TrialService:
    """The deployment's trial service: the front door of every write."""
    return runtime_of(request).service()


def study_app(request: Request, study: str) -> StudyApplication:
    """The study's application (for reads); 404 if the deployment holds no such study."""
    runtime = runtime_of(request)
    if not runtime.has_study(study):
        raise NotFound(f"no study {study}")
    app: StudyApplication = runtime.study(study)
    return app


async def expected_version(header: Annotated[str | None, Header(
        alias="If-Match", description="The ETag you read (e.g. \"7\"): the write is refused "
        "(412) if the subject has changed since; without it, the write applies to the "
        "current version", examples=['"7"'])] = None) -> int | None:
    """The version the client read, from ``If-Match`` (an ETag this API gave out).

    Asynchronous: it runs on the event loop, as the first-entry routes do (no thread hop)."""
    if header is None or header.strip() == "*":
        return None
    match = _ETAG.match(header.strip())
    if match is None:
        raise InvalidInput("If-Match", "must be an ETag this API gave out, e.g. \"7\"")
    return int(match.group(1))


IfMatch = Annotated[int | None, Depends(expected_version)]
"""A route's parameter: the version named by ``If-Match`` (None: none named)."""


def reason_of(reason: ReasonIn | None) -> Reason | None:
    """The domain's reason from the request's."""
    return None if reason is None else Reason(reason.code, reason.text)


class _RenderedJSON(JSONResponse):
    """A JSON answer given its body already rendered."""

    def render(self, content: Any) -> bytes:
        """The body as given."""
        assert isinstance(content, bytes)
        return content


_WRITTEN_JSON = WrittenOut.__pydantic_serializer__


def written(subject: Subject, record_id: str | None, status: int = 200) -> JSONResponse:
    """The answer to a committed write, with the subject's new version as its ETag.

    The body is rendered by pydantic's serializer in one step: the bytes JSONResponse makes
    of ``model_dump(mode="json")`` (compact, UTF-8 unescaped), without the dict between."""
    body = WrittenOut(subject=subject.subject_code, version=subject.version,
                      record_id=record_id, recorded_at=subject.modified_on)
    return _RenderedJSON(_WRITTEN_JSON.to_json(body), status_code=status,
                         headers={"ETag": f'"{subject.version}"'})
