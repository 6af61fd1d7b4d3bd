"""Storing a bulk load's events while the next ones are being built.

A :class:`BulkWriter` takes batches of one application's new domain events and stores each in
a transaction of its own, from a thread of its own: the events are mapped by the
application's own mapper (so stored byte for byte as the application stores them), signed in
a signing process when the mapper signs and the batch is large, and written with the
recorder's COPY. Meanwhile the caller builds the next batch; what overlaps is the waiting
(on the signing process and on PostgreSQL), which is most of storing.

Batches are stored in the order submitted, one transaction each. After a batch fails, no
later batch is stored (a later part of the same aggregate would otherwise leave a gap in its
versions); :meth:`BulkWriter.submit` and :meth:`BulkWriter.close` raise the failure.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import ApplicationRecorder, Mapper, StoredEvent

from infra.copy_rows import CopyRows
from infra.mapper import SigningMapper, UnsignedEvent
from infra.recorder import AppendOnlyApplicationRecorder
from infra.signing_process import SigningProcess

# Batches from this size on are signed in the signing process (started on the first one);
# for fewer events, starting a process costs more than it saves.
SIGN_APART_FROM = 500
# Events per request to the signing process, and requests unanswered at most: 2 x 256
# signatures of 64 bytes are 32 KiB, half a Linux pipe's buffer.
SIGNING_CHUNK = 256
SIGNING_AHEAD = 2


class BulkWriteFailed(RuntimeError):
    """A batch could not be stored; it and every batch submitted after it were not stored."""


@dataclass
class _Batch:
    events: list[DomainEventProtocol[UUID]] | CopyRows  # the latter mapped and encoded elsewhere
    on_stored: Callable[[], object] | None


class BulkWriter:
    """Stores submitted batches of domain events, in order, from a writer thread."""

    def __init__(self, mapper: Mapper[UUID], recorder: ApplicationRecorder, *,
                 depth: int = 2, sign_apart_from: int = SIGN_APART_FROM) -> None:
        self._mapper = mapper
        self._recorder = recorder
        self._sign_apart_from = sign_apart_from
        self._signing: SigningProcess | None = None
        # Bounded: the caller is held back once ``depth`` batches wait to be stored.
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._discard = False
        self._thread = threading.Thread(target=self._run, name="trialledger-bulk-writer",
                                        daemon=True)
        self._thread.start()

    def submit(self, events: Sequence[DomainEventProtocol[UUID]],
               on_stored: Callable[[], object] | None = None) -> None:
        """Queue ``events`` to be stored in one transaction; ``on_stored`` runs (in the writer
        thread) once they are committed. Blocks while the queue is full."""
        self._raise_if_failed()
        if events:
            self._queue.put(_Batch(list(events), on_stored))

    def submit_copy_rows(self, rows: CopyRows,
                         on_stored: Callable[[], object] | None = None) -> None:
        """As :meth:`submit`, for events already mapped (transcoded and signed) and encoded
        as COPY rows elsewhere, e.g. by an import's worker processes."""
        if not isinstance(self._recorder, AppendOnlyApplicationRecorder):
            raise TypeError("COPY rows are stored by the append-only PostgreSQL recorder")
        self._raise_if_failed()
        self._queue.put(_Batch(rows, on_stored))

    def close(self) -> None:
        """Store every batch submitted, then stop; raise if a batch failed."""
        self._stop()
        self._raise_if_failed()

    def abort(self) -> None:
        """Stop without storing the batches still queued (the one being stored completes or
        fails as a whole)."""
        self._discard = True
        self._stop()

    def __enter__(self) -> BulkWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._signing is not None:
            self._signing.close()
            self._signing = None

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise BulkWriteFailed(f"a batch of events could not be stored: {self._error}"
                                  ) from self._error

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is not None or self._discard:
                continue  # drained, not stored: the caller is told by submit or close
            try:
                if isinstance(batch.events, CopyRows):
                    recorder = self._recorder
                    assert isinstance(recorder, AppendOnlyApplicationRecorder)  # as submitted
                    recorder.insert_copy_rows(batch.events)
                else:
                    self._recorder.insert_events(self._stored(batch.events))
            except BaseException as e:  # handed to the caller's thread
                self._error = e
                continue
            if batch.on_stored is not None:
                try:
                    batch.on_stored()
                except BaseException as e:
                    self._error = e

    def _stored(self, events: list[DomainEventProtocol[UUID]]) -> list[StoredEvent]:
        mapper = self._mapper
        if not isinstance(mapper, SigningMapper) or len(events) < self._sign_apart_from:
            return [mapper.to_stored_event(event) for event in events]
        if self._signing is None:
            self._signing = mapper.signer.signing_process()
        signing = self._signing
        # Sent a chunk at a time as the events are transcoded, so the signing process signs
        # one chunk while this thread transcodes the next, rather than waiting for the whole
        # batch. At most SIGNING_AHEAD chunks are unanswered: their signatures fit in the
        # pipe's buffer, so the child never blocks writing them while this thread blocks
        # writing the next request.
        unsigned: list[UnsignedEvent] = []
        signatures: list[bytes] = []
        for start in range(0, len(events), SIGNING_CHUNK):
            chunk = [mapper.prepare(event) for event in events[start:start + SIGNING_CHUNK]]
            unsigned.extend(chunk)
            if signing.pending >= SIGNING_AHEAD:
                signatures.extend(signing.receive())
            signing.send([u.message for u in chunk])
        while signing.pending:
            signatures.extend(signing.receive())
        return [mapper.finish(u, s) for u, s in zip(unsigned, signatures, strict=True)]
