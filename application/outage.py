"""A database outage as a server's background work reports it: once when it begins, then at a
back-off while it lasts, once when it ends; never a traceback per attempt."""

from __future__ import annotations

import time
from collections.abc import Callable

from infra.logging import get_logger
from infra.unavailable import unavailable_reason

log = get_logger(__name__)

# Seconds from the outage's first line to the first reminder; each next one waits twice as
# long, up to LONGEST_REMINDER.
FIRST_REMINDER = 10.0
LONGEST_REMINDER = 300.0


class Outage:
    """Whether the database is away, as seen by repeated attempts at it, and its log lines.

    :meth:`failed` takes an attempt's error: True if it was the database being away
    (logged here, at most at the back-off), False if it was anything else (the caller's to
    report). :meth:`succeeded` ends an outage.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None
        self._next_reminder = 0.0
        self._reminder_wait = FIRST_REMINDER
        self._attempts = 0

    @property
    def away(self) -> bool:
        """True while the last attempt found the database away."""
        return self._since is not None

    def failed(self, error: BaseException) -> bool:
        """Record a failed attempt; True if the database was away (and then logged once at
        the start and at the back-off after)."""
        reason = unavailable_reason(error)
        if reason is None:
            return False
        now = self._clock()
        self._attempts += 1
        if self._since is None:
            self._since = now
            self._reminder_wait = FIRST_REMINDER
            self._next_reminder = now + self._reminder_wait
            self._attempts = 1
            log.error("database.unavailable", reason=reason)
        elif now >= self._next_reminder:
            log.warning("database.still_unavailable", reason=reason,
                        seconds=round(now - self._since), attempts=self._attempts)
            self._reminder_wait = min(self._reminder_wait * 2, LONGEST_REMINDER)
            self._next_reminder = now + self._reminder_wait
        return True

    def succeeded(self) -> None:
        """Record a successful attempt; an outage in progress ends (logged once)."""
        if self._since is not None:
            log.warning("database.available", seconds=round(self._clock() - self._since),
                        attempts=self._attempts)
            self._since = None
