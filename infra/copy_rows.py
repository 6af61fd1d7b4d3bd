"""Stored events encoded as the rows of a binary ``COPY`` into an events table, made where
the events are made (an import's worker processes), so that the process storing them sends
bytes rather than making a Python object per event.

The layout is PostgreSQL's binary COPY format (the signature, a header, per row a field count
and each field's length and value in network byte order, then the trailer), in the columns
the events table's COPY names (:class:`infra.recorder.AppendOnlyApplicationRecorder`):
``originator_id`` (``uuid``: its 16 bytes), ``originator_version`` (``int8``), ``topic``
(``text``, UTF-8) and ``state`` (``bytea``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import StoredEvent

# The signature, then the flags field and the header extension's length (both zero).
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
# A row's fields up to the topic's bytes: 4 fields; a uuid; an int8; the topic's length.
_ROW_HEAD = struct.Struct(">hi16siqi")
_LENGTH = struct.Struct(">i")


@dataclass(frozen=True)
class CopyRows:
    """A batch of stored events as COPY data (signature and trailer included)."""

    data: bytes
    count: int
    first: StoredEvent  # what tells, after a lost connection, whether the batch committed


class CopyRowsWriter:
    """Encodes stored events one after another into one :class:`CopyRows`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = [SIGNATURE]
        self._count = 0
        self._first: StoredEvent | None = None

    def add(self, originator_id: bytes, version: int, topic: str, state: bytes) -> None:
        """Append one event's row (``originator_id``: the UUID's 16 bytes)."""
        encoded_topic = topic.encode()
        if self._first is None:
            self._first = StoredEvent(originator_id=UUID(bytes=originator_id),
                                      originator_version=version, topic=topic, state=state)
        self._parts += (_ROW_HEAD.pack(4, 16, originator_id, 8, version, len(encoded_topic)),
                        encoded_topic, _LENGTH.pack(len(state)), state)
        self._count += 1

    def finish(self) -> CopyRows | None:
        """The rows added, ready to store (None when there are none)."""
        if self._first is None:
            return None
        return CopyRows(b"".join((*self._parts, TRAILER)), self._count, self._first)
