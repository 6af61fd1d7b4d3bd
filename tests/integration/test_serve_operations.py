"""The operations' view of `trialledger serve` as real processes (issue 16, item 7):
``/metrics`` of any worker counts every worker's requests and shows each process; ``/readyz``
goes 503 while the sealer is stopped (SIGSTOP) with events waiting, and 200 once it runs
again; on SIGTERM a request in flight gets its answer and the sealer seals it before the
server exits; every log line names the service and its version."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.sql import SQL, Identifier

from domain.studies import nct04397107
from infra.postgres import schema_for_study
from infra.sealer_status import ledger_state
from tests.support import home_of_a_served_study, start_serve

STUDY = nct04397107.STUDY_ID
# Waits, not speed checks: for /readyz to turn (the stall bound below plus a round), and for
# a stopped server to exit.
TURN_BOUND = 60.0
EXIT_BOUND = 15.0
STALL_AFTER = "2"

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(),
                                reason="finds the sealer process in /proc")


def _serve(home: Path, log: Path, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `trialledger serve` logging JSON lines; return the process and its base URL."""
    return start_serve(home, log, *args, cli_options=("--log-format", "json"), **env)


@pytest.fixture
def served_study(db_url: str, tmp_path: Path) -> Path:
    """A home whose key signed NCT04397107 with child 001 enrolled and a coordinator."""
    return home_of_a_served_study(db_url, tmp_path / "home")


def _sealer_of(pid: int) -> int:
    """The sealer: the child of ``pid`` started by multiprocessing's spawn."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            return int(entry.name)
    raise AssertionError("the server runs no sealer process")


def _headers(base: str) -> dict[str, str]:
    token = httpx.post(f"{base}/v1/auth/token",
                       json={"username": "lwei", "password": "lwei-password"}).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def _post_lab(base: str, headers: dict[str, str], record: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/studies/{STUDY}/subjects/001/labs", headers=headers,
                      timeout=60, json={"record_id": record,
                                        "observed_at": "2021-01-11T08:00:00+00:00",
                                        "code": "C3", "value": 0.8, "unit": "g/L"})


def _stop(process: subprocess.Popen[bytes], *paused: int) -> None:
    for pid in paused:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.kill(pid, signal.SIGCONT)
    if process.poll() is None:
        process.kill()
        process.wait()


def _unready(base: str) -> str:
    """What /readyz says has stalled ("" while it is ready)."""
    answer = httpx.get(f"{base}/readyz")
    return "" if answer.status_code == 200 else str(answer.json()["detail"])


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TURN_BOUND
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


@pytest.mark.slow(seconds=25)
def test_two_workers_report_every_request_and_process(served_study: Path, db_url: str,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    run_dirs = tmp_path / "tmp"  # where the server makes its temporary directory
    run_dirs.mkdir()
    process, base = _serve(served_study, log, "--database-url", db_url, "--workers", "2",
                           TMPDIR=str(run_dirs))
    try:
        assert [p.name[:18] for p in run_dirs.iterdir()] == ["trialledger-serve-"]
        asked = 40
        for _ in range(asked):  # a new connection each: the two workers share them out
            assert httpx.get(f"{base}/healthz").status_code == 200
        time.sleep(0.5)

        def sealer_reported() -> bool:
            # The sealer's process reports once it has started, which on a loaded machine
            # may come after the workers have answered.
            processes = {f.name: f for f in text_string_to_metric_families(
                httpx.get(f"{base}/metrics").text)}["trialledger_process_resident_memory_bytes"]
            return any(s.labels["role"] == "sealer" for s in processes.samples)

        _wait_for(sealer_reported, "the sealer's process reports its memory")
        api_pids: set[str] = set()
        for _ in range(6):  # whichever worker answers, it answers for both
            families = {f.name: f for f in text_string_to_metric_families(
                httpx.get(f"{base}/metrics").text)}
            counted = sum(s.value for s in families["trialledger_http_requests"].samples
                          if s.name == "trialledger_http_requests_total"
                          and s.labels["route"] == "/healthz")
            assert counted == asked
            processes = families["trialledger_process_resident_memory_bytes"].samples
            api_pids |= {s.labels["pid"] for s in processes if s.labels["role"] == "api"}
            assert any(s.labels["role"] == "sealer" for s in processes)
            assert "trialledger_sealing_lag_events" in families
        assert len(api_pids) == 2, api_pids
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=EXIT_BOUND)
    finally:
        _stop(process)
    assert not list(run_dirs.iterdir()), "the metrics directory outlived the server"
    lines = [json.loads(line) for line in log.read_text().splitlines()
             if line.startswith("{")]
    assert lines
    assert all(line["service"] == "trialledger" and line["version"] for line in lines)


@pytest.mark.slow(seconds=25)
def test_readiness_turns_while_the_sealer_is_stopped(served_study: Path, db_url: str,
                                                     tmp_path: Path) -> None:
    process, base = _serve(served_study, tmp_path / "server.log", "--database-url", db_url,
                           TRIALLEDGER_STALL_AFTER=STALL_AFTER)
    sealer = _sealer_of(process.pid)
    try:
        headers = _headers(base)
        os.kill(sealer, signal.SIGSTOP)
        assert _post_lab(base, headers, "LB1").status_code == 201
        # (The sign-in's event in the directory's log waits too, and may be named first.)
        _wait_for(lambda: f"study {STUDY}" in _unready(base),
                  "/readyz stayed ready with the sealer stopped")
        assert "sealer" in httpx.get(f"{base}/readyz").json()["stalled"]

        os.kill(sealer, signal.SIGCONT)
        _wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200,
                  "/readyz did not come back with the sealer running again")
    finally:
        _stop(process, sealer)


@pytest.mark.slow(seconds=25)
def test_sigterm_answers_the_request_in_flight_and_seals_it(served_study: Path, db_url: str,
                                                            tmp_path: Path) -> None:
    events = SQL("{}.{}").format(Identifier(schema_for_study(STUDY)),
                                 Identifier("trialledger_events"))
    process, base = _serve(served_study, tmp_path / "server.log", "--database-url", db_url)
    sealer = _sealer_of(process.pid)
    answers: list[httpx.Response] = []
    try:
        headers = _headers(base)
        # The sealer waits, so that only a round after the stop can seal the write.
        os.kill(sealer, signal.SIGSTOP)
        with psycopg.connect(db_url, autocommit=True) as owner:
            owner.execute("CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS "
                          "$$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$")
            owner.execute(SQL("CREATE TRIGGER slow BEFORE INSERT ON {} FOR EACH STATEMENT "
                              "EXECUTE FUNCTION public.slow()").format(events))
            writer = threading.Thread(target=lambda: answers.append(
                _post_lab(base, headers, "LB1")))
            writer.start()
            deadline = time.monotonic() + TURN_BOUND
            while not owner.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query LIKE 'INSERT INTO%%' AND wait_event = 'PgSleep'"
                    ).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline, "the write never reached the database"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            os.kill(sealer, signal.SIGCONT)
            writer.join(EXIT_BOUND)
            process.wait(timeout=EXIT_BOUND)
    finally:
        _stop(process, sealer)

    assert [a.status_code for a in answers] == [201]
    with psycopg.connect(db_url) as conn:
        state = ledger_state(conn, STUDY, schema_for_study(STUDY), None)
        stored = conn.execute(SQL("SELECT count(*) FROM {} WHERE topic LIKE %s").format(events),
                              ("%LabResult%",)).fetchone()
        checkpoint = conn.execute(SQL("SELECT max(tree_size) FROM {}.ledger_checkpoints").format(
            Identifier(schema_for_study(STUDY)))).fetchone()
        leaves = conn.execute(SQL("SELECT count(*) FROM {}.ledger_leaves").format(
            Identifier(schema_for_study(STUDY)))).fetchone()
    assert stored is not None and stored[0] == 1, "the answered write was not stored"
    assert state.unsealed == 0, "the sealer stopped without sealing what was written"
    assert checkpoint == leaves, "no checkpoint covers the last events sealed"
