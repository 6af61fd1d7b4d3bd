"""The regulator's screen: the signed bundle and the exports to download, and one event's
inclusion proof checked against the checkpoint it is in by the browser page itself.

The downloads stream from the API's export route function and the proofs, checkpoint and
keys come from its ledger route functions, under the console's session; the page's own
script (``static/verify.js``) recomputes the Merkle root and checks the signatures with
WebCrypto, so the verdict does not rest on this server's word.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from api.console.pages import call, error_page, page
from api.console.session import signed_in
from api.problems import status_of
from api.routes import exports, ledger
from api.writes import runtime_of
from domain.errors import DomainError, InvalidInput

router = APIRouter(prefix="/ui", include_in_schema=False)

# What each export is, as a regulator reads the list (every format the export route has).
EXPORTS = {
    "bundle": "Signed bundle: the whole ledger, its checkpoints and keys, with renderings",
    "odm-snapshot": "CDISC ODM 1.3.2 snapshot",
    "odm-archive": "CDISC ODM 1.3.2 archive (with the audit trail)",
    "csv": "SDTM and analysis datasets as CSV",
    "dataset-json": "CDISC Dataset-JSON 1.1",
    "dataset-ndjson": "CDISC Dataset-JSON 1.1 (NDJSON)",
    "xpt": "SAS XPORT v5 files",
    "casebook": "Casebooks (HTML and PDF per subject)",
}


@router.get("/studies/{study}/regulator")
async def regulator_page(request: Request, study: str, event: str = "") -> HTMLResponse:
    """The downloads, and (with ``event``) that event's inclusion proof, checked in the
    page against the newest checkpoint."""
    principal, csrf = await signed_in(request)
    try:
        if event and not (event.isdigit() and 1 <= int(event) <= 2**62):
            raise InvalidInput("event", "is an event's log position: a whole number from 1")
        keys = await call(ledger.list_ledger_keys, request, principal, study)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    settings = runtime_of(request).settings
    return page(request, "regulator.html", principal=principal, csrf=csrf, study=study,
                event=int(event) if event else None, exports=EXPORTS,
                keys=[k.model_dump(mode="json") for k in keys],
                witnesses=[entry.partition("=")[2] for entry in settings.witnesses])


@router.get("/studies/{study}/exports/{export_format}")
async def download(request: Request, study: str, export_format: str) -> Response:
    """Stream one export, as ``GET /v1/studies/{study}/exports/{format}`` does (recorded
    before its first byte leaves; the same permission)."""
    principal, csrf = await signed_in(request)
    try:
        if export_format not in EXPORTS:
            raise InvalidInput("export_format", f"must be one of {sorted(EXPORTS)}")
        streamed: Response = await call(exports.export_study, request, principal, study,
                                         export_format, None)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    return streamed


def _problem(exc: DomainError) -> JSONResponse:
    status, title = status_of(exc)
    return JSONResponse({"title": title, "status": status, "detail": str(exc)}, status,
                        media_type="application/problem+json")


@router.get("/studies/{study}/ledger/keys")
async def keys_json(request: Request, study: str) -> Response:
    """The study's signing keys (``GET …/ledger/keys``) for the page's script."""
    principal, _ = await signed_in(request)
    try:
        keys = await call(ledger.list_ledger_keys, request, principal, study)
    except DomainError as e:
        return _problem(e)
    return JSONResponse([k.model_dump(mode="json") for k in keys])


@router.get("/studies/{study}/ledger/checkpoint")
async def checkpoint_json(request: Request, study: str) -> Response:
    """The served checkpoint (``GET …/ledger/checkpoint``) for the page's script."""
    principal, _ = await signed_in(request)
    try:
        checkpoint: dict[str, Any] = await call(ledger.get_checkpoint, request, principal,
                                                 study)
    except DomainError as e:
        return _problem(e)
    return JSONResponse(checkpoint)


@router.get("/studies/{study}/ledger/proofs/inclusion")
async def inclusion_json(request: Request, study: str,
                         event: int = Query(ge=1, le=2**62),
                         tree_size: int | None = Query(None, ge=1, le=2**62)) -> Response:
    """An event's inclusion proof (``GET …/ledger/proofs/inclusion``) for the page's
    script."""
    principal, _ = await signed_in(request)
    try:
        proof: dict[str, Any] = await call(ledger.get_inclusion_proof, request, principal,
                                            study, event, tree_size)
    except DomainError as e:
        return _problem(e)
    return JSONResponse(proof)
