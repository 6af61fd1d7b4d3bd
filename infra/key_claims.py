"""Idempotency keys' claims and answers, stored from one background thread.

Every write with an ``Idempotency-Key`` claims its key before it runs and records its answer
after (:mod:`infra.idempotency`). Each on its own costs a thread hop, a pooled connection and
a statement; here the requests queue them, and one thread stores whatever is queued in one
statement per kind (the claims, then the answers) and wakes each request, as the group commit
does for events. A claim's outcome is its own: a key named twice is claimed by the first.

Answers are stored after their requests were answered, so nobody waits for them but a retry.
While other claimed requests are still running, the answers' thread waits up to
:data:`ANSWER_GATHER` for their answers too: each answers' statement is a commit that flushes
the WAL, and under load one every few milliseconds took WAL flushes from the events'
commits every request waits for (``bench/http_bench.py --idempotency-keys``: 1,340-1,400 ->
about 1,550 writes/s). A retry that finds its key still in flight while this process holds
the key's answer waits for that answer and replays it, instead of hearing 409.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg

from domain.group_commit import Awaited, next_batch
from infra.idempotency import Claimed, IdempotencyStore, Replay

MAX_BATCH = 500
ANSWER_GATHER = 0.05
"""Seconds the answers' thread waits for the answers of requests still running before it
stores the ones it has (none when no claimed request is running)."""

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


def frees_key(status: int, retry: bool = False) -> bool:
    """Whether an answer of ``status`` promises nothing and frees its key instead, so that a
    retry runs: a server error (>= 500), or a refusal to be sent again (``retry``: another's
    write came first). A request whose write was stored keeps its key all the same (see
    :class:`infra.idempotency.Applied`)."""
    return status >= 500 or retry


@dataclass(frozen=True)
class _Claim:
    username: str
    key: str
    digest: str
    free_first: bool
    done: Awaited[Replay | Claimed]


@dataclass(frozen=True)
class _Answer:
    username: str
    key: str
    claimed: Claimed
    status: int
    body: Any
    frees: bool  # the answer promises nothing: the key is freed instead
    done: Awaited[None]


class KeyClaims:
    """Stores queued claims of idempotency keys from one thread, and their answers from
    another: a claim, which its request waits for before it runs, does not wait behind the
    flush of answers whose requests were already answered."""

    def __init__(self, store: IdempotencyStore, connection: Connect) -> None:
        self._store = store
        self._connection = connection
        # Requests claiming a key or running with it, whose answer is not queued yet
        # (counted on the event loop, read by the answers' thread), and the answers not
        # stored yet.
        self._running = 0
        self._answered = threading.Condition()
        self._pending: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._claims: queue.SimpleQueue[_Claim | None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[_Answer | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, args=(self._claims, self._claim),
                             name="key-claims", daemon=True),
            threading.Thread(target=self._run, args=(self._answers, self._answer, True),
                             name="key-answers", daemon=True)]
        for thread in self._threads:
            thread.start()

    async def claim(self, username: str, key: str, digest: str, *, free_first: bool = False
                    ) -> Replay | Claimed:
        """Claim ``key`` for ``username``'s request (freeing a claim its failed request left
        first, with ``free_first``): :class:`Claimed` if claimed now, else the earlier
        request (see :meth:`IdempotencyStore.claim`). Cancelling the wait leaves the claim
        to be stored all the same.

        A request claimed now runs until it calls :meth:`answer` or :meth:`forgo`; one cut
        off just as its claim was granted (before it could resume) ends here."""
        claiming = self._claiming(username, key, digest, free_first)
        try:
            return await claiming
        except asyncio.CancelledError:
            if (claiming.done() and not claiming.cancelled() and claiming.exception() is None
                    and isinstance(claiming.result(), Claimed)):
                self.forgo()
            raise

    def _claiming(self, username: str, key: str, digest: str, free_first: bool
                  ) -> asyncio.Future[Replay | Claimed]:
        """The claim, queued for the claims' thread: its future (of the running loop)."""
        done: Awaited[Replay | Claimed] = Awaited()
        with self._answered:
            self._running += 1
        done.future.add_done_callback(self._claimed)
        self._claims.put(_Claim(username, key, digest, free_first, done))
        return done.future

    def answer(self, username: str, key: str, claimed: Claimed, status: int, body: Any,
               retry: bool = False) -> asyncio.Future[None]:
        """Record the answer the request that ``claimed`` the key got, or free the key
        instead if the answer promises nothing (:func:`frees_key`; ``retry``: it is a refusal
        to be sent again). The future (of the running event loop) is done once it is
        stored."""
        done: Awaited[None] = Awaited()
        pending = (username, key)
        self._pending[pending] = done.future
        done.future.add_done_callback(lambda f: self._stored(pending, f))
        self._ended()
        self._answers.put(_Answer(username, key, claimed, status, body,
                                  frees_key(status, retry), done))
        return done.future

    def forgo(self) -> None:
        """A request claimed now ends without an answer (it was cancelled): its key stays
        claimed until its lease runs out."""
        self._ended()

    def answering(self, username: str, key: str) -> asyncio.Future[None] | None:
        """The storing of the answer to ``username``'s ``key``, while this process holds it
        unstored (called on the event loop that answered)."""
        return self._pending.get((username, key))

    def _claimed(self, future: asyncio.Future[Replay | Claimed]) -> None:
        # Not claimed now (or cut off): its request runs no further.
        if (future.cancelled() or future.exception() is not None
                or not isinstance(future.result(), Claimed)):
            self._ended()

    def _ended(self) -> None:
        with self._answered:
            self._running = max(0, self._running - 1)
            if not self._running:
                self._answered.notify_all()

    def _stored(self, pending: tuple[str, str], future: asyncio.Future[None]) -> None:
        if self._pending.get(pending) is future:
            del self._pending[pending]

    def close(self) -> None:
        """Store what is queued, then stop the threads."""
        self._claims.put(None)
        self._answers.put(None)
        for thread in self._threads:
            thread.join(5)

    def _run(self, waiting: queue.SimpleQueue[Any], store: Callable[[list[Any]], list[Any]],
             gather: bool = False) -> None:
        while True:
            batch, stop = next_batch(waiting, MAX_BATCH)
            if batch and not stop and gather:
                with self._answered:
                    self._answered.wait_for(lambda: not self._running, ANSWER_GATHER)
                if len(batch) < MAX_BATCH and not waiting.empty():
                    more, stop = next_batch(waiting, MAX_BATCH - len(batch))
                    batch += more
            if batch:
                self._settle(batch, store)
            if stop:
                return

    def _settle(self, items: list[Any], store: Callable[[list[Any]], list[Any]]) -> None:
        """Store ``items`` together; if that fails and there are several, each alone, so
        that one request's bad input fails that request only."""
        try:
            results = store(items)
        except BaseException as e:  # the request re-raises it on its own side
            if len(items) == 1 or isinstance(e, psycopg.OperationalError):
                for item in items:
                    item.done.set_exception(e)
                return
            for item in items:
                self._settle([item], store)
            return
        for item, result in zip(items, results, strict=True):
            item.done.set_result(result)

    def _claim(self, claims: list[_Claim]) -> list[Replay | Claimed]:
        with self._connection() as conn:
            for claim in claims:
                if claim.free_first:
                    self._store.release(conn, claim.username, claim.key)
            return self._store.claim_many(conn, [(c.username, c.key, c.digest) for c in claims])

    def _answer(self, answers: list[_Answer]) -> list[None]:
        with self._connection() as conn:
            for answer in answers:
                if answer.frees:
                    self._store.release(conn, answer.username, answer.key, answer.claimed)
            completed = [(a.username, a.key, a.claimed, a.status, a.body) for a in answers
                         if not a.frees]
            if completed:
                self._store.complete_many(conn, completed)
        return [None] * len(answers)
