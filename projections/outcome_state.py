"""A subject's outcome facts as the projector folds its events: which facts an event changed.

The facts (see :func:`projections.outcomes.facts.outcome_facts`) are kept as versions in
``outcome_facts``, one key each: the header (``""``), each record of the kinds the outcome
tables read whole (``r:<record id>``), the latest lab result of each visit and test
(``l:<[visit, code]>``) and each visit that has records (``v:<visit>``). An event changes a few
of them; only those get a new version. The state also remembers the subject's outcome summary
as last written (see :func:`projections.outcomes.engine.subject_summary`), computed from these
facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson

from domain.records import Record
from domain.subject import Subject
from projections.casebook import record_view
from projections.iso_time import iso
from projections.outcomes.facts import RECORD_KINDS, facts, slim_lab

HEADER = ""  # key of the header fact
HEADER_KIND = "subject"
VISIT_KIND = "visit"
LAB_KIND = "labs"

# A lab result's place among its visit's results of the same test: the last by observed time
# and record id is the latest (the order the casebook lists them in).
LabKey = tuple[str, str]
Change = tuple[str, str, str | None]  # key, kind, the fact as JSON text (None: gone)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def header_fact(subject: Subject) -> str:
    """The header fact: subject, arm (and the actual arm of an imported subject), disease,
    enrolment date."""
    code, arm, actual_arm, disease, enrolled_on = _header_values(subject)
    return _json({"subject": code, "arm": arm, "actual_arm": actual_arm, "disease": disease,
                  "enrolled_on": enrolled_on.isoformat() if enrolled_on else None})


def _header_values(subject: Subject) -> tuple[Any, ...]:
    """What the header fact is made of (compared before the fact is rendered again)."""
    return (subject.subject_code, subject.arm,
            subject.actual_arm if subject.demographics is not None else None,
            subject.disease, subject.enrolled_on)


def _group(record: Record) -> str:
    """The key of a lab result's visit and test."""
    return "l:" + orjson.dumps([record.visit, record.fields.get("code")]).decode()


def _lab_key(record: Record) -> LabKey:
    return (iso(record.observed_at), record.record_id)


def _live(record: Record | None) -> Record | None:
    return None if record is None or record.removed else record


class OutcomeState:
    """The outcome facts of one subject as last written, with what finding the next needs:
    the latest lab result of each visit and test, and how many records each visit has."""

    def __init__(self) -> None:
        self.facts: dict[str, str | None] = {}
        self.kinds: dict[str, str] = {}  # each fact's kind
        self.latest: dict[str, LabKey] = {}
        self.visits: dict[str, int] = {}
        self.summary: str | None = None  # the outcome summary last written (JSON text)
        self.header: tuple[Any, ...] | None = None  # what the header fact was made of

    @classmethod
    def of(cls, subject: Subject | None) -> OutcomeState:
        """The state the facts of ``subject`` (as folded so far) were left in."""
        state = cls()
        if subject is None:
            return state
        state.facts[HEADER] = header_fact(subject)
        state.kinds[HEADER] = HEADER_KIND
        state.header = _header_values(subject)
        for record in subject.records.values():
            if record.kind in RECORD_KINDS:
                state.facts["r:" + record.record_id] = (
                    None if record.removed else _json(record_view(record)))
                state.kinds["r:" + record.record_id] = record.kind
            if record.removed:
                continue
            if record.visit is not None:
                state.visits[record.visit] = state.visits.get(record.visit, 0) + 1
            if record.kind == LAB_KIND:
                group = _group(record)
                key = _lab_key(record)
                if group not in state.latest or key > state.latest[group]:
                    state.latest[group] = key
        for visit in state.visits:
            state.facts["v:" + visit] = _json({"visit": visit})
            state.kinds["v:" + visit] = VISIT_KIND
        for group, (_, record_id) in state.latest.items():
            state.facts[group] = _json(slim_lab(record_view(subject.records[record_id])))
            state.kinds[group] = LAB_KIND
        return state

    def book(self) -> dict[str, Any]:
        """The outcome facts as the tables read them (see :func:`facts_of_rows`)."""
        [book] = facts_of_rows(("", self.kinds[key], text) for key, text in self.facts.items()
                               if text is not None)
        return book

    def changes(self, subject: Subject, before: Record | None, record: Record | None,
                view: dict[str, Any] | None, view_text: str | None) -> list[Change]:
        """The facts an event changed: ``subject`` after it; ``before`` and ``record``, the
        record it touched before and after (None: it touched none, or it is new), with the
        record's ``view`` and its JSON text (None when removed)."""
        changes: list[Change] = []
        header = _header_values(subject)
        if header != self.header:  # most events leave it as it was: not rendered again
            self.header = header
            self._set(HEADER, HEADER_KIND, header_fact(subject), changes)
        if record is None:
            return changes
        old, new = _live(before), _live(record)
        old_visit = old.visit if old is not None else None
        new_visit = new.visit if new is not None else None
        if old_visit != new_visit:
            if old_visit is not None:
                self.visits[old_visit] -= 1
                if not self.visits[old_visit]:
                    del self.visits[old_visit]
                    self._set("v:" + old_visit, VISIT_KIND, None, changes)
            if new_visit is not None:
                self.visits[new_visit] = self.visits.get(new_visit, 0) + 1
                if self.visits[new_visit] == 1:
                    self._set("v:" + new_visit, VISIT_KIND, _json({"visit": new_visit}),
                              changes)
        if record.kind in RECORD_KINDS:
            self._set("r:" + record.record_id, record.kind, view_text, changes)
        elif record.kind == LAB_KIND:
            self._lab(subject, record.record_id, old, new, view, changes)
        return changes

    def _lab(self, subject: Subject, record_id: str, old: Record | None, new: Record | None,
             view: dict[str, Any] | None, changes: list[Change]) -> None:
        """The latest results of the visit and test the lab result left and joined."""
        old_group = _group(old) if old is not None else None
        new_group = _group(new) if new is not None else None
        key = _lab_key(new) if new is not None else None
        for group in dict.fromkeys(g for g in (old_group, new_group) if g is not None):
            current = self.latest.get(group)
            if current is not None and current[1] == record_id and (
                    group != new_group or key is None or key < current):
                # The latest left its group or moved back in time: look for the new one.
                current = _latest(subject, group)
            elif group == new_group and key is not None and (current is None or key >= current):
                current = key
            if current is None:
                self.latest.pop(group, None)
                self._set(group, LAB_KIND, None, changes)
                continue
            self.latest[group] = current
            latest = view if current[1] == record_id and view is not None else record_view(
                subject.records[current[1]])
            self._set(group, LAB_KIND, _json(slim_lab(latest)), changes)

    def _set(self, key: str, kind: str, text: str | None, changes: list[Change]) -> None:
        """A change of fact ``key`` unless it is what was written (or gone, never written)."""
        if key in self.facts:
            if self.facts[key] == text:
                return
        elif text is None:
            return
        self.facts[key] = text
        self.kinds[key] = kind
        changes.append((key, kind, text))


def facts_of_rows(rows: Iterable[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Every subject's outcome facts, by subject code, from the rows (subject id, kind, data
    as JSON text) of the facts shown at one time, in any order."""
    headers: dict[str, dict[str, Any]] = {}
    visits: dict[str, list[str]] = {}
    records: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for subject_id, kind, text in rows:
        data = orjson.loads(text)
        if kind == HEADER_KIND:
            headers[subject_id] = data
        elif kind == VISIT_KIND:
            visits.setdefault(subject_id, []).append(data["visit"])
        else:
            records.setdefault(subject_id, {}).setdefault(kind, []).append(data)
    books = [facts(header, visits.get(sid, []), records.get(sid, {}))
             for sid, header in headers.items()]
    return sorted(books, key=lambda book: str(book["subject"]))


def books_of_rows(rows: Iterable[tuple[str, str, str]]) -> Iterator[dict[str, Any]]:
    """Each subject's outcome facts in turn, from rows as :func:`facts_of_rows` takes them
    but ordered by subject id: one subject's facts are held at a time, however many."""
    for _, subject_rows in groupby(rows, key=itemgetter(0)):
        yield from facts_of_rows(subject_rows)


def _latest(subject: Subject, group: str) -> LabKey | None:
    keys = [_lab_key(r) for r in subject.records.values()
            if r.kind == LAB_KIND and not r.removed and _group(r) == group]
    return max(keys) if keys else None
