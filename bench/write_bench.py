"""Write throughput through the application service: signed vs unsigned, 1 and 100 events per save.

    python bench/write_bench.py [--events N] [--database-url URL]

It runs in a temporary database on the given server (or an embedded one), dropped afterwards;
each configuration writes into its own study schema. The unsigned run is the baseline
measured in the same run; the script prints events/s and the signed/unsigned ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path

from application.runtime import Runtime
from domain.clock import SimulatedClock
from domain.envelope import Actor, Envelope
from domain.studies import nct04397107
from domain.subject import Subject
from infra.postgres import database, temporary_database
from infra.settings import Settings

ACTOR = Actor("u-bench", "Bench Coordinator", "coordinator", "JLU1")
ENVELOPE = Envelope(ACTOR, "bench", "system", "bench")
T0 = datetime(2021, 1, 10, 9, 0, tzinfo=UTC)


def _study(runtime: Runtime, label: str, clock: SimulatedClock) -> tuple[object, str]:
    study_id = f"BENCH-{label}-{uuid.uuid4().hex[:6]}"
    definition = {**nct04397107.definition(), "study_id": study_id}
    app = runtime.study(study_id, clock=clock)
    app.register_study(definition, ENVELOPE)
    return app, study_id


def run_config(runtime: Runtime, label: str, events: int, per_save: int) -> float:
    """Write ``events`` lab results, ``per_save`` per transaction; return events/s."""
    from domain.service import StudyApplication

    clock = SimulatedClock(T0)
    app, _ = _study(runtime, label, clock)
    assert isinstance(app, StudyApplication)
    subjects = max(1, events // max(per_save, 50))
    codes = [f"{i:04d}" for i in range(subjects)]
    for code in codes:
        app.enroll_subject(code, "JLU1", date(2010, 5, 1), "F", "SLE", date(2021, 1, 10),
                           nct04397107.ELIGIBLE_SCREENING_ANSWERS, "IL2", date(2021, 1, 10),
                           ENVELOPE)
    clock.set(T0 + timedelta(days=1))
    written = 0
    n = 0
    started = time.perf_counter()
    while written < events:
        code = codes[n % len(codes)]
        batch = min(per_save, events - written)

        def command(subject: Subject, at: datetime, batch: int = batch, base: int = n) -> None:
            for i in range(batch):
                subject.record_lab_result(f"LB{base}-{i}", T0, "C3", 0.8, "g/L", ENVELOPE, at)

        app.on_subject(code, command)
        written += batch
        n += 1
    elapsed = time.perf_counter() - started
    app.close()
    return written / elapsed


def main() -> None:
    """Run the four configurations and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    settings = Settings.from_env(args.database_url)
    settings = Settings(database_url=settings.database_url, home=home)
    with database(settings.database_url, settings.pgdata) as server, \
            temporary_database(server, "tl_bench") as url:
        rates: dict[tuple[bool, int], float] = {}
        for per_save in (1, 100):
            for signed in (False, True):
                runtime = Runtime(settings, url, signed=signed)
                label = f"{'S' if signed else 'U'}{per_save}"
                rates[(signed, per_save)] = run_config(runtime, label, args.events, per_save)
                runtime.close()
    print(f"write benchmark: {args.events} lab results per configuration")
    print(f"{'events/save':>12} {'unsigned ev/s':>14} {'signed ev/s':>12} {'signed/unsigned':>16}")
    for per_save in (1, 100):
        unsigned, signed_rate = rates[(False, per_save)], rates[(True, per_save)]
        print(f"{per_save:>12} {unsigned:>14.0f} {signed_rate:>12.0f} "
              f"{signed_rate / unsigned:>16.2f}")
    for per_save in (1, 100):
        print(bench_line(f"signed_writes_{per_save}_per_save", rates[(True, per_save)], "ev/s",
                         rates[(False, per_save)]))


if __name__ == "__main__":
    main()
