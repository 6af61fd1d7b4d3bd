"""Over HTTP: a soft-check failure is stored, flagged and queried by the system, and shows in
the casebook, the audit trail and the query; its correction in answer keeps both values.
Protocol deviations are reported and listed per study."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.runtime import Runtime
from tests.support import T0, api_client, enroll, register, simulated_clock

S = "/v1/studies/NCT04397107"
SUBJ = f"{S}/subjects/001"


@pytest.mark.requirement("R5")
def test_a_suspicious_value_is_kept_queried_and_its_correction_keeps_both(
        runtime: Runtime) -> None:
    app = runtime.study("NCT04397107", clock=simulated_clock(T0 + timedelta(days=3)))
    register(app)
    enroll(app, "001")
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    entered = coordinator.post(SUBJ + "/labs", json={
        "record_id": "LB1", "observed_at": (T0 + timedelta(days=1)).isoformat(),
        "code": "C3", "value": 8.0, "unit": "g/L", "reference_low": 0.9,
        "reference_high": 1.8})
    assert entered.status_code == 201, entered.text

    monitor = api_client(runtime, "monitor", site="JLU1")
    book = monitor.get(SUBJ).json()
    (lab,) = book["records"]["labs"]
    assert lab["fields"]["value"] == 8.0
    assert [(f["check"], f["field"]) for f in lab["flags"]] == [("range", "value")]
    ((query_id, query),) = book["queries"].items()
    assert query["status"] == "open" and query["opened_by"] == "TrialLedger soft check"

    trail = monitor.get(SUBJ + "/history", params={"limit": 1000}).json()["entries"]
    check = next(e for e in trail if e["field"] == "soft_check")
    assert check["role"] == "system" and check["new_value"][0]["field"] == "value"

    unreasoned = coordinator.patch(SUBJ + "/labs/LB1", json={
        "field": "value", "value": 0.8, "query_id": query_id})
    assert unreasoned.status_code == 422
    fixed = coordinator.patch(SUBJ + "/labs/LB1", json={
        "field": "value", "value": 0.8, "query_id": query_id,
        "reason": {"code": "transcription_error", "text": "decimal point misplaced"}})
    assert fixed.status_code == 200, fixed.text
    book = monitor.get(SUBJ).json()
    assert book["records"]["labs"][0]["flags"] == []
    assert book["queries"][query_id]["status"] == "answered"
    trail = monitor.get(SUBJ + "/history", params={"limit": 1000}).json()["entries"]
    corrected = next(e for e in trail if e["event_type"] == "RecordCorrected")
    assert (corrected["old_value"], corrected["new_value"]) == (8.0, 0.8)
    assert corrected["reason_text"] == "decimal point misplaced"


def test_deviations_are_reported_with_the_write_permissions_and_listed_per_study(
        runtime: Runtime) -> None:
    app = runtime.study("NCT04397107", clock=simulated_clock(T0 + timedelta(days=60)))
    register(app)
    enroll(app, "001")
    enroll(app, "002")
    deviation = {"deviation_id": "DV-1", "category": "missed_visit", "severity": "major",
                 "occurred_on": "2021-02-09", "description": "Month 1 visit missed"}
    monitor = api_client(runtime, "monitor", site="JLU1")
    assert monitor.post(SUBJ + "/deviations", json=deviation).status_code == 201
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    refused = coordinator.post(f"{S}/subjects/002/deviations", json=deviation)
    assert refused.status_code == 403
    bad = monitor.post(f"{S}/subjects/002/deviations", json={**deviation, "severity": "grave"})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["errors"][0]["field"].endswith("severity")
    # A visit far outside its window is found by the soft checks on their own.
    late = coordinator.post(f"{S}/subjects/002/vitals", json={
        "observed_at": (T0 + timedelta(days=55)).isoformat(), "visit": "M1",
        "measurements": {"WEIGHT": {"value": 36.0, "unit": "kg"}}})
    assert late.status_code == 201, late.text

    listed = monitor.get(S + "/deviations").json()
    assert [(d["subject"], d["category"], d["detected_by"]) for d in listed] == [
        ("001", "missed_visit", "monitor"), ("002", "visit_out_of_window", "system")]
    only = monitor.get(S + "/deviations", params={"subject": "002"}).json()
    assert [d["subject"] for d in only] == ["002"]
    assert monitor.get(S + "/deviations", params={"site": "JLU2"}).json() == []
