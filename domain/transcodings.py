"""How domain value types are written into stored events (JSON)."""

from __future__ import annotations

from datetime import date
from typing import Any

from eventsourcing.persistence import Transcoding

from domain.envelope import Actor, Envelope


class DateAsISO(Transcoding):
    """``datetime.date`` as ``YYYY-MM-DD``."""

    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        """Encode."""
        return obj.isoformat()

    def decode(self, data: str) -> date:
        """Decode."""
        return date.fromisoformat(data)


class EnvelopeAsDict(Transcoding):
    """:class:`Envelope` as a JSON object."""

    type = Envelope
    name = "envelope"

    def encode(self, obj: Envelope) -> dict[str, Any]:
        """Encode."""
        return obj.to_dict()

    def decode(self, data: dict[str, Any]) -> Envelope:
        """Decode."""
        return Envelope.from_dict(data)


class ActorAsDict(Transcoding):
    """:class:`Actor` (e.g. the signer of an e-signature) as a JSON object."""

    type = Actor
    name = "actor"

    def encode(self, obj: Actor) -> dict[str, str]:
        """Encode."""
        return {"user_id": obj.user_id, "printed_name": obj.printed_name, "role": obj.role,
                "site": obj.site}

    def decode(self, data: dict[str, str]) -> Actor:
        """Decode."""
        return Actor(**data)


TRANSCODINGS: tuple[Transcoding, ...] = (DateAsISO(), EnvelopeAsDict(), ActorAsDict())
