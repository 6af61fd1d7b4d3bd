"""Casebook export benchmark on the demo study (NCT04397107's 46 simulated children).

    python bench/casebook_bench.py [--database-url URL] [--seed 1]

Runs the demo's simulation into a temporary database (dropped afterwards) on the given or an
embedded server, then exports, in this one run:
  - baseline: the ODM Transactional archive (``export --format odm-archive``) of the store
  - the casebooks zip (``export --format casebook``: HTML and PDF per subject, rendered in
    worker processes)                                           (target: <= 30 s)
and prints one line per figure:

    BENCH casebooks value=<s> unit=s baseline=<odm-archive s> ratio=<casebooks / archive>
          cpu_s=<CPU seconds of the export and its workers>
    BENCH casebook_pages value=<most pages of one subject's PDF> unit=pages   (target <= 12)
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import pypdf
from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path
from rich.console import Console

from application.demo import run_demo
from application.exports import write_casebook_zip, write_rendering
from application.runtime import Runtime
from domain.studies import nct04397107
from infra.postgres import database, temporary_database
from infra.settings import Settings

STUDY = nct04397107.STUDY_ID


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the rendering workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def most_pages(casebooks: Path) -> int:
    """The page count of the longest PDF in a casebooks zip."""
    with zipfile.ZipFile(casebooks) as z:
        return max(len(pypdf.PdfReader(io.BytesIO(z.read(name))).pages)
                   for name in z.namelist() if name.endswith(".pdf"))


def main() -> None:
    """Simulate, export both ways, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with database(settings.database_url, settings.pgdata) as server, \
            temporary_database(server, "tl_bench") as url:
        runtime = Runtime(settings, url)
        try:
            assert run_demo(runtime, args.seed, Console(file=io.StringIO()))
            runtime.project(STUDY)
            started = time.perf_counter()
            with (home / "archive.xml").open("wb") as out:
                events = write_rendering(runtime, STUDY, "odm-archive", out, None)
            archive_s = time.perf_counter() - started
            started, cpu = time.perf_counter(), cpu_seconds()
            subjects = write_casebook_zip(runtime, STUDY, home / "casebooks.zip", None)
            casebooks_s, casebooks_cpu = time.perf_counter() - started, cpu_seconds() - cpu
        finally:
            runtime.close()
    print(f"casebook benchmark: {subjects} subjects, {events} events; odm-archive "
          f"{archive_s:.1f} s, casebooks {casebooks_s:.1f} s")
    # CPU seconds beside the wall time: on a shared machine the wall time is mostly waiting.
    print(bench_line("casebooks", casebooks_s, "s", archive_s, cpu_s=casebooks_cpu))
    print(bench_line("casebook_pages", most_pages(home / "casebooks.zip"), "pages"))


if __name__ == "__main__":
    main()
