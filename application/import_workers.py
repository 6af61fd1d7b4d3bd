"""An SDTM import's subjects built, transcoded and signed in worker processes.

The importing process checks every row up front (a bad row stores nothing), checks the
caller's grant and the locks, and stores; the building of new subjects' events, their
transcoding and their signing (most of an import's Python) run in a pool of processes, one
per core, each given whole subjects (independent aggregates). A worker builds the events
exactly as the importing process would (same domain code, same mapper, same key: Ed25519 is
deterministic), so the stored bytes are the same; batches are stored in the order they were
handed out, so the log's order is the one-process import's.

Only plain data crosses the pipes (named tuples, which pickle faster than dataclasses): rows
and their checked fields going out, stored events' bytes coming back (pickling domain
objects would cost more than building them).
The pool is started with ``spawn`` (not ``fork``: the importing process runs connection-pool
threads whose locks a fork would copy); the key is handed to each worker through the pool's
pipe, never its arguments or environment.
"""

from __future__ import annotations

import gc
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import date, datetime
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from domain.envelope import Envelope
from domain.errors import DomainError
from domain.sdtm import CheckedRow
from domain.service import StudyApplication
from domain.study import StudyDefinition
from domain.subject import Subject
from infra.mapper import SigningMapper
from infra.signers import signer_from_handover
from infra.signing import EventSigner

# Worker processes: the machine's two cores (the importing process mostly waits on them).
WORKERS = 2


class NewRecord(NamedTuple):
    """One checked row of a new subject, as a worker loads it."""

    record_id: str
    kind: str
    fields: dict[str, Any]
    observed_at: datetime
    visit: str | None
    provenance: dict[str, Any]


class NewSubject(NamedTuple):
    """A subject not yet stored, with its checked rows (what a worker is sent)."""

    subject_code: str
    site: str
    sex: str
    demographics: dict[str, Any]
    arm: str | None
    actual_arm: str | None
    enrolled_on: date | None
    provenance: dict[str, Any]
    at: datetime
    records: list[NewRecord]


# A subject's stored events: its id (16 bytes), then each event's version, topic and
# signed state (the id once a subject: making a UUID of it is a tenth of storing an event).
StoredRow = tuple[bytes, list[tuple[int, str, bytes]]]


class WorkerRefused(Exception):
    """A worker found a subject it could not build (the domain's refusal, as text)."""


class _Worker:
    """A worker's study, mapper and the import's envelope (set once, by :func:`_start`)."""

    study: StudyDefinition
    mapper: SigningMapper
    envelope: Envelope


def _start(study_id: str, definition: dict[str, Any], handed: bytes, key_name: str,
           envelope: Envelope) -> None:
    signer = EventSigner(study_id, signer_from_handover(handed), key_name)
    # An in-memory application, for its transcoder (the stored application's, same types).
    app = StudyApplication(study_id, env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
                           mapper_factory=lambda transcoder: SigningMapper(transcoder, signer))
    assert isinstance(app.mapper, SigningMapper)
    _Worker.mapper = app.mapper
    _Worker.study = StudyDefinition.from_dict(definition)
    _Worker.envelope = envelope


def build(subjects: list[NewSubject]) -> list[StoredRow] | str:
    """The stored events of ``subjects``, in order; or the refusal of the first that cannot
    be built, as text (a domain error need not pickle)."""
    study, mapper, base = _Worker.study, _Worker.mapper, _Worker.envelope
    rows: list[StoredRow] = []
    # The cycle collector would walk the batch being built again and again; what is left
    # of it once returned is collected when the collector next runs.
    gc.disable()
    try:
        for new in subjects:
            try:
                rows.append(_built(study, mapper, base, new))
            except DomainError as e:
                return f"subject {new.subject_code}: {e}"
    finally:
        gc.enable()
    return rows


def _built(study: StudyDefinition, mapper: SigningMapper, base: Envelope, new: NewSubject
           ) -> StoredRow:
    """One subject's events, built as :meth:`application.sdtm_import.Importer` builds them."""
    subject = Subject.import_from_sdtm(
        study, new.subject_code, new.site, new.sex, new.demographics, new.arm,
        new.actual_arm, new.enrolled_on, base.with_provenance(new.provenance), new.at)
    for record in new.records:
        subject.import_record(
            study, record.record_id,
            CheckedRow(record.kind, record.fields, study.sdtm),  # checked up front
            record.observed_at, record.visit, base.with_provenance(record.provenance), new.at)
    events = []
    for event in subject.collect_events():
        stored = mapper.to_stored_event(event)
        events.append((stored.originator_version, stored.topic, stored.state))
    return subject.id.bytes, events


def stored_events(rows: list[StoredRow]) -> list[StoredEvent]:
    """A worker's answer as the recorder stores it."""
    stored: list[StoredEvent] = []
    for oid, events in rows:
        originator_id = UUID(bytes=oid)
        stored.extend(StoredEvent(originator_id=originator_id, originator_version=version,
                                  topic=topic, state=state) for version, topic, state in events)
    return stored


class BuildPool:
    """The worker processes of one import."""

    def __init__(self, app: StudyApplication, definition: dict[str, Any], envelope: Envelope,
                 workers: int = WORKERS) -> None:
        mapper = app.mapper
        if not isinstance(mapper, SigningMapper):
            raise TypeError("worker processes sign: the application's mapper must sign")
        signer = mapper.signer
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(app.study_id, definition, signer.handover(), signer.key_name, envelope))
        # The first task starts every worker (a spawned pool starts them all at once): now,
        # so that their start (an interpreter, the domain's imports) overlaps the checking.
        self._pool.submit(int)

    def submit(self, subjects: list[NewSubject]) -> Future[list[StoredRow] | str]:
        """Have a worker build ``subjects``."""
        return self._pool.submit(build, subjects)

    def close(self) -> None:
        """Stop the workers (those building are waited for; what is queued is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
