"""Audit-trail review filters (ICH E6(R3)) and their sign-off, over HTTP.

Two casebooks are written so that each filter selects something the others do not: 001's
dose corrected three times (frequent-critical), then signed and its C3 corrected
(after-signature), and a monitor's query on it (sponsor-staff); 002's C4 entered 40 days
after it was drawn (late-entry), then the casebook locked by the data manager, unlocked and
the C4 corrected (after-lock).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from application.runtime import Runtime
from domain.envelope import Actor, Reason
from domain.studies import nct04397107
from tests.support import (
    DATA_MANAGER,
    SITE,
    T0,
    add_person,
    api_client,
    enroll,
    envelope,
    register,
    simulated_clock,
)

STUDY = nct04397107.STUDY_ID
AUDIT = f"/v1/studies/{STUDY}/audit"
INVESTIGATOR = Actor("u-inv", "Wang Fang", "investigator", SITE)
MONITOR = Actor("u-mon", "Chen Jie", "monitor", SITE)
WHY = Reason("transcription_error", "checked against the source document")


def _seed(runtime: Runtime) -> None:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    enroll(app, "001")
    enroll(app, "002")

    def at(days: int) -> None:
        clock.set(T0 + timedelta(days=days))

    at(1)
    app.on_subject("001", lambda s, t: s.record_vital_signs(
        "VS1", T0, {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.0, "kg")}, envelope(), t))
    app.on_subject("001", lambda s, t: s.record_lab_result("LB1", T0, "C3", 0.8, "g/L",
                                                           envelope(), t))
    at(2)
    app.on_subject("001", lambda s, t: s.administer_dose(
        "DS1", T0 + timedelta(days=2), "IL2", 600000.0, "IU", "SC", envelope(), t))
    for day, dose in ((3, 610000.0), (4, 620000.0), (5, 630000.0)):
        at(day)
        app.on_subject("001", lambda s, t, d=dose: s.correct(  # type: ignore[misc]
            "DS1", "dose", d, envelope(reason=WHY), t))
    at(6)
    definition = app.definition()
    app.on_subject("001", lambda s, t: s.sign("SIG1", "approval",
                                              definition.signature_meanings, INVESTIGATOR,
                                              envelope(INVESTIGATOR), t))
    at(7)
    app.on_subject("001", lambda s, t: s.correct("LB1", "value", 0.7,
                                                 envelope(reason=WHY), t))
    at(8)
    app.on_subject("001", lambda s, t: s.open_query("Q1", "LB1", "value", "Please confirm",
                                                    envelope(MONITOR), t))
    at(40)
    app.on_subject("002", lambda s, t: s.record_lab_result("LB2", T0, "C4", 0.2, "g/L",
                                                           envelope(), t))
    at(41)
    app.on_subject("002", lambda s, t: s.lock(envelope(DATA_MANAGER, WHY), t))
    at(42)
    app.on_subject("002", lambda s, t: s.unlock(envelope(DATA_MANAGER, WHY), t))
    at(43)
    app.on_subject("002", lambda s, t: s.correct("LB2", "value", 0.25,
                                                 envelope(reason=WHY), t))
    app.close()


def _rows(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get(AUDIT, params={**params, "limit": 1000})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    return list(page["entries"])


def _changes(rows: list[dict[str, Any]]) -> set[tuple[str | None, str | None, str]]:
    return {(r["subject_code"], r["record_id"], r["field"]) for r in rows}


@pytest.fixture
def monitor(runtime: Runtime) -> TestClient:
    _seed(runtime)
    return api_client(runtime, "monitor")


@pytest.mark.requirement("R16")
def test_each_filter_selects_its_own_changes(monitor: TestClient) -> None:
    everything = _rows(monitor)
    # after-signature: 001's C3 correction, made after the casebook was signed (not the
    # signature rows themselves, nor the monitor's query).
    assert _changes(_rows(monitor, review="after-signature")) == {("001", "LB1", "value")}
    # after-lock: 002's C4 correction, once its casebook had been locked (post-lock edit),
    # and the unlock itself.
    after_lock = _rows(monitor, review="after-lock")
    assert {(r["subject_code"], r["record_id"], r["field"]) for r in after_lock
            if r["record_id"]} == {("002", "LB2", "value")}
    assert all(r["edit_point"] == "post_lock" for r in after_lock)
    # sponsor-staff: the monitor's query and the data manager's lock and unlock.
    staff = _rows(monitor, review="sponsor-staff")
    assert {r["role"] for r in staff} == {"monitor", "data_manager"}
    assert ("001", "LB1", "query") in _changes(staff)
    assert {r["subject_code"] for r in staff if r["role"] == "data_manager"} == {"002"}
    assert not any(r["role"] in ("coordinator", "investigator") for r in staff)
    # late-entry: the first entry of 002's C4, 40 days after it was drawn; its correction
    # (a change, not an entry) and 001's C3 (a day late) are not.
    late = _rows(monitor, review="late-entry")
    assert {(r["subject_code"], r["record_id"]) for r in late} == {("002", "LB2")}
    assert all(r["old_value"] is None for r in late)
    assert _rows(monitor, review="late-entry", late_days=41) == []
    assert {r["record_id"] for r in _rows(monitor, review="late-entry", late_days=1)} == {
        "LB1", "LB2"}
    # frequent-critical: the three corrections of 001's dose (a critical field); one
    # correction of C3 or C4 is not frequent, unless the threshold says one is enough.
    frequent = _rows(monitor, review="frequent-critical")
    assert _changes(frequent) == {("001", "DS1", "dose")}
    assert [r["new_value"] for r in frequent] == [610000.0, 620000.0, 630000.0]
    assert _rows(monitor, review="frequent-critical", min_changes=4) == []
    assert _changes(_rows(monitor, review="frequent-critical", min_changes=1)) == {
        ("001", "DS1", "dose"), ("001", "LB1", "value"), ("002", "LB2", "value")}
    # Each filter selects a part of the trail, and no two select the same.
    selected = [frozenset((r["position"], r["field"], r["record_id"]) for r in _rows(
        monitor, review=name)) for name in ("after-signature", "after-lock", "sponsor-staff",
                                            "late-entry", "frequent-critical")]
    assert len(set(selected)) == 5
    assert all(0 < len(s) < len(everything) for s in selected)


def test_filter_parameters_are_checked(monitor: TestClient) -> None:
    for params, field in (({"review": "everything"}, "review"),
                          ({"review": "after-lock", "late_days": 3}, "late_days"),
                          ({"review": "late-entry", "late_days": 0}, "late_days"),
                          ({"late_days": 3}, "review")):
        response = monitor.get(AUDIT, params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert field in response.text


@pytest.mark.requirement("R16")
def test_sign_off_names_its_filter_and_stops_at_the_log(monitor: TestClient) -> None:
    last = max(r["position"] for r in _rows(monitor))
    for position in (last + 1, 0):
        refused = monitor.post(f"{AUDIT}/reviews", json={"through_position": position,
                                                         "review": "late-entry"})
        assert refused.status_code == 422, refused.text
        assert "through_position" in refused.text
    done = monitor.post(f"{AUDIT}/reviews", json={
        "through_position": last, "review": "late-entry", "late_days": 10,
        "comment": "late entries reviewed"})
    assert done.status_code == 201, done.text
    assert done.json()["audit_reviews"] == {"late-entry": last}
    assert done.json()["audit_reviewed_through"] == 0
    again = monitor.post(f"{AUDIT}/reviews", json={"through_position": last,
                                                   "review": "late-entry"})
    assert again.status_code == 422
    # Another filter, and the whole trail, are signed off on their own.
    whole = monitor.post(f"{AUDIT}/reviews", json={"through_position": last})
    assert whole.status_code == 201, whole.text
    assert whole.json()["audit_reviews"] == {"late-entry": last, "all": last}
    assert whole.json()["audit_reviewed_through"] == last
    signed = [r for r in _rows(monitor, event_type="FilteredAuditTrailReviewed")]
    assert [r["new_value"] for r in signed] == [
        {"through_position": last, "comment": "late entries reviewed",
         "review_filter": "late-entry", "parameters": {"late_days": 10}},
        {"through_position": last, "comment": "", "review_filter": None, "parameters": {}}]
    assert all(r["role"] == "monitor" for r in signed)


def test_the_console_filters_the_trail_for_review(runtime: Runtime) -> None:
    _seed(runtime)
    password = add_person(runtime, "console-monitor", "monitor", site=SITE)
    console = TestClient(create_app(runtime), follow_redirects=False)
    form = re.search(r'name="csrf" value="([^"]+)"', console.get("/ui/sign-in").text)
    assert form is not None
    assert console.post("/ui/sign-in", data={"username": "console-monitor",
                                             "password": password,
                                             "csrf": form.group(1)}).status_code == 303
    page = console.get(f"/ui/studies/{STUDY}/audit", params={"review": "late-entry"})
    assert page.status_code == 200, page.text
    assert "LB2" in page.text and "LB1" not in page.text and "DS1" not in page.text
    assert '<option value="late-entry" title=' in page.text and " selected>" in page.text
    refused = console.get(f"/ui/studies/{STUDY}/audit", params={"review": "everything"})
    assert refused.status_code == 422 and "review" in refused.text
