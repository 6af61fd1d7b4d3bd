"""Verification rate on a large signed store, next to the raw Ed25519 verify rate; sealing lag.

    python bench/verify_bench.py [--events 200000] [--database-url URL]

1. Writes ``--events`` signed lab results through the application service (100 per save)
   while a sealer process seals concurrently; samples the sealing lag (events written but
   not yet sealed) every half second, and the time to catch up once writing stops.
2. Measures the raw single-core Ed25519 verify rate (cryptography/OpenSSL) in the same run.
3. Verifies the whole store online with 1 worker and with every core.
Target: all-core verification >= 70 % of 2 x the single-core raw rate.
Runs in a temporary database (dropped afterwards) on the given or an embedded server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from application.runtime import Runtime
from domain.clock import SimulatedClock
from domain.envelope import Actor, Envelope
from domain.studies import nct04397107
from domain.subject import Subject
from infra import keys
from infra.ledger import store
from infra.postgres import connect, database, schema_for_study, temporary_database
from infra.settings import Settings
from infra.verify import verify_study

STUDY = nct04397107.STUDY_ID
ENVELOPE = Envelope(Actor("u-bench", "Bench Coordinator", "coordinator", "JLU1"), "bench",
                    "system", "bench")
T0 = datetime(2021, 1, 10, 9, 0, tzinfo=UTC)


def write(settings: Settings, url: str, events: int) -> float:
    """Write ``events`` lab results; return the write rate (events/s)."""
    runtime = Runtime(settings, url)
    clock = SimulatedClock(T0)
    app = runtime.study(STUDY, clock=clock)
    app.register_study(nct04397107.definition(), ENVELOPE)
    subjects = max(1, events // 1000)
    for i in range(subjects):
        app.enroll_subject(f"{i:05d}", "JLU1", date(2010, 5, 1), "F", "SLE", date(2021, 1, 10),
                           nct04397107.ELIGIBLE_SCREENING_ANSWERS, "IL2", date(2021, 1, 10),
                           ENVELOPE)
    clock.set(T0 + timedelta(days=1))
    started = time.perf_counter()
    written = 0
    n = 0
    while written < events:
        def command(subject: Subject, at: datetime, base: int = n) -> None:
            for j in range(100):
                subject.record_lab_result(f"LB{base}-{j}", T0, "C3", 0.8, "g/L", ENVELOPE, at)

        app.on_subject(f"{n % subjects:05d}", command)
        written += 100
        n += 1
    rate = written / (time.perf_counter() - started)
    app.close()
    runtime.close()
    return rate


def seal_forever(settings: Settings, url: str, stop: multiprocessing.synchronize.Event) -> None:
    """The sealer process: seal as fast as events arrive, until told to stop and caught up."""
    runtime = Runtime(settings, url)
    while True:
        stopping = stop.is_set()
        if STUDY in dict(runtime.studies()):
            result = runtime.seal(STUDY)
            if stopping and result.sealed == 0:
                runtime.seal(STUDY, force_checkpoint=True)
                return
        time.sleep(0.05)


def lag(url: str) -> int:
    """Events written but not yet sealed."""
    schema = schema_for_study(STUDY)
    with connect(url) as conn:
        try:
            written = conn.execute(
                f'SELECT coalesce(max(notification_id), 0) FROM "{schema}".trialledger_events'
            ).fetchone()
            return int(written[0]) - store.tree_size(conn, schema) if written else 0
        except Exception:
            return 0


def raw_verify_rate(seconds: float = 3.0) -> float:
    """Single-core Ed25519 verifications per second (cryptography / OpenSSL)."""
    key = Ed25519PrivateKey.generate()
    message = os.urandom(700)
    signature = key.sign(message)
    public = key.public_key()
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1000):
            public.verify(signature, message)
        count += 1000
    return count / (time.perf_counter() - started)


def verify_rate(settings: Settings, url: str, workers: int) -> tuple[float, int]:
    """Online verification rate (events/s) of the whole store."""
    public_keys = keys.load_public_keys(settings)
    with connect(url) as conn:
        started = time.perf_counter()
        result = verify_study(conn, STUDY, schema_for_study(STUDY), public_keys,
                              workers=workers)
        elapsed = time.perf_counter() - started
    assert result.ok, result.first_bad
    return result.events_checked / elapsed, result.events_checked


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=Path(tempfile.mkdtemp(prefix="tl-bench-")))
    cores = os.cpu_count() or 1
    with database(settings.database_url, settings.pgdata) as server, \
            temporary_database(server, "tl_bench") as url:
        Runtime(settings, url).close()
        keys.load_signing_key(settings)
        stop = multiprocessing.Event()
        sealer = multiprocessing.Process(target=seal_forever, args=(settings, url, stop))
        sealer.start()
        lags: list[int] = []
        writer = multiprocessing.Pool(1)
        pending = writer.apply_async(write, (settings, url, args.events))
        while not pending.ready():
            time.sleep(0.5)
            lags.append(lag(url))
        write_rate = pending.get()
        writer.close()
        stop.set()
        stopped = time.perf_counter()
        sealer.join()
        catch_up = time.perf_counter() - stopped
        raw = raw_verify_rate()
        one, total = verify_rate(settings, url, 1)
        every, _ = verify_rate(settings, url, cores)
    print(f"verification benchmark: {total} signed events ({cores} cores)")
    print(f"  write rate (100 events/save, signed)   {write_rate:10.0f} events/s")
    print(f"  sealing lag while writing: max {max(lags, default=0)} events, "
          f"median {sorted(lags)[len(lags) // 2] if lags else 0}; "
          f"caught up {catch_up:.1f} s after writes stopped")
    print(f"  raw Ed25519 verify, 1 core             {raw:10.0f} verifies/s")
    print(f"  online verify, 1 worker                {one:10.0f} events/s")
    print(f"  online verify, {cores} workers               {every:10.0f} events/s")
    target = 2 * raw
    print(f"  all-core verify / (2 x raw rate)       {every / target:10.2f} (target >= 0.70)")
    print(bench_line("verify_online_1_worker", one, "ev/s", raw))
    print(bench_line(f"verify_online_{cores}_workers", every, "ev/s", target))
    print(bench_line("sealing_lag_max", max(lags, default=0), "events"))


if __name__ == "__main__":
    main()
