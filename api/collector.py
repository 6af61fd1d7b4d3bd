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
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

EXAMINE_ALL_EVERY = 600.0  # seconds; one full-length collection per period


class CollectorPauses:
    """Installed in a server process: full collections walk only what is newer than the last."""

    def __init__(self, examine_all_every: float = EXAMINE_ALL_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.examine_all_every = examine_all_every
        self._clock = clock
        self._examined_all_at = clock()

    def install(self) -> None:
        """Freeze what the process holds after start-up and after every full collection."""
        gc.freeze()
        gc.callbacks.append(self._after_collection)

    def remove(self) -> None:
        """Back to CPython's own behaviour (everything unfrozen)."""
        gc.callbacks.remove(self._after_collection)
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
