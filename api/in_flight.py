"""Concurrent requests needing the same answer from the database share one asking.

A checked token is trusted for the sessions' ``touch_every`` (1 s); then it is read again, in
a worker thread. All the requests a client has in flight at that moment missed the cache
together, and each went to a worker thread and the database for the same session and person
(32 thread hops and round trips a second at the HTTP bench's 32 clients, each hop about
0.15 ms of the process's CPU). :class:`InFlight` lets the first ask and the others await its
answer, which is at most as old as their own arrival.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class _AskerGone(Exception):
    """The request asking for the others was cancelled before it had the answer."""


class InFlight(Generic[T]):
    """One asking per key at a time on each event loop; whoever comes while it is under way
    gets its result or its error."""

    def __init__(self) -> None:
        self._asking: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Future[T]] = {}

    async def run(self, key: Hashable, ask: Callable[[], Awaitable[T]]) -> T:
        """``await ask()``, or the answer of the same ask already under way for ``key``."""
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        while (under_way := self._asking.get(slot)) is not None:
            try:
                return await asyncio.shield(under_way)
            except _AskerGone:
                continue  # its asker was cancelled: ask again (one of those waiting will)
        answer: asyncio.Future[T] = loop.create_future()
        # An error nobody else waited for is not "never retrieved".
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._asking[slot] = answer
        try:
            result = await ask()
        except asyncio.CancelledError:
            answer.set_exception(_AskerGone())
            raise
        except BaseException as e:
            answer.set_exception(e)
            raise
        else:
            answer.set_result(result)
            return result
        finally:
            del self._asking[slot]
