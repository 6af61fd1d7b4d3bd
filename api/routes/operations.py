"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.problems import problem
from api.responses import Health, Readiness
from api.writes import runtime_of
from application.ledger_watch import ledger_lags, stalls

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def get_liveness() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=None,
            responses={200: {"model": Readiness, "description": "Ready"},
                       503: {"description": "Not ready: the database does not answer, or the "
                                            "sealer or the projector has stalled (problem+json "
                                            "naming it in `detail` and `stalled`)",
                             "content": {"application/problem+json": {}}}})
def get_readiness(request: Request) -> JSONResponse:
    """Readiness: the database answers, and, while events wait, the sealer and the projector
    have made progress within the stall bound (``TRIALLEDGER_STALL_AFTER``); 503 otherwise."""
    runtime = runtime_of(request)
    try:
        with runtime.pool().connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as e:  # any failure to reach the database means "not ready"
        return problem(503, "Service unavailable", f"the database does not answer "
                       f"({type(e).__name__})", stalled=["database"])
    status_path: Path | None = request.app.state.sealer_status
    if status_path is not None:
        try:
            _, lags = ledger_lags(runtime, status_path, runtime.settings.stall_after)
        except Exception as e:  # the database went away between the two reads
            return problem(503, "Service unavailable", f"the database does not answer "
                           f"({type(e).__name__})", stalled=["database"])
        stalled = stalls(lags)
        if stalled:
            return problem(503, "Service unavailable", "; ".join(stalled),
                           stalled=sorted({s.partition(":")[0] for s in stalled}))
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text exposition format",
    "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
def get_metrics(request: Request) -> Response:
    """Prometheus metrics of every server process: requests by route and status, latency,
    sign-in failures and lock-outs, sealing and projection lag, checkpoint age and
    cosignatures, pools and process figures (see the README's Operations section)."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
