"""The keys a study's log is signed with. Registration, retirement and revocation are events,
so a verifier holding only the first public key can follow every rotation."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.clock import require_aware
from domain.envelope import Envelope
from domain.errors import InvalidInput, InvalidState
from domain.study import study_uuid


def keyring_uuid(study_id: str) -> UUID:
    """The aggregate id of a study's keyring."""
    return uuid5(study_uuid(study_id), "keyring")


class Keyring(Aggregate):
    """Signing keys of one study's log, and what became of each."""
    TOPIC = "Keyring.v1"

    class Event(Aggregate.Event):
        """Base of keyring events."""

        envelope: Envelope

    class Created(Event, Aggregate.Created):
        """eventsourcing's generic creation event, never triggered (each creation names
        its own event); declared to give it a stored name, as eventsourcing requires of
        every event class of an aggregate with one."""
        TOPIC = "Keyring.Created.v1"

    class Opened(Event, Aggregate.Created):
        """The keyring exists (with the study's first key, registered next)."""
        TOPIC = "Keyring.Opened.v1"

        study_id: str

    class KeyRegistered(Event):
        """A key may sign this log from here on (the event is signed by a key already valid)."""
        TOPIC = "Keyring.KeyRegistered.v1"

        key_id: str
        public_key: str  # base64 of the raw 32-byte Ed25519 key

        def apply(self, keyring: Keyring) -> None:
            keyring.keys[self.key_id] = "active"
            keyring.public_keys[self.key_id] = self.public_key
            keyring.valid_from[self.key_id] = self.timestamp

    class KeyRetired(Event):
        """A key signs nothing after this event (a planned rotation)."""
        TOPIC = "Keyring.KeyRetired.v1"

        key_id: str

        def apply(self, keyring: Keyring) -> None:
            keyring.keys[self.key_id] = "retired"
            keyring.valid_until[self.key_id] = self.timestamp

    class KeyRevoked(Event):
        """A key is compromised: nothing it signed at or after ``effective_at`` is valid."""
        TOPIC = "Keyring.KeyRevoked.v1"

        key_id: str
        effective_at: datetime
        revocation_reason: str

        def apply(self, keyring: Keyring) -> None:
            keyring.keys[self.key_id] = "revoked"
            # A revocation may reach back before the key's retirement.
            until = keyring.valid_until.get(self.key_id)
            keyring.valid_until[self.key_id] = (
                self.effective_at if until is None else min(until, self.effective_at))

    def __init__(self, study_id: str, envelope: Envelope) -> None:
        self.study_id = study_id
        self.keys: dict[str, str] = {}
        self.public_keys: dict[str, str] = {}  # base64 of the raw Ed25519 key
        self.valid_from: dict[str, datetime] = {}
        self.valid_until: dict[str, datetime] = {}

    @classmethod
    def open(cls, study_id: str, envelope: Envelope, at: datetime) -> Keyring:
        """A new, empty keyring for ``study_id``."""
        keyring: Keyring = cls._create(cls.Opened, id=keyring_uuid(study_id),
                                       timestamp=require_aware("recorded_at", at),
                                       envelope=envelope, study_id=study_id)
        return keyring

    def register(self, key_id: str, public_key: str, envelope: Envelope, at: datetime) -> None:
        """Register a key (a key is registered once, and never again after retirement)."""
        if key_id in self.keys:
            raise InvalidState(f"key {key_id} is already {self.keys[key_id]}")
        if not key_id or not public_key:
            raise InvalidInput("key_id", "key id and public key are required")
        self.trigger_event(self.KeyRegistered, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, key_id=key_id, public_key=public_key)

    def retire(self, key_id: str, envelope: Envelope, at: datetime) -> None:
        """Retire an active key."""
        self._require_active(key_id)
        self.trigger_event(self.KeyRetired, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, key_id=key_id)

    def revoke(self, key_id: str, effective_at: datetime, reason: str, envelope: Envelope,
               at: datetime) -> None:
        """Revoke a key from ``effective_at`` (when it may have been compromised)."""
        if self.keys.get(key_id) not in ("active", "retired"):
            raise InvalidState(f"key {key_id} is not registered or already revoked")
        if not reason.strip():
            raise InvalidInput("revocation_reason", "is required")
        self.trigger_event(self.KeyRevoked, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, key_id=key_id,
                           effective_at=require_aware("effective_at", effective_at),
                           revocation_reason=reason)

    def _require_active(self, key_id: str) -> None:
        if self.keys.get(key_id) != "active":
            raise InvalidState(f"key {key_id} is not active")
