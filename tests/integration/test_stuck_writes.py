"""A write that does not finish in time is ended: its request answers 503, the study's
events-table lock is released, nothing of it is stored, and the next write succeeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.sql import SQL, Identifier

from application.runtime import Runtime
from domain.studies import nct04397107
from infra.settings import Settings
from tests.support import api_client, study_with_a_child

STUDY = nct04397107.STUDY_ID
LABS = f"/v1/studies/{STUDY}/subjects/001/labs"


def _lab(record_id: str) -> dict[str, object]:
    return {"record_id": record_id, "observed_at": "2021-01-11T08:00:00+00:00",
            "visit": "BASELINE", "code": "C3", "value": 0.8, "unit": "g/L"}


@pytest.fixture
def stuck_runtime(db_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime whose group commit is given up after 1 s, with no statement timeout: what
    PostgreSQL cannot see as stuck (a client and server waiting on each other) only the
    watchdog ends."""
    runtime = Runtime(Settings(database_url=db_url, home=tmp_path / "home", commit_timeout=1.0,
                               write_statement_timeout=0), db_url)
    try:
        study_with_a_child(runtime)
        yield runtime
    finally:
        runtime.close()


def _events_table(runtime: Runtime) -> SQL:
    recorder = runtime.study(STUDY).recorder
    return SQL("{}.{}").format(Identifier(recorder.datastore.schema),  # type: ignore[attr-defined]
                               Identifier(recorder.events_table_name))  # type: ignore[attr-defined]


def test_a_stuck_write_answers_503_and_releases_the_lock(stuck_runtime: Runtime,
                                                         db_url: str) -> None:
    client: TestClient = api_client(stuck_runtime, "coordinator", site="JLU1")
    table = _events_table(stuck_runtime)
    with psycopg.connect(db_url, autocommit=True) as owner:
        # Every insert into the study's log now hangs while holding the table lock.
        owner.execute("CREATE FUNCTION public.stall() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$ BEGIN PERFORM pg_sleep(3600); RETURN NULL; END $$")
        owner.execute(SQL("CREATE TRIGGER stall BEFORE INSERT ON {} FOR EACH STATEMENT "
                          "EXECUTE FUNCTION public.stall()").format(table))

        stuck = client.post(LABS, json=_lab("LB1"))

        assert stuck.status_code == 503, stuck.text
        assert stuck.headers["content-type"] == "application/problem+json"
        assert stuck.headers["retry-after"]
        # The lock is free: another transaction takes it at once.
        with owner.transaction():
            owner.execute("SET LOCAL lock_timeout = '2s'")
            owner.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        owner.execute(SQL("DROP TRIGGER stall ON {}").format(table))

    assert "LB1" not in client.get(f"/v1/studies/{STUDY}/subjects/001").json()["records"]
    assert client.post(LABS, json=_lab("LB2")).status_code == 201
    assert client.post(LABS, json=_lab("LB1")).status_code == 201


def test_a_write_that_waits_too_long_for_the_lock_answers_503(db_url: str, tmp_path: Path
                                                              ) -> None:
    runtime = Runtime(Settings(database_url=db_url, home=tmp_path / "home",
                               write_lock_timeout=0.5), db_url)
    try:
        study_with_a_child(runtime)
        client = api_client(runtime, "coordinator", site="JLU1")
        table = _events_table(runtime)
        with psycopg.connect(db_url, autocommit=True) as other, other.transaction():
            # Another session holds the lock for longer than a write may wait for it.
            other.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
            refused = client.post(LABS, json=_lab("LB1"))
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert client.post(LABS, json=_lab("LB1")).status_code == 201
    finally:
        runtime.close()
