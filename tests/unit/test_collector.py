"""The server's cycle-collector tuning: short full collections, and no cycle kept for ever."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from api.collector import YOUNG_THRESHOLD, CollectorPauses


class Node:
    """An object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pauses() -> Iterator[tuple[CollectorPauses, Clock]]:
    clock = Clock()
    tuning = CollectorPauses(examine_all_every=60.0, clock=clock)
    tuning.install()
    try:
        yield tuning, clock
    finally:
        tuning.remove()


def _cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(b)


def test_what_survives_a_full_collection_is_not_walked_by_the_next(
        pauses: tuple[CollectorPauses, Clock]) -> None:
    kept, _ = _cycle()
    gc.collect()
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # frozen objects are not tracked


def test_cycles_that_die_while_frozen_are_collected_after_the_period(
        pauses: tuple[CollectorPauses, Clock]) -> None:
    _, clock = pauses
    head, alive = _cycle()
    gc.collect()  # the cycle survives and is frozen
    del head
    gc.collect()
    assert alive() is not None  # garbage now, but frozen: not walked

    clock.now = 61.0
    gc.collect()  # the period is over: everything is unfrozen after this one
    gc.collect()
    assert alive() is None


def test_removing_it_unfreezes_everything() -> None:
    tuning = CollectorPauses()
    tuning.install()
    gc.collect()
    tuning.remove()
    assert gc.get_freeze_count() == 0


def test_the_youngest_generation_is_collected_less_often_until_removed() -> None:
    before = gc.get_threshold()
    tuning = CollectorPauses()
    tuning.install()
    try:
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        assert before[0] < YOUNG_THRESHOLD
    finally:
        tuning.remove()
    assert gc.get_threshold() == before
