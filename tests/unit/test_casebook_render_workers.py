"""Casebook worker processes (:mod:`projections.casebook_doc.workers`) write the files this
process would, in the order given, and say when they cannot."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from projections.casebook_doc import render
from projections.casebook_doc.model import CasebookDocument, Section, Table
from projections.casebook_doc.workers import RenderFailed, RenderWorker

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _document(subject: str, rows: int = 30) -> CasebookDocument:
    table = Table(("Record", "Value"), [(f"R{n}", f"{subject} value {n}") for n in range(rows)],
                  (1, 3))
    return CasebookDocument(subject, f"Casebook of subject {subject}", [("Site", "JLU1")],
                            [Section("Labs", tables=[("Records", table)])])


def test_a_worker_writes_the_same_files_as_this_process(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    documents = [_document(f"00{n}", rows=10 * n) for n in range(1, 5)]
    worker = RenderWorker()
    try:
        futures = [worker.submit(d, there, CREATED) for d in documents]
        for future in futures:
            future.result(timeout=120)
    finally:
        worker.stop()
    for document in documents:
        render(document, here, CREATED)
    names = sorted(p.name for p in here.iterdir())
    assert names == sorted(p.name for p in there.iterdir()) and len(names) == 8
    for name in names:
        assert (here / name).read_bytes() == (there / name).read_bytes(), name


def test_a_document_that_cannot_be_rendered_fails_its_future_only(tmp_path: Path) -> None:
    worker = RenderWorker()
    try:
        bad = worker.submit(_document("001"), tmp_path / "missing", CREATED)
        good = worker.submit(_document("002"), tmp_path, CREATED)
        with pytest.raises(RenderFailed, match="FileNotFoundError"):
            bad.result(timeout=120)
        good.result(timeout=120)
    finally:
        worker.stop()
    assert (tmp_path / "002.pdf").stat().st_size > 0


def test_a_worker_that_dies_fails_what_it_was_given(tmp_path: Path) -> None:
    worker = RenderWorker()
    try:
        worker.submit(_document("001"), tmp_path, CREATED).result(timeout=120)
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        with pytest.raises(RenderFailed, match="ended"):
            worker.submit(_document("002"), tmp_path, CREATED).result(timeout=120)
    finally:
        worker.stop()
