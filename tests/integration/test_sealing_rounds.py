"""The server's background rounds: one study's failure does not stop the others."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from application.runtime import Runtime
from application.sealing import (
    SEALER_API_POOL_SIZE,
    SEALER_NICENESS,
    SEALER_STORE_POOL_SIZE,
    SealingRounds,
)
from domain.studies import nct04397107
from infra.catalog import CATALOG_SCHEMA
from infra.idempotency import KEY_TTL
from tests.support import enroll, envelope, simulated_clock

FIRST, SECOND = "NCT04397107", "SECOND-STUDY"


def test_a_study_whose_round_fails_does_not_stop_the_next(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    for study in (FIRST, SECOND):
        app = runtime.study(study, clock=simulated_clock())
        app.register_study({**nct04397107.definition(), "study_id": study}, envelope())
        enroll(app)
        app.close()
    project = runtime.project

    def failing_first(study_id: str, **options: Any) -> int:
        if study_id == FIRST:  # studies are taken in id order: this one comes first
            raise psycopg.OperationalError("the connection was closed")
        return project(study_id, **options)

    monkeypatch.setattr(runtime, "project", failing_first)
    SealingRounds(runtime).seal_all()

    assert runtime.seal(FIRST).sealed == 0  # sealed before its projection failed
    assert runtime.seal(SECOND).sealed == 0
    assert project(SECOND) == 0  # projected in the same round
    assert project(FIRST) > 0  # left for the next round


def test_the_sealers_pools_carry_a_round_over_studies_it_has_not_opened(
        runtime: Runtime) -> None:
    for study in (FIRST, SECOND):
        app = runtime.study(study, clock=simulated_clock())
        app.register_study({**nct04397107.definition(), "study_id": study}, envelope())
        enroll(app)
        app.close()
    # The sealer's process: one connection of each pool. A step that took a second one
    # while holding the first would wait for itself, here for two seconds, then fail.
    sealer = Runtime(dataclasses.replace(
        runtime.settings, store_pool_size=SEALER_STORE_POOL_SIZE,
        api_pool_size=SEALER_API_POOL_SIZE, database_wait=2.0), runtime.url)
    try:
        assert sealer.project(FIRST) > 0  # opening the study lends from the same pool
        SealingRounds(sealer).seal_all()
        assert sealer.seal(SECOND).sealed == 0  # sealed in the round
        assert sealer.project(SECOND) == 0  # projected in the round
        assert set(sealer.pools()) == {"api", "store"}
        assert all(pool.get_stats()["pool_size"] <= 1 for pool in sealer.pools().values())
    finally:
        sealer.close()


SERVER = """
import sys, time
from pathlib import Path
from application.runtime import Runtime
from application.sealing import BackgroundSealer
from infra.settings import Settings

url, home = sys.argv[1], Path(sys.argv[2])
sealer = BackgroundSealer(Runtime(Settings(database_url=url, home=home), url), interval=0.2)
sealer.start()
print(sealer.pid, flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def _server_with_a_sealer(db_url: str, home: Path
                          ) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A process that started a background sealer: it and the sealer's pid; both killed
    afterwards."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, db_url, str(home)],
                              cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                              text=True)
    assert server.stdout is not None
    sealer = int(server.stdout.readline())
    try:
        yield server, sealer
    finally:
        server.kill()
        server.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(sealer, signal.SIGKILL)


def test_the_sealer_process_ends_with_a_server_killed_outright(
        db_url: str, tmp_path: Path) -> None:
    with _server_with_a_sealer(db_url, tmp_path / "home") as (server, sealer):
        assert _alive(sealer)
        server.send_signal(signal.SIGKILL)  # no chance to stop its child
        server.wait()
        deadline = time.monotonic() + 20
        while _alive(sealer) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(sealer)


def test_the_sealer_process_yields_the_cores_to_the_server(
        db_url: str, tmp_path: Path) -> None:
    with _server_with_a_sealer(db_url, tmp_path / "home") as (server, sealer):
        # Set by the child once it runs: wait for it (bounded).
        deadline = time.monotonic() + 20
        while (os.getpriority(os.PRIO_PROCESS, sealer) == os.getpriority(
                os.PRIO_PROCESS, server.pid) and time.monotonic() < deadline):
            time.sleep(0.1)
        server_niceness = os.getpriority(os.PRIO_PROCESS, server.pid)
        # (Niceness stops at 19: a server already at 10 or more gets less.)
        assert os.getpriority(os.PRIO_PROCESS, sealer) == min(
            19, server_niceness + SEALER_NICENESS)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # An exited child of a dead parent is reaped by init; until then it is a zombie.
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


def test_the_rounds_purge_expired_idempotency_keys_every_ten_minutes(
        runtime: Runtime) -> None:
    def expired_key(key: str) -> None:
        with runtime.pool().connection() as conn:
            conn.execute(f"INSERT INTO {CATALOG_SCHEMA}.idempotency VALUES ('u', %s, 'd', 201,"
                         " '{}', now() - %s, now() - %s)", (key, KEY_TTL * 2, KEY_TTL * 2))

    def keys() -> set[str]:
        with runtime.pool().connection() as conn:
            return {row[0] for row in conn.execute(
                f"SELECT key FROM {CATALOG_SCHEMA}.idempotency WHERE username = 'u'")}

    runtime.pool()  # the tables
    expired_key("first")
    rounds = SealingRounds(runtime)
    rounds.seal_all()
    assert keys() == set()
    expired_key("second")
    rounds.seal_all()  # the next round: not ten minutes later
    assert keys() == {"second"}
