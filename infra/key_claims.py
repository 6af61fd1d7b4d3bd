"""Idempotency keys' claims and answers, stored from one background thread.

Every write with an ``Idempotency-Key`` claims its key before it runs and records its answer
after (:mod:`infra.idempotency`). Each on its own costs a thread hop, a pooled connection and
a statement; here the requests queue them, and one thread stores whatever is queued in one
statement per kind (the claims, then the answers) and wakes each request, as the group commit
does for events. A claim's outcome is its own: a key named twice is claimed by the first.
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
from infra.idempotency import IdempotencyStore, Replay

MAX_BATCH = 500

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


@dataclass(frozen=True)
class _Claim:
    username: str
    key: str
    digest: str
    free_first: bool
    done: Awaited[Replay | None]


@dataclass(frozen=True)
class _Answer:
    username: str
    key: str
    status: int  # >= 500: the key is freed instead
    body: Any
    done: Awaited[None]


class KeyClaims:
    """Stores queued claims of idempotency keys from one thread, and their answers from
    another: a claim, which its request waits for before it runs, does not wait behind the
    flush of answers whose requests were already answered."""

    def __init__(self, store: IdempotencyStore, connection: Connect) -> None:
        self._store = store
        self._connection = connection
        self._claims: queue.SimpleQueue[_Claim | None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[_Answer | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, args=(self._claims, self._claim),
                             name="key-claims", daemon=True),
            threading.Thread(target=self._run, args=(self._answers, self._answer),
                             name="key-answers", daemon=True)]
        for thread in self._threads:
            thread.start()

    def claim(self, username: str, key: str, digest: str, *, free_first: bool = False
              ) -> asyncio.Future[Replay | None]:
        """Claim ``key`` for ``username``'s request (freeing a claim its failed request left
        first, with ``free_first``); the future (of the running event loop) holds None if
        claimed now, else the earlier request (see :meth:`IdempotencyStore.claim`).
        Cancelling it leaves the claim to be stored all the same."""
        done: Awaited[Replay | None] = Awaited()
        self._claims.put(_Claim(username, key, digest, free_first, done))
        return done.future

    def answer(self, username: str, key: str, status: int, body: Any) -> asyncio.Future[None]:
        """Record the answer the claim's request got; a server error (status >= 500)
        promises nothing and frees the key instead, so that a retry runs. The future (of
        the running event loop) is done once it is stored."""
        done: Awaited[None] = Awaited()
        self._answers.put(_Answer(username, key, status, body, done))
        return done.future

    def close(self) -> None:
        """Store what is queued, then stop the threads."""
        self._claims.put(None)
        self._answers.put(None)
        for thread in self._threads:
            thread.join(5)

    def _run(self, waiting: queue.SimpleQueue[Any], store: Callable[[list[Any]], list[Any]]
             ) -> None:
        while True:
            batch, stop = next_batch(waiting, MAX_BATCH)
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

    def _claim(self, claims: list[_Claim]) -> list[Replay | None]:
        with self._connection() as conn:
            for claim in claims:
                if claim.free_first:
                    self._store.release(conn, claim.username, claim.key)
            return self._store.claim_many(conn, [(c.username, c.key, c.digest) for c in claims])

    def _answer(self, answers: list[_Answer]) -> list[None]:
        with self._connection() as conn:
            for answer in answers:
                if answer.status >= 500:
                    self._store.release(conn, answer.username, answer.key)
            completed = [(a.username, a.key, a.status, a.body) for a in answers
                         if a.status < 500]
            if completed:
                self._store.complete_many(conn, completed)
        return [None] * len(answers)
