"""The HTTP bench's baseline: a bare FastAPI endpoint doing one durable INSERT per request.

    BARE_DATABASE_URL=postgresql://... uvicorn --factory bare_insert_app:create_app

``POST /v1/studies/{study}/subjects/{subject}/labs`` takes the lab entry the Python client
sends, validates it with a pydantic model, and inserts it as one row through a psycopg
connection pool, committed with the database's ``synchronous_commit`` (the server's: on),
answering 201 with the row's id as the version. No auth, no signing, no events: what any web service
writing to PostgreSQL pays, served by the same uvicorn settings and loaded by the same
generator as ``trialledger serve`` (see ``http_bench.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

URL = "BARE_DATABASE_URL"
POOL_SIZE = "BARE_POOL_SIZE"
TABLE_DDL = ("CREATE TABLE IF NOT EXISTS bare_rows (id bigserial PRIMARY KEY,"
             " subject text NOT NULL, payload jsonb NOT NULL)")


class LabIn(BaseModel):
    """What the Python client's ``record_lab`` sends (extra fields are kept as given)."""

    model_config = {"extra": "allow"}
    observed_at: datetime
    code: str
    value: float | str
    unit: str | None = None
    record_id: str | None = None


def create_app() -> FastAPI:
    """The app; its pool (``BARE_POOL_SIZE`` connections, default 8) opens with it."""
    pool = AsyncConnectionPool(os.environ[URL], min_size=int(os.environ.get(POOL_SIZE, "8")),
                               max_size=int(os.environ.get(POOL_SIZE, "8")), open=False,
                               kwargs={"autocommit": True})

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/readyz")
    async def ready() -> Response:
        return Response(b"ok")

    @app.post("/v1/studies/{study}/subjects/{subject}/labs", status_code=201)
    async def record_lab(study: str, subject: str, lab: LabIn) -> Response:
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO bare_rows (subject, payload) VALUES (%s, %s)"
                " RETURNING id, clock_timestamp()",
                (f"{study}/{subject}", orjson.dumps(lab.model_dump(mode="json")).decode()))
            row = await cursor.fetchone()
        assert row is not None
        # The shape of the real answer (the client reads it the same way).
        written = {"subject": subject, "version": row[0], "record_id": lab.record_id,
                   "recorded_at": row[1]}
        return Response(orjson.dumps(written), status_code=201,
                        media_type="application/json", headers={"ETag": f'"{row[0]}"'})

    return app
