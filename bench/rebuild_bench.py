"""Rebuild benchmark on a generated store of --events signed events (default 1,000,000).

    python bench/rebuild_bench.py [--events 1000000] [--parts N] [--database-url URL]
                                  [--keep-store --home DIR | --store URL --home DIR]

Generates the store with read_bench's generator, then measures in this one run:
  - baseline: read and decode every event (one process, as the rebuild's parts do)
  - the rebuild of the read tables in --parts processes (default: one per core), with the
    most connections its parts held at once, counted by the server (target: rebuild >= 0.8 x
    the baseline; connections <= application.rebuild_parts.REBUILD_CONNECTIONS)
and prints:

    BENCH read_decode value=<ev/s> unit=ev/s cpu_s=<CPU seconds> [server_cpu_s=<...>]
    BENCH rebuild value=<ev/s> unit=ev/s baseline=<read_decode> ratio=<r> parts=<n>
          peak_connections=<n> cpu_s=<CPU seconds of the rebuild and its parts>
          [server_cpu_s=<CPU seconds of PostgreSQL's processes meanwhile>]

server_cpu_s (an embedded server, whose processes this machine shows): on a machine shared
with other work the rates follow the load, their CPU seconds much less.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path
from server_cpu import server_cpu_seconds
from store_options import add_store_arguments

STUDY = "NCT04397107"


def decode_rate(runtime: Any) -> float:
    """Events per second of reading and decoding every event of the log (the baseline)."""
    app = runtime.study(STUDY)
    started = time.perf_counter()
    count, start = 0, 1
    while batch := app.recorder.select_notifications(start, 5000):
        for notification in batch:
            app.mapper.to_domain_event(notification)
        count += len(batch)
        start = batch[-1].id + 1
    return count / (time.perf_counter() - started)


class ConnectionCounter:
    """The most connections the rebuild's parts held at once, as pg_stat_activity shows."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name, self.peak = url, name, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._count, daemon=True)

    def _count(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                   "WHERE application_name = %s", (self.name,)).fetchone()
                self.peak = max(self.peak, row[0] if row else 0)
                time.sleep(0.05)

    def __enter__(self) -> ConnectionCounter:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


class Server:
    """The CPU seconds the embedded server of ``pgdata`` spent, one stretch after another."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.last = server_cpu_seconds(pgdata)

    def spent(self) -> dict[str, float]:
        """``server_cpu_s`` since the last call (nothing when the server is not local)."""
        now = server_cpu_seconds(self.pgdata)
        spent = {} if now is None or self.last is None else {"server_cpu_s": now - self.last}
        self.last = now
        return spent


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the rebuild's parts)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main() -> None:
    """Generate (or take a kept store), measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_store_arguments(parser)
    parser.add_argument("--parts", type=int, default=None)
    args = parser.parse_args()
    # Imported here: the rebuild's parts are spawned processes that import this script again.
    from read_bench import generate, store_url

    from application.rebuild_parts import PART_APPLICATION_NAME, parts_for
    from application.runtime import Runtime
    from infra.settings import Settings

    home = Path(args.home or tempfile.mkdtemp(prefix="tl-bench-"))
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with contextlib.ExitStack() as stack:
        url = store_url(stack, settings, args.store, args.keep_store)
        runtime = Runtime(settings, url)
        if not args.store:
            generate(runtime, args.events, random.Random(1))
        total = runtime.study(STUDY).recorder.max_notification_id() or 0
        runtime.project(STUDY)
        runtime.close()  # the generator's cached aggregates go

        runtime = Runtime(settings, url)
        server = Server(settings.pgdata)
        cpu = cpu_seconds()
        baseline = decode_rate(runtime)
        baseline_cpu = {"cpu_s": cpu_seconds() - cpu, **server.spent()}
        runtime.close()
        runtime = Runtime(settings, url)
        parts = args.parts or parts_for(total)
        started, cpu = time.perf_counter(), cpu_seconds()
        with ConnectionCounter(url, PART_APPLICATION_NAME) as counter:
            runtime.project(STUDY, rebuild=True, parts=parts)
        rate = total / (time.perf_counter() - started)
        rebuild_cpu = {"cpu_s": cpu_seconds() - cpu, **server.spent()}
        runtime.close()
    print(f"rebuild benchmark: {total} events; load {os.getloadavg()[0]:.1f}; "
          "target: rebuild >= 0.8 x read and decode")
    print(bench_line("read_decode", baseline, "ev/s", **baseline_cpu))
    print(bench_line("rebuild", rate, "ev/s", baseline, parts=parts,
                     peak_connections=counter.peak, **rebuild_cpu))


if __name__ == "__main__":
    main()
