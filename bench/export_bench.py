"""Export benchmark on a generated store of --events signed events (default 1,000,000).

    python bench/export_bench.py [--events 1000000] [--database-url URL]

Generates the store with read_bench's generator (subjects with visits, tapers, lab panels
and corrections), projects the read tables, then runs each measurement in a fresh process
(so its peak RSS is the export's own, not the generator's):
  - baseline: a plain server-side SELECT of the archive's rows, discarded
  - the ODM Transactional archive, written to a file          (target peak RSS <= 300 MB)
  - the ODM Snapshot as of now, written to a file
and prints events/s (events in the log over wall time) and peak RSS of each.
Runs in a temporary database (dropped afterwards) on the given or an embedded server.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path

from domain.studies import nct04397107
from domain.study import StudyDefinition
from infra.postgres import database, schema_for_study, temporary_database
from infra.settings import Settings
from projections.odm import write_archive, write_snapshot
from projections.odm.archive import change_rows
from projections.streaming import consistent_read, stream

STUDY = nct04397107.STUDY_ID
SCHEMA = schema_for_study(STUDY)


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries
    that across exec from the forking parent, here the generator with its aggregates."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(what: str, url: str, output: str) -> None:
    """Child process: run one measurement, print its figures as JSON."""
    definition = StudyDefinition.from_dict(nct04397107.definition())
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        if what == "baseline":
            rows = 0
            with consistent_read(conn):
                for _ in stream(conn, change_rows(SCHEMA, None), {"t": None}, "baseline"):
                    rows += 1
        else:
            writer = write_archive if what == "archive" else write_snapshot
            with open(output, "wb") as out:
                rows = writer(conn, SCHEMA, definition, out)
    elapsed = time.perf_counter() - started
    peak_mb = peak_rss_kib() / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "rows": rows,
                      "bytes": Path(output).stat().st_size if what != "baseline" else 0}))


def run_child(what: str, url: str, output: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--measure", what, "--url", url,
                           "--output", str(output)], capture_output=True, text=True,
                          check=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Generate, project, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--measure", choices=("baseline", "archive", "snapshot"))
    parser.add_argument("--url")
    parser.add_argument("--output")
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.url, args.output)
        return
    from read_bench import generate  # bench/ is the script's directory, hence on sys.path

    from application.runtime import Runtime

    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=Path(tempfile.mkdtemp(prefix="tl-bench-")))
    with database(settings.database_url, settings.pgdata) as server, \
            temporary_database(server, "tl_bench") as url:
        runtime = Runtime(settings, url)
        started = time.perf_counter()
        subjects = generate(runtime, args.events, random.Random(1))
        generated_s = time.perf_counter() - started
        total = runtime.study(STUDY).recorder.max_notification_id() or 0
        runtime.project(STUDY, rebuild=True)
        runtime.close()
        with psycopg.connect(url) as conn:
            row = conn.execute(f'SELECT count(*) FROM "{SCHEMA}".audit_trail').fetchone()
        audit_rows = row[0] if row else 0
        out = Path(tempfile.mkdtemp(prefix="tl-export-"))
        figures = {what: run_child(what, url, out / f"{what}.xml")
                   for what in ("baseline", "archive", "snapshot")}
    print(f"export benchmark: {total} events, {audit_rows} audit rows, {subjects} subjects "
          f"(generated in {generated_s:.0f} s)")
    for what, label in (("baseline", "plain SELECT of the archive's rows"),
                        ("archive", "ODM archive (Transactional)"),
                        ("snapshot", "ODM snapshot as of now")):
        f = figures[what]
        size = f"  {f['bytes'] / 2**20:7.0f} MiB" if f["bytes"] else " " * 13
        print(f"  {label:36} {total / f['seconds']:9.0f} events/s  {f['seconds']:7.1f} s  "
              f"peak RSS {f['peak_mb']:6.0f} MB{size}")
    print("  (target: archive peak RSS <= 300 MB)")
    plain = total / figures["baseline"]["seconds"]
    for what in ("archive", "snapshot"):
        f = figures[what]
        print(bench_line(f"odm_{what}", total / f["seconds"], "ev/s", plain,
                         peak_rss_mb=f["peak_mb"]))
    for path in out.iterdir():
        path.unlink()
    out.rmdir()


if __name__ == "__main__":
    main()
