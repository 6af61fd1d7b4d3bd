"""The HTTP API: every path of the contract under /v1, OpenAPI at /openapi.json."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from api import console, problems
from api.collector import CollectorPauses
from api.first_entries import FirstEntries
from api.metrics import Metrics
from api.middleware import Gateway, Idempotency
from api.openapi import describe, operation_id
from api.routes import (
    deviations,
    exports,
    ledger,
    monitoring,
    operations,
    people,
    records,
    redactions,
    studies,
)
from application.runtime import Runtime
from infra.logging import configure_logging
from infra.parent_death import die_with_parent
from infra.process_metrics import process_ended
from infra.settings import Settings

# Where `trialledger serve --workers N` hands its worker processes the database URL, and
# its own process id (its workers end when it does).
SERVE_URL = "TRIALLEDGER_SERVE_DATABASE_URL"
SERVE_PARENT = "TRIALLEDGER_SERVE_PARENT_PID"
# ... and the file its sealer tells of its progress in (see application.ledger_watch).
SERVE_STATUS = "TRIALLEDGER_SERVE_SEALER_STATUS"

DESCRIPTION = """Event-sourced, tamper-evident audit trail for clinical-trial data.

Sign in with `POST /v1/auth/token` and send the token as `Authorization: Bearer ...`.
Writes answer only after the commit; send `Idempotency-Key` to make a retried POST safe and
`If-Match` with the ETag you read to refuse a write on stale data (412). Errors are
`application/problem+json` naming each bad field."""


def create_worker_app() -> FastAPI:
    """The application of one worker process of ``trialledger serve --workers N``: a runtime
    of its own, closed when the worker stops, and ended when the serving process ends, however
    it ends (SIGKILL included)."""
    die_with_parent(int(os.environ[SERVE_PARENT]))
    configure_logging()
    runtime = Runtime(Settings.from_env(), os.environ[SERVE_URL])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        runtime.close()
        process_ended()

    app = create_app(runtime, lifespan=lifespan, status_path=Path(os.environ[SERVE_STATUS]))
    CollectorPauses().install()
    return app


def create_app(runtime: Runtime, lifespan: Any = None,
               status_path: Path | None = None, *, first_entries: bool = True) -> FastAPI:
    """The FastAPI application serving one deployment; ``status_path``: where its sealer
    tells of its progress (``/readyz`` and ``/metrics`` then watch it). Without
    ``first_entries``, first entries too go through FastAPI's routing (the tests compare
    the two ways' answers)."""
    # FastAPI's own OpenTelemetry hooks are off: the access log and /metrics are the app's,
    # and checking for a configured provider on every request costs as much as routing it.
    # FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN, which a server of
    # patient data must not make its users' browsers run: /docs is the console's, vendored.
    app = FastAPI(title="TrialLedger", version="0.1.0", openapi_url="/openapi.json",
                  docs_url=None, redoc_url=None,
                  description=DESCRIPTION, lifespan=lifespan,
                  generate_unique_id_function=operation_id,
                  telemetry={"tracing": False, "metrics": False, "logs": False,
                             "operation_spans": False})
    app.state.runtime = runtime
    runtime.commit_in_groups()
    app.state.metrics = Metrics(runtime, status_path)
    app.state.sealer_status = status_path
    runtime.on_sign_in_refused = app.state.metrics.sign_in_refused
    problems.install(app)
    describe(app)
    # Routes are matched in order, one pattern after another: first entries, the bulk of the
    # traffic, come first. (No path of one router matches a path of another, so the order
    # changes nothing else.)
    for module in (records, operations, people, studies, monitoring, deviations, ledger,
                   exports, redactions):
        app.include_router(module.router)
    console.install(app)
    # Outermost last: the gateway's access log and security headers see every answer, its
    # body limit applies before anything reads a body; idempotency sees the buffered body
    # (once the database is known to be there). Innermost, plain first entries are answered
    # without FastAPI's routing (records' router is included first: no route precedes its).
    if first_entries:
        app.add_middleware(FirstEntries, api=app, routes=records.router.routes)
    app.add_middleware(Idempotency, runtime=runtime)
    app.add_middleware(Gateway, metrics=app.state.metrics, runtime=runtime)
    return app
