"""Where a rebuild's CPU goes, phase by phase, on a kept store (a profile, not a bench: it
prints no BENCH line; ``rebuild_bench.py`` measures the rebuild against its baseline).

    python bench/rebuild_phases.py --store URL --home DIR [--parts N]

Replays the log into a rebuild's staging tables in ``--parts`` processes (as ``trialledger
rebuild`` does), printing the wall time, the parts' CPU seconds and the embedded server's;
then runs each statement of the finish alone, one after another on one connection without
parallel workers, printing its wall time and its backend's CPU seconds (the server must be
this machine's, whose ``/proc`` shows the backend). The staged and rebuilt tables are left
in place, unswapped: the read tables stay as they were, and the next rebuild drops them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import psycopg
from rebuild_bench import STUDY, Server, cpu_seconds  # bench/ is the script's directory

from application.rebuild_parts import PartsReplay, parts_for
from application.runtime import Runtime
from infra.postgres import database
from infra.settings import Settings
from projections.history_view import REBUILD_SETTINGS
from projections.projector import HistoryProjector


def backend_cpu(pid: int) -> float:
    """CPU seconds of the server process ``pid`` so far (utime + stime from /proc; NaN for a
    server this machine does not run)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    """Replay, then time each finish statement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True, help="URL of a kept store")
    parser.add_argument("--home", required=True, help="its TrialLedger home")
    parser.add_argument("--parts", type=int, default=None)
    args = parser.parse_args()
    settings = Settings(database_url=Settings.from_env(None).database_url, home=Path(args.home))
    with contextlib.ExitStack() as stack:
        stack.enter_context(database(settings.database_url, settings.pgdata))
        runtime = Runtime(settings, args.store)
        stack.callback(runtime.close)
        app = runtime.study(STUDY)
        view = runtime.history_view(STUDY)
        through = app.recorder.max_notification_id() or 0
        parts = args.parts or parts_for(through)
        view.begin_rebuild()
        server = Server(settings.pgdata)
        started, cpu = time.perf_counter(), cpu_seconds()
        if parts == 1:
            done = HistoryProjector(app, view).replay_part(0, 1, through)
        else:
            done = PartsReplay(settings, args.store, STUDY, parts, signed=runtime.signed)(through)
        server_cpu = server.spent().get("server_cpu_s")
        print(f"replay: {done} events, {parts} parts, {time.perf_counter() - started:.1f} s, "
              f"CPU {cpu_seconds() - cpu:.1f} s (this process and its parts)"
              + ("" if server_cpu is None else f", the embedded server {server_cpu:.1f} s"))
        total = 0.0
        with psycopg.connect(args.store, autocommit=True) as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            for setting in REBUILD_SETTINGS:
                conn.execute(setting.as_string(conn).replace("SET LOCAL", "SET"))
            conn.execute("SET max_parallel_maintenance_workers = 0")
            for step in view.finish_steps():
                for statement in step:
                    started, cpu = time.perf_counter(), backend_cpu(pid)
                    conn.execute(statement)
                    spent = backend_cpu(pid) - cpu
                    total += spent
                    print(f"{time.perf_counter() - started:6.2f} s  CPU {spent:6.2f} s  "
                          f"{statement.as_string(conn)[:110]}")
        print(f"finish: backend CPU {total:.1f} s")


if __name__ == "__main__":
    main()
