"""What counts as the database being away, and an outage's state over repeated attempts."""

from __future__ import annotations

import psycopg
from eventsourcing.persistence import OperationalError
from psycopg_pool import PoolTimeout

from application.outage import Outage
from infra.unavailable import unavailable_reason

REFUSED = ('connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
           'sorry, too many clients already')


def _wrapped(error: Exception) -> OperationalError:
    """An error as eventsourcing's datastore raises it: its own, caused by psycopg's."""
    try:
        raise OperationalError(str(error)) from error
    except OperationalError as wrapped:
        return wrapped


def test_too_many_clients_is_named_in_one_line() -> None:
    reason = unavailable_reason(_wrapped(psycopg.OperationalError(REFUSED)))
    assert reason is not None
    assert "too many clients" in reason and "\n" not in reason
    assert "TRIALLEDGER_STORE_POOL_SIZE" in reason


def test_a_pool_timeout_and_a_lost_connection_are_the_database_away() -> None:
    assert unavailable_reason(PoolTimeout("couldn't get a connection after 30.00 sec"))
    lost = psycopg.OperationalError("consuming input failed: server closed the connection\n"
                                    "unexpectedly")
    reason = unavailable_reason(lost)
    assert reason is not None and "\n" not in reason


def test_other_errors_are_not_the_database_away() -> None:
    assert unavailable_reason(ValueError("too many clients")) is None
    assert unavailable_reason(psycopg.errors.UniqueViolation("duplicate key")) is None


def test_an_outage_begins_and_ends_with_the_attempts() -> None:
    now = [0.0]
    outage = Outage(clock=lambda: now[0])
    assert not outage.away
    assert not outage.failed(ValueError("a bug, not an outage"))
    assert not outage.away
    for _ in range(5):
        now[0] += 2
        assert outage.failed(psycopg.OperationalError(REFUSED))
        assert outage.away
    outage.succeeded()
    assert not outage.away
