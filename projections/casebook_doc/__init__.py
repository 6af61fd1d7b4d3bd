"""Casebooks for people: one HTML page and one PDF per subject, as of a recorded time."""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from domain.identifiers import is_safe_file_stem
from domain.study import StudyDefinition
from projections.casebook_doc.html import write_html
from projections.casebook_doc.model import CasebookDocument, casebook, subjects
from projections.casebook_doc.workers import RenderWorker
from projections.streaming import aware, consistent_read


def file_stem(subject: str) -> str:
    """A file name for ``subject``'s casebook: the code itself when it is a safe file name,
    otherwise a sanitised code plus a hash of the real one (never a path, never a clash, never
    a name Windows reserves: ``CON`` becomes ``CON-<hash>``). Codes enrolled before the rule of
    :mod:`domain.identifiers` may be unsafe."""
    if is_safe_file_stem(subject):
        return subject
    digest = hashlib.sha256(subject.encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', subject)}-{digest}"


Progress = Callable[[int, int], None]
# Below this many subjects, starting worker processes costs more than rendering in this one.
PARALLEL_FROM = 8
# Subjects handed to the workers and not yet rendered: enough that none waits for the next
# while this process reads or renders one.
QUEUED_PER_WORKER = 2


def render(document: CasebookDocument, directory: Path, created_at: datetime) -> None:
    """Write ``document`` as ``<subject>.html`` and ``<subject>.pdf`` in ``directory`` (run
    in a worker process when rendering in parallel: a document is plain data)."""
    # Imported here: the PDF library and its fonts weigh some 40 MB, which a process that
    # only reads documents for its workers does without.
    from projections.casebook_doc.pdf import write_pdf

    stem = file_stem(document.subject)
    with (directory / f"{stem}.html").open("w", encoding="utf-8") as out:
        write_html(document, out)
    write_pdf(document, directory / f"{stem}.pdf", created_at)


def render_workers(subjects: int, busy_cores: int = 1) -> int:
    """How many worker processes render ``subjects`` casebooks beside this process: one per
    core but the ``busy_cores`` (this process's, and those of work running beside it), none
    for a few subjects."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 if subjects < PARALLEL_FROM else max(0, (cores or 1) - busy_cores)


def casebook_files(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
                   directory: Path, as_of: datetime | None = None,
                   created_at: datetime | None = None,
                   progress: Progress | None = None,
                   busy_cores: int | Callable[[], int] = 1) -> Iterator[tuple[str, Path]]:
    """``<subject>.html`` and ``<subject>.pdf`` of every subject the system showed at
    ``as_of`` (now when None), as (file name, path in ``directory``) sorted by name;
    ``progress(done, total)`` is told of each subject rendered.

    The documents are read here, subject by subject, a few subjects ahead of the one handed
    on, and rendered by worker processes (see :func:`render_workers`: ``busy_cores`` are
    those not theirs, a number or a function asked at each subject, so that workers start
    when cores become free), or here while the workers have enough queued (so the work
    splits between them and this process), or all here without workers; each
    file is deleted once the next one is asked for, so a consumer can hand them on (a zip, a
    download) from the first subject on, with a few subjects on disk at a time. ``conn`` must
    not be inside a transaction: all casebooks come from one consistent read.
    """
    created = aware("created_at", created_at) or datetime.now(UTC)
    when = aware("as_of", as_of) or created
    busy = busy_cores if callable(busy_cores) else lambda: busy_cores
    directory.mkdir(parents=True, exist_ok=True)
    with consistent_read(conn):
        owners: dict[str, Any] = {}
        for subject_id, code in subjects(conn, schema, when):
            stem = file_stem(code)
            owners.update({f"{stem}.html": subject_id, f"{stem}.pdf": subject_id})
        # Each subject's two files are neighbours in name order: render in that order.
        order = list(dict.fromkeys(owners[name] for name in sorted(owners)))
        total = len(order)
        workers: list[RenderWorker] = []
        try:
            pending: deque[Future[None]] = deque()
            ahead = iter(order)
            submitted = done = 0

            def submit() -> None:
                nonlocal submitted
                subject_id = next(ahead, None)
                if subject_id is None:
                    return
                if len(workers) < render_workers(total - submitted, busy()):
                    workers.append(RenderWorker())
                document = casebook(conn, schema, definition, subject_id, when, created)
                submitted += 1
                worker = min(workers, key=lambda w: w.queued, default=None)
                if worker is not None and worker.queued < QUEUED_PER_WORKER:
                    future = worker.submit(document, directory, created)
                else:
                    render(document, directory, created)
                    future = Future()
                    future.set_result(None)
                pending.append(future)

            def read_ahead() -> None:
                # A subject for this process and enough for every worker to have some queued.
                while len(pending) <= QUEUED_PER_WORKER * len(workers) and submitted < total:
                    submit()

            read_ahead()
            rendered = set()
            for name in sorted(owners):
                subject_id = owners[name]
                if subject_id not in rendered:
                    pending.popleft().result()
                    rendered.add(subject_id)
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    read_ahead()
                path = directory / name
                yield name, path
                path.unlink()
        finally:
            for worker in workers:
                worker.stop()
