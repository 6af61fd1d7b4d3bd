"""Read replicas (issue 16, item 2): with ``DATABASE_READ_URL`` the exports, audit pages and
outcome tables are read on a hot standby, each answer naming the standby's replay position and
time; a question about a time later than the standby's last replayed commit, and every read
when the standby does not answer, is answered by the primary, which the answer names."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from application.runtime import Runtime
from domain.studies import nct04397107
from infra.settings import Settings
from tests.private_cluster import PrivateCluster
from tests.support import T0, api_client, free_port, study_with_a_corrected_lab

pytestmark = pytest.mark.slow(seconds=30)

STUDY = nct04397107.STUDY_ID
# A wait for the standby to replay, not a speed check.
REPLAY_BOUND = 60.0


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[PrivateCluster, PrivateCluster]]:
    """A primary holding NCT04397107 (child 001 with a corrected lab) and a hot standby
    streaming from it."""
    primary = PrivateCluster()
    try:
        standby = PrivateCluster(primary=primary)
        try:
            yield primary, standby
        finally:
            standby.remove()
    finally:
        primary.remove()


@pytest.fixture(scope="module")
def home(pair: tuple[PrivateCluster, PrivateCluster],
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deployment's home (its signing key), the study written with it."""
    primary, _ = pair
    home = tmp_path_factory.mktemp("home")
    runtime = Runtime(Settings(database_url=primary.url(), home=home), primary.url())
    try:
        study_with_a_corrected_lab(runtime)
    finally:
        runtime.close()
    return home


def _one(url: str, sql: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _caught_up(primary: PrivateCluster, standby: PrivateCluster) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    target = _one(primary.url(), "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + REPLAY_BOUND
    while not _one(standby.url(), f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
        assert time.monotonic() < deadline, "the standby did not catch up"
        time.sleep(0.1)


def _set_replay(standby: PrivateCluster, paused: bool) -> None:
    _one(standby.url(), f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()::text")
    want = "paused" if paused else "not paused"
    deadline = time.monotonic() + REPLAY_BOUND
    while _one(standby.url(), "SELECT pg_get_wal_replay_pause_state()") != want:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _lab(client: TestClient, record: str) -> None:
    answer = client.post(f"/v1/studies/{STUDY}/subjects/001/labs",
                         json={"record_id": record, "observed_at": "2021-01-11T08:00:00+00:00",
                               "code": "C3", "value": 0.7, "unit": "g/L"})
    assert answer.status_code == 201, answer.text


def _records(page: dict[str, Any]) -> set[str]:
    return {row["record_id"] for row in page["entries"] if row["record_id"]}


def test_reads_go_to_the_standby_and_name_its_position(
        pair: tuple[PrivateCluster, PrivateCluster], home: Path) -> None:
    primary, standby = pair
    settings = Settings(database_url=primary.url(), home=home, database_read_url=standby.url())
    runtime = Runtime(settings, primary.url())
    try:
        reader = api_client(runtime, "regulator")
        writer = api_client(runtime, "coordinator", site="JLU1")
        reader.get(f"/v1/studies/{STUDY}/audit").raise_for_status()  # projected
        _caught_up(primary, standby)
        _set_replay(standby, paused=True)
        try:
            _lab(writer, "LB-AFTER-PAUSE")
            replayed = _one(standby.url(), "SELECT pg_last_xact_replay_timestamp()")
            # The standby answers what it has replayed, and says how far that is.
            audit = reader.get(f"/v1/studies/{STUDY}/audit")
            assert audit.status_code == 200, audit.text
            assert audit.headers["TrialLedger-Read-From"] == "standby"
            assert audit.headers["TrialLedger-Standby-LSN"] == _one(
                standby.url(), "SELECT pg_last_wal_replay_lsn()::text")
            assert datetime.fromisoformat(
                audit.headers["TrialLedger-Standby-Replayed-At"]) == replayed
            assert "LB1" in _records(audit.json())
            assert "LB-AFTER-PAUSE" not in _records(audit.json())
            # A range ending after the standby's last replayed commit: the primary answers.
            later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
            fresh = reader.get(f"/v1/studies/{STUDY}/audit", params={"to": later})
            assert fresh.status_code == 200, fresh.text
            assert fresh.headers["TrialLedger-Read-From"] == "primary"
            assert "later than the standby" in fresh.headers["TrialLedger-Read-From-Reason"]
            assert "LB-AFTER-PAUSE" in _records(fresh.json())
            # Outcome tables: as of a past time on the standby, as of later on the primary.
            past = reader.get(f"/v1/studies/{STUDY}/outcomes",
                              params={"as_of": (T0 + timedelta(days=30)).isoformat()})
            assert past.status_code == 200, past.text
            assert past.headers["TrialLedger-Read-From"] == "standby"
            now = reader.get(f"/v1/studies/{STUDY}/outcomes", params={"as_of": later})
            assert now.status_code == 200, now.text
            assert now.headers["TrialLedger-Read-From"] == "primary"
            # Exports: a rendering on the standby; the bundle (sealed as it is made) on the
            # primary.
            with reader.stream("GET", f"/v1/studies/{STUDY}/exports/odm-archive") as odm:
                assert odm.status_code == 200
                assert odm.headers["TrialLedger-Read-From"] == "standby"
                archive = odm.read()
            assert b"LB1" in archive and b"LB-AFTER-PAUSE" not in archive
            with reader.stream("GET", f"/v1/studies/{STUDY}/exports/bundle") as bundle:
                assert bundle.status_code == 200
                assert bundle.headers["TrialLedger-Read-From"] == "primary"
                bundle.read()
        finally:
            _set_replay(standby, paused=False)
        _caught_up(primary, standby)
        caught = reader.get(f"/v1/studies/{STUDY}/audit")
        assert caught.headers["TrialLedger-Read-From"] == "standby"
        assert "LB-AFTER-PAUSE" in _records(caught.json())
    finally:
        runtime.close()


def test_a_standby_that_does_not_answer_is_passed_over(
        pair: tuple[PrivateCluster, PrivateCluster], home: Path) -> None:
    primary, _ = pair
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=1"
    settings = Settings(database_url=primary.url(), home=home, database_read_url=nowhere)
    runtime = Runtime(settings, primary.url())
    try:
        reader = api_client(runtime, "regulator", username="regulator-standby-away")
        audit = reader.get(f"/v1/studies/{STUDY}/audit")
        assert audit.status_code == 200, audit.text
        assert audit.headers["TrialLedger-Read-From"] == "primary"
        assert audit.headers["TrialLedger-Read-From-Reason"] == "the standby did not answer"
        assert "TrialLedger-Standby-LSN" not in audit.headers
    finally:
        runtime.close()


def test_without_a_standby_the_primary_answers_everything(
        pair: tuple[PrivateCluster, PrivateCluster], home: Path) -> None:
    primary, _ = pair
    runtime = Runtime(Settings(database_url=primary.url(), home=home), primary.url())
    try:
        reader = api_client(runtime, "regulator", username="regulator-no-standby")
        for path in ("audit", "outcomes"):
            answer = reader.get(f"/v1/studies/{STUDY}/{path}")
            assert answer.status_code == 200, answer.text
            assert answer.headers["TrialLedger-Read-From"] == "primary"
            assert "TrialLedger-Read-From-Reason" not in answer.headers
    finally:
        runtime.close()
