"""The casebook screen's rows, worked out before the template (api/console/casebook_view.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from api.console.casebook_view import SiteTime, record_rows, removed_rows

HISTORY = "/ui/studies/S1/subjects/001/history"
ZONE = "Asia/Shanghai"
BOOK = {
    "records": {"labs": [{
        "record_id": "LB 1/a", "observed_at": "2021-01-10T10:00:00+01:00", "visit": None,
        "observed_offset": "+01:00",
        "fields": {"value": 0.6, "unit": "g/L", "note": None},
        "derived": {"ratio": {"value": 1.5, "unit": "1", "method": "value / ULN",
                              "inputs": {"value": 0.6}}, "flag": "H"}}]},
    "queries": {"Q-2": {"record_id": "LB 1/a", "field": "value", "status": "open"},
                "Q-1": {"record_id": "LB 1/a", "field": "value", "status": "answered"},
                "Q-3": {"record_id": "LB 2", "field": "value", "status": "open"}}}
CHANGES = {("LB 1/a", "value"): {"count": 2, "recorded_at": "2021-01-12T09:00:00+00:00",
                                 "printed_name": "Ana Ruiz", "reason_code": "transcription_error",
                                 "reason_text": "lab report says 0.6"},
           ("LB 1/a", "unit"): {"count": 1, "recorded_at": "2021-01-10T09:00:00+00:00",
                                "printed_name": "Li Wei", "reason_code": None,
                                "reason_text": None}}


def test_each_value_has_its_text_change_marker_queries_and_history_address() -> None:
    [record] = record_rows(BOOK, CHANGES, HISTORY, None, ZONE)["labs"]
    assert (record.record_id, record.visit) == ("LB 1/a", "")
    value, unit, note = record.fields
    assert (value.value, value.changed) == ("0.6", True)
    assert value.queries == ["Q-1 answered", "Q-2 open"]  # by query id; not LB 2's
    assert value.reason == "transcription_error — lab report says 0.6"
    assert value.summary == "changed (2), last by Ana Ruiz"
    assert value.changed_at == SiteTime("2021-01-12T09:00:00+00:00", "2021-01-12 09:00:00+00:00",
                                        "2021-01-12 17:00:00+08:00 Asia/Shanghai")
    # As a form would encode it: a space as +, a slash escaped.
    assert value.history_url == f"{HISTORY}?record=LB+1%2Fa&field=value"
    # Entered once: no reason, no time of a change, whoever entered it.
    assert (unit.changed, unit.reason, unit.summary, unit.changed_at) == (
        False, "", "entered", None)
    assert (note.value, note.summary, note.queries) == ("—", "entered", [])


def test_the_clinical_time_on_the_sites_clock_else_at_its_entered_offset() -> None:
    [record] = record_rows(BOOK, CHANGES, HISTORY, None, ZONE)["labs"]
    assert record.observed_at == SiteTime("2021-01-10T10:00:00+01:00",
                                          "2021-01-10 09:00:00+00:00",
                                          "2021-01-10 17:00:00+08:00 Asia/Shanghai")
    [record] = record_rows(BOOK, CHANGES, HISTORY, None, None)["labs"]
    assert record.observed_at.local == "2021-01-10 10:00:00+01:00"
    assert record.fields[0].changed_at is not None
    assert record.fields[0].changed_at.local == ""  # no zone, and no offset for a change


def test_a_past_moment_goes_into_every_history_address() -> None:
    when = datetime(2021, 1, 11, 8, 30, tzinfo=UTC)
    [record] = record_rows(BOOK, CHANGES, HISTORY, when, ZONE)["labs"]
    assert all(f.history_url.endswith("&as_of=2021-01-11T08%3A30%3A00%2B00%3A00")
               for f in record.fields)


def test_derived_values_keep_their_method_and_inputs_or_stand_alone() -> None:
    [record] = record_rows(BOOK, {}, HISTORY, None, ZONE)["labs"]
    ratio, flag = record.derived
    assert (ratio.value, ratio.unit, ratio.method, ratio.inputs) == (
        "1.5", "1", "value / ULN", '{"value":0.6}')
    assert (flag.value, flag.method) == ("H", None)


def test_a_removed_record_shows_the_values_it_held_who_when_and_why() -> None:
    removed = {"record_id": "LB3", "kind": "labs", "position": 9,
               "removed_at": "2021-01-30T09:00:00+00:00", "printed_name": "Ana Ruiz",
               "role": "coordinator", "reason_code": "transcription_error",
               "reason_text": "entered twice", "fields": {"value": 0.1, "code": "C3",
                                                          "reference_low": None}}
    [row] = removed_rows([removed], ZONE)
    assert (row.record_id, row.kind, row.removed_by) == ("LB3", "labs",
                                                         "Ana Ruiz (coordinator)")
    assert row.values == "code C3; reference_low —; value 0.1"  # by name
    assert row.removed_at.local == "2021-01-30 17:00:00+08:00 Asia/Shanghai"
    assert row.reason == "transcription_error: entered twice"
    assert removed_rows([{**removed, "reason_text": None}], None)[0].reason == (
        "transcription_error")
