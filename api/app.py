"""The HTTP API (the walking skeleton's part of it: health and casebook reads)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Query

from api import problems
from api.runtime import Runtime
from domain.clock import require_aware
from domain.errors import InvalidInput, NotFound
from infra.ledger import proofs
from infra.postgres import connect
from projections.casebook import casebook


def create_app(runtime: Runtime) -> FastAPI:
    """The FastAPI application serving one deployment."""
    app = FastAPI(title="TrialLedger", version="0.1.0", openapi_url="/openapi.json")
    problems.install(app)

    def _schema(study: str) -> str:
        schemas = dict(runtime.studies())
        if study not in schemas:
            raise NotFound(f"no study {study}")
        return schemas[study]

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
        _schema(study)
        application = runtime.study(study)
        if as_of is None:
            return casebook(application.subject(subject))
        when = require_aware("as_of", as_of)
        return casebook(application.subject_as_of(subject, when), as_of=when)

    @app.get("/v1/studies/{study}/ledger/checkpoint")
    def get_checkpoint(study: str) -> dict[str, Any]:
        """The latest signed checkpoint (C2SP signed note) of the study's ledger."""
        with connect(runtime.url) as conn:
            checkpoint = proofs.latest_checkpoint(conn, _schema(study))
        if checkpoint is None:
            raise NotFound(f"study {study} has no checkpoint yet")
        return {"origin": f"trialledger/{study}", **checkpoint}

    @app.get("/v1/studies/{study}/ledger/proofs/inclusion")
    def get_inclusion_proof(
        study: str,
        event: Annotated[int, Query(ge=1, description="The event's log position")],
        tree_size: Annotated[int | None, Query(ge=1, description="Default: latest")] = None,
    ) -> dict[str, Any]:
        """RFC 9162 inclusion proof of one event in the tree of ``tree_size`` leaves."""
        with connect(runtime.url) as conn:
            return _proof(lambda: proofs.inclusion(conn, _schema(study), event, tree_size))

    @app.get("/v1/studies/{study}/ledger/proofs/consistency")
    def get_consistency_proof(
        study: str,
        from_size: Annotated[int, Query(alias="from", ge=0, description="Older tree size")],
        to_size: Annotated[int | None, Query(alias="to", ge=0, description="Default: latest")]
        = None,
    ) -> dict[str, Any]:
        """RFC 9162 consistency proof between two tree sizes."""
        with connect(runtime.url) as conn:
            return _proof(lambda: proofs.consistency(conn, _schema(study), from_size, to_size))

    return app


def _proof(compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return compute()
    except proofs.ProofUnavailable as e:
        if e.field == "event":
            raise NotFound(str(e)) from e
        raise InvalidInput(e.field, str(e)) from e
