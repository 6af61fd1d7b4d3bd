"""The point-in-time recovery drill of docs/backup-and-restore.md, run for real with
pgBackRest (Debian's ``pgbackrest``) on a private cluster archiving its WAL: a full backup,
more events, a time T, more events, the cluster stopped and restored to T; the events up to
T are there, those after are not, and ``trialledger verify`` passes (and, where this verifier
had seen the later checkpoints, says the log was rolled back)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from application.runtime import Runtime
from domain.studies import nct04397107
from infra.catalog import EVENTS_TABLE
from infra.postgres import connect, schema_for_study
from infra.settings import Settings
from tests.private_cluster import SERVER_USER, PrivateCluster
from tests.support import T0, enroll, register, simulated_clock

STUDY = nct04397107.STUDY_ID
STANZA = "trialledger"
ROOT = Path(__file__).resolve().parents[2]
# How long recovery may take to reach T and promote: a wait, not a speed check.
RECOVERY_BOUND = 120.0

pytestmark = pytest.mark.skipif(shutil.which("pgbackrest") is None,
                                reason="pgBackRest is not installed (.ci/run installs it)")


class Drill:
    """A pgBackRest repository, its configuration and the cluster it backs up."""

    def __init__(self) -> None:
        self.user = SERVER_USER if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="trialledger-tests-pgbackrest-"))
        self.config = self.root / "pgbackrest.conf"
        for folder in ("repo", "log", "lock", "spool"):
            (self.root / folder).mkdir()
        # archive_command runs as the server's user, which must reach the configuration.
        self.cluster = PrivateCluster({
            "wal_level": "replica", "archive_mode": "on",
            "archive_command": f"'pgbackrest --config={self.config} --stanza={STANZA} "
                               "archive-push %p'"})
        self.config.write_text(
            "[global]\n"
            f"repo1-path={self.root / 'repo'}\n"
            f"log-path={self.root / 'log'}\nlock-path={self.root / 'lock'}\n"
            f"spool-path={self.root / 'spool'}\n"
            "log-level-console=warn\nlog-level-file=off\nstart-fast=y\n"
            "repo1-retention-full=2\n\n"
            f"[{STANZA}]\n"
            f"pg1-path={self.cluster.pgdata}\npg1-port={self.cluster.port}\n"
            f"pg1-socket-path={self.cluster.root}\npg1-user=postgres\n")
        if self.user is not None:
            for item in [self.root, *self.root.rglob("*")]:
                shutil.chown(item, self.user, self.user)

    def pgbackrest(self, *args: str) -> str:
        """Run a pgBackRest command as the server's user; its output."""
        done = subprocess.run(["pgbackrest", f"--config={self.config}", f"--stanza={STANZA}",
                               *args], user=self.user, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, f"pgbackrest {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def remove(self) -> None:
        self.cluster.remove()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def drill() -> Iterator[Drill]:
    made = Drill()
    try:
        yield made
    finally:
        made.remove()


def trialledger(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRIALLEDGER_HOME": str(home),
           "COLUMNS": "200"}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def enrol_and_seal(url: str, home: Path, codes: list[str], *, first: bool = False) -> None:
    """Children ``codes`` enrolled through the service, then sealed with a checkpoint."""
    runtime = Runtime(Settings(database_url=url, home=home), url)
    try:
        app = runtime.study(STUDY, clock=simulated_clock(T0))
        if first:
            register(app)
        for code in codes:
            enroll(app, code)
        app.close()
        runtime.seal(STUDY, force_checkpoint=True)
    finally:
        runtime.close()


def events(url: str) -> list[tuple[int, bytes]]:
    """Every event of the study: (position, stored bytes)."""
    with connect(url) as conn:
        rows = conn.execute(f"SELECT notification_id, state FROM {schema_for_study(STUDY)}."
                            f"{EVENTS_TABLE} ORDER BY notification_id").fetchall()
    return [(int(position), bytes(state)) for position, state in rows]


def server_now(url: str) -> datetime:
    with connect(url) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def promoted(url: str) -> bool:
    with connect(url) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return row is not None and not row[0]


@pytest.mark.slow(seconds=90)
@pytest.mark.requirement("R17")
def test_backup_write_restore_to_a_time_verify(drill: Drill, tmp_path: Path) -> None:
    cluster = drill.cluster
    with connect(cluster.url()) as conn:
        conn.execute("CREATE DATABASE trialledger")
    url = cluster.url("trialledger")
    home = tmp_path / "home"

    drill.pgbackrest("stanza-create")
    drill.pgbackrest("check")  # archiving works: a WAL segment reached the repository
    enrol_and_seal(url, home, ["001"], first=True)
    drill.pgbackrest("--type=full", "backup")
    enrol_and_seal(url, home, ["002"])
    up_to_t = events(url)
    time.sleep(1)  # commits before T and after it a clear second apart
    target = server_now(url)
    time.sleep(1)
    enrol_and_seal(url, home, ["003", "004"])
    assert len(events(url)) > len(up_to_t)
    # This verifier sees the newest checkpoint (it will tell a rollback from it).
    assert trialledger("verify", "--database-url", url, home=home).returncode == 0
    drill.pgbackrest("check")  # the WAL holding the last commits is archived
    info = drill.pgbackrest("info")
    assert "full backup" in info, info

    cluster.stop()
    drill.pgbackrest("--delta", "--type=time", f"--target={target.isoformat(sep=' ')}",
                     "--target-action=promote", "restore")
    cluster.start()
    deadline = time.monotonic() + RECOVERY_BOUND
    while not promoted(url):
        assert time.monotonic() < deadline, "recovery did not reach T and promote"
        time.sleep(0.5)

    assert events(url) == up_to_t
    # A verifier that never saw the later checkpoints: every signature, leaf and root holds.
    fresh = tmp_path / "fresh-verifier"
    shutil.copytree(home / "keys", fresh / "keys")
    verified = trialledger("verify", "--database-url", url, home=fresh)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The one that saw them is told the log went back in time, as it did.
    remembered = trialledger("verify", "--database-url", url, home=home)
    assert remembered.returncode == 1 and "rolled back" in remembered.stdout, (
        remembered.stdout + remembered.stderr)
    # The restored deployment carries on.
    enrol_and_seal(url, home, ["003"])
    assert events(url)[:len(up_to_t)] == up_to_t and len(events(url)) > len(up_to_t)
