"""The oracle: a pure in-memory fold of a study's event log, answering what the SQL answers.

It is slow on purpose (it replays everything) and simple on purpose (it is the domain's own
fold); the history tables are tested against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from domain.clock import require_aware
from domain.records import Context, validate
from domain.service import StudyApplication
from domain.subject import Subject
from projections.casebook import assemble, casebook, record_view, subject_header


def fold_subjects(app: StudyApplication, as_of: datetime | None = None) -> dict[UUID, Subject]:
    """Every subject as the log says it was at recorded time ``as_of`` (now when None)."""
    when = require_aware("as_of", as_of) if as_of is not None else None
    subjects: dict[UUID, Subject] = {}
    start = 1
    while batch := app.recorder.select_notifications(start, 2000):
        for notification in batch:
            event = app.mapper.to_domain_event(notification)
            if not isinstance(event, Subject.Event):
                continue
            if when is not None and event.timestamp > when:
                continue
            subject = event.mutate(subjects.get(event.originator_id))
            assert subject is not None
            subjects[event.originator_id] = subject
        start = batch[-1].id + 1
    return subjects


def oracle_casebooks(app: StudyApplication, as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Every subject's casebook at ``as_of``, by subject code, from the fold."""
    when = require_aware("as_of", as_of) if as_of is not None else None
    books = [casebook(s, as_of=when) for s in fold_subjects(app, when).values()]
    return sorted(books, key=lambda book: str(book["subject"]))


def oracle_casebook(app: StudyApplication, subject_code: str, as_of: datetime | None = None,
                    valid_at: datetime | None = None) -> dict[str, Any]:
    """One casebook from the fold: as recorded at ``as_of``, as in force at ``valid_at``.

    Valid time is read through the domain's own ``Record.in_force``.
    """
    when = require_aware("as_of", as_of) if as_of is not None else None
    subject = (app.subject_as_of(subject_code, when) if when is not None
               else app.subject(subject_code))
    if valid_at is None:
        return casebook(subject, as_of=when)
    valid = require_aware("valid_at", valid_at)
    records = []
    for record in subject.records.values():
        if record.removed or record.observed_at > valid:
            continue
        fields = {name: record.in_force(name, valid) for name in record.fields}
        records.append((record.kind, {**record_view(record), "fields": fields}))
    vitals = [r for r in subject.records.values() if r.kind == "vitals" and not r.removed
              and r.observed_at <= valid and "HEIGHT" in r.fields and "WEIGHT" in r.fields]

    def bsa_at(when: str) -> float | None:
        # The BSA in force at a record's own time, from the vitals as they stood at valid_at.
        measured = [r for r in vitals if r.observed_at <= datetime.fromisoformat(when)]
        if not measured:
            return None
        latest = max(measured, key=lambda r: r.observed_at)
        value = validate("vitals", {k: latest.in_force(k, valid) for k in latest.fields},
                         Context(None))[1]["bsa"]["value"]
        return float(value)

    rederived = [(kind, {**view, "derived": validate(
        kind, view["fields"], Context(bsa_at(view["observed_at"]), entry=False))[1]})
        for kind, view in records]
    book = assemble(subject_header(subject), subject.version, rederived, None)
    return {**book, "as_of": when.isoformat() if when else None, "valid_at": valid.isoformat()}


def oracle_diff(app: StudyApplication, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Every subject header and record whose casebook rendering differs between two times."""
    before = {s.id: s for s in fold_subjects(app, since).values()}
    after = fold_subjects(app, until)
    changes = []
    for sid, subject in after.items():
        old = before.get(sid)
        entities: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {
            "": (subject_header(old) if old else None, subject_header(subject))}
        for record_id in sorted(set(subject.records) | set(old.records if old else {})):
            new_record = subject.records.get(record_id)
            old_record = old.records.get(record_id) if old else None
            entities[record_id] = (
                record_view(old_record) if old_record and not old_record.removed else None,
                record_view(new_record) if new_record and not new_record.removed else None,
            )
        for record_id, (was, now) in entities.items():
            if was != now:
                changes.append({"subject": subject.subject_code, "record_id": record_id,
                                "before": was, "after": now})
    return sorted(changes, key=lambda c: (c["subject"], c["record_id"]))
