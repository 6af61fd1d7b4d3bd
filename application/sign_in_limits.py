"""Rate limits on sign-in attempts, per account and per network address (the ``limits``
library, a moving window in this process's memory: each server worker counts its own)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


class TooManyAttempts(Exception):
    """Too many sign-in attempts for an account or from an address (answered 429)."""

    def __init__(self, what: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many sign-in attempts {what}; retry in {retry_after} s")


@dataclass(frozen=True)
class SignInLimits:
    """Attempts allowed per minute for one account and from one address (0: no limit)."""

    per_account: int = 10
    per_address: int = 100


class SignInLimiter:
    """Counts attempts and refuses those over the limits."""

    def __init__(self, limits: SignInLimits) -> None:
        # Imported when first needed: the library (with its asyncio storages) weighs some
        # 10 MB in every process that imports the runtime, an export's among them.
        from limits import RateLimitItemPerMinute
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._account = RateLimitItemPerMinute(limits.per_account) if limits.per_account \
            else None
        self._address = RateLimitItemPerMinute(limits.per_address) if limits.per_address \
            else None

    def attempt(self, username: str, address: str) -> None:
        """Count an attempt on ``username`` from ``address``, or raise
        :class:`TooManyAttempts` (the attempt is then not counted, nor made)."""
        counted = [(item, key, what) for item, key, what in (
            (self._address, f"address:{address}", "from this address"),
            (self._account, f"account:{username.casefold()}", "for this account"))
            if item is not None]
        for item, key, what in counted:  # refused by either: counted by neither
            if not self._limiter.test(item, key):
                reset = self._limiter.get_window_stats(item, key).reset_time
                raise TooManyAttempts(what, max(1, math.ceil(reset - time.time())))
        for item, key, _ in counted:
            self._limiter.hit(item, key)
