"""Clocks. The application service takes one: the HTTP API always uses the real clock;
simulations, imports and tests may inject their own."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current UTC time."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The server's real clock."""

    def now(self) -> datetime:
        """The current time in UTC."""
        return datetime.now(UTC)


class SimulatedClock:
    """A clock that only moves when told to, and never backwards."""

    def __init__(self, start: datetime) -> None:
        require_aware("start", start)
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        """The simulated current time."""
        return self._now

    def set(self, when: datetime) -> None:
        """Move the clock forward to ``when`` (no-op if ``when`` is in the past)."""
        require_aware("when", when)
        self._now = max(self._now, when.astimezone(UTC))

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self._now += max(delta, timedelta(0))


def require_aware(field: str, value: datetime) -> datetime:
    """Refuse naive timestamps: every time in TrialLedger carries an explicit offset."""
    if type(value) is datetime and value.tzinfo is UTC:
        # Already in UTC (astimezone would return it as is): an import asks this of every
        # row three times, and the checks below cost a microsecond each time.
        return value
    from domain.errors import InvalidInput

    if not isinstance(value, datetime):
        raise InvalidInput(field, "must be a date-time with an explicit UTC offset")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(field, "naive timestamp: an explicit UTC offset is required")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-14:00 is a valid ISO 8601 text, but past datetime.max in UTC.
        raise InvalidInput(field, "is outside the range of times the server can represent "
                                  "(years 1 to 9999 in UTC)") from None


def entered_offset(value: datetime) -> str:
    """The UTC offset ``value`` was given with, as ISO 8601 writes it (``+08:00``, ``-03:30``,
    ``+00:00``): what :func:`require_aware` drops when it converts to UTC."""
    offset = value.utcoffset()
    if offset is None:
        from domain.errors import InvalidInput

        raise InvalidInput("observed_at", "naive timestamp: an explicit UTC offset is required")
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def in_offset(moment: datetime, offset: str | None) -> datetime:
    """``moment`` as the wall clock showed it at ``offset`` (``+08:00``); unchanged (UTC)
    when there is no offset (an entry from before offsets were kept)."""
    if not offset:
        return moment
    return moment.astimezone(_zone(offset))


@functools.cache
def _zone(offset: str) -> tzinfo | None:
    # A study has a few distinct offsets and an export shows every record's: strptime for
    # each took a tenth of a bundle's own time.
    return datetime.strptime(offset, "%z").tzinfo
