"""The web console's page times on a generated store, each next to the API answer that carries
the same data, in the same run (server time: an in-process client, no network).

    python bench/console_bench.py [--events 1000000] [--samples 40] [--home DIR]
                                  [--database-url URL] [--regenerate]

The store (bench/read_bench.py's generator: subjects with visits, lab panels and corrections
over two simulated years) is built once and kept: in an embedded PostgreSQL under --home
(default ``/var/tmp/trialledger-console-bench/<events>``, with the signing key it was written
with), or with --database-url in the database ``tl_console_bench_<events>`` of that server.
Later runs with the same --events reuse it (a 1M store takes a while to write); --regenerate
drops and writes it again. ``--events 30000`` makes a small store for quick iteration.

Targets (issue 15, at 1M events): the study dashboard <= 300 ms, a casebook at a past time
<= 200 ms, an audit-trail page <= 100 ms. Each page is asked for ``--samples`` times, cycling
over the same questions as its API baseline (several subjects and past times), after one
untimed pass; the output ends with one line per page:

    BENCH console_<page> value=<p50 ms> unit=ms baseline=<API p50 ms> ratio=<r>
          p50_ms=<p50> p95_ms=<p95> p99_ms=<p99> api_p95_ms=<API p95>
          cpu_p50_ms=<this process's CPU, p50> api_cpu_p50_ms=<the API's>
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path
from fastapi.testclient import TestClient
from psycopg.sql import SQL, Identifier
from read_bench import STUDY, generate, subjects_in_store  # type: ignore[import-not-found]

from api.app import create_app
from application.runtime import Runtime
from domain.envelope import Actor, Envelope
from infra import pools
from infra.logging import configure_logging
from infra.passwords import hash_password
from infra.postgres import database, schema_for_study, with_dbname
from infra.settings import Settings

READER, PASSWORD = "bench-regulator", "bench regulator amber canyon whistle"
ADMIN = Envelope(Actor("u-admin", "Bench Admin", "admin", "*"), "bench", "system", "b")
QUESTIONS = 8  # subjects (and past times) each page cycles over


def _percentile(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[int(q) - 1]


def _timed(client: TestClient, urls: list[str], samples: int) -> tuple[list[float], list[float]]:
    """Milliseconds of ``samples`` requests cycling over ``urls``, after one untimed pass:
    wall time, and this process's CPU time (the app's own work, the database's aside; less
    swayed than wall time by other jobs on a shared machine)."""
    for url in urls:
        answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
    times, cpu = [], []
    for n in range(samples):
        url = urls[n % len(urls)]
        started, used = time.perf_counter(), time.process_time()
        status = client.get(url).status_code
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
        assert status == 200, (url, status)  # a refusal would time something else
    return times, cpu


def _questions(url: str, subjects: int, rng: random.Random) -> list[tuple[str, str]]:
    """(subject, past recorded time) pairs: random subjects, each at a random time between
    its first and last change (URL-quoted)."""
    codes = [f"{rng.randrange(subjects):05d}" for _ in range(QUESTIONS)]
    with psycopg.connect(url) as conn:
        spans = {code: (first, last) for code, first, last in conn.execute(
            SQL("SELECT subject_code, min(recorded_at), max(recorded_at) FROM {}.audit_events"
                " WHERE subject_code = ANY(%s) GROUP BY subject_code").format(
                Identifier(schema_for_study(STUDY))), (codes,))}
    return [(code, quote((first + (last - first) * rng.random()).isoformat()))
            for code in codes for first, last in [spans[code]]]


def _clients(runtime: Runtime) -> tuple[TestClient, TestClient]:
    """An API client with a bearer token and a console client with a session cookie, both
    signed in as a regulator of every site."""
    with contextlib.suppress(Exception):  # a kept store already has the reader
        runtime.directory().register_user(
            READER, "Bench Regulator", hash_password(PASSWORD), ADMIN,
            lambda user, at: user.grant("regulator", STUDY, "*", ADMIN, at))
    app = create_app(runtime)
    api = TestClient(app)
    token = api.post("/v1/auth/token", json={"username": READER, "password": PASSWORD})
    api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    console = TestClient(app, follow_redirects=False)
    form = console.get("/ui/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    signed = console.post("/ui/sign-in", data={"username": READER, "password": PASSWORD,
                                               "csrf": csrf.group(1)})
    assert signed.status_code == 303, signed.text
    return api, console


@contextlib.contextmanager
def kept_store(settings: Settings, events: int, regenerate: bool) -> Iterator[tuple[str, int]]:
    """The URL of the kept store of ``events`` events and its subject count, written first
    when missing (or when ``regenerate``)."""
    name = f"tl_console_bench_{events}"
    done = settings.home / f"{name}.complete"  # written once the store is whole
    with database(settings.database_url, settings.pgdata) as server:
        url = with_dbname(server, name)
        with psycopg.connect(server, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone() is not None
            if exists and (regenerate or not done.exists()):
                conn.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(name)))
                exists = False
            if not exists:
                done.unlink(missing_ok=True)
                conn.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
        if done.exists():
            runtime = Runtime(settings, url)
            subjects = subjects_in_store(runtime)
        else:
            print(f"writing a store of {events} events into {name} (kept for later runs)")
            # A shared, loaded machine can stall the writer between the statements of one
            # transaction for longer than the store's 5 s idle limit (seen at load 24 on 2
            # cores), which ends the run; the generator alone gets more slack.
            pools.IDLE_IN_TRANSACTION_TIMEOUT = 120
            started = time.perf_counter()
            runtime = Runtime(settings, url)
            subjects = generate(runtime, events, random.Random(1))
            runtime.project(STUDY)
            done.write_text(f"{subjects}\n")
            print(f"  written and projected in {time.perf_counter() - started:.0f} s")
        runtime.close()
        yield url, subjects


def main() -> None:
    """Open (or first write) the kept store, time each page and its API answer, print."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--home", type=Path, default=None,
                        help="where the kept store lives (embedded server and signing key)")
    parser.add_argument("--database-url", default=None,
                        help="a server to keep the store on instead of an embedded one")
    parser.add_argument("--regenerate", action="store_true", help="write the store again")
    args = parser.parse_args()
    configure_logging(logging.WARNING)  # no access-log line per timed request
    home = args.home or Path("/var/tmp/trialledger-console-bench") / str(args.events)
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with kept_store(settings, args.events, args.regenerate) as (url, subjects):
        runtime = Runtime(settings, url)
        total = runtime.study(STUDY).recorder.max_notification_id() or 0
        started = time.perf_counter()
        # After a projection version change this is the kept store's rebuild.
        projected = runtime.project(STUDY)
        print(f"read tables brought up to date ({projected} events) in "
              f"{time.perf_counter() - started:.1f} s")
        api, console = _clients(runtime)
        asked = _questions(url, subjects, random.Random(2))
        study = f"/v1/studies/{STUDY}"
        pages = {
            "dashboard": (300, [f"/ui/studies/{STUDY}"], [f"{study}/subjects"]),
            "casebook_past": (200, [f"/ui/studies/{STUDY}/subjects/{code}?as_of={t}"
                                    for code, t in asked],
                              [f"{study}/subjects/{code}?as_of={t}" for code, t in asked]),
            "audit_page": (100, [f"/ui/studies/{STUDY}/audit?subject={code}"
                                 for code, _ in asked],
                           [f"{study}/audit?subject={code}&limit=25" for code, _ in asked]),
        }
        load = os.getloadavg()
        print(f"{total} events, {subjects} subjects; {args.samples} samples each; "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"  {'page':16} {'target':>7}  {'console p50/p95 ms':>20}  {'API p50/p95 ms':>16}"
              f"  {'CPU p50 ms console / API':>24}")
        lines = []
        for name, (target, page_urls, api_urls) in pages.items():
            ui, ui_cpu = _timed(console, page_urls, args.samples)
            baseline, baseline_cpu = _timed(api, api_urls, args.samples)
            p50, p95, p99 = (_percentile(ui, q) for q in (50, 95, 99))
            b50, b95 = (_percentile(baseline, q) for q in (50, 95))
            cpu50, api_cpu50 = _percentile(ui_cpu, 50), _percentile(baseline_cpu, 50)
            print(f"  {name:16} {target:5} ms  {p50:9.1f} / {p95:8.1f}  {b50:7.1f} / {b95:6.1f}"
                  f"  {cpu50:8.1f} / {api_cpu50:6.1f}")
            lines.append(bench_line(f"console_{name}", p50, "ms", b50, p50_ms=p50,
                                    p95_ms=p95, p99_ms=p99, api_p95_ms=b95,
                                    cpu_p50_ms=cpu50, api_cpu_p50_ms=api_cpu50))
        runtime.close()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
