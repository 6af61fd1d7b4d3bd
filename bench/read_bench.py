"""Read-side benchmark on a generated store of --events signed events (default 1,000,000).

    python bench/read_bench.py [--events 1000000] [--database-url URL] [--store URL]

The generator writes subjects with visits, therapy tapers, lab panels and corrections through
the application service, recorded over two simulated years. Then, next to an in-memory replay
(all events loaded once, folded per question) answering the same questions in the same run:
  - a subject's casebook as of a random recorded time: p50 / p95   (target p95 <= 20 ms)
  - the study's outcome tables as of a random time                 (target <= 1 s)
  - one page of the audit trail, filtered by subject               (target <= 50 ms)
  - rebuild rate of the read tables                                (target >= 15k events/s)
    (one process per core), next to a plain read of the events (no decoding), a read that
    decodes them and a rebuild in one process
Runs in a temporary database (dropped afterwards) on the given or an embedded server; or, with
--store URL --home DIR, on a database kept by an earlier run (--keep-store --home DIR),
without generating again.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from application.rebuild_parts import parts_for
from application.runtime import Runtime
from domain.clock import SimulatedClock
from domain.envelope import Actor, Envelope, Reason
from domain.errors import NotFound
from domain.studies import nct04397107
from domain.subject import Subject, subject_uuid
from infra.postgres import database, schema_for_study, temporary_database, with_dbname
from infra.settings import Settings
from projections.casebook import casebook
from projections.outcomes.engine import outcome_tables
from projections.queries import AuditQuery, audit_page, casebook_as_of, outcome_facts_as_of

STUDY = nct04397107.STUDY_ID
SCHEMA = schema_for_study(STUDY)
START = datetime(2020, 8, 15, 8, 0, tzinfo=UTC)
COORD = Envelope(Actor("u-c", "Bench Coordinator", "coordinator", "JLU1"), "bench", "system", "b")
FIX = Envelope(Actor("u-dm", "Bench Data Manager", "data_manager", "JLU1"), "bench", "system",
               "b", "data_management", Reason("transcription_error", "checked at monitoring"))
LABS = [("C3", "g/L"), ("C4", "g/L"), ("ANTIDSDNA", "IU/mL"), ("TREG", "% of CD4+"),
        ("IL6", "pg/mL")]


def generate(runtime: Runtime, events: int, rng: random.Random) -> int:
    """Write about ``events`` events; return how many subjects.

    The writes of every subject go in recorded-time order across subjects (enrolments spread
    over 280 days, each subject's visits up to a year later): the clock only moves forward, so
    written one subject after another, every later subject's history would land on the
    instant the first one's ended.
    """
    clock = SimulatedClock(START - timedelta(days=1))
    app = runtime.study(STUDY, clock=clock)
    app.register_study(nct04397107.definition(), COORD)
    # 3 to enroll, then 5 visits of 97 (their out-of-range lab checks add about 170 checks
    # and queries) and half as many corrections.
    per_subject = 657
    subjects = max(1, -(-events // per_subject))
    span = timedelta(days=700)
    visits = [("BASELINE", 0), ("M1", 30), ("M3", 91), ("M6", 182), ("M12", 365)]
    schedule: list[tuple[datetime, int, int, int]] = []  # (when, subject, visit, correction)
    for n in range(subjects):
        enrolled = START + span * (n / subjects) * 0.4
        schedule.append((enrolled, n, -1, -1))
        for k, (_, day) in enumerate(visits):
            schedule.append((enrolled + timedelta(days=day, hours=3), n, k, -1))
            if rng.random() < 0.5:
                schedule.append((enrolled + timedelta(days=day + 20), n, k, rng.randrange(95)))
    schedule.sort()

    def visit_batch(subject: Subject, at: datetime, n: int, k: int) -> None:
        visit, day = visits[k]
        when = START + span * (n / subjects) * 0.4 + timedelta(days=day)
        subject.record_vital_signs(f"VS{k}", when, {"HEIGHT": (140.0, "cm"),
                                                    "WEIGHT": (35.0 + k, "kg")}, COORD, at,
                                   visit=visit)
        if day == 0:
            subject.start_therapy("CM1", when, "prednisone", "glucocorticoid", 40.0, "PO",
                                  COORD, at)
        else:
            subject.change_therapy("CM1", when, max(5.0, 40.0 - 7 * k), COORD, at)
        for j in range(95):
            code_, unit = LABS[j % len(LABS)]
            subject.record_lab_result(f"LB{k}-{j}", when, code_, rng.uniform(0.1, 2.0),
                                      unit, COORD, at, visit=visit)

    for at, n, k, lab in schedule:
        clock.set(at)
        code = f"{n:05d}"
        if k < 0:
            app.enroll_subject(code, "JLU1", date(2010, 5, 1), "F", "SLE", at.date(),
                               nct04397107.ELIGIBLE_SCREENING_ANSWERS,
                               "IL2" if n % 2 else "STD", at.date(), COORD)
        elif lab < 0:
            app.on_subject(code, lambda s, t, n=n, k=k: visit_batch(s, t, n, k))
        else:
            app.on_subject(code, lambda s, t, k=k, lab=lab: s.correct(
                f"LB{k}-{lab}", "value", 1.0, FIX, t))
    app.close()
    return subjects


def read_rate(runtime: Runtime) -> float:
    """Events per second of reading the whole log as notifications, without decoding them."""
    app = runtime.study(STUDY)
    started = time.perf_counter()
    count, start = 0, 1
    while batch := app.recorder.select_notifications(start, 5000):
        count += len(batch)
        start = batch[-1].id + 1
    return count / (time.perf_counter() - started)


def keep_database(server_url: str, prefix: str) -> str:
    """A new database that outlives the run (for --store); its URL is printed."""
    name = f"{prefix}_kept_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
    url = with_dbname(server_url, name)
    print(f"store kept in {url} (drop it when done)")
    return url


def subjects_in_store(runtime: Runtime) -> int:
    """How many subjects a kept store holds."""
    with psycopg.connect(runtime.url) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{SCHEMA}".trialledger_events '
                           "WHERE originator_version = 1 AND topic LIKE %s",  # topics end in .v<n>
                           ("%Subject.Consented.%",)).fetchone()
    return row[0] if row else 0


def load_in_memory(runtime: Runtime) -> tuple[dict[Any, list[Any]], float]:
    """Every subject event, loaded once and decoded, by subject: the replay baseline."""
    app = runtime.study(STUDY)
    by_subject: dict[Any, list[Any]] = defaultdict(list)
    started = time.perf_counter()
    start = 1
    while batch := app.recorder.select_notifications(start, 5000):
        for notification in batch:
            event = app.mapper.to_domain_event(notification)
            if isinstance(event, Subject.Event):
                by_subject[event.originator_id].append(event)
        start = batch[-1].id + 1
    return by_subject, time.perf_counter() - started


def fold(events: list[Any], as_of: datetime) -> Subject | None:
    subject = None
    for event in events:
        if event.timestamp > as_of:
            break
        subject = event.mutate(subject)
    return subject


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    """Generate, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--store", default=None,
                        help="URL of a database holding a store generated by --keep-store")
    parser.add_argument("--keep-store", action="store_true",
                        help="keep the generated database (its signing key stays in --home)")
    parser.add_argument("--home", default=None, help="TrialLedger home (default: temporary)")
    args = parser.parse_args()
    rng = random.Random(1)
    home = Path(args.home or tempfile.mkdtemp(prefix="tl-bench-"))
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with contextlib.ExitStack() as stack:
        if args.store:
            url = args.store
        else:
            server = stack.enter_context(database(settings.database_url, settings.pgdata))
            url = (keep_database(server, "tl_bench") if args.keep_store
                   else stack.enter_context(temporary_database(server, "tl_bench")))
        runtime = Runtime(settings, url)
        started = time.perf_counter()
        subjects = (subjects_in_store(runtime) if args.store
                    else generate(runtime, args.events, rng))
        rng = random.Random(2)  # the same questions, whether generated now or kept
        generate_s = time.perf_counter() - started
        total = runtime.study(STUDY).recorder.max_notification_id() or 0

        plain_read_rate = read_rate(runtime)
        parts = parts_for(total)
        started = time.perf_counter()
        runtime.project(STUDY, rebuild=True, parts=1)
        one_part_rate = total / (time.perf_counter() - started)
        started = time.perf_counter()
        runtime.project(STUDY, rebuild=True, parts=parts)
        rebuild_rate = total / (time.perf_counter() - started)
        # The SQL questions need no aggregates: drop the generator's in-process caches (a
        # million objects the garbage collector would otherwise walk during the measurements).
        runtime.close()
        gc.collect()

        end = START + timedelta(days=800)
        codes = [f"{n:05d}" for n in range(subjects)]
        questions = [(rng.choice(codes), START + (end - START) * rng.random())
                     for _ in range(args.samples)]
        audit_codes = [rng.choice(codes) for _ in range(50)]
        when = START + timedelta(days=400)
        sql_ms, audit_ms = [], []
        with psycopg.connect(url) as conn:
            for code, asked in questions:
                t0 = time.perf_counter()
                with contextlib.suppress(NotFound):  # asked before the subject existed
                    casebook_as_of(conn, SCHEMA, STUDY, code, asked)
                sql_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            outcome_tables(outcome_facts_as_of(conn, SCHEMA, when), STUDY,
                           nct04397107.ENDPOINTS, when)
            outcomes_sql = time.perf_counter() - t0
            for code in audit_codes:
                t0 = time.perf_counter()
                audit_page(conn, SCHEMA, AuditQuery({"subject_code": code}), limit=100)
                audit_ms.append((time.perf_counter() - t0) * 1000)

        runtime = Runtime(settings, url)
        memory, load_s = load_in_memory(runtime)
        gc.freeze()  # a million loaded events: keep the collector off them, as a cache would
        started = time.perf_counter()
        for events in memory.values():
            fold(events, datetime.max.replace(tzinfo=UTC))
        fold_rate = sum(len(e) for e in memory.values()) / (time.perf_counter() - started)
        mem_ms, audit_mem_ms = [], []
        for code, asked in questions:
            t0 = time.perf_counter()
            subject = fold(memory[subject_uuid(STUDY, code)], asked)
            if subject is not None:
                casebook(subject, as_of=asked)
            mem_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        books = [casebook(s, as_of=when) for e in memory.values()
                 if (s := fold(e, when)) is not None]
        outcome_tables(sorted(books, key=lambda b: str(b["subject"])), STUDY,
                       nct04397107.ENDPOINTS, when)
        outcomes_mem = time.perf_counter() - t0
        for code in audit_codes:
            t0 = time.perf_counter()
            events = memory[subject_uuid(STUDY, code)][:100]
            _ = [(e.timestamp, e.envelope.actor.user_id) for e in events]
            audit_mem_ms.append((time.perf_counter() - t0) * 1000)
        runtime.close()

    print(f"read benchmark: {total} events, {subjects} subjects "
          f"({'kept store' if args.store else f'generated in {generate_s:.0f} s'})")
    print(f"  subject as-of (SQL)          p50 {pct(sql_ms, 50):7.1f} ms  "
          f"p95 {pct(sql_ms, 95):7.1f} ms   (target p95 <= 20 ms)")
    print(f"  subject as-of (in-memory)    p50 {pct(mem_ms, 50):7.1f} ms  "
          f"p95 {pct(mem_ms, 95):7.1f} ms   (after loading every event: {load_s:.0f} s)")
    print(f"  outcome tables as of T       SQL {outcomes_sql:7.2f} s   "
          f"in-memory {outcomes_mem:7.2f} s   (target <= 1 s)")
    print(f"  audit page, 100 rows         p50 {statistics.median(audit_ms):7.1f} ms  "
          f"p95 {pct(audit_ms, 95):7.1f} ms   in-memory p50 "
          f"{statistics.median(audit_mem_ms):.2f} ms   (target <= 50 ms)")
    print(f"  rebuild                      {rebuild_rate:7.0f} events/s   "
          f"(target >= 15k events/s; {parts} processes)")
    print(f"    baselines: plain read {plain_read_rate:7.0f} events/s   read and decode "
          f"{total / load_s:7.0f} events/s   in-memory fold {fold_rate:7.0f} events/s   "
          f"rebuild in one process {one_part_rate:7.0f} events/s")


if __name__ == "__main__":
    main()
