"""The casebook screen's rows, worked out before the template (api/console/casebook_view.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from api.console.casebook_view import record_rows

HISTORY = "/ui/studies/S1/subjects/001/history"
BOOK = {"records": {"labs": [{
    "record_id": "LB 1/a", "observed_at": "2021-01-10T10:00:00+01:00", "visit": None,
    "fields": {"value": 0.6, "unit": "g/L", "note": None},
    "derived": {"ratio": {"value": 1.5, "unit": "1", "method": "value / ULN",
                          "inputs": {"value": 0.6}}, "flag": "H"}}]}}
CHANGES = {("LB 1/a", "value"): {"count": 2, "recorded_at": "2021-01-12T09:00:00+00:00",
                                 "printed_name": "Ana Ruiz", "reason_code": "transcription_error",
                                 "reason_text": "lab report says 0.6"},
           ("LB 1/a", "unit"): {"count": 1, "recorded_at": "2021-01-10T09:00:00+00:00",
                                "printed_name": "Li Wei", "reason_code": None,
                                "reason_text": None}}
QUERIES = {("LB 1/a", "value"): [{"query_id": "Q-1", "status": "answered"}]}


def test_each_value_has_its_text_change_summary_queries_and_history_address() -> None:
    [record] = record_rows(BOOK, CHANGES, QUERIES, HISTORY, None)["labs"]
    assert (record.record_id, record.observed_at, record.visit) == (
        "LB 1/a", "2021-01-10 09:00:00+00:00", "")
    value, unit, note = record.fields
    assert (value.value, value.changed, value.queries) == ("0.6", True, ["Q-1 answered"])
    assert value.reason == "transcription_error — lab report says 0.6"
    assert value.summary == "changed (2), last by Ana Ruiz at 2021-01-12 09:00:00+00:00"
    # As a form would encode it: a space as +, a slash escaped.
    assert value.history_url == f"{HISTORY}?record=LB+1%2Fa&field=value"
    assert (unit.changed, unit.reason, unit.summary) == (False, "", "entered")
    assert (note.value, note.summary, note.queries) == ("—", "entered", [])


def test_a_past_moment_goes_into_every_history_address() -> None:
    when = datetime(2021, 1, 11, 8, 30, tzinfo=UTC)
    [record] = record_rows(BOOK, CHANGES, QUERIES, HISTORY, when)["labs"]
    assert all(f.history_url.endswith("&as_of=2021-01-11T08%3A30%3A00%2B00%3A00")
               for f in record.fields)


def test_derived_values_keep_their_method_and_inputs_or_stand_alone() -> None:
    [record] = record_rows(BOOK, {}, {}, HISTORY, None)["labs"]
    ratio, flag = record.derived
    assert (ratio.value, ratio.unit, ratio.method, ratio.inputs) == (
        "1.5", "1", "value / ULN", '{"value":0.6}')
    assert (flag.value, flag.method) == ("H", None)
