"""The "database away" latch: set only when a probe confirms the database unreachable,
answered from memory between probes, cleared by the first probe that finds it back."""

from __future__ import annotations

from application.database_away import DatabaseAway


class Database:
    """A database that is up or down as the test says, counting the probes it answers."""

    def __init__(self) -> None:
        self.up = True
        self.probes = 0

    def reachable(self) -> bool:
        self.probes += 1
        return self.up


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_with_the_database_reachable_does_not_latch() -> None:
    database = Database()
    away = DatabaseAway(database.reachable, probe_every=2.0, clock=Clock())
    assert away.confirm() is False  # e.g. a lock timeout: the database answers
    assert not away.latched and not away.away()


def test_while_away_requests_are_refused_without_probing_until_one_is_due() -> None:
    database, clock = Database(), Clock()
    away = DatabaseAway(database.reachable, probe_every=2.0, clock=clock)
    database.up = False
    assert away.confirm() is True and away.latched
    probes = database.probes
    assert all(away.away() for _ in range(50))
    assert database.probes == probes  # answered from memory
    clock.now += 2.0
    assert away.away()  # the due probe finds it still away
    assert database.probes == probes + 1
    database.up = True
    assert away.away()  # not due again yet
    clock.now += 2.0
    assert away.away() is False and not away.latched  # back: the latch is cleared


def test_a_probe_that_raises_counts_as_away() -> None:
    def broken() -> bool:
        raise OSError("no route to host")

    away = DatabaseAway(broken, clock=Clock())
    assert away.confirm() is True and away.latched
