"""import-sdtm throughput on CDISCPILOT01, against baselines measured in the same run.

    python bench/import_bench.py [--sdtm DIR] [--per-event N] [--database-url URL]

Runs in a temporary database on the given server (or an embedded one), dropped afterwards.
It prints, each in events/s:

- raw reading of the XPT files (pyreadstat; the floor no import can beat),
- building the signed events in memory (domain + transcoding + Ed25519), nothing stored,
- the import itself (batched transactions), and the re-run (which adds nothing),
- the plain per-event write path: the same import saving each subject's events one
  command at a time (one transaction per event), on the first N subjects' events.

Next to the rates, the CPU each costs per event (microseconds, this process and its children,
i.e. the signing process; not the PostgreSQL server's) and the load average: on a shared
machine the rates move with the load, the CPU far less.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path

from application.runtime import Runtime
from application.sdtm_import import DataSet, Importer
from application.trial_service import TrialService
from domain.caller import OPERATOR_GRANT, Caller
from domain.service import StudyApplication
from domain.subject import Subject
from infra.postgres import database, temporary_database
from infra.sdtm_files import read_directory
from infra.settings import Settings

SDTM = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdiscpilot01" / "sdtm"
OPERATOR = Caller("os:bench", "bench", "bench", (OPERATOR_GRANT,), "import-bench", "bench",
                  "import")


def _cpu() -> float:
    """CPU seconds of this process and of its children waited for so far."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rate(events: int, seconds: float) -> str:
    return f"{events:>7} events in {seconds:6.2f} s = {events / seconds:>8.0f} events/s"


def _build_only(service: TrialService, app: StudyApplication, data: DataSet) -> tuple[int, float]:
    """Run the import with saving replaced by mapping (transcode + sign) in memory (on the
    application's own save path, which ``save_imported`` is; the bulk path signs elsewhere)."""
    events = 0

    def map_only(subjects: Sequence[Subject]) -> None:
        nonlocal events
        for subject in subjects:
            for event in subject.collect_events():
                app.mapper.to_stored_event(event)
                events += 1

    app.save_imported = map_only  # type: ignore[method-assign]
    start = time.perf_counter()
    Importer(service, app, data, OPERATOR, bulk=False).run()
    return events, time.perf_counter() - start


def _per_event(service: TrialService, app: StudyApplication, data: DataSet,
               limit: int) -> tuple[int, float]:
    """The first ``limit`` events of the same import, each stored in a transaction of its
    own (the per-command path); returns them and the time spent storing them."""
    events = 0
    storing = 0.0

    def one_by_one(subjects: Sequence[Subject]) -> None:
        nonlocal events, storing
        for subject in subjects:
            for event in subject.collect_events():
                if events < limit:
                    start = time.perf_counter()
                    app.save(event)
                    storing += time.perf_counter() - start
                    events += 1

    app.save_imported = one_by_one  # type: ignore[method-assign]
    Importer(service, app, data, OPERATOR, bulk=False).run()
    return events, storing


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sdtm", type=Path, default=SDTM)
    parser.add_argument("--per-event", type=int, default=3000,
                        help="events written by the per-event baseline")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of the import in workers")
    args = parser.parse_args()

    start = time.perf_counter()
    tables = read_directory(args.sdtm)
    read_s = time.perf_counter() - start
    rows = sum(len(t.rows) for t in tables)
    data = DataSet(args.sdtm)

    with tempfile.TemporaryDirectory() as home, \
            database(args.database_url, Path(home) / "pgdata") as server, \
            temporary_database(server, "tl_bench") as url:
        runtime = Runtime(Settings(database_url=url, home=Path(home) / "home"), url)
        try:
            cpu = _cpu()
            built, build_s = _build_only(runtime.service(), runtime.study("BUILD", clock=None),
                                         data)
            build_cpu = _cpu() - cpu
            app = runtime.study("CDISCPILOT01")
            cpu = _cpu()
            start = time.perf_counter()
            result = Importer(runtime.service(), app, data, OPERATOR).run()
            import_s = time.perf_counter() - start
            # The signing process has ended (and been waited for) when run returns.
            import_cpu = _cpu() - cpu
            start = time.perf_counter()
            again = Importer(runtime.service(), app, data, OPERATOR).run()
            rerun_s = time.perf_counter() - start
            # The same import into a study of its own, built and signed in worker processes.
            cpu = _cpu()
            start = time.perf_counter()
            in_workers = Importer(runtime.service(), runtime.study("WORKERS"), data, OPERATOR,
                                  workers=args.workers).run()
            workers_s = time.perf_counter() - start
            workers_cpu = _cpu() - cpu
            slow, slow_s = _per_event(runtime.service(), runtime.study("PER-EVENT"), data,
                                        args.per_event)
        finally:
            runtime.close()

    load = os.getloadavg()[0]
    print(f"CDISCPILOT01 from {args.sdtm} (load average {load:.1f})")
    print(f"  read XPT (pyreadstat)       {rows:>7} rows   in {read_s:6.2f} s = "
          f"{rows / read_s:>8.0f} rows/s")
    print(f"  build + sign, not stored    {_rate(built, build_s)}, "
          f"{build_cpu / built * 1e6:.0f} us CPU each")
    print(f"  import (batched)            {_rate(result.events_added, import_s)}, "
          f"{import_cpu / result.events_added * 1e6:.0f} us CPU each")
    print(f"  import ({args.workers} workers)         {_rate(in_workers.events_added, workers_s)}, "
          f"{workers_cpu / in_workers.events_added * 1e6:.0f} us CPU each")
    print(f"  re-run (adds {again.events_added})           {result.events_added:>7} events "
          f"checked in {rerun_s:6.2f} s")
    # The per-event path's rate: its storing time plus the same building cost per event.
    per_event_s = slow_s + slow * build_s / built
    print(f"  per-event transactions      {_rate(slow, per_event_s)} (first {slow} events)")
    rate = result.events_added / import_s
    best = max(rate, in_workers.events_added / workers_s)
    print(f"  batched import vs per-event path: x{rate / (slow / per_event_s):.1f}; "
          f"target 15000 events/s (issue 19) {'met' if best >= 15_000 else 'NOT met'}")
    print(bench_line("sdtm_import", rate, "ev/s", built / build_s,
                     cpu_us=import_cpu / result.events_added * 1e6,
                     baseline_cpu_us=build_cpu / built * 1e6, load=load))
    print(bench_line("sdtm_import_workers", in_workers.events_added / workers_s, "ev/s",
                     built / build_s, cpu_us=workers_cpu / in_workers.events_added * 1e6,
                     baseline_cpu_us=build_cpu / built * 1e6, load=load))
    print(bench_line("sdtm_import_per_event", slow / per_event_s, "ev/s", built / build_s))


if __name__ == "__main__":
    main()
