"""Group commit: the events of concurrent commands are stored in one transaction.

eventsourcing's PostgreSQL recorder takes a table lock for each insert so that notification
ids follow commit order (what the ledger's sealer relies on). The lock is held through the
commit's WAL flush, so one command at a time can commit: the write rate is the flush rate.
Here concurrent commands queue their events; one committer thread stores everything queued
in one transaction (one lock, one flush) and then wakes each caller. A caller returns only
after its own events are committed, and a batch that fails (e.g. two commands raced on one
subject) is retried one command at a time, so each caller gets its own outcome.

A caller may also name the versions of aggregates its command read but did not change
(``expected``: the study whose lock it checked); the store refuses the batch if one of them
has moved on by the time the batch is written.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any
from uuid import UUID

MAX_BATCH = 500

Expected = Sequence[tuple[UUID, int]]  # (aggregate id, version) a command relied on
# Stores events in one transaction if every expected version still holds, or raises.
Store = Callable[[Sequence[Any], Expected], None]
Item = tuple[list[Any], Expected, Future[None]]


class GroupCommitter:
    """Stores queued event lists in shared transactions, from one background thread."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def commit(self, events: list[Any], expected: Expected = ()) -> None:
        """Store ``events`` (with whatever else is queued) provided the ``expected`` versions
        still hold; return once they are committed."""
        self.submit(events, expected).result()

    def submit(self, events: list[Any], expected: Expected = ()) -> Future[None]:
        """Queue ``events`` for :meth:`commit`; the future is done once they are committed
        (or holds why they were not)."""
        done: Future[None] = Future()
        self._queue.put((events, expected, done))
        return done

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Item]) -> None:
        try:
            self._store([event for events, _, _ in batch for event in events],
                        sorted({pair for _, expected, _ in batch for pair in expected}))
        except BaseException as e:  # the caller re-raises it in its own thread
            if len(batch) == 1:
                batch[0][2].set_exception(e)
                return
            for item in batch:
                self._settle(item)
            return
        for _, _, done in batch:
            done.set_result(None)

    def _settle(self, item: Item) -> None:
        """Store one caller's events alone, handing it its own result or error."""
        events, expected, done = item
        try:
            self._store(events, expected)
        except BaseException as e:  # the caller re-raises it in its own thread
            done.set_exception(e)
        else:
            done.set_result(None)
