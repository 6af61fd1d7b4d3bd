"""The client's exceptions for the server's 409s: a write whose key shows it applied (its
answer lost) is told apart from a key in flight and from any other conflict, so that a
data-entry app does not enter it again."""

from __future__ import annotations

from datetime import UTC, datetime

from trialledger_client import Conflict, KeyInFlight, WriteApplied
from trialledger_client.errors import problem_error

APPLIED_AT = "2026-12-07T13:00:00.123456+00:00"


def _problem(**extra: object) -> dict[str, object]:
    return {"type": "about:blank", "title": "Conflict", "status": 409, "detail": "...",
            **extra}


def test_a_write_applied_is_its_own_conflict_with_its_time() -> None:
    error = problem_error(409, _problem(key_state="applied", applied_at=APPLIED_AT), None)
    assert type(error) is WriteApplied
    assert isinstance(error, Conflict)
    assert error.applied_at == datetime(2026, 12, 7, 13, 0, 0, 123456, tzinfo=UTC)


def test_a_key_in_flight_and_other_conflicts() -> None:
    assert type(problem_error(409, _problem(key_state="in_flight"), None)) is KeyInFlight
    assert type(problem_error(409, _problem(), None)) is Conflict
    assert type(problem_error(409, _problem(key_state="something new"), None)) is Conflict
    # Only a 409 says so: the same member on another status changes nothing.
    assert not isinstance(problem_error(422, _problem(key_state="applied"), None), Conflict)


def test_an_unreadable_time_is_none_not_an_error() -> None:
    error = problem_error(409, _problem(key_state="applied", applied_at="yesterday"), None)
    assert isinstance(error, WriteApplied)
    assert error.applied_at is None
