"""Audit-review filters benchmark: one page (100 rows) of the audit trail per review filter,
from a random point of the trail, next to a page filtered by subject (the audit trail's
existing target, p95 <= 50 ms) in the same run.

    python bench/review_bench.py [--events 50000] [--samples 30] [--database-url URL]

The store is read_bench's generator (labs, tapers and a data manager's corrections; no
signature and no lock, so after-signature and after-lock find nothing and scan the whole
trail from the page's start: their worst case). Runs in a temporary database (dropped
afterwards) on the given or an embedded server.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import psycopg
from bench_lines import bench_line
from read_bench import SCHEMA, STUDY, generate

from application.runtime import Runtime
from domain.review import REVIEW_FILTERS, ReviewRules, review_filter
from domain.studies import nct04397107
from infra.postgres import database, temporary_database
from infra.settings import Settings
from projections.queries import AuditQuery, audit_page


def _cursor(position: int) -> str:
    """A cursor that starts a page after ``position`` (as the server gives them out)."""
    return base64.urlsafe_b64encode(json.dumps({"after": [position, -1]}).encode()).decode()


def _ms(conn: psycopg.Connection[object], query: AuditQuery, starts: list[int]) -> list[float]:
    times = []
    for start in starts:
        t0 = time.perf_counter()
        audit_page(conn, SCHEMA, query, _cursor(start), limit=100)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    """Generate, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=Path(tempfile.mkdtemp(prefix="tl-bench-")))
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(database(settings.database_url, settings.pgdata))
        url = stack.enter_context(temporary_database(server, "tl_review_bench"))
        runtime = Runtime(settings, url)
        rng = random.Random(1)
        subjects = generate(runtime, args.events, rng)
        total = runtime.study(STUDY).recorder.max_notification_id() or 0
        runtime.project(STUDY)
        runtime.close()
        rules = ReviewRules.from_dict(nct04397107.AUDIT_REVIEW)
        starts = [rng.randrange(total) for _ in range(args.samples)]
        codes = [f"{rng.randrange(subjects):05d}" for _ in range(args.samples)]
        with psycopg.connect(url) as conn:
            baseline = []
            for code, start in zip(codes, starts, strict=True):
                baseline += _ms(conn, AuditQuery({"subject_code": code}), [start])
            figures = {name: _ms(conn, AuditQuery(review=review_filter(name, rules)), starts)
                       for name in REVIEW_FILTERS}
    print(f"{total} events, {subjects} subjects, {args.samples} pages per filter")
    base_p50 = statistics.median(baseline)
    print(bench_line("audit_page_by_subject", base_p50, "ms", p50_ms=base_p50,
                     p99_ms=_p(baseline, 99)))
    for name, times in figures.items():
        p50 = statistics.median(times)
        print(bench_line(f"audit_review_{name}", p50, "ms", baseline=base_p50, p50_ms=p50,
                         p99_ms=_p(times, 99)))


if __name__ == "__main__":
    main()
