"""Short pauses of Python's cycle collector in a long-running server.

A server keeps what it has seen (cached casebooks, studies, people) and adds to it with every
write, so its oldest generation grows by tens of thousands of objects a second. CPython runs a
full collection whenever that generation has grown by a quarter, and a full collection walks
every object still alive: on a warm server ~90 ms every ~0.6 s, holding the interpreter
while every request waits (it was the whole of the write path's p99 in ``bench/http_bench.py``).

After each full collection, what survived it is frozen (``gc.freeze``): the next one walks only
what is newer. Frozen objects are still freed by reference counting; only garbage *cycles*
among them wait, until, every ``examine_all_every`` seconds, they are unfrozen and the next
full collection walks everything once.

The youngest generation is collected after :data:`YOUNG_THRESHOLD` new container objects
instead of CPython's 700. At 700, under ``bench/http_inprocess.py``'s 32 clients, a young
collection ran every 14 writes, a middle one every 160 and a full one every 1,900; what a young
one found alive, mostly objects of the requests in flight about to be freed, went on to be
walked again by the older generations' collections. At 10,000 most of them are freed before
any collection sees them: one young collection in 1,200 writes, none older in 4,800, and 0.54
to 0.50 ms of the process's CPU a write. Garbage cycles wait a little longer.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

EXAMINE_ALL_EVERY = 600.0  # seconds; one full-length collection per period
YOUNG_THRESHOLD = 10_000  # new container objects between young collections


class CollectorPauses:
    """Installed in a server process: full collections walk only what is newer than the last."""

    def __init__(self, examine_all_every: float = EXAMINE_ALL_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.examine_all_every = examine_all_every
        self._clock = clock
        self._examined_all_at = clock()

    def install(self) -> None:
        """Freeze what the process holds after start-up and after every full collection;
        collect the youngest generation after :data:`YOUNG_THRESHOLD` new objects."""
        self._threshold: tuple[int, ...] = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, *self._threshold[1:])
        gc.freeze()
        gc.callbacks.append(self._after_collection)

    def remove(self) -> None:
        """Back to CPython's own behaviour (the thresholds as they were, everything
        unfrozen)."""
        gc.callbacks.remove(self._after_collection)
        gc.set_threshold(*self._threshold)
        gc.unfreeze()

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info["generation"] != 2:
            return
        now = self._clock()
        if now - self._examined_all_at >= self.examine_all_every:
            # The next full collection walks everything again, frozen cycles included.
            self._examined_all_at = now
            gc.unfreeze()
        else:
            gc.freeze()
