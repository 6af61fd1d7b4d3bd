"""The web console's page times on a generated store, each next to the API answer it is built
from, in the same run (server time: an in-process client, no network).

    python bench/console_bench.py [--events 1000000] [--samples 30] [--database-url URL]
                                  [--store URL --home DIR]

The store is the one bench/read_bench.py generates (or keeps, with --keep-store there). Targets
(issue 15, at 1M events): the study dashboard <= 300 ms, a casebook at a past time <= 200 ms,
an audit-trail page <= 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

from fastapi.testclient import TestClient
from read_bench import START, STUDY, generate, subjects_in_store  # type: ignore[import-not-found]

from api.app import create_app
from application.runtime import Runtime
from domain.envelope import Actor, Envelope
from infra.logging import configure_logging
from infra.passwords import hash_password
from infra.postgres import database, temporary_database
from infra.settings import Settings

READER, PASSWORD = "bench-regulator", "bench regulator amber canyon whistle"
ADMIN = Envelope(Actor("u-admin", "Bench Admin", "admin", "*"), "bench", "system", "b")


def _timed(get: Callable[[], int], samples: int) -> tuple[float, float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        status = get()
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200, status  # a refusal would time something else
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


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


def main() -> None:
    """Generate (or open a kept store), measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--store", default=None, help="a store kept by read_bench.py")
    parser.add_argument("--home", default=None, help="TrialLedger home of that store")
    args = parser.parse_args()
    configure_logging(logging.WARNING)  # no access-log line per timed request
    home = Path(args.home or tempfile.mkdtemp(prefix="tl-bench-"))
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with contextlib.ExitStack() as stack:
        if args.store:
            url = args.store
        else:
            server = stack.enter_context(database(settings.database_url, settings.pgdata))
            url = stack.enter_context(temporary_database(server, "tl_bench"))
        runtime = Runtime(settings, url)
        subjects = (subjects_in_store(runtime) if args.store
                    else generate(runtime, args.events, random.Random(1)))
        total = runtime.study(STUDY).recorder.max_notification_id() or 0
        runtime.project(STUDY)
        api, console = _clients(runtime)
        rng = random.Random(2)
        code = f"{rng.randrange(subjects):05d}"
        past = quote((START + timedelta(days=400)).isoformat())
        study = f"/v1/studies/{STUDY}"
        pairs = {
            "dashboard (<= 300 ms)": (f"/ui/studies/{STUDY}", f"{study}/subjects"),
            "casebook at a past time (<= 200 ms)": (
                f"/ui/studies/{STUDY}/subjects/{code}?as_of={past}",
                f"{study}/subjects/{code}?as_of={past}"),
            "audit page (<= 100 ms)": (f"/ui/studies/{STUDY}/audit?subject={code}",
                                       f"{study}/audit?subject={code}&limit=25"),
        }
        print(f"{total} events, {subjects} subjects; {args.samples} samples each, ms p50/p95")
        for name, (page, answer) in pairs.items():
            ui = _timed(lambda page=page: console.get(page).status_code, args.samples)
            baseline = _timed(lambda answer=answer: api.get(answer).status_code, args.samples)
            print(f"  {name:38} console {ui[0]:7.1f} / {ui[1]:7.1f}   "
                  f"API {baseline[0]:7.1f} / {baseline[1]:7.1f}")
        runtime.close()


if __name__ == "__main__":
    main()
