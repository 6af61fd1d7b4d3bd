"""Online verification of the event store: every signature, every aggregate's version chain.

It reads the events exactly as stored and names the first one that does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.sql import SQL, Identifier

from infra.catalog import EVENTS_TABLE
from infra.signing import SignedState, SignedStateError, check_signature


@dataclass(frozen=True)
class BadEvent:
    """The first event that failed verification, and why."""

    study: str
    position: int
    originator_id: str
    originator_version: int
    topic: str
    reason: str

    def describe(self) -> str:
        """One line for a person."""
        return (
            f"study {self.study}: event at position {self.position} "
            f"(aggregate {self.originator_id} v{self.originator_version}, {self.topic}): "
            f"{self.reason}"
        )


@dataclass(frozen=True)
class StudyVerification:
    """The outcome of verifying one study's events."""

    study: str
    events_checked: int
    first_bad: BadEvent | None

    @property
    def ok(self) -> bool:
        """True when every event holds."""
        return self.first_bad is None


def verify_study(
    conn: psycopg.Connection[Any],
    study: str,
    schema: str,
    public_keys: dict[str, Ed25519PublicKey],
    batch_size: int = 5000,
) -> StudyVerification:
    """Check every stored event of one study, in commit order; stop at the first bad one."""
    last_version: dict[str, int] = {}
    checked = 0
    query = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state "
        "FROM {}.{} ORDER BY notification_id"
    ).format(Identifier(schema), Identifier(EVENTS_TABLE))
    with conn.transaction(), conn.cursor(name="verify_events") as cursor:
        cursor.itersize = batch_size
        cursor.execute(query)
        for position, originator_id, version, topic, state in cursor:
            oid = str(originator_id)
            reason = _check_event(study, oid, version, topic, bytes(state), public_keys,
                                  last_version.get(oid, 0))
            if reason is not None:
                return StudyVerification(
                    study, checked, BadEvent(study, position, oid, version, topic, reason)
                )
            last_version[oid] = version
            checked += 1
    return StudyVerification(study, checked, None)


def _check_event(
    study: str,
    originator_id: str,
    version: int,
    topic: str,
    state: bytes,
    public_keys: dict[str, Ed25519PublicKey],
    previous_version: int,
) -> str | None:
    if version != previous_version + 1:
        return (
            f"version chain broken: expected v{previous_version + 1} after "
            f"v{previous_version} (an event is missing or out of order)"
        )
    try:
        envelope = SignedState.unpack(state)
    except SignedStateError as e:
        return str(e)
    key = public_keys.get(envelope.key_id)
    if key is None:
        return f"signed by unknown key {envelope.key_id}"
    if not check_signature(study, originator_id, version, topic, envelope, key):
        return "signature does not match the stored event (altered or forged)"
    return None
