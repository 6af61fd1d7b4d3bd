"""How many worker processes render casebooks beside the reading process."""

from __future__ import annotations

import pytest

from projections import casebook_doc
from projections.casebook_doc import PARALLEL_FROM, render_workers


@pytest.mark.parametrize(("cores", "busy", "workers"), [
    (1, 1, 0), (2, 1, 1), (4, 1, 3),
    # A bundle's tables keep a second core busy: on two cores its casebooks start no
    # worker (a process of about 120 MB fewer at once).
    (2, 2, 0), (4, 2, 2), (1, 2, 0)])
def test_one_worker_per_core_but_the_busy_ones(monkeypatch: pytest.MonkeyPatch, cores: int,
                                               busy: int, workers: int) -> None:
    monkeypatch.setattr(casebook_doc.os, "sched_getaffinity", lambda pid: set(range(cores)),
                        raising=False)
    assert render_workers(PARALLEL_FROM, busy) == workers


def test_a_few_subjects_are_rendered_without_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(casebook_doc.os, "sched_getaffinity", lambda pid: set(range(8)),
                        raising=False)
    assert render_workers(PARALLEL_FROM - 1) == 0
