"""From events to history versions and audit rows, by folding each subject as the domain does.

The fold is the domain's own (``event.mutate``), so the tables show exactly what the
aggregate would; what the tables add is time: every version with its recorded interval.
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Notification, Tracking
from eventsourcing.projection import Projection

from domain.endpoints import Endpoint
from domain.envelope import Envelope
from domain.keyring import Keyring
from domain.records import Record
from domain.service import StudyApplication
from domain.studies.protocols import study_endpoints
from domain.study import Study
from domain.subject import Subject
from domain.subject.events import Event as SubjectEvent
from projections.casebook import WORKFLOW_KEYS, record_view, subject_header
from projections.event_log import Batches, log_batches, part_batches
from projections.history_view import (
    NULL,
    HistoryView,
    Rows,
    Version,
    copy_json_text,
    copy_text,
    copy_time,
    mark_line,
)
from projections.iso_time import iso
from projections.outcome_state import OutcomeState
from projections.outcomes.engine import subject_summary, summary_format

HEADER = ""  # record_id of a subject's header rows


@dataclass(slots=True)
class _Summarising:
    """A subject whose outcome facts events at one recorded time changed: its summary is
    written once that time's events are folded (the next event is later, or the batch ends),
    as a version shown from that time. Versions within one time would never be shown."""

    subject_id: str
    state: OutcomeState
    version: int
    position: int
    recorded_at: datetime


class HistoryProjector(Projection[HistoryView]):
    """Folds events per subject (with a bounded cache) and writes their history.

    An eventsourcing ``Projection``: ``process_event`` takes one event and its tracking
    record. ``catch_up`` does the same for batches of events in one transaction each, which
    is what makes a rebuild fast; both commit rows and tracking position together.
    """

    name = "History"

    def __init__(self, app: StudyApplication, view: HistoryView, cache_size: int = 5000) -> None:
        super().__init__(view)
        self.app = app
        self.cache_size = cache_size
        self._subjects: OrderedDict[UUID, tuple[Subject, OutcomeState]] = OrderedDict()
        self._summarising: dict[UUID, _Summarising] = {}
        self._endpoints: tuple[tuple[Endpoint, ...], str] | None = None  # and their format

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Project one event (at log position ``tracking.notification_id``)."""
        self.project_events([(tracking.notification_id, domain_event)], tracking)

    def catch_up(self, batch_size: int = 1000, limit: int | None = None,
                 on_batch: Callable[[int], object] | None = None,
                 through: int | None = None) -> int:
        """Project every event after the tracked position (up to position ``through``, if
        given); return how many were projected.

        ``on_batch`` hears the size of each committed batch (for a progress bar).
        """
        start = (self.view.max_tracking_id(self.app.name) or 0) + 1
        batches = log_batches(self.app.recorder, start, batch_size, limit, through)
        return self._replay(batches, self.view.record_batch, on_batch)

    def rebuild(self, version: int, batch_size: int = 5000,
                on_batch: Callable[[int], object] | None = None,
                replay: Callable[[int], int] | None = None) -> int:
        """Replay the log as it is now into new tables, then put them in place of the old
        ones with their tracking position and projection ``version``; return how many events.

        ``replay(through)`` stages the events up to position ``through`` and says how many
        (by default :meth:`replay_part` of the whole log, in this process). Readers keep the
        old tables until the swap; an interrupted rebuild leaves them as they were (a new
        rebuild starts afresh). Events written meanwhile are the next catch-up's.
        """
        self._subjects.clear()
        self.view.begin_rebuild()
        through = self.app.recorder.max_notification_id() or 0
        done = (replay(through) if replay is not None
                else self.replay_part(0, 1, through, batch_size, on_batch))
        self.view.finish_rebuild(self.app.name,
                                 Tracking(self.app.name, through) if through else None, version)
        return done

    def replay_part(self, part: int, parts: int, through: int, batch_size: int = 5000,
                    on_batch: Callable[[int], object] | None = None) -> int:
        """Fold the events up to position ``through`` of the subjects in part ``part`` of
        ``parts`` (see :func:`projections.event_log.part_batches`) into a rebuild's tables;
        return how many. The parts of one rebuild may run in processes of their own."""
        batches = part_batches(self.app.recorder, part, parts, through, batch_size)
        return self._replay(batches, lambda rows, _: self.view.stage_batch(rows), on_batch)

    def _replay(self, batches: Batches, write: Callable[[Rows, Tracking], None],
                on_batch: Callable[[int], object] | None) -> int:
        """Fold and ``write`` the ``batches`` of events (each with the tracking position of its
        last); return how many.

        Three stages overlap: while one batch is written (on a thread that mostly waits for
        PostgreSQL), the next one is folded, and the one after is read (on another). Batches
        are read and written one at a time and in log order.
        """
        done = 0
        with ThreadPoolExecutor(1, thread_name_prefix="projection-reader") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="projection-writer") as writer:
            reading: Future[list[Notification]] = reader.submit(next, batches, [])
            writing: Future[int] | None = None
            try:
                while batch := reading.result():
                    done += len(batch)
                    reading = reader.submit(next, batches, [])
                    rows = self.rows(
                        [(n.id, self.app.mapper.to_domain_event(n)) for n in batch])
                    tracking = Tracking(self.app.name, batch[-1].id)
                    # The cached subjects only grow, and the cycle collector would walk
                    # them all again and again (a quarter of a rebuild's time): it is told
                    # to leave alone what exists now (until unfreeze, below).
                    gc.freeze()
                    # A failed write raises here; the folded subjects ahead of the tables
                    # are refolded on the next run (see _subject).
                    _committed(writing, on_batch)
                    writing = writer.submit(_write, write, rows, tracking, len(batch))
                _committed(writing, on_batch)
            finally:
                gc.unfreeze()
        return done

    def project_events(self, events: Sequence[tuple[int, Any]], tracking: Tracking) -> None:
        """Project (position, event) pairs, then record ``tracking``, in one transaction."""
        self.view.record_batch(self.rows(events), tracking)

    def rows(self, events: Sequence[tuple[int, Any]]) -> Rows:
        """Fold (position, event) pairs into their versions and audit rows (COPY text)."""
        rows = Rows()
        self._summarising.clear()  # what a batch that failed midway left
        for position, event in events:
            if isinstance(event, Subject.Event):
                self._subject_event(position, event, rows)
            elif isinstance(event, Study.Event | Keyring.Event):
                audit = _AuditRows(position, event, None, None, rows)
                audit.row(None, "", "", None, None, _summary(event))
        for summarising in self._summarising.values():
            self._summarise(summarising, rows)
        self._summarising.clear()
        return rows

    def _summarise(self, summarising: _Summarising, rows: Rows) -> None:
        """A new version of the subject's outcome summary, if its facts changed it."""
        if self._endpoints is None:
            endpoints = study_endpoints(self.app.definition())
            self._endpoints = endpoints, summary_format(endpoints)
        endpoints, form = self._endpoints
        state = summarising.state
        try:
            summary = subject_summary(state.book(), endpoints, records=False)
        except Exception:  # a fact the engine cannot read must not stop the
            # projection: the summary says so, and the tables are computed from the facts.
            summary = {"subject": orjson.loads(state.facts[HEADER] or "{}").get("subject"),
                       "unreadable": True}
        text = orjson.dumps(summary).decode()
        if text == state.summary:
            return
        state.summary = text
        rows.summaries.append(Version(summarising.subject_id, HEADER, form, text,
                                      summarising.version, summarising.position,
                                      summarising.recorded_at, True))

    def _subject(self, event: SubjectEvent) -> tuple[Subject | None, OutcomeState]:
        """The subject before ``event``, and the state of its outcome facts."""
        cached = self._subjects.pop(event.originator_id, None)
        if cached is not None and cached[0].version == event.originator_version - 1:
            return cached
        # Not seen yet, or the tables were rebuilt under us: fold afresh.
        subject: Subject | None = None
        if event.originator_version > 1:
            subject = self.app.repository.get(event.originator_id,
                                              version=event.originator_version - 1)
        return subject, OutcomeState.of(subject)

    def _subject_event(self, position: int, event: SubjectEvent, rows: Rows) -> None:
        before, outcomes = self._subject(event)
        earlier = self._summarising.get(event.originator_id)
        if earlier is not None and earlier.recorded_at != event.timestamp:
            self._summarise(self._summarising.pop(event.originator_id), rows)
        record_id = getattr(event, "record_id", None)
        old_record = before.records.get(record_id) if before and record_id else None
        # What already has an open version (the tables hold what the fold held before).
        had_header = before is not None
        had_record = before is not None and record_id is not None and record_id in before.records
        # Folding mutates the aggregate in place: take what the audit compares against first
        # (not the queries, verification marks and deviations: their rows are the event's).
        signed = _valid_signatures(before)
        old_header = (subject_header(before, workflow=False) if before is not None and
                      (record_id is None or signed) else {})
        subject: Subject = event.mutate(before)  # type: ignore[assignment]
        self._subjects[subject.id] = (subject, outcomes)
        while len(self._subjects) > self.cache_size:
            self._subjects.popitem(last=False)
        sid = str(subject.id)
        changes: dict[str, tuple[Any, Any]] = {}
        if record_id is None or signed:
            # Without the marks: each change of one is a version of that entry alone.
            header = subject_header(subject, workflow=False)
            rows.versions.append(Version(sid, HEADER, "subject", _json(header),
                                         subject.version, position, event.timestamp, had_header))
            changes = {k: (old_header.get(k), v) for k, v in header.items()
                       if k not in WORKFLOW_KEYS and old_header.get(k) != v}
            if isinstance(event, Subject.Screened):
                changes["eligibility"] = (None, event.criteria)
            mark = _mark(event, subject)
            if mark is not None:
                kind, item, value = mark
                rows.marks.append(mark_line(sid, kind, item, _json(value) or "null", position))
        record = subject.records[record_id] if record_id else None
        view = view_text = None
        if record is not None:
            if not record.removed:
                view = record_view(record)
                view_text = _json(view)
            rows.versions.append(Version(sid, record_id or "", record.kind, view_text,
                                         subject.version, position, event.timestamp, had_record))
            changes = _record_changes(event, old_record)
        # A fact's earlier version may be open though this state no longer holds it (a lab
        # result's group emptied before the subject was folded afresh): each closes any.
        facts = [Version(sid, key, kind, text, subject.version, position, event.timestamp, True)
                 for key, kind, text in outcomes.changes(subject, old_record, record, view,
                                                         view_text)]
        if facts:
            rows.facts.extend(facts)
            self._summarising[subject.id] = _Summarising(sid, outcomes, subject.version,
                                                         position, event.timestamp)
        observed = getattr(event, "observed_at", None) or (record.observed_at if record else None)
        audit = _AuditRows(position, event, subject, sid, rows)
        kind = record.kind if record else ""
        for field, (old_value, new_value) in changes.items():
            audit.row(record_id, field, kind, observed, old_value, new_value)
        for signature_id in signed:
            audit.row(record_id, "signature", kind, observed,
                      old_header["signatures"][signature_id], subject.signatures[signature_id])
        self._workflow_rows(audit, event, subject)

    @staticmethod
    def _workflow_rows(audit: _AuditRows, event: SubjectEvent, subject: Subject) -> None:
        """Audit rows of signatures, queries, source-data verification, soft-check findings,
        protocol deviations and redactions."""
        new: Any
        if isinstance(event, Subject.RedactionRequested | Subject.RedactionApproved):
            # The request or approval itself (what it covers and why; never a value).
            audit.row(None, "redaction", "", None, None, subject.redactions[event.request_id])
            return
        if isinstance(event, Subject.Signed):
            audit.row(None, "signature", "", None, None, subject.signatures[event.signature_id])
            return
        if isinstance(event, Subject.QueryOpened | Subject.QueryAnswered | Subject.QueryClosed):
            query = subject.queries[event.query_id]
            rid, field, new = query["record_id"], "query", query
        elif isinstance(event, Subject.SourceVerified):
            rid, field, new = event.on_record, "sdv", subject.sdv[event.on_record]
        elif isinstance(event, Subject.RecordChecked):
            rid, field, new = event.record_id, "soft_check", event.findings
        elif isinstance(event, Subject.DeviationRecorded):
            new = subject.deviations[event.deviation_id]
            if event.on_record is None:
                audit.row(None, "deviation", "", None, None, new)
                return
            rid, field = event.on_record, "deviation"
        else:
            return
        record = subject.records[rid]
        audit.row(rid, field, record.kind, record.observed_at, None, new)


def _write(write: Callable[[Rows, Tracking], None], rows: Rows, tracking: Tracking,
           size: int) -> int:
    write(rows, tracking)
    return size


def _committed(writing: Future[int] | None, on_batch: Callable[[int], object] | None) -> None:
    if writing is not None:
        size = writing.result()
        if on_batch is not None:
            on_batch(size)


def _mark(event: SubjectEvent, subject: Subject) -> tuple[str, str, Any] | None:
    """(map, key, entry) of the header mark ``event`` made or changed, if it is one of the
    events that change a query, an SDV mark or a deviation (no other event changes them)."""
    if isinstance(event, Subject.QueryOpened | Subject.QueryAnswered | Subject.QueryClosed):
        return "queries", event.query_id, subject.queries[event.query_id]
    if isinstance(event, Subject.SourceVerified):
        return "sdv", event.on_record, subject.sdv[event.on_record]
    if isinstance(event, Subject.DeviationRecorded):
        return "deviations", event.deviation_id, subject.deviations[event.deviation_id]
    return None


def _valid_signatures(subject: Subject | None) -> list[str]:
    if subject is None:
        return []
    return [sid for sid, s in subject.signatures.items() if s["status"] == "valid"]


def _record_changes(event: SubjectEvent, old_record: Record | None
                    ) -> dict[str, tuple[Any, Any]]:
    if isinstance(event, Subject.RecordEntered):
        return {name: (None, value) for name, value in event.fields.items()}
    if isinstance(event, Subject.RecordChanged):
        changes = {name: (c["old"], c["new"]) for name, c in event.changes.items()}
        if old_record is not None:
            # What the change re-derived in its own record (a corrected height's BSA).
            changes.update(_derived_changes(old_record.derived, event.derived, None))
        return changes
    if isinstance(event, Subject.DerivedValueRecomputed):
        return _derived_changes(event.previous, event.derived, event.trigger)
    if isinstance(event, Subject.RecordRemoved):
        return {name: (value, None) for name, value in event.removed_fields.items()}
    return {}


def _derived_changes(old: dict[str, Any], new: dict[str, Any], trigger: dict[str, Any] | None
                     ) -> dict[str, tuple[Any, Any]]:
    """``derived.<name>`` old -> new for each derived value that moved; a value recomputed
    after a change elsewhere names that change (``recomputed_after``)."""
    changes: dict[str, tuple[Any, Any]] = {}
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before != after:
            if trigger is not None and (after is None or isinstance(after, dict)):
                after = {**(after or {"value": None}), "recomputed_after": trigger}
            changes[f"derived.{name}"] = (before, after)
    return changes


def _summary(event: Study.Event | Keyring.Event) -> Any:
    if isinstance(event, Study.Registered):
        return {"study_id": event.definition.get("study_id")}
    return {k: v for k, v in vars(event).items()
            if k in ("key_id", "effective_at", "revocation_reason", "through_position",
                     "comment", "export_format", "as_of", "failure", "review_filter", "parameters",
                     "subject_code")} or None


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class _AuditRows:
    """The audit rows of one event: its line of ``audit_events`` (written with its first
    change) and its lines of ``audit_changes``, as COPY text.

    An event's columns (its position, time, subject and envelope) are formatted once, not
    once per changed field; most changes of an event share their record and times too.
    """

    def __init__(self, position: int, event: Any, subject: Subject | None,
                 subject_id: str | None, rows: Rows) -> None:
        self.position = position
        self.event = event
        self.subject = subject
        self.subject_id = subject_id
        self.rows = rows
        self.seq = 0
        self._shared: tuple[str | None, str, datetime | None] | None = None
        self._before = self._after = self._entry_after = ""

    def row(self, record_id: str | None, field: str, kind: str, observed: datetime | None,
            old: Any, new: Any) -> None:
        """Add the change of ``field`` (the event's type when empty) from old to new."""
        if self.seq == 0:
            self.rows.events.append(self._event_line())
        shared = (record_id, kind, observed)
        if shared != self._shared:
            self._shared = shared
            self._before = f"\t{copy_text(record_id)}\t{copy_text(kind or None)}\t"
            lag = (NULL if observed is None
                   else repr((self.event.timestamp - observed).total_seconds()))
            self._after = f"\t{copy_time(observed)}\t{NULL}\n"
            self._entry_after = f"\t{copy_time(observed)}\t{lag}\n"
        self.rows.changes.append(
            f"{self.position}\t{self.seq}{self._before}"
            f"{copy_text(field or type(self.event).__name__)}\t"
            f"{copy_json_text(_json(old))}\t{copy_json_text(_json(new))}"
            f"{self._after if old is not None else self._entry_after}")
        self.seq += 1

    def _event_line(self) -> str:
        event, subject = self.event, self.subject
        return "\t".join([
            str(self.position), iso(event.timestamp), copy_text(type(event).__name__),
            self.subject_id or NULL, copy_text(subject.subject_code if subject else None),
            copy_text(subject.site if subject else None), _envelope_columns(event.envelope)])


def _envelope_columns(envelope: Envelope) -> str:
    """The envelope's columns of an audit row (events of one request share the envelope)."""
    reason = envelope.reason
    actor = envelope.actor
    return _copy_columns((
        actor.user_id, actor.printed_name, actor.role, actor.site, envelope.client,
        envelope.source, envelope.request_id, envelope.edit_point,
        reason.code if reason else None, reason.text if reason else None))


# Keyed on the columns, not the envelope: an imported envelope's provenance is a dict.
@lru_cache(maxsize=4096)
def _copy_columns(values: tuple[str | None, ...]) -> str:
    return "\t".join([copy_text(v) for v in values]) + "\n"
