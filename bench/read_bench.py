"""Read-side benchmark on a generated store of --events signed events (default 1,000,000).

    python bench/read_bench.py [--events 1000000] [--database-url URL] [--store URL]

The generator (``read_store``) enrols one subject after another across two years of
simulated recorded time, each followed for a year (1M events: 2,041 subjects). Then, each
next to a baseline measured in the same run:
  - a subject's casebook as of a recorded time T drawn over the whole study, about a subject
    enrolled by T: p50 / p95 / p99 (target p95 <= 20 ms); beside it, questions about subjects
    not yet enrolled at T (a cheap "not found", reported apart). Baseline: an in-memory replay
    (every event loaded once, folded per question)
  - the study's outcome tables as of an early, a middle and a late T (a quarter, half, all of
    the subjects enrolled; the late T after the last event) (target <= 1 s and <= 1.2 x the
    baseline): a current + history table model of the same outcome facts (``history_peer``)
  - one page of the audit trail, filtered by subject               (target <= 50 ms)
  - rebuild rate of the read tables (one process per core)         (target >= 15k events/s,
    >= 0.8 x reading and decoding every event), next to a plain read of the events (no
    decoding) and, with --one-process-rebuild, a rebuild in one process
Runs in a temporary database (dropped afterwards) on the given or an embedded server; or, with
--store URL --home DIR, on a database kept by an earlier run (--keep-store --home DIR),
without generating again. Ends with one BENCH line per figure (``bench_lines``).
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import history_peer  # bench/ is the script's directory, hence on sys.path
import psycopg
import read_store
from bench_lines import bench_line
from psycopg.sql import SQL, Identifier
from read_store import STUDY, generate  # also export_bench's and console_bench's
from store_options import add_store_arguments

from application.rebuild_parts import parts_for
from application.runtime import Runtime
from domain.errors import NotFound
from domain.studies import nct04397107
from domain.subject import Subject, subject_uuid
from infra.postgres import database, schema_for_study, temporary_database, with_dbname
from infra.settings import Settings
from projections.casebook import casebook
from projections.outcomes.engine import outcome_tables, tables_of_summaries
from projections.queries import (
    AuditQuery,
    audit_page,
    casebook_as_of,
    outcome_facts_as_of,
    outcome_summaries_as_of,
)

SCHEMA = schema_for_study(STUDY)
OUTCOME_REPEATS = 3  # each outcome question is asked this often (ours and the peer's in turn)


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


def store_url(stack: contextlib.ExitStack, settings: Settings, store: str | None,
              keep: bool) -> str:
    """The database a bench measures, its server started (and stopped by ``stack``; a kept
    store on an embedded server needs that server started again): ``store`` when given, else
    a new database, kept after the run with ``keep`` (--keep-store), dropped otherwise."""
    server = stack.enter_context(database(settings.database_url, settings.pgdata))
    if store:
        return store
    return (keep_database(server, "tl_bench") if keep
            else stack.enter_context(temporary_database(server, "tl_bench")))


def subjects_in_store(runtime: Runtime) -> int:
    """How many subjects a kept store holds."""
    with psycopg.connect(runtime.url) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{SCHEMA}".trialledger_events '
                           "WHERE originator_version = 1 AND topic LIKE %s",
                           ("Subject.%",)).fetchone()
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


def timed(question: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Seconds ``question(*args)`` took, and its answer."""
    started = time.perf_counter()
    answer = question(*args)
    return time.perf_counter() - started, answer


def ask_outcomes(conn: psycopg.Connection[Any], when: datetime) -> dict[str, Any]:
    """The study's outcome tables as of ``when``, from the subjects' outcome summaries the
    projection kept (as ``Runtime.outcomes`` asks them)."""
    summaries = outcome_summaries_as_of(conn, SCHEMA, nct04397107.ENDPOINTS, when)
    if summaries is None:
        raise SystemExit("the store's outcome summaries are not this engine's")
    return tables_of_summaries(summaries, STUDY, nct04397107.ENDPOINTS, when)


def ask_peer(conn: psycopg.Connection[Any], when: datetime) -> dict[str, Any]:
    """The same tables from the history-table peer's facts."""
    return outcome_tables(history_peer.facts_as_of(conn, when), STUDY, nct04397107.ENDPOINTS,
                          when)


def rebuild_figures(runtime: Runtime, total: int,
                    one_process: bool) -> tuple[float, dict[str, float]]:
    """Rebuild the read tables (one process per core; first in one process too, if asked)
    next to a plain read of the log; print the rates, return their BENCH line's extras."""
    plain_read_rate = read_rate(runtime)
    parts = parts_for(total)
    extra = {"processes": float(parts), "plain_read": plain_read_rate}
    if one_process:
        started = time.perf_counter()
        runtime.project(STUDY, rebuild=True, parts=1)
        extra["one_process"] = total / (time.perf_counter() - started)
    started = time.perf_counter()
    runtime.project(STUDY, rebuild=True, parts=parts)
    rate = total / (time.perf_counter() - started)
    print(f"  rebuild                      {rate:7.0f} events/s   (target >= 15k events/s and "
          f">= 0.8 x read and decode; {parts} processes)")
    print("    baselines: " + "   ".join(f"{k.replace('_', ' ')} {v:7.0f} events/s"
                                          for k, v in extra.items() if k != "processes"))
    return rate, extra


def sql_figures(url: str, subjects: int, rng: random.Random, samples: int) -> dict[str, Any]:
    """The SQL questions: casebooks as of T (enrolled by T; not enrolled yet, apart), the
    outcome tables at early, middle and late T next to the history-table peer, audit pages."""
    found, missing = read_store.as_of_questions(rng, subjects, samples)
    audit_codes = [read_store.code(rng.randrange(subjects)) for _ in range(50)]
    sql_ms, missing_ms, audit_ms = [], [], []
    outcomes: list[tuple[str, datetime, int, int, float, float, float, float]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        peer_rows = history_peer.build(conn, SCHEMA)
        for code, asked in found:
            sql_ms.append(timed(casebook_as_of, conn, SCHEMA, STUDY, code, asked)[0] * 1000)
        for code, asked in missing:
            t0 = time.perf_counter()
            with contextlib.suppress(NotFound):
                casebook_as_of(conn, SCHEMA, STUDY, code, asked)
                raise SystemExit(f"subject {code} was found as of {asked} before enrolment")
            missing_ms.append((time.perf_counter() - t0) * 1000)
        for name, when, enrolled in read_store.outcome_times(subjects):
            ours, peer, ours_cpu, peer_cpu = [], [], [], []
            for _ in range(OUTCOME_REPEATS):  # in turn: the same cache for both
                cpu = time.process_time()
                seconds, tables = timed(ask_outcomes, conn, when)
                ours_cpu.append(time.process_time() - cpu)
                ours.append(seconds)
                cpu = time.process_time()
                seconds, peer_tables = timed(ask_peer, conn, when)
                peer_cpu.append(time.process_time() - cpu)
                peer.append(seconds)
                if tables != peer_tables:
                    raise SystemExit(f"the peer's outcome tables as of {when} differ")
            seen = len(outcome_facts_as_of(conn, SCHEMA, when))
            outcomes.append((name, when, enrolled, seen, statistics.median(ours),
                             statistics.median(peer), statistics.median(ours_cpu),
                             statistics.median(peer_cpu)))
        for code in audit_codes:
            query = AuditQuery({"subject_code": code})
            audit_ms.append(timed(audit_page, conn, SCHEMA, query, None, 100)[0] * 1000)
        history_peer.drop(conn)
    return {"found": found, "missing": missing, "audit_codes": audit_codes, "sql_ms": sql_ms,
            "missing_ms": missing_ms, "audit_ms": audit_ms, "outcomes": outcomes,
            "peer_rows": peer_rows}


def memory_figures(runtime: Runtime, total: int, sql: dict[str, Any]) -> dict[str, Any]:
    """The in-memory replay's answers to the same subject and audit questions."""
    memory, load_s = load_in_memory(runtime)
    gc.freeze()  # a million loaded events: keep the collector off them, as a cache would
    started = time.perf_counter()
    for events in memory.values():
        fold(events, datetime.max.replace(tzinfo=UTC))
    fold_rate = sum(len(e) for e in memory.values()) / (time.perf_counter() - started)

    def in_memory(code: str, asked: datetime) -> None:
        subject = fold(memory[subject_uuid(STUDY, code)], asked)
        if subject is not None:
            casebook(subject, as_of=asked)

    audit_ms = []
    for code in sql["audit_codes"]:
        t0 = time.perf_counter()
        events = memory[subject_uuid(STUDY, code)][:100]
        _ = [(e.timestamp, e.envelope.actor.user_id) for e in events]
        audit_ms.append((time.perf_counter() - t0) * 1000)
    return {"found_ms": [timed(in_memory, c, a)[0] * 1000 for c, a in sql["found"]],
            "missing_ms": [timed(in_memory, c, a)[0] * 1000 for c, a in sql["missing"]],
            "audit_ms": audit_ms, "load_s": load_s, "decode_rate": total / load_s,
            "fold_rate": fold_rate}


def report(total: int, subjects: int, store: str, sql: dict[str, Any],
           mem: dict[str, Any] | None, rebuild: tuple[float, dict[str, float]] | None) -> None:
    """The human-readable figures, then one BENCH line per figure."""
    sql_ms, missing_ms, audit_ms = sql["sql_ms"], sql["missing_ms"], sql["audit_ms"]
    print(f"read benchmark: {total} events, {subjects} subjects ({store})")
    print(f"  subject as-of (SQL)          p50 {pct(sql_ms, 50):7.1f} ms  "
          f"p95 {pct(sql_ms, 95):7.1f} ms  p99 {pct(sql_ms, 99):7.1f} ms   (target p95 <= "
          f"20 ms; {len(sql_ms)} questions, each about a subject enrolled by T)")
    if mem:
        print(f"  subject as-of (in-memory)    p50 {pct(mem['found_ms'], 50):7.1f} ms  "
              f"p95 {pct(mem['found_ms'], 95):7.1f} ms   (after loading every event: "
              f"{mem['load_s']:.0f} s; read and decode {mem['decode_rate']:.0f} events/s, "
              f"fold {mem['fold_rate']:.0f} events/s)")
    if missing_ms:
        print(f"  not enrolled yet (SQL)       p50 {pct(missing_ms, 50):7.1f} ms  "
              f"p95 {pct(missing_ms, 95):7.1f} ms   ({len(missing_ms)} questions, apart)")
    print(f"  outcome tables as of T       (target <= 1 s and <= 1.2 x the history-table "
          f"peer, {sql['peer_rows']} rows; median of {OUTCOME_REPEATS})")
    for name, when, enrolled, seen, ours_s, peer_s, ours_cpu, peer_cpu in sql["outcomes"]:
        print(f"    {name:7s} {when:%Y-%m-%d}  {seen:5d} subjects seen ({enrolled} enrolled)"
              f"   ours {ours_s:6.2f} s   peer {peer_s:6.2f} s   ratio {ours_s / peer_s:5.2f}"
              f"   (this process's CPU: ours {ours_cpu:5.2f} s, peer {peer_cpu:5.2f} s)")
    print(f"  audit page, 100 rows         p50 {statistics.median(audit_ms):7.1f} ms  "
          f"p95 {pct(audit_ms, 95):7.1f} ms   (target <= 50 ms)")
    print(bench_line("read.as_of", pct(sql_ms, 95), "ms",
                     pct(mem["found_ms"], 95) if mem else None,
                     p50_ms=pct(sql_ms, 50), p99_ms=pct(sql_ms, 99)))
    if missing_ms:
        print(bench_line("read.as_of_not_found", pct(missing_ms, 95), "ms",
                         pct(mem["missing_ms"], 95) if mem else None,
                         p50_ms=pct(missing_ms, 50), p99_ms=pct(missing_ms, 99)))
    for name, _, _, seen, ours_s, peer_s, ours_cpu, peer_cpu in sql["outcomes"]:
        # CPU seconds beside the wall-clock ones: on a loaded machine the latter mostly wait.
        print(bench_line(f"read.outcomes_{name}", ours_s, "s", peer_s, subjects=seen,
                         cpu_s=ours_cpu, peer_cpu_s=peer_cpu))
    print(bench_line("read.audit_page", pct(audit_ms, 95), "ms",
                     pct(mem["audit_ms"], 95) if mem else None,
                     p50_ms=statistics.median(audit_ms), p99_ms=pct(audit_ms, 99)))
    if rebuild is not None and mem:
        rate, extra = rebuild
        print(bench_line("read.rebuild", rate, "events/s", mem["decode_rate"], **extra))


def main() -> None:
    """Generate, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_store_arguments(parser)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--one-process-rebuild", action="store_true",
                        help="also time a rebuild in one process (at 1M events: minutes)")
    parser.add_argument("--sql-only", action="store_true",
                        help="a kept store's SQL questions only: no rebuild, no in-memory "
                             "replay (their figures and baselines are left out)")
    args = parser.parse_args()
    rng = random.Random(1)
    home = Path(args.home or tempfile.mkdtemp(prefix="tl-bench-"))
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with contextlib.ExitStack() as stack:
        url = store_url(stack, settings, args.store, args.keep_store)
        runtime = Runtime(settings, url)
        started = time.perf_counter()
        subjects = (subjects_in_store(runtime) if args.store
                    else generate(runtime, args.events, rng))
        rng = random.Random(2)  # the same questions, whether generated now or kept
        store = ("kept store" if args.store
                 else f"generated in {time.perf_counter() - started:.0f} s")
        total = runtime.study(STUDY).recorder.max_notification_id() or 0
        print(f"store: {total} events, {subjects} subjects ({store})", flush=True)
        if args.sql_only and not args.store:
            parser.error("--sql-only asks a kept store (--store)")
        rebuild = None
        if args.sql_only:
            runtime.project(STUDY)  # catch up, if anything is left
        else:
            rebuild = rebuild_figures(runtime, total, args.one_process_rebuild)
        # The SQL questions need no aggregates: drop the generator's in-process caches (a
        # million objects the garbage collector would otherwise walk during the measurements).
        runtime.close()
        gc.collect()
        sql = sql_figures(url, subjects, rng, args.samples)
        mem = None
        if not args.sql_only:
            runtime = Runtime(settings, url)
            mem = memory_figures(runtime, total, sql)
            runtime.close()
    report(total, subjects, store, sql, mem, rebuild)


if __name__ == "__main__":
    main()
