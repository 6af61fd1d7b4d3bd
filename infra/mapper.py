"""The signing mapper: every event leaving the application is signed before it is stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from infra.signing import EventSigner, SignedState


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

    def __init__(self, transcoder: Transcoder, signer: EventSigner, **kwargs: Any) -> None:
        super().__init__(transcoder, **kwargs)
        self.signer = signer

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        """Transcode, then sign, the event."""
        unsigned = self.prepare(domain_event)
        return self.finish(unsigned, self.signer.signature(unsigned.message))

    def prepare(self, domain_event: DomainEventProtocol[UUID]) -> UnsignedEvent:
        """Transcode the event; say what its signature covers."""
        stored = super().to_stored_event(domain_event)
        # Every aggregate event has a timestamp; the protocol type just doesn't declare it.
        timestamp: datetime = domain_event.timestamp  # type: ignore[attr-defined]
        recorded_at = timestamp.isoformat()
        message = self.signer.message(str(stored.originator_id), stored.originator_version,
                                      stored.topic, stored.state, recorded_at)
        return UnsignedEvent(stored, recorded_at, message)

    def finish(self, unsigned: UnsignedEvent, signature: bytes) -> StoredEvent:
        """The stored event: the payload in a signed envelope carrying ``signature``."""
        stored = unsigned.stored
        envelope = SignedState(self.signer.key_id, unsigned.recorded_at, signature, stored.state)
        return StoredEvent(
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=envelope.pack(),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        """Unwrap the envelope and decode the payload.

        Signatures are checked by the verifier and the ledger sealer, which see every event;
        checking again on every aggregate load would double the read cost for no new guarantee.
        """
        payload = SignedState.unpack(stored_event.state).payload
        return super().to_domain_event(
            StoredEvent(
                originator_id=stored_event.originator_id,
                originator_version=stored_event.originator_version,
                topic=stored_event.topic,
                state=payload,
            )
        )
