"""The directory's log of sign-in attempts that name no registered person.

An attempt for a known username is an event on that person (``User.LoginFailed``); one for a
name nobody holds has no person to land on, so it is recorded here, on one aggregate per UTC
day (a day's log stays small to load, and its id is known without a lookup). The offered
password is never recorded.
"""

from __future__ import annotations

from datetime import date, datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.clock import require_aware
from domain.envelope import Actor, Envelope

_NAMESPACE = uuid5(NAMESPACE_URL, "https://trialledger.invalid/directory/sign-in-log/")
MAX_RECORDED_NAME = 64  # longer offered names are cut (a username is at most 64 characters)


def anonymous_envelope(client: str, request_id: str) -> Envelope:
    """The envelope of an attempt by someone the directory does not know."""
    return Envelope(Actor("anonymous", "(unknown user)", "system", "*"), client, "api",
                    request_id)


def sign_in_log_uuid(day: date) -> UUID:
    """The aggregate id of the sign-in log of ``day`` (UTC)."""
    return uuid5(_NAMESPACE, day.isoformat())


class SignInLog(Aggregate):
    """One UTC day's sign-in attempts for usernames that no one holds."""
    TOPIC = "SignInLog.v1"

    class Event(Aggregate.Event):
        """Base of sign-in log events: each carries the envelope of the attempt."""

        envelope: Envelope

    class Created(Event, Aggregate.Created):
        """eventsourcing's generic creation event, never triggered (each creation names
        its own event); declared to give it a stored name."""
        TOPIC = "SignInLog.Created.v1"

    class Opened(Event, Aggregate.Created):
        """The day's log was opened (by its first attempt)."""
        TOPIC = "SignInLog.Opened.v1"

        day: str

    class SignInFailedForUnknownUser(Event):
        """A sign-in attempt named a username that no one holds."""
        TOPIC = "SignInLog.SignInFailedForUnknownUser.v1"

        username: str
        client: str
        purpose: str
        address: str

        def apply(self, log: SignInLog) -> None:
            log.failures += 1

    def __init__(self, day: str, envelope: Envelope) -> None:
        self.day = day
        self.failures = 0

    @classmethod
    def open(cls, day: date, envelope: Envelope, at: datetime) -> SignInLog:
        """The log of ``day``, new."""
        log: SignInLog = cls._create(cls.Opened, id=sign_in_log_uuid(day),
                                     timestamp=require_aware("recorded_at", at),
                                     envelope=envelope, day=day.isoformat())
        return log

    def unknown_user(self, username: str, client: str, purpose: str, address: str,
                     envelope: Envelope, at: datetime) -> None:
        """Record a failed attempt for ``username``, which no one holds."""
        self.trigger_event(self.SignInFailedForUnknownUser, timestamp=at, envelope=envelope,
                           username=username[:MAX_RECORDED_NAME], client=client,
                           purpose=purpose, address=address)
