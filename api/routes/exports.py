"""Streamed exports: ODM 1.3.2 snapshot and archive, SDTM CSV, Dataset-JSON 1.1 (JSON or
NDJSON) and SAS XPORT v5 files per domain (each a zip), casebooks (zip of HTML and PDF per
subject), the regulator's bundle."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from api.auth import CurrentPrincipal
from api.blinded import refuse_blind
from api.read_headers import READ_FROM, tell
from api.schemas import PROBLEM_RESPONSES
from api.writes import runtime_of, study_app
from application.exports import FILE_NAMES, MEDIA_TYPES, record_export, stream
from domain.clock import require_aware
from domain.permissions import Action

router = APIRouter(tags=["exports"], responses=PROBLEM_RESPONSES)

Format = Literal["odm-snapshot", "odm-archive", "csv", "dataset-json", "dataset-ndjson", "xpt",
                 "casebook", "bundle"]


@router.get("/v1/studies/{study}/exports/{export_format}", response_class=StreamingResponse,
            responses={200: {"description": "The file, streamed", "headers": READ_FROM,
                             "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in sorted(set(MEDIA_TYPES.values()))}}})
def export_study(request: Request, principal: CurrentPrincipal, study: str, export_format: Format,
           as_of: Annotated[datetime | None, Query(
               description="Recorded time (ISO 8601 with offset); for the bundle, the time of its "
                           "renderings (its ledger holds the whole log)")] = None,
           ) -> StreamingResponse:
    """Stream an export as of ``as_of`` (default now). The export is recorded (who, what,
    as of when) before its first byte leaves; one that fails is recorded as failed too."""
    study_app(request, study)
    grant = principal.grant_for(Action.EXPORT, study, None)
    # Every export carries the allocation (the bundle its raw events): none to a blind person.
    refuse_blind(request, principal, study, f"the {export_format} export")
    when = require_aware("as_of", as_of) if as_of is not None else None
    runtime = runtime_of(request)
    envelope = principal.envelope(grant)
    record_export(runtime, study, export_format, when, envelope)
    return StreamingResponse(
        stream(runtime, study, export_format, when, envelope, told=tell(request)),
        media_type=MEDIA_TYPES[export_format],
        headers={"Content-Disposition":
                 f'attachment; filename="{study}-{FILE_NAMES[export_format]}"'})
