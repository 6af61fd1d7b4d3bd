"""The "database away" latch: once a request has found the database unreachable, the next
requests are answered 503 at once instead of each waiting out the connection timeouts,
until a probe (a direct connection, every :data:`PROBE_EVERY` seconds) finds it back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

PROBE_EVERY = 2.0  # seconds between probes while the database is away
RETRY_AFTER = 5  # seconds a client is told to wait (Retry-After) while it is away


class DatabaseAway:
    """Whether the database is known to be away, and the probes that find it back.

    ``reachable`` is the probe (a direct connection with a short timeout); ``clock`` is
    monotonic seconds. Thread-safe; at most one probe runs at a time.
    """

    def __init__(self, reachable: Callable[[], bool], probe_every: float = PROBE_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._reachable = reachable
        self._probe_every = probe_every
        self._clock = clock
        self._lock = threading.Lock()
        self._probing = False
        self._next_probe = 0.0
        self.latched = False  # read without the lock on every request: one attribute

    def confirm(self) -> bool:
        """After a request failed on the database: probe now, and latch if it is away.
        True when it is away."""
        if self._probe():
            return False
        with self._lock:
            self.latched = True
            self._next_probe = self._clock() + self._probe_every
        return True

    def away(self) -> bool:
        """True while latched, unless this caller is the one due to probe and the probe
        finds the database back (which clears the latch). Blocks only the prober (for the
        probe's timeout at most)."""
        if not self.latched:
            return False
        with self._lock:
            if self._probing or self._clock() < self._next_probe:
                return self.latched
            self._probing = True
        try:
            back = self._probe()
        finally:
            with self._lock:
                self._probing = False
                self._next_probe = self._clock() + self._probe_every
                if back:
                    self.latched = False
        return not back

    def _probe(self) -> bool:
        try:
            return self._reachable()
        except Exception:  # whatever keeps the probe from answering means "still away"
            return False
