"""How domain value types are written into stored events (JSON)."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder, Transcoding

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

    def __init__(self) -> None:
        # Events of one request share their envelope, and a replay decodes millions of them:
        # equal stored envelopes decode to one (immutable) Envelope, validated once.
        self._decoded: dict[tuple[Any, ...], Envelope] = {}

    def encode(self, obj: Envelope) -> dict[str, Any]:
        """Encode."""
        return obj.to_dict()

    def decode(self, data: dict[str, Any]) -> Envelope:
        """Decode."""
        if data.get("provenance") is not None:
            # An imported row's own file, row and values: never shared, so never cached.
            return Envelope.from_dict(data)
        reason = data.get("reason")
        # Exactly what from_dict reads of an envelope without provenance.
        key = (tuple(data["actor"].items()), data["client"], data["source"], data["request_id"],
               data["edit_point"], None if reason is None else tuple(reason.items()))
        try:
            envelope = self._decoded.get(key)
        except TypeError:  # not a well-formed envelope: from_dict says what is wrong
            return Envelope.from_dict(data)
        if envelope is None:
            envelope = Envelope.from_dict(data)
            if len(self._decoded) >= 4096:
                self._decoded.clear()
            self._decoded[key] = envelope
        return envelope


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


# Every digit read as "0": a run of 19 zeros then marks a run of 19 digits. Translating and
# searching is linear and in C; the regular expression [0-9]{19} backtracks on every digit of
# every number (a third of the decoding time of a lab result).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0000000000")
_LONG_RUN = b"0" * 19


class FastJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoder, decoding with orjson: the same values, sooner.

    What orjson refuses (NaN, infinities) or would read differently (it reads integers beyond
    64 bits as floats, so any run of 19 digits) is decoded as before.
    """

    def decode(self, data: bytes) -> Any:
        """Decode."""
        if _LONG_RUN in data.translate(_DIGITS_AS_ZERO):
            return super().decode(data)
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)
        return self._revive(value) if type(value) is dict or type(value) is list else value

    def _revive(self, value: Any) -> Any:
        """Decode the transcoded objects in a parsed value, innermost first (as the standard
        decoder's object hook does)."""
        if type(value) is dict:
            for key, item in value.items():
                if type(item) is dict or type(item) is list:
                    value[key] = self._revive(item)
            return self._decode_obj(value)
        for index, item in enumerate(value):
            if type(item) is dict or type(item) is list:
                value[index] = self._revive(item)
        return value
