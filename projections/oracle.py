"""The oracle: a pure in-memory fold of a study's event log, answering what the SQL answers.

It is slow on purpose (it replays everything) and simple on purpose (it is the domain's own
fold); the history tables are tested against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from domain.clock import require_aware
from domain.service import StudyApplication
from domain.subject import Subject
from projections.casebook import casebook


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
