"""The signing mapper: every event leaving the application is signed before it is stored
(its declared identifying values sealed first, so the signature covers the ciphertext); and
the verifying one, which also checks every event it loads."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from domain.errors import Unverified
from infra.sealed_fields import FieldSealer
from infra.signing import EventSigner, SignedState, SignedStateError, check_signature


class UnsignedEvent(NamedTuple):
    """A transcoded event and the message its signature is to cover."""

    stored: StoredEvent  # its state is the payload, not yet wrapped in a signed envelope
    recorded_at: str
    message: bytes


class SigningMapper(Mapper[UUID]):
    """eventsourcing's mapper, wrapping each transcoded event in a signed envelope.

    ``recorded_at`` is the event's timestamp, which the application service takes from its
    clock (the server clock for the API), never from the client.

    :meth:`to_stored_event` is :meth:`prepare`, the signature, then :meth:`finish`; a bulk
    load calls the three itself, to have the signatures made in another process.
    """

    def __init__(self, transcoder: Transcoder, signer: EventSigner,
                 sealer: FieldSealer | None = None, **kwargs: Any) -> None:
        super().__init__(transcoder, **kwargs)
        self.signer = signer
        self.sealer = sealer
        # The last timestamp and aggregate id written as text: the events of a batch share
        # their timestamp and an aggregate's its id (one object each). A pair, replaced
        # whole, so that threads sharing the mapper never match one's key with another's.
        self._last_time: tuple[datetime | None, str] = (None, "")
        self._last_id: tuple[object, str] = (None, "")

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        """Transcode, then sign, the event."""
        unsigned = self.prepare(domain_event)
        return self.finish(unsigned, self.signer.signature(unsigned.message))

    def prepare(self, domain_event: DomainEventProtocol[UUID]) -> UnsignedEvent:
        """Seal its identifying values, transcode the event; say what its signature covers."""
        stored = super().to_stored_event(self._sealed(domain_event))
        # Every aggregate event has a timestamp; the protocol type just doesn't declare it.
        timestamp: datetime = domain_event.timestamp  # type: ignore[attr-defined]
        last_time, recorded_at = self._last_time
        if timestamp is not last_time:
            recorded_at = timestamp.isoformat()
            self._last_time = (timestamp, recorded_at)
        last_id, originator_id = self._last_id
        if stored.originator_id is not last_id:
            originator_id = str(stored.originator_id)
            self._last_id = (stored.originator_id, originator_id)
        message = self.signer.message(originator_id, stored.originator_version, stored.topic,
                                      stored.state, recorded_at)
        return UnsignedEvent(stored, recorded_at, message)

    def _sealed(self, domain_event: DomainEventProtocol[UUID]) -> DomainEventProtocol[UUID]:
        """The event, or a copy of it with its declared values sealed (the event itself,
        which the aggregate folded, keeps its plain values)."""
        if self.sealer is None:
            return domain_event
        state = self.sealer.seal(str(domain_event.originator_id), vars(domain_event))
        if state is None:
            return domain_event
        copy = object.__new__(type(domain_event))
        object.__setattr__(copy, "__dict__", state)
        return copy

    def finish(self, unsigned: UnsignedEvent, signature: bytes) -> StoredEvent:
        """The stored event: the payload in a signed envelope carrying ``signature``."""
        stored = unsigned.stored
        return StoredEvent(
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=self.signer.envelope(unsigned.recorded_at, signature, stored.state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        """Unwrap the envelope and decode the payload, opening its sealed values (each
        reads as the redaction marker once its key is destroyed).

        Signatures are checked by the verifier and the ledger sealer, which see every event;
        checking again on every aggregate load would double the read cost for no new guarantee.
        """
        payload = SignedState.unpack(stored_event.state).payload
        event = super().to_domain_event(
            StoredEvent(
                originator_id=stored_event.originator_id,
                originator_version=stored_event.originator_version,
                topic=stored_event.topic,
                state=payload,
            )
        )
        if self.sealer is not None and self.sealer.holds_sealed(payload):
            object.__setattr__(event, "__dict__", self.sealer.open(vars(event)))
        return event


class VerifyingMapper(SigningMapper):
    """A signing mapper that checks each event's signature as it loads it, and refuses
    (:class:`domain.errors.Unverified`) one that does not verify under a trusted key.

    For the directory, whose people are read rarely and each of whose grants decides what a
    request may do: a grant forged in the database must grant nothing. ``trusted_keys``
    gives the deployment's public keys; it is asked again when an event names a key not
    known yet (a rotation made by another process).
    """

    def __init__(self, transcoder: Transcoder, signer: EventSigner,
                 trusted_keys: Callable[[], dict[str, Ed25519PublicKey]], **kwargs: Any) -> None:
        super().__init__(transcoder, signer, **kwargs)
        self._trusted_keys = trusted_keys
        self._keys = trusted_keys()

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        """Check the event's signature, then unwrap and decode it."""
        reason = self._problem(stored_event)
        if reason is not None:
            raise Unverified(f"event {stored_event.originator_id} "
                             f"v{stored_event.originator_version} ({stored_event.topic}): "
                             f"{reason}")
        return super().to_domain_event(stored_event)

    def _problem(self, stored: StoredEvent) -> str | None:
        try:
            envelope = SignedState.unpack(stored.state)
        except SignedStateError as e:
            return str(e)
        key = self._keys.get(envelope.key_id)
        if key is None:
            self._keys = self._trusted_keys()
            key = self._keys.get(envelope.key_id)
        if key is None:
            return f"signed by unknown key {envelope.key_id}"
        if not check_signature(self.signer.study, str(stored.originator_id),
                               stored.originator_version, stored.topic, envelope, key):
            return "signature does not match the stored event (altered or forged)"
        return None
