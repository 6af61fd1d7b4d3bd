"""An SDTM import's subjects built, transcoded and signed in worker processes.

The importing process checks every row up front (a bad row stores nothing), checks the
caller's grant and the locks, and stores; the building of new subjects' events, their
transcoding and their signing (most of an import's Python) run in a pool of processes, one
per core, each given whole subjects (independent aggregates). A worker builds the events
exactly as the importing process would (same domain code, same mapper, same key: Ed25519 is
deterministic), so the stored bytes are the same; batches are stored in the order they were
handed out, so the log's order is the one-process import's.

Only plain data crosses the pipes: rows and their checked fields going out, as plain tuples
(a named tuple pickles through a Python call per tuple), and each batch's stored events
coming back as the COPY rows the importing process sends to PostgreSQL as they are
(:mod:`infra.copy_rows`: no Python object per event there; pickling domain objects would cost
more than building them).
The pool is started with ``spawn`` (not ``fork``: the importing process runs connection-pool
threads whose locks a fork would copy); the key is handed to each worker through the pool's
pipe, never its arguments or environment.
"""

from __future__ import annotations

import gc
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import date, datetime
from typing import Any

from domain.envelope import Envelope
from domain.errors import DomainError
from domain.sdtm import CheckedRow
from domain.service import StudyApplication
from domain.study import StudyDefinition
from domain.subject import Subject
from infra.copy_rows import CopyRows, CopyRowsWriter
from infra.mapper import SigningMapper
from infra.signers import signer_from_handover
from infra.signing import EventSigner

# Worker processes: the machine's two cores (the importing process mostly waits on them).
WORKERS = 2


# One checked row of a new subject, as a worker loads it: its record id, kind (domain),
# fields, valid time, visit and provenance.
NewRecord = tuple[str, str, dict[str, Any], datetime, str | None, dict[str, Any]]
# A subject not yet stored, with its checked rows (what a worker is sent): its code, site,
# sex, demographics, arm, actual arm, enrolment date, provenance, the time it is recorded
# at, and its records.
NewSubject = tuple[str, str, str, dict[str, Any], str | None, str | None, date | None,
                   dict[str, Any], datetime, list[NewRecord]]


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


def build(subjects: list[NewSubject]) -> CopyRows | str:
    """The stored events of ``subjects``, in order, as COPY rows; or the refusal of the first
    that cannot be built, as text (a domain error need not pickle)."""
    study, mapper, base = _Worker.study, _Worker.mapper, _Worker.envelope
    rows = CopyRowsWriter()
    # The cycle collector would walk the batch being built again and again; what is left
    # of it once returned is collected when the collector next runs.
    gc.disable()
    try:
        for new in subjects:
            try:
                _build(study, mapper, base, new, rows)
            except DomainError as e:
                return f"subject {new[0]}: {e}"
    finally:
        gc.enable()
    built = rows.finish()
    assert built is not None, "a subject has at least its enrolment event"
    return built


def _build(study: StudyDefinition, mapper: SigningMapper, base: Envelope, new: NewSubject,
           rows: CopyRowsWriter) -> None:
    """One subject's events, built as :meth:`application.sdtm_import.Importer` builds them,
    added to ``rows``."""
    code, site, sex, demographics, arm, actual_arm, enrolled_on, provenance, at, records = new
    subject = Subject.import_from_sdtm(study, code, site, sex, demographics, arm, actual_arm,
                                       enrolled_on, base.with_provenance(provenance), at)
    for record_id, kind, fields, observed_at, visit, row_provenance in records:
        subject.import_record(
            study, record_id, CheckedRow(kind, fields, study.sdtm),  # checked up front
            observed_at, visit, base.with_provenance(row_provenance), at)
    # The id once a subject: making its bytes is a tenth of storing an event.
    originator_id = subject.id.bytes
    for event in subject.collect_events():
        stored = mapper.to_stored_event(event)
        rows.add(originator_id, stored.originator_version, stored.topic, stored.state)


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

    def submit(self, subjects: list[NewSubject]) -> Future[CopyRows | str]:
        """Have a worker build ``subjects``."""
        return self._pool.submit(build, subjects)

    def close(self) -> None:
        """Stop the workers (those building are waited for; what is queued is dropped)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
