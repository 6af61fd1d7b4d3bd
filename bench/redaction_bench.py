"""The cost of sealing identifying values: adverse events written and a casebook loaded with
the reported term declared identifying (sealed, a data key per record) against the same study
without the declaration (plain), measured in the same run.

    python bench/redaction_bench.py [--events N] [--database-url URL]

It runs in a temporary database on the given server (or an embedded one), dropped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path

from application.runtime import Runtime
from domain.clock import SimulatedClock
from domain.envelope import Actor, Envelope
from domain.service import StudyApplication
from domain.studies import nct04397107
from domain.subject import Subject
from domain.subject.state import subject_uuid
from infra.postgres import database, temporary_database
from infra.settings import Settings

ACTOR = Actor("u-bench", "Bench Coordinator", "coordinator", "JLU1")
ENVELOPE = Envelope(ACTOR, "bench", "system", "bench")
T0 = datetime(2021, 1, 10, 9, 0, tzinfo=UTC)
AE = {"term": "Injection site reaction", "category": "injection_site_reaction", "grade": 1,
      "serious": False, "relationship": "probable", "action_taken": "none",
      "outcome": "recovering"}


def run_config(runtime: Runtime, sealed: bool, events: int) -> tuple[float, list[float]]:
    """Write ``events`` adverse events to one subject, one per save; return events/s and
    the times (ms) of loading the subject afresh from its events, ten times."""
    clock = SimulatedClock(T0)
    study_id = f"BENCH-{'S' if sealed else 'P'}-{uuid.uuid4().hex[:6]}"
    definition = {**nct04397107.definition(), "study_id": study_id}
    if not sealed:
        definition.pop("identifying_items")
    app: StudyApplication = runtime.study(study_id, clock=clock)
    app.register_study(definition, ENVELOPE)
    app.enroll_subject("0001", "JLU1", date(2010, 5, 1), "F", "SLE", date(2021, 1, 10),
                       nct04397107.ELIGIBLE_SCREENING_ANSWERS, "IL2", date(2021, 1, 10),
                       ENVELOPE)
    clock.set(T0 + timedelta(days=1))
    started = time.perf_counter()
    for n in range(events):
        def command(subject: Subject, at: datetime, n: int = n) -> None:
            subject.report_adverse_event(f"AE{n}", T0, AE, ENVELOPE, at)

        app.on_subject("0001", command)
    rate = events / (time.perf_counter() - started)
    loads = []
    for _ in range(10):
        started = time.perf_counter()
        # A version given: reconstructed from its events, not taken from the cache.
        app.repository.get(subject_uuid(study_id, "0001"), version=2**31)
        loads.append((time.perf_counter() - started) * 1000)
    app.close()
    return rate, loads


def main() -> None:
    """Run both configurations and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with database(settings.database_url, settings.pgdata) as server, \
            temporary_database(server, "tl_bench") as url:
        runtime = Runtime(settings, url)
        try:
            plain_rate, plain_loads = run_config(runtime, False, args.events)
            sealed_rate, sealed_loads = run_config(runtime, True, args.events)
        finally:
            runtime.close()
    plain_ms, sealed_ms = statistics.median(plain_loads), statistics.median(sealed_loads)
    print(f"redaction benchmark: {args.events} adverse events, one per save, one subject")
    print(f"writes: plain {plain_rate:.0f} ev/s, sealed {sealed_rate:.0f} ev/s")
    print(f"casebook load from events: plain {plain_ms:.1f} ms, sealed {sealed_ms:.1f} ms")
    print(bench_line("sealed_ae_writes", sealed_rate, "ev/s", plain_rate))
    print(bench_line("sealed_casebook_load", sealed_ms, "ms", plain_ms,
                     p50_ms=sealed_ms, p99_ms=max(sealed_loads)))


if __name__ == "__main__":
    main()
