"""A failover drill against ``trialledger serve`` on a pg_auto_failover formation: writing
clients over HTTP, each acknowledgement noted with its time; what the store holds afterwards;
the longest pause in acknowledgements around each disruption. Shared by the failover test
and ``bench/failover_bench.py``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from application.runtime import Runtime
from domain.studies import nct04397107
from domain.subject.events import LabResultRecorded
from domain.subject.state import subject_uuid
from infra.postgres import connect, schema_for_study
from infra.settings import Settings
from tests.auto_failover import AutoFailoverFormation
from tests.support import add_person, enroll, free_port, register, wait_until_ready
from trialledger_client import (
    Client,
    ConnectionFailed,
    InvalidInput,
    ProblemError,
    StaleVersion,
    Token,
)

STUDY = nct04397107.STUDY_ID
WRITER = "drill-coordinator"
OBSERVED = datetime(2021, 1, 11, 8, tzinfo=UTC)
# How long a writer waits before sending again after a refusal it may retry (the database
# away, a connection cut): short, so that the first write after the failover is seen soon.
RESEND_WAIT = 0.1
# Seconds of writing before the calm phase is timed (the server's first writes fill its
# caches and pools: not the pauses of a running server).
WARM_UP = 2.0


def subject_code(client: int) -> str:
    """The subject client ``client`` writes to (each client its own: no write waits on
    another's version)."""
    return f"F{client:03d}"


def set_up(url: str, home: Path, clients: int) -> str:
    """The study, a coordinator, and a subject per client, written in this process;
    the coordinator's password."""
    runtime = Runtime(Settings(database_url=url, home=home), url)
    try:
        app = runtime.study(STUDY)
        register(app)
        for n in range(clients):
            enroll(app, subject_code(n), consent=date(2021, 1, 10))
        app.close()
        return add_person(runtime, WRITER, "coordinator", site="JLU1")
    finally:
        runtime.close()


@contextmanager
def served(url: str, home: Path, log: Path) -> Iterator[str]:
    """``trialledger serve`` on a free loopback port, on ``url``; its base URL."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "--log-format", "json", "serve", "--port",
             str(port), "--database-url", url],
            env={**environ, "TRIALLEDGER_HOME": str(home)}, stdout=out,
            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, log, process)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Writes:
    """What the writers did: acknowledged record ids with the time of their 201, record ids
    the server refused as already stored (an earlier attempt whose answer was lost did
    commit), and the status of every refusal on the way."""

    acknowledged: dict[str, float] = field(default_factory=dict)
    found_stored: set[str] = field(default_factory=set)
    refusals: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note_refusal(self, what: str) -> None:
        """Count one refusal (a status, or the connection failing)."""
        with self.lock:
            self.refusals[what] += 1


class WriteLoad:
    """``clients`` threads, each entering lab results into its own subject one after the
    other until :meth:`stop`, through the Python client (an Idempotency-Key per write, the
    same on its retries; retries after a connection error or a 503)."""

    def __init__(self, base: str, token: Token, clients: int) -> None:
        self.base = base
        self.token = token
        self.writes = Writes()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(n,), daemon=True)
                         for n in range(clients)]

    def start(self) -> None:
        """Start every client."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> Writes:
        """Stop every client after its current write; what they did."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        return self.writes

    def _write(self, n: int) -> None:
        subject = subject_code(n)
        with Client(self.base, token=self.token, retries=20, max_retry_wait=1.0,
                    timeout=30) as client:
            count = 0
            while not self._stop.is_set():
                count += 1
                record_id = f"{subject}-{count:06d}"
                self._enter(client, subject, record_id, count)

    def _enter(self, client: Client, subject: str, record_id: str, count: int) -> None:
        """Enter one lab result until it is acknowledged or known stored; a write cut off is
        sent again under a new key: its record id keeps it from being stored twice."""
        writes = self.writes
        while True:
            try:
                client.record_lab(STUDY, subject, observed_at=OBSERVED + timedelta(minutes=count),
                                  code="C3", value=0.8, unit="g/L", record_id=record_id)
            except StaleVersion:
                # An earlier write stored though its answer was lost: read the version.
                writes.note_refusal("412")
                client.casebook(STUDY, subject)
            except InvalidInput as e:
                if "record_id" not in e.field_names:
                    writes.note_refusal(f"422 {e}")
                    return
                writes.note_refusal("422 record_id exists")
                with writes.lock:
                    writes.found_stored.add(record_id)
                return
            except ProblemError as e:
                # 409: a key whose first request was cut off; 503: the database away.
                writes.note_refusal(str(e.status))
                if e.status not in (409, 503):
                    return  # not to be retried: the test names it
            except ConnectionFailed:
                writes.note_refusal("connection failed")
            else:
                with writes.lock:
                    writes.acknowledged[record_id] = time.monotonic()
                return
            if self._stop.is_set() and count > 1:
                return
            time.sleep(RESEND_WAIT)


def stored_lab_records(url: str, home: Path, clients: int) -> Counter[str]:
    """How many times each lab record id is in the event store (read from each subject's
    events, not from the read side)."""
    runtime = Runtime(Settings(database_url=url, home=home), url)
    try:
        app = runtime.study(STUDY)
        counts: Counter[str] = Counter()
        for n in range(clients):
            for event in app.events.get(subject_uuid(STUDY, subject_code(n))):
                if isinstance(event, LabResultRecorded):
                    counts[event.record_id] += 1
        app.close()
        return counts
    finally:
        runtime.close()


def caught_up(url: str, home: Path, bound: float) -> dict[str, int]:
    """Wait (at most ``bound`` seconds) until the server's sealer has sealed, and its
    projector projected, every event of the study; the log's last position, the leaves
    sealed and the position projected, as they were last read."""
    schema = schema_for_study(STUDY)
    runtime = Runtime(Settings(database_url=url, home=home), url)
    deadline = time.monotonic() + bound
    try:
        app = runtime.study(STUDY)
        view = runtime.history_view(STUDY)
        while True:
            with connect(url) as conn:
                row = conn.execute(f"SELECT coalesce(max(notification_id), 0)"
                                   f" FROM {schema}.ledger_leaves").fetchone()
            assert row is not None
            positions = {"stored": int(app.recorder.max_notification_id() or 0),
                         "sealed": int(row[0]),
                         "projected": int(view.max_tracking_id(app.name) or 0)}
            if positions["stored"] == positions["sealed"] == positions["projected"] or \
                    time.monotonic() > deadline:
                app.close()
                return positions
            time.sleep(1)
    finally:
        runtime.close()


@dataclass(frozen=True)
class Drill:
    """A drill's writes and when each phase began: calm, the failover, the SIGKILL."""

    writes: Writes
    started_at: float
    failover_at: float
    killed_at: float
    ended_at: float

    def windows(self) -> dict[str, float]:
        """The longest pause in acknowledgements in each phase (seconds): ``calm`` (the
        baseline: clients only), ``failover`` and ``sigkill`` (each from the disruption to
        the next one)."""
        acknowledged = self.writes.acknowledged
        return {"calm": longest_pause(acknowledged, self.started_at, self.failover_at),
                "failover": longest_pause(acknowledged, self.failover_at, self.killed_at),
                "sigkill": longest_pause(acknowledged, self.killed_at, self.ended_at)}


def drill(formation: AutoFailoverFormation, base: str, token: Token, clients: int,
          steady: float) -> Drill:
    """Write with ``clients`` clients through the server at ``base``: after a warm-up,
    ``steady`` seconds of calm, then ``pg_autoctl perform failover`` (node1 to node2) and
    ``steady`` seconds once the formation has settled, then SIGKILL of the new primary's
    postmaster (its pg_autoctl starts it again) and ``steady`` seconds once the formation has
    a writable primary and a secondary again."""
    load = WriteLoad(base, token, clients)
    load.start()
    time.sleep(WARM_UP)
    started_at = time.monotonic()
    time.sleep(steady)
    failover_at = time.monotonic()
    formation.perform_failover()
    formation.wait_for_states({"node1": "secondary", "node2": "primary"})
    time.sleep(steady)
    killed_at = time.monotonic()
    formation.kill_postmaster("node2")
    time.sleep(1.0)  # before the monitor has even seen the node go
    formation.wait_for_a_primary_and_a_secondary()
    time.sleep(steady)
    writes = load.stop()
    return Drill(writes, started_at, failover_at, killed_at, time.monotonic())


def longest_pause(acknowledged: dict[str, float], start: float, end: float) -> float:
    """The longest time between consecutive acknowledgements (or ``start``/``end``) within
    [``start``, ``end``]: how long no write was acknowledged."""
    times = sorted(t for t in acknowledged.values() if start <= t <= end)
    marks = [start, *times, end]
    return max(b - a for a, b in itertools.pairwise(marks))
