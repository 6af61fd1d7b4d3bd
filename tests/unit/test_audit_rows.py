"""The CSV export's audit trail merges the audited events with their changes, each read in
key order apart (:func:`projections.csv_export.audit_rows`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from projections.csv_export import audit_rows
from projections.history_view import AUDIT_COLUMNS, CHANGE_COLUMNS, EVENT_COLUMNS

T = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
SUBJECT = uuid.UUID(int=7)
HEAD = AUDIT_COLUMNS[:AUDIT_COLUMNS.index("record_id")]
TAIL = AUDIT_COLUMNS[AUDIT_COLUMNS.index("observed_at") + 1:]


def event(position: int, reason: str = "typo") -> tuple[Any, ...]:
    cells = {"position": position, "recorded_at": T + timedelta(minutes=position),
             "event_type": "RecordCorrected", "subject_id": SUBJECT, "subject_code": "001",
             "site": "JLU1", "user_id": "u-dm", "printed_name": "=Dr Who", "role": "data_manager",
             "actor_site": None, "client": "web", "source": "api", "request_id": "r1",
             "edit_point": "after_entry", "reason_code": "TRANSCRIPTION_ERROR",
             "reason_text": reason}
    return tuple(cells[name] for name in HEAD + TAIL)


def change(position: int, field: str) -> tuple[Any, ...]:
    return (position, "LB1", "labs", field, 0.8, [1, "two"], T)


def test_the_audit_trails_columns_are_an_events_around_its_changes() -> None:
    # The merge relies on this shape: an event's cells, then a change's, then the event's.
    assert set(HEAD + TAIL) == set(EVENT_COLUMNS)
    middle = AUDIT_COLUMNS[len(HEAD):len(AUDIT_COLUMNS) - len(TAIL)]
    assert set(middle) <= set(CHANGE_COLUMNS)


def test_each_change_goes_with_its_event_and_changes_of_events_left_out_are_dropped() -> None:
    # Event 2 was recorded after the export's time (left out of the events), event 4 changed
    # nothing, and the change at 6 comes after the last event shown.
    events = [event(1), event(3, "second"), event(4), event(5, "fifth")]
    changes = [change(1, "value"), change(1, "unit"), change(2, "value"), change(3, "value"),
               change(5, "flag"), change(6, "value")]
    merged = [(e.position, cells[2]) for e, cells in audit_rows(events, changes)]
    assert merged == [(1, "value"), (1, "unit"), (3, "value"), (5, "flag")]


def test_a_merged_row_is_the_views_row_in_both_files() -> None:
    (merged, cells), = audit_rows([event(3)], [change(3, "value")])
    whole = dict(zip(HEAD, event(3)[:len(HEAD)], strict=True))
    whole |= dict(zip(("record_id", "record_kind", "field", "old_value", "new_value",
                       "observed_at"), change(3, "value")[1:], strict=True))
    whole |= dict(zip(TAIL, event(3)[len(HEAD):], strict=True))
    whole.update(recorded_at=whole["recorded_at"].isoformat(), subject_id=str(SUBJECT),
                 observed_at=T.isoformat())
    cells[-1] = T.isoformat()
    line = merged.json_head + orjson.dumps(dict(zip(
        ("record_id", "record_kind", "field", "old_value", "new_value", "observed_at"), cells,
        strict=True)))[1:-1] + merged.json_tail
    assert line == orjson.dumps({name: whole[name] for name in AUDIT_COLUMNS}) + b"\n"
    # The CSV cells of the event are neutralised once: a printed name is text, not a formula.
    assert merged.csv_tail[TAIL.index("printed_name")] == "'=Dr Who"
    assert merged.csv_head[HEAD.index("subject_id")] == str(SUBJECT)
