"""`trialledger serve` as a real process stops when told, whatever it is doing, and its
embedded PostgreSQL does not outlive it, however it ends."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from domain.studies import nct04397107
from infra.postgres import schema_for_study
from tests.support import home_of_a_served_study, start_serve

STUDY = nct04397107.STUDY_ID
# The bound on a stop after SIGTERM.
SIGTERM_BOUND = 10.0
# How long a killed server's embedded PostgreSQL may take to go (a fast shutdown).
ORPHAN_BOUND = 30.0



@pytest.fixture
def served_study(db_url: str, tmp_path: Path) -> Path:
    """A home whose key signed NCT04397107 with child 001 enrolled and a coordinator."""
    return home_of_a_served_study(db_url, tmp_path / "home")


def _sleeping_insert(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND query LIKE 'INSERT INTO%%' AND wait_event = 'PgSleep'").fetchone()
    return bool(row and row[0])


def test_sigterm_stops_the_server_during_a_stuck_write(served_study: Path, db_url: str,
                                                       tmp_path: Path) -> None:
    table = SQL("{}.{}").format(Identifier(schema_for_study(STUDY)),
                                Identifier("trialledger_events"))
    # A write that hangs holding the events-table lock, which neither PostgreSQL's timeouts
    # nor the watchdog end before the signal comes.
    process, base = start_serve(served_study, tmp_path / "server.log", "--database-url", db_url,
                           TRIALLEDGER_COMMIT_TIMEOUT="600",
                           TRIALLEDGER_WRITE_STATEMENT_TIMEOUT="0")
    try:
        token = httpx.post(f"{base}/v1/auth/token",
                           json={"username": "lwei", "password": "lwei-password"}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        with psycopg.connect(db_url, autocommit=True) as owner:
            owner.execute("CREATE FUNCTION public.stall() RETURNS trigger LANGUAGE plpgsql AS "
                          "$$ BEGIN PERFORM pg_sleep(3600); RETURN NULL; END $$")
            owner.execute(SQL("CREATE TRIGGER stall BEFORE INSERT ON {} FOR EACH STATEMENT "
                              "EXECUTE FUNCTION public.stall()").format(table))
            threading.Thread(target=_post_lab, args=(base, headers), daemon=True).start()
            deadline = time.monotonic() + 30
            while not _sleeping_insert(owner):
                assert time.monotonic() < deadline, "the write never reached the database"
                time.sleep(0.1)

            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=SIGTERM_BOUND + 5)
            assert time.monotonic() - sent < SIGTERM_BOUND

            # It ended its stuck transaction on the way out: the lock is free.
            with owner.transaction():
                owner.execute("SET LOCAL lock_timeout = '2s'")
                owner.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _post_lab(base: str, headers: dict[str, str]) -> None:
    with contextlib.suppress(httpx.TransportError):  # the server stops under it, as meant
        httpx.post(f"{base}/v1/studies/{STUDY}/subjects/001/labs", headers=headers, timeout=60,
                   json={"record_id": "LB1", "observed_at": "2021-01-11T08:00:00+00:00",
                         "code": "C3", "value": 0.8, "unit": "g/L"})


def _postgres_of(pgdata: Path) -> list[int]:
    """Every postgres process serving ``pgdata``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"postgres") and str(pgdata).encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_a_killed_server_leaves_no_embedded_postgres_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    process, _ = start_serve(home, tmp_path / "server.log")
    pgdata = (home / "pgdata").resolve()
    try:
        assert _postgres_of(pgdata), "the server runs no embedded PostgreSQL"
        process.kill()
        process.wait()
        deadline = time.monotonic() + ORPHAN_BOUND
        while _postgres_of(pgdata):
            assert time.monotonic() < deadline, "the embedded PostgreSQL outlived its server"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
