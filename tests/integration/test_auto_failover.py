"""High availability on pg_auto_failover (issue 16, item 1): a monitor, a primary and a
synchronous secondary on loopback ports; ``trialledger serve`` on the formation's multi-host
URL (``target_session_attrs=read-write``); 16 clients writing over HTTP while the test forces a
failover and, then, SIGKILLs the primary's postmaster. Every acknowledged write is stored
exactly once, nothing is stored twice, the server's sealer and projector seal and project
everything written, and
``trialledger verify`` passes. The figures are printed in the run's summary."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.auto_failover import AutoFailoverFormation, pg_autoctl_missing
from tests.failover_drill import (
    WRITER,
    caught_up,
    drill,
    served,
    set_up,
    stored_lab_records,
)
from trialledger_client import Client

CLIENTS = 16
# How long the clients write before, between and after the disruptions (seconds).
STEADY = 3.0
# A wait, not a speed check: the server's sealer and projector catching up afterwards.
CATCH_UP_BOUND = 60.0

pytestmark = pytest.mark.skipif(pg_autoctl_missing() is not None,
                                reason=pg_autoctl_missing() or "")


@pytest.fixture
def formation() -> Iterator[AutoFailoverFormation]:
    """A running formation of this test alone."""
    nodes = AutoFailoverFormation()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.remove()


@pytest.mark.slow(seconds=110)
def test_no_acknowledged_write_is_lost_through_a_failover_and_a_killed_primary(
        formation: AutoFailoverFormation, tmp_path: Path,
        record_property: pytest.RecordProperty) -> None:
    url = formation.uri()
    assert "target_session_attrs=read-write" in url and url.count(",") == 1, url
    # Synchronous: a commit the server acknowledges is on the secondary too.
    assert formation.server_setting("node1", "synchronous_standby_names").startswith("ANY 1")
    assert formation.server_setting("node1", "synchronous_commit") == "on"
    home = tmp_path / "home"
    password = set_up(url, home, CLIENTS)
    log = tmp_path / "server.log"
    with served(url, home, log) as base:
        with Client(base) as client:
            token = client.sign_in(WRITER, password)
        run = drill(formation, base, token, CLIENTS, STEADY)
        writes = run.writes
        stored = stored_lab_records(url, home, CLIENTS)
        lost = sorted(r for r in writes.acknowledged if stored[r] == 0)
        duplicated = sorted(r for r, n in stored.items() if n > 1)
        windows = run.windows()
        figures = {
            "acknowledged": len(writes.acknowledged),
            "found stored after a lost answer": len(writes.found_stored),
            "lost": len(lost), "duplicated": len(duplicated),
            "unavailability window, failover (s)": round(windows["failover"], 2),
            "unavailability window, SIGKILL (s)": round(windows["sigkill"], 2),
            "longest pause before (s)": round(windows["calm"], 2),
            "refusals on the way": dict(writes.refusals),
        }
        record_property("figures", f"pg_auto_failover drill, {CLIENTS} clients: {figures}")
        assert not lost and not duplicated, figures
        # Writes went on after each disruption.
        assert any(t > run.ended_at - STEADY for t in writes.acknowledged.values()), figures
        assert any(run.killed_at - STEADY < t < run.killed_at
                   for t in writes.acknowledged.values()), figures
        # Every refusal on the way was one a client may retry: no 500.
        assert set(writes.refusals) <= {"503", "409", "412", "connection failed",
                                        "422 record_id exists"}, figures

        # The server's sealer and projector carry on: every event sealed and projected.
        positions = caught_up(url, home, CATCH_UP_BOUND)
        assert positions["stored"] == positions["sealed"] == positions["projected"], (
            positions, log.read_text()[-5000:])
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]

    verify = subprocess.run(
        [sys.executable, "-m", "api.cli", "verify", "--database-url", url],
        env={**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
             "TRIALLEDGER_HOME": str(home)}, capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "NCT04397107" in verify.stdout, verify.stdout
