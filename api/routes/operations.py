"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.responses import Health, Readiness
from api.writes import runtime_of

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def get_liveness() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=None,
            responses={200: {"model": Readiness, "description": "Ready"},
                       503: {"model": Readiness,
                             "description": "The database does not answer"}})
def get_readiness(request: Request) -> JSONResponse:
    """Readiness: the database answers (503 while it does not)."""
    try:
        with runtime_of(request).pool().connection(timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception as e:  # any failure to reach the database means "not ready"
        return JSONResponse({"status": "unavailable", "detail": type(e).__name__},
                            status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", response_class=Response, responses={200: {
    "description": "Prometheus text exposition format",
    "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
def get_metrics(request: Request) -> Response:
    """Prometheus metrics: requests by route and status, latency histograms."""
    return Response(generate_latest(request.app.state.metrics.registry),
                    media_type=CONTENT_TYPE_LATEST)
