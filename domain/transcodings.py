"""How domain value types are written into stored events (JSON)."""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
from eventsourcing import persistence
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


class DatetimeAsISO(persistence.DatetimeAsISO):
    """eventsourcing's ``datetime_iso``, remembering the last datetime it wrote: the events
    of a batch share their timestamp (one object), written once for them all."""

    def __init__(self) -> None:
        # A pair, replaced whole: threads sharing the transcoding never mix two.
        self._last: tuple[datetime | None, str] = (None, "")

    def encode(self, obj: datetime) -> str:
        """Encode."""
        last, text = self._last
        if obj is not last:
            text = obj.isoformat()
            self._last = (obj, text)
        return text


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


TRANSCODINGS: tuple[Transcoding, ...] = (DateAsISO(), DatetimeAsISO(), EnvelopeAsDict(),
                                         ActorAsDict())


# Every digit read as "0": a run of 19 zeros then marks a run of 19 digits. Translating and
# searching is linear and in C; the regular expression [0-9]{19} backtracks on every digit of
# every number (a third of the decoding time of a lab result).
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0000000000")
_LONG_RUN = b"0" * 19


# Objects orjson writes itself rather than hand to ``default`` as the standard encoder does.
_WRITTEN_BY_ORJSON = (UUID, Enum, orjson.Fragment)
_SCALARS = frozenset({str, int, bool, type(None)})
# orjson gives datetimes, dataclasses (the envelope) and subclasses of str, int, dict and list
# to ``default`` (the transcodings), as the standard encoder does.
_ORJSON_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                   | orjson.OPT_PASSTHROUGH_SUBCLASS)


class _NotLikeStandard(Exception):
    """A transcoded value orjson would write otherwise than the standard encoder."""


def _writes_alike(value: Any) -> bool:
    """True unless orjson might write ``value`` otherwise than eventsourcing's standard
    encoder (``json`` with ``separators=(",", ":")``, ``ensure_ascii=False``).

    Measured and tested alike: strings (every code point), integers, booleans, None, lists,
    tuples, dicts with string keys, and floats from 1e-4 to 1e16 (and zero). Not alike: a
    smaller float (orjson writes 0.000015, not 1.5e-05), NaN and infinities (orjson writes
    null), UUIDs and enums (written by orjson, not by their transcodings). What orjson refuses
    (integers beyond 64 bits, other keys) raises, and is then written by the standard encoder.
    """
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is float:
        return bool(value == 0.0 or 1e-4 <= abs(value) < 1e16)
    else:
        return kind in _SCALARS or not isinstance(value, _WRITTEN_BY_ORJSON)
    for item in items:  # the same tests, inline: this runs for every value of every event
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is float:
            if not (item == 0.0 or 1e-4 <= abs(item) < 1e16):
                return False
        elif kind is dict or kind is list or kind is tuple:
            if not _writes_alike(item):
                return False
        elif isinstance(item, _WRITTEN_BY_ORJSON):
            return False
    return True


class FastJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoder, with orjson: the same bytes and values, sooner.

    Encoding: what orjson writes exactly as the standard encoder does (see
    :func:`_writes_alike`) is written by orjson, the rest by the standard encoder, so the
    stored bytes never depend on which wrote them.

    Decoding: what orjson refuses (NaN, infinities) or would read differently (it reads
    integers beyond 64 bits as floats, so any run of 19 digits) is decoded as before.
    """

    def encode(self, obj: Any) -> bytes:
        """Encode."""
        if _writes_alike(obj):
            try:
                return orjson.dumps(obj, default=self._encode_alike, option=_ORJSON_OPTIONS)
            except orjson.JSONEncodeError:
                pass  # refused by orjson, or not alike: the standard encoder says
        return super().encode(obj)

    def _encode_alike(self, obj: Any) -> dict[str, Any]:
        encoded = self._encode_obj(obj)
        data = encoded["_data_"]
        if type(data) is not str and not _writes_alike(data):
            raise _NotLikeStandard
        return encoded

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
