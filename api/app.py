"""The HTTP API (the walking skeleton's part of it: health and casebook reads)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query

from api import problems
from api.runtime import Runtime
from domain.clock import require_aware
from domain.errors import NotFound
from projections.casebook import casebook


def create_app(runtime: Runtime) -> FastAPI:
    """The FastAPI application serving one deployment."""
    app = FastAPI(title="TrialLedger", version="0.1.0", openapi_url="/openapi.json")
    problems.install(app)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/v1/studies/{study}/subjects/{subject}")
    def get_subject(
        study: str,
        subject: str,
        as_of: Annotated[
            datetime | None,
            Query(description="Recorded time (ISO 8601 with offset): what the system showed then"),
        ] = None,
    ) -> dict[str, Any]:
        """A subject's casebook now, or as the system showed it at ``as_of``."""
        if study not in {s for s, _ in runtime.studies()}:
            raise NotFound(f"no study {study}")
        application = runtime.study(study)
        if as_of is None:
            return casebook(application.subject(subject))
        when = require_aware("as_of", as_of)
        return casebook(application.subject_as_of(subject, when), as_of=when)

    return app
