"""Receipts (``domain.group_commit.RECEIPTS``: a keyed request's claim) are stored in the
transaction of their own caller's events, and only if those are: a batch shares one
transaction, and a batch that fails is stored again one caller at a time, each with its own."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from domain.group_commit import RECEIPTS, GroupCommitter


class HeldStore:
    """A store that records each call's events and receipts, holds the call storing
    ``["hold"]`` until released (so that what is queued meanwhile is taken as one batch),
    and refuses any call storing ``"refused"``."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[tuple[list[Any], list[object]]] = []

    def __call__(self, events: Any, expected: Any, receipts: Any) -> None:
        if events == ["hold"]:
            self.entered.set()
            self.release.wait(5)
        if "refused" in events:
            raise ValueError("refused")
        self.calls.append((list(events), list(receipts)))


def _submitted(committer: GroupCommitter, events: list[Any], receipts: tuple[object, ...]
               ) -> Future[None]:
    """``events`` submitted from a context whose RECEIPTS are ``receipts``."""
    context = contextvars.copy_context()
    context.run(RECEIPTS.set, receipts)
    return context.run(committer.submit, events)


@contextlib.contextmanager
def _held() -> Iterator[tuple[HeldStore, GroupCommitter, Future[None]]]:
    """A committer whose store holds its first call (returned, with the store) until
    ``store.release`` is set; the committer is closed afterwards."""
    store = HeldStore()
    committer = GroupCommitter(store)
    try:
        holding = committer.submit(["hold"])
        assert store.entered.wait(5)
        yield store, committer, holding
    finally:
        committer.close()


def test_each_caller_s_receipts_go_with_its_own_events_only() -> None:
    with _held() as (store, committer, holding):
        # Queued behind the held call: taken as one batch, which fails, then one at a time.
        good = _submitted(committer, ["good"], ("receipt of good",))
        refused = _submitted(committer, ["refused"], ("receipt of refused",))
        plain = committer.submit(["plain"])
        store.release.set()
        holding.result(5)
        good.result(5)
        plain.result(5)
        with pytest.raises(ValueError):
            refused.result(5)
    assert store.calls == [(["hold"], []), (["good"], ["receipt of good"]), (["plain"], [])]


def test_a_batch_stores_its_callers_receipts_in_its_one_transaction() -> None:
    with _held() as (store, committer, holding):
        futures = [_submitted(committer, [f"e{n}"], (f"r{n}",)) for n in range(3)]
        store.release.set()
        for future in (holding, *futures):
            future.result(5)
    assert store.calls == [(["hold"], []), (["e0", "e1", "e2"], ["r0", "r1", "r2"])]
