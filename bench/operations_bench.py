"""What the operations' view costs: a scrape of ``/metrics`` and a ``/readyz`` against the
cheapest answer, ``/healthz``, in this one run, with a backlog of events not yet sealed or
projected (the ledger's figures count them at each scrape).

    python bench/operations_bench.py [--database-url URL] [--backlog 2000] [--requests 200]

Works in a temporary database (dropped afterwards) on the given or an embedded server, in
one process (the app through Starlette's test client, no network), and prints:

    BENCH metrics_scrape value=<p50 ms> unit=ms baseline=<healthz p50 ms> ratio=<…>
          p50_ms=<…> p99_ms=<…>
    BENCH readyz value=<p50 ms> unit=ms baseline=<healthz p50 ms> ratio=<…> p50_ms= p99_ms=
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from application.ledger_watch import SealerWatch, start_watch
from application.runtime import Runtime
from domain.envelope import Actor, Envelope
from domain.studies import nct04397107
from infra.postgres import database, temporary_database
from infra.sealer_status import STATUS_FILE
from infra.settings import Settings

STUDY = nct04397107.STUDY_ID
ACTOR = Actor("u-bench", "Bench Mark", "coordinator", "JLU1")
T0 = datetime(2021, 1, 10, 9, 0, tzinfo=UTC)


def bench_line(name: str, latencies: list[float], baseline: list[float]) -> str:
    """The machine-readable line of one endpoint's latencies (seconds) against the baseline's."""
    p50, base = statistics.median(latencies) * 1000, statistics.median(baseline) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    return (f"BENCH {name} value={p50:.2f} unit=ms baseline={base:.2f} "
            f"ratio={p50 / base:.2f} p50_ms={p50:.2f} p99_ms={p99:.2f}")


def _envelope() -> Envelope:
    return Envelope(actor=ACTOR, client="bench", source="api", request_id="bench")


def _fill(runtime: Runtime, backlog: int) -> None:
    """NCT04397107 with one child and ``backlog`` lab results."""
    app = runtime.study(STUDY)
    app.register_study(nct04397107.definition(), _envelope())
    app.enroll_subject("001", "JLU1", date(2010, 5, 1), "F", "SLE", date(2021, 1, 10),
                       dict(nct04397107.ELIGIBLE_SCREENING_ANSWERS), "IL2", date(2021, 1, 10),
                       _envelope())
    for n in range(backlog):
        app.on_subject("001", lambda s, t, n=n: s.record_lab_result(
            f"LB{n}", T0 + timedelta(minutes=n), "C3", 0.8, "g/L", _envelope(), t))


def _timed(client: TestClient, path: str, requests: int) -> list[float]:
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        latencies.append(time.perf_counter() - started)
        assert answer.status_code in (200, 503), answer.text
    return latencies


def main() -> None:
    """Fill, then time the three endpoints in turn."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with database(settings.database_url, settings.pgdata) as server, \
            temporary_database(server, "tl_bench") as url:
        runtime = Runtime(settings, url)
        try:
            status = home / STATUS_FILE
            start_watch(status)
            _fill(runtime, args.backlog)
            # One round sees the log (the status's times); the backlog then stays unsealed.
            SealerWatch(runtime, status).visited(STUDY)
            client = TestClient(create_app(runtime, status_path=status))
            for path in ("/healthz", "/metrics", "/readyz"):
                _timed(client, path, 10)  # warm up
            healthz = _timed(client, "/healthz", args.requests)
            metrics = _timed(client, "/metrics", args.requests)
            readyz = _timed(client, "/readyz", args.requests)
        finally:
            runtime.close()
    print(f"operations benchmark: {args.backlog} events waiting, {args.requests} requests each")
    print(bench_line("metrics_scrape", metrics, healthz))
    print(bench_line("readyz", readyz, healthz))


if __name__ == "__main__":
    main()
