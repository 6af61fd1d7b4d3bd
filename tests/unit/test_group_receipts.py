"""Receipts (``domain.group_commit.RECEIPTS``: a keyed request's claim) are stored in the
transaction of their own caller's events, and only if those are: a batch shares one
transaction, and a batch that fails is stored again one caller at a time, each with its own."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future
from typing import Any

import pytest

from domain.group_commit import RECEIPTS, GroupCommitter


def test_each_caller_s_receipts_go_with_its_own_events_only() -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[tuple[list[Any], list[object]]] = []

    def store(events: Any, expected: Any, receipts: Any) -> None:
        if events == ["hold"]:
            entered.set()
            release.wait(5)
        if "refused" in events:
            raise ValueError("refused")
        calls.append((list(events), list(receipts)))

    def submitted(events: list[Any], receipts: tuple[object, ...]) -> Future[None]:
        context = contextvars.copy_context()
        context.run(RECEIPTS.set, receipts)
        return context.run(committer.submit, events)

    committer = GroupCommitter(store)
    try:
        holding = committer.submit(["hold"])
        assert entered.wait(5)
        # Queued behind the held call: taken as one batch, which fails, then one at a time.
        good = submitted(["good"], ("receipt of good",))
        refused = submitted(["refused"], ("receipt of refused",))
        plain = committer.submit(["plain"])
        release.set()
        holding.result(5)
        good.result(5)
        plain.result(5)
        with pytest.raises(ValueError):
            refused.result(5)
    finally:
        committer.close()
    assert calls == [(["hold"], []), (["good"], ["receipt of good"]), (["plain"], [])]


def test_a_batch_stores_its_callers_receipts_in_its_one_transaction() -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[tuple[list[Any], list[object]]] = []

    def store(events: Any, expected: Any, receipts: Any) -> None:
        if events == ["hold"]:
            entered.set()
            release.wait(5)
        calls.append((list(events), list(receipts)))

    committer = GroupCommitter(store)
    try:
        holding = committer.submit(["hold"])
        assert entered.wait(5)
        futures = []
        for n in range(3):
            context = contextvars.copy_context()
            context.run(RECEIPTS.set, (f"r{n}",))
            futures.append(context.run(committer.submit, [f"e{n}"]))
        release.set()
        for future in (holding, *futures):
            future.result(5)
    finally:
        committer.close()
    assert calls == [(["hold"], []), (["e0", "e1", "e2"], ["r0", "r1", "r2"])]
