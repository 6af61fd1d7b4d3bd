"""The witness's HTTP interface (C2SP tlog-witness): ``POST /add-checkpoint`` answers the
cosignature lines, or the witness's refusal with its status; ``GET /readyz`` for operators."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from infra.witness.witness import Witness, WitnessRefused

# A checkpoint with its signatures and 63 proof lines fits in a few KiB.
MAX_BODY = 64 * 1024


def create_witness_app(witness: Witness) -> FastAPI:
    """An ASGI app serving ``witness``."""
    app = FastAPI(title="TrialLedger witness", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("request too large\n", status_code=413)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return PlainTextResponse("the request is not UTF-8\n", status_code=400)
        try:
            cosignature = witness.add_checkpoint(text)
        except WitnessRefused as e:
            return Response(e.body, status_code=e.status, media_type=e.content_type)
        return PlainTextResponse(cosignature)

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready", "witness": witness.cosigner.vkey}

    return app
