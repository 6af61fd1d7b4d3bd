"""A database outage as ``serve`` reports it (issue 16, item 7): logged once when it begins,
then at a back-off, once when it ends; no traceback; ``/readyz`` false until the database is
back; and ``--log-level`` chooses what is logged. A PostgreSQL of this test, stopped and
started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.private_cluster import PrivateCluster
from tests.support import free_port, wait_until_ready

# Waits (not speed checks): for the first reminder of the outage, for /readyz once the
# database is back.
REMINDER_BOUND = 60.0
RECOVERY_BOUND = 60.0


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL of this test alone."""
    server = PrivateCluster()
    try:
        yield server
    finally:
        server.remove()


def _ready(base: str) -> int:
    try:
        return httpx.get(f"{base}/readyz", timeout=30).status_code
    except httpx.TransportError:
        return 0


def test_an_outage_is_logged_once_then_at_a_back_off(cluster: PrivateCluster,
                                                     tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "--log-format", "json", "--log-level", "warning",
             "serve", "--port", str(port), "--database-url", cluster.url()],
            env={**environ, "TRIALLEDGER_HOME": str(tmp_path / "home")}, stdout=out,
            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, log, process)
        cluster.stop()
        # Away until the sealer, trying every round (2 s), has reminded once (after 10 s).
        deadline = time.monotonic() + REMINDER_BOUND
        readiness = []
        while "database.still_unavailable" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            readiness.append(_ready(base))
            time.sleep(1)
        assert readiness and set(readiness) == {503}, readiness
        cluster.start()
        deadline = time.monotonic() + RECOVERY_BOUND
        while _ready(base) != 200:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        deadline = time.monotonic() + RECOVERY_BOUND
        while "database.available" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events.count("database.unavailable") == 1, text
    # Reminders at 10 s, then 30 s, ...: one or two while the test waits.
    assert 1 <= events.count("database.still_unavailable") <= 2, text
    assert events.count("database.available") == 1, text
    back = next(line for line in lines if line["event"] == "database.available")
    # Many attempts, few lines.
    assert back["attempts"] >= 5, back
    # --log-level warning: no request lines (INFO).
    assert "request" not in events, text
