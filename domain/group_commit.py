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
has moved on by the time the batch is written. And what its context holds in
:data:`RECEIPTS` is stored in the same transaction as its events: an HTTP request's
idempotency claim, so that a retry finds the write applied even if its answer was lost.

A watchdog bounds each store call: one that has not returned after ``timeout`` seconds is
ended through ``abort`` (its transaction rolled back, which releases the table lock every
other write of the study waits for), and its callers get :class:`CommitTimedOut`. They get
it only once the store call has failed: a batch that committed after all is reported
committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from eventsourcing.persistence import OperationalError

from domain.errors import DomainError

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)


class Settles(Protocol[T_contra]):
    """What a thread hands an outcome to: a concurrent ``Future`` (a caller blocking on it)
    or an :class:`Awaited` (a coroutine of the event loop awaiting it)."""

    def set_result(self, result: T_contra, /) -> None:
        """The work is done, with this result."""
        ...

    def set_exception(self, exception: BaseException, /) -> None:
        """The work failed, with this error."""
        ...


class Waiting(Protocol[T_co]):
    """A queue a batch is taken from (``queue.Queue`` or ``queue.SimpleQueue``)."""

    def get(self) -> T_co:
        """The next item, waiting for one."""
        ...

    def get_nowait(self) -> T_co:
        """The next item; raises ``queue.Empty`` when there is none."""
        ...

MAX_BATCH = 500
# How long close() waits for the write in flight before ending it, and then again.
CLOSE_WAIT = 1.5

Expected = Sequence[tuple[UUID, int]]  # (aggregate id, version) a command relied on
RECEIPTS: ContextVar[tuple[object, ...]] = ContextVar("receipts", default=())
"""What the caller of a command has stored with its events, in their transaction: stored
exactly when they are (the store says what it takes; see infra.idempotency.Applied)."""


@contextlib.contextmanager
def without_receipts() -> Iterator[None]:
    """Within the block, writes carry no :data:`RECEIPTS`: the system's own (a study's
    signing key registered as a request first opens it) are not the request's write."""
    token = RECEIPTS.set(())
    try:
        yield
    finally:
        RECEIPTS.reset(token)


# Stores events and receipts in one transaction if every expected version still holds, or
# raises.
Store = Callable[[Sequence[Any], Expected, Sequence[object]], None]
Item = tuple[list[Any], Expected, tuple[object, ...], Settles[None]]
# Ends the write that the thread of the given id has in flight in the store, so that the store
# call fails (and its transaction rolls back); may be called again while it has not.
Abort = Callable[[int], object]


class CommitTimedOut(DomainError):
    """The write did not finish in time and was ended; nothing of it was stored."""


class GroupCommitter:
    """Stores queued event lists in shared transactions, from one background thread; with
    ``timeout`` and ``abort``, a watchdog ends a store call that takes longer."""

    def __init__(self, store: Store, max_batch: int = MAX_BATCH, *,
                 timeout: float | None = None, abort: Abort | None = None) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._timeout = timeout
        self._abort = abort
        self._watch_lock = threading.Lock()
        self._calls = 0  # store calls begun
        self._running: tuple[int, float] | None = None  # (store call, when it is overdue)
        self._aborted = 0  # the last store call ended by the watchdog or close()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()
        if timeout and abort is not None:
            threading.Thread(target=self._watch, args=(timeout,), name="group-commit-watchdog",
                             daemon=True).start()

    def commit(self, events: list[Any], expected: Expected = ()) -> None:
        """Store ``events`` (with whatever else is queued, and the context's
        :data:`RECEIPTS`) provided the ``expected`` versions still hold; return once they are
        committed."""
        self.submit(events, expected).result()

    def submit(self, events: list[Any], expected: Expected = ()) -> Future[None]:
        """Queue ``events`` for :meth:`commit`; the future is done once they are committed
        (or holds why they were not)."""
        done: Future[None] = Future()
        self._queue.put((events, expected, RECEIPTS.get(), done))
        return done

    def submit_awaited(self, events: list[Any], expected: Expected = ()) -> asyncio.Future[None]:
        """:meth:`submit` for a coroutine of the running event loop: the asyncio future is
        done once the events are committed (or holds why they were not); cancelling it
        leaves them queued (see :class:`Awaited`)."""
        done: Awaited[None] = Awaited()
        self._queue.put((events, expected, RECEIPTS.get(), done))
        return done.future

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Finish what is queued, then stop the thread. After ``wait`` seconds the write in
        flight is ended (its callers get :class:`CommitTimedOut`), and after as many again
        the thread is left behind: a process that is stopping does not hang on a stuck
        write."""
        self._queue.put(None)
        self._thread.join(wait)
        if self._thread.is_alive():
            with contextlib.suppress(Exception):  # stopping either way
                self._end_running(overdue_only=False)
            self._thread.join(wait)
        self._closed.set()

    def _run(self) -> None:
        while True:
            batch, stop = next_batch(self._queue, self._max_batch)
            if batch:
                self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Item]) -> None:
        try:
            self._watched_store([event for events, _, _, _ in batch for event in events],
                                sorted({pair for _, expected, _, _ in batch
                                        for pair in expected}),
                                [receipt for _, _, receipts, _ in batch for receipt in receipts])
        except (CommitTimedOut, OperationalError) as e:
            # The database did not answer in time or at all: alone, each command would wait
            # as long again.
            for *_, done in batch:
                done.set_exception(e)
            return
        except BaseException as e:  # the caller re-raises it in its own thread
            if len(batch) == 1:
                batch[0][3].set_exception(e)
                return
            for item in batch:
                self._settle(item)
            return
        for *_, done in batch:
            done.set_result(None)

    def _settle(self, item: Item) -> None:
        """Store one caller's events alone, handing it its own result or error."""
        events, expected, receipts, done = item
        try:
            self._watched_store(events, expected, receipts)
        except BaseException as e:  # the caller re-raises it in its own thread
            done.set_exception(e)
        else:
            done.set_result(None)

    def _watched_store(self, events: Sequence[Any], expected: Expected,
                       receipts: Sequence[object]) -> None:
        """One store call, which the watchdog ends if it is overdue."""
        with self._watch_lock:
            self._calls += 1
            call = self._calls
            self._running = (call, time.monotonic() + (self._timeout or 0))
        try:
            self._store(events, expected, receipts)
        except BaseException as e:
            with self._watch_lock:
                self._running = None
                aborted = self._aborted == call
            if aborted:
                raise CommitTimedOut("the write did not finish in time and was ended; "
                                     "nothing was stored, retry later") from e
            raise
        with self._watch_lock:
            self._running = None

    def _watch(self, timeout: float) -> None:
        while not self._closed.wait(min(timeout / 4, 1.0)):
            # An abort that fails (the database unreachable) is tried again at the next look.
            with contextlib.suppress(Exception):
                self._end_running(overdue_only=True)

    def _end_running(self, *, overdue_only: bool) -> None:
        """Abort the store call under way (if overdue, with ``overdue_only``). Under the
        lock, so that the call cannot end and the next begin in between: the abort reaches
        the call it was meant for or none."""
        if self._abort is None or self._thread.ident is None:
            return
        with self._watch_lock:
            if self._running is None:
                return
            call, overdue_at = self._running
            if overdue_only and time.monotonic() < overdue_at:
                return
            self._aborted = call
            # Not again before another timeout, should the call still not have returned.
            self._running = (call, time.monotonic() + (self._timeout or 0))
            self._abort(self._thread.ident)


class Awaited(Generic[T]):
    """An outcome a thread settles for a coroutine of the event loop that made it:
    :meth:`set_result` and :meth:`set_exception` (from any thread) hand it to :attr:`future`,
    an asyncio future of that loop, in one ``call_soon_threadsafe``. A concurrent ``Future``
    awaited through a wrapper costs a condition (its lock taken at every step) and a callback
    list besides the hop: about 3 µs of CPU of 5 a hop, and a write awaits three. Cancelling
    :attr:`future` leaves the work to its thread, which settles it all the same (a queued
    write is committed, a claim stored, whoever waits)."""

    __slots__ = ("_loop", "future")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.future: asyncio.Future[T] = self._loop.create_future()

    def set_result(self, result: T, /) -> None:
        """Hand ``result`` to :attr:`future`."""
        self._hand(_set_result, result)

    def set_exception(self, exception: BaseException, /) -> None:
        """Hand ``exception`` to :attr:`future`."""
        self._hand(_set_exception, exception)

    def _hand(self, settle: Callable[[asyncio.Future[T], Any], None], value: Any) -> None:
        # A loop closed (even while this runs) has nobody awaiting: the thread goes on, as it
        # did when a concurrent Future's callback failed (which the Future only logged).
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(settle, self.future, value)


def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.cancelled():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exception: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exception)


def next_batch(waiting: Waiting[T | None], limit: int) -> tuple[list[T], bool]:
    """Wait for the first item on ``waiting``, then take what else is already there, up to
    ``limit`` items: one batch for one round trip. ``None`` on the queue means stop: the
    second value says whether it was taken (the batch before it is still to be handled)."""
    first = waiting.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < limit:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False
