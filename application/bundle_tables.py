"""The bundle's renderings other than the casebooks — the CSV files with the analysis
datasets, Dataset-JSON, the ODM snapshot and archive, XPT — rendered by processes of their own
while the exporting process streams the ledger and the casebooks.

Each rendering is single-threaded Python; serially after the casebooks they left a core idle
for a third of a bundle (134,746 events: 45 of 140 CPU seconds). Each child reads with its own
connection, each rendering in one consistent snapshot as of the bundle's one time, exactly as
the renderings read in the exporting process; the files wait on disk until the zip, written
in name order, reaches them.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from domain.studies.protocols import study_endpoints
from domain.study import StudyDefinition
from infra.logging import get_logger
from infra.parent_death import die_with_parent
from infra.postgres import connect, schema_for_study
from projections.csv_export import write_csv
from projections.dataset_json import write_layouts
from projections.odm import write_archive, write_snapshot
from projections.outcomes.datasets import write_analysis
from projections.queries import each_outcome_book

# Where each rendering goes in the bundle (and in the directory the child writes into).
CSV, DATASET_JSON, ODM, XPT = "csv", "dataset-json", "odm", "xpt"
_log = get_logger("trialledger.exports")
ODM_FILES = {"snapshot.xml": write_snapshot, "archive.xml": write_archive}


class RenderingFailed(RuntimeError):
    """The renderings' process failed: its error, or how it ended."""


@dataclass(frozen=True)
class Tables:
    """What the renderings of one bundle are made from."""

    url: str
    study: str
    definition: StudyDefinition
    definition_data: dict[str, Any] | None
    as_of: datetime
    created_at: datetime
    software_version: str


def csv_files(conn: psycopg.Connection[Any], study: str, definition: StudyDefinition,
              definition_data: dict[str, Any] | None, directory: Path,
              as_of: datetime | None) -> dict[str, int]:
    """Write the CSV files into ``directory``, with the analysis datasets behind the
    outcome tables (ADSL.csv, ADLIST.csv) as of the same time; rows per file."""
    schema = schema_for_study(study)
    counts = write_csv(conn, schema, definition, directory, as_of,
                       definition_data=definition_data)
    books = each_outcome_book(conn, schema, as_of)
    # A study loaded from SDTM keeps its USUBJIDs as subject codes; ours prefix the study.
    prefix = "" if definition.sdtm else f"{study}-"
    return {**counts, **write_analysis(directory, books, study, prefix,
                                       study_endpoints(definition),
                                       [visit.code for visit in definition.visits])}


def _csv(conn: psycopg.Connection[Any], tables: Tables, directory: Path) -> None:
    csv_files(conn, tables.study, tables.definition, tables.definition_data, directory / CSV,
              tables.as_of)


def _layouts(conn: psycopg.Connection[Any], tables: Tables, directory: Path) -> None:
    write_layouts(conn, schema_for_study(tables.study), tables.definition,
                  {"json": directory / DATASET_JSON, "xpt": directory / XPT},
                  tables.software_version, tables.as_of, tables.created_at)


def _odm(conn: psycopg.Connection[Any], tables: Tables, directory: Path) -> None:
    (directory / ODM).mkdir(parents=True)
    for name, writer in ODM_FILES.items():
        with _timed(f"odm/{name}"), (directory / ODM / name).open("wb") as out:
            writer(conn, schema_for_study(tables.study), tables.definition, out, tables.as_of,
                   tables.created_at)


# The renderings, each made by a process of its own, one after another, in this order. What
# a process imports or grows to stays until it ends (malloc_trim gives nothing back): a fresh
# process for each rendering holds each one's peak only while it runs (bench/README.md).
PARTS: dict[str, Callable[[psycopg.Connection[Any], Tables, Path], None]] = {
    "odm": _odm, "dataset-json+xpt": _layouts, "csv": _csv}


def render(tables: Tables, directory: Path, parts: Iterable[str] = PARTS) -> None:
    """Write csv/, dataset-json/, odm/ and xpt/ of the bundle (or those of ``parts``) into
    ``directory``; log the time each took (wall and CPU seconds: where a bundle's time goes)."""
    with connect(tables.url) as conn:
        for part in parts:
            if part == "odm":  # timed file by file
                _odm(conn, tables, directory)
                continue
            with _timed(part):
                PARTS[part](conn, tables, directory)


@contextmanager
def _timed(rendering: str) -> Iterator[None]:
    started, cpu = time.perf_counter(), time.process_time()
    yield
    _log.info("bundle.rendered", rendering=rendering,
              seconds=round(time.perf_counter() - started, 2),
              cpu_s=round(time.process_time() - cpu, 2))


def files(directory: Path) -> Iterator[tuple[str, Path]]:
    """The files :func:`render` wrote, as (bundle name, file), sorted by bundle name."""
    found = {f.relative_to(directory).as_posix(): f for f in directory.rglob("*") if f.is_file()}
    for name in sorted(found):
        yield name, found[name]


@dataclass(frozen=True)
class Renderings:
    """The bundle's renderings under way (see :func:`rendering`)."""

    thread: threading.Thread
    failures: list[str]

    @property
    def running(self) -> bool:
        """Whether a rendering still runs (or is still to start): a core is taken."""
        return self.thread.is_alive()

    def wait(self) -> None:
        """Wait for the renderings; raise :class:`RenderingFailed` if one failed."""
        self.thread.join()
        if self.failures:
            raise RenderingFailed(self.failures[0])


# A rendering's process runs this, its inputs pickled on its standard input. A fresh
# interpreter, not multiprocessing's spawn: spawn imports the parent's main module again in
# the child (under the CLI, the whole command line and web stack) and starts a resource
# tracker process beside it (13 MB), neither of which a rendering needs.
CHILD = ("import sys; from application.bundle_tables import child; "
         "child(int(sys.argv[1]))")


@contextmanager
def rendering(tables: Tables, directory: Path) -> Iterator[Renderings]:
    """Start :func:`render` in processes of their own, one for each of :data:`PARTS`, one
    after another (started by a thread of this process); yield :class:`Renderings`, to
    wait for them or ask whether they still run. Leaving the block early stops the running
    one and starts no other."""
    stopping = threading.Event()
    lock = threading.Lock()  # so that none starts once the block is left
    running: list[subprocess.Popen[bytes]] = []
    failures: list[str] = []

    def run_parts() -> None:
        for part in PARTS:
            reader, writer = os.pipe()  # the child's one line: its failure, or nothing
            with lock:
                if stopping.is_set():
                    os.close(reader)
                    os.close(writer)
                    return
                process = subprocess.Popen([sys.executable, "-c", CHILD, str(writer)],
                                           stdin=subprocess.PIPE, pass_fds=(writer,))
                running.append(process)
            os.close(writer)
            with os.fdopen(reader, "rb") as result:
                if process.stdin is not None:
                    with contextlib.suppress(BrokenPipeError), process.stdin:
                        pickle.dump((tables, directory, part, os.getpid()), process.stdin)
                failure = result.read().decode(errors="replace")
            process.wait()
            if failure or process.returncode:
                failures.append(failure or f"the renderings' process ({part}) ended with "
                                           f"exit code {process.returncode}")
                return

    # The thread waits for each child: a child dies with the thread that started it
    # (PR_SET_PDEATHSIG), which outlives it here.
    thread = threading.Thread(target=run_parts, name="bundle-tables", daemon=True)
    thread.start()

    try:
        yield Renderings(thread, failures)
    finally:
        with lock:
            stopping.set()
            for process in running:
                if process.poll() is None:
                    process.terminate()
        thread.join()


def child(result: int) -> None:
    """A rendering's process: render the part its standard input names, then write to the
    file descriptor ``result`` why it failed, or nothing."""
    tables, directory, part, parent = pickle.load(sys.stdin.buffer)
    die_with_parent(parent)
    with os.fdopen(result, "wb") as out:
        try:
            render(tables, directory, [part])
        except Exception as e:
            out.write(f"{type(e).__name__}: {e}".encode())
            raise
