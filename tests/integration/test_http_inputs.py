"""Bad input over HTTP: a 4xx naming the field, and nothing stored; odd text stored verbatim."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from application.runtime import Runtime
from domain.studies import nct04397107
from tests.support import T0, api_client, enroll, envelope, register, simulated_clock

SUBJECT = f"/v1/studies/{nct04397107.STUDY_ID}/subjects/001"
DRAWN = (T0 + timedelta(days=1)).isoformat()


@pytest.fixture
def coordinator(runtime: Runtime) -> Iterator[TestClient]:
    clock = simulated_clock()
    app = runtime.study(nct04397107.STUDY_ID, clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + timedelta(days=1))
    app.on_subject("001", lambda s, t: s.record_vital_signs(
        "VS1", T0, {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.0, "kg")}, envelope(), t))
    app.close()
    yield api_client(runtime, "coordinator", site="JLU1")


def _stored(runtime: Runtime) -> int:
    return int(runtime.study(nct04397107.STUDY_ID).recorder.max_notification_id() or 0)


LAB = {"observed_at": DRAWN, "code": "C3", "value": 0.8, "unit": "g/L"}
AE = {"observed_at": DRAWN, "term": "Fever", "category": "fever", "grade": 1, "serious": False,
      "relationship": "possible", "action_taken": "none", "outcome": "recovering"}
DOSE = {"observed_at": DRAWN, "drug": "IL2", "dose": 600000.0, "unit": "IU", "route": "SC"}


@pytest.mark.parametrize(("kind", "body", "field"), [
    ("labs", {**LAB, "observed_at": "2021-01-11T08:00:00"}, "observed_at"),  # naive
    ("labs", {**LAB, "observed_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()},
     "observed_at"),  # in the future
    ("labs", {**LAB, "unit": "furlongs"}, "unit"),
    ("labs", {**LAB, "value": "high"}, "value"),
    ("labs", {**LAB, "colour": "red"}, "colour"),  # unknown field
    ("labs", {**LAB, "visit": "M7"}, "visit"),  # not in the schedule
    ("doses", {**DOSE, "dose": -600000.0}, "dose"),
    ("doses", {**DOSE, "unit": "mg"}, "unit"),
    ("vitals", {"observed_at": DRAWN, "measurements": {"WEIGHT": {"value": 36, "unit": "lb"}}},
     "measurements.WEIGHT.unit"),  # the unit is an enum of the schema
    ("adverse-events", {"observed_at": DRAWN, "term": "Fever", "category": "fever",
                        "grade": 7, "serious": False, "relationship": "possible",
                        "action_taken": "none", "outcome": "recovering"}, "grade"),
    # Control characters and lone surrogates: no clinical text holds them, no export can.
    ("adverse-events", {**AE, "term": "Fever\u0000"}, "term"),
    ("adverse-events", {**AE, "term": "Fever\ud800"}, "term"),
])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
        runtime: Runtime, coordinator: TestClient, kind: str, body: dict[str, Any],
        field: str) -> None:
    before = _stored(runtime)
    # Encoded here, ASCII-only, so a lone surrogate reaches the server as JSON's \\ud800.
    response = coordinator.post(f"{SUBJECT}/{kind}", content=json.dumps(body),
                                headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert _stored(runtime) == before


def test_a_ten_megabyte_body_is_refused_unread(runtime: Runtime,
                                               coordinator: TestClient) -> None:
    before = _stored(runtime)
    huge = b'{"observed_at": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = coordinator.post(f"{SUBJECT}/labs", content=huge,
                                headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "body"
    assert _stored(runtime) == before


def test_invalid_utf8_and_broken_json_are_refused(runtime: Runtime,
                                                  coordinator: TestClient) -> None:
    before = _stored(runtime)
    for content in (b'{"code": "C3\xff\xfe", "value": 1}', b'{"code": '):
        response = coordinator.post(f"{SUBJECT}/labs", content=content,
                                    headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"]
    assert _stored(runtime) == before


@pytest.mark.parametrize(("url", "field"), [
    (f"/v1/studies/{nct04397107.STUDY_ID}/audit?user=a%00b", "user"),
    (f"/v1/studies/{nct04397107.STUDY_ID}/audit?field=%ff", "field"),
    (f"{SUBJECT}%01/history", "path"),
])
def test_control_characters_in_the_url_are_refused_naming_the_parameter(
        coordinator: TestClient, url: str, field: str) -> None:
    response = coordinator.get(url)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


@pytest.mark.requirement("R3")
def test_a_correction_without_a_reason_is_refused(runtime: Runtime,
                                                  coordinator: TestClient) -> None:
    coordinator.post(f"{SUBJECT}/labs", json={**LAB, "record_id": "LB1"})
    before = _stored(runtime)
    response = coordinator.patch(f"{SUBJECT}/labs/LB1", json={"field": "value", "value": 0.6})
    assert response.status_code == 422
    assert "reason" in [e["field"] for e in response.json()["errors"]]
    response = coordinator.request("DELETE", f"{SUBJECT}/labs/LB1",
                                   json={"reason": {"code": "other", "text": "  "}})
    assert response.status_code == 422
    assert _stored(runtime) == before


def test_sql_looking_text_is_stored_verbatim_and_harmless(runtime: Runtime,
                                                          coordinator: TestClient) -> None:
    term = "Fever'); DROP TABLE study_nct04397107.trialledger_events; --"
    response = coordinator.post(f"{SUBJECT}/adverse-events", json={
        "record_id": "AE1", "observed_at": DRAWN, "term": term, "category": "fever",
        "grade": 1, "serious": False, "relationship": "possible", "action_taken": "none",
        "outcome": "recovering"})
    assert response.status_code == 201, response.text
    book = coordinator.get(SUBJECT).json()
    assert book["records"]["adverse-events"][0]["fields"]["term"] == term
    history = coordinator.get(f"{SUBJECT}/history", params={"limit": 1000}).json()
    assert term in [e["new_value"] for e in history["entries"] if e["field"] == "term"]
    assert _stored(runtime) > 0  # the events table is still there


def test_idempotency_key_returns_the_first_result_and_refuses_another_body(
        runtime: Runtime, coordinator: TestClient) -> None:
    headers = {"Idempotency-Key": "lab-entry-42"}
    first = coordinator.post(f"{SUBJECT}/labs", json=LAB, headers=headers)
    assert first.status_code == 201
    stored = _stored(runtime)
    again = coordinator.post(f"{SUBJECT}/labs", json=LAB, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _stored(runtime) == stored
    other = coordinator.post(f"{SUBJECT}/labs", json={**LAB, "value": 0.9}, headers=headers)
    assert other.status_code == 422
    assert _stored(runtime) == stored
    # Without a key, the same request is a second record.
    assert coordinator.post(f"{SUBJECT}/labs", json=LAB).status_code == 201
    assert _stored(runtime) == stored + 1


@pytest.mark.requirement("R8", "R19")
def test_five_wrong_passwords_lock_the_account_and_every_attempt_is_recorded(
        runtime: Runtime, coordinator: TestClient) -> None:
    from tests.support import add_person

    add_person(runtime, "victim", "monitor")
    for _ in range(5):
        response = coordinator.post("/v1/auth/token",
                                    json={"username": "victim", "password": "guess-guess-1"})
        assert response.status_code == 401
    right = coordinator.post("/v1/auth/token",
                             json={"username": "victim", "password": "victim-password"})
    assert right.status_code == 401
    user = runtime.directory().user("victim")
    assert user.locked_out
    events = runtime.directory().events.get(user.id)
    names = [type(e).__name__ for e in events]
    assert names.count("LoginFailed") == 6 and "LockedOut" in names


@pytest.mark.requirement("R19")
def test_an_expired_or_ended_token_is_refused(runtime: Runtime,
                                              coordinator: TestClient) -> None:
    assert coordinator.get(SUBJECT).status_code == 200
    assert coordinator.delete("/v1/auth/token").status_code == 204
    refused = coordinator.get(SUBJECT)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"


@pytest.mark.requirement("R2", "R24")
def test_an_api_client_transports_for_a_named_person_and_both_are_recorded(
        runtime: Runtime, coordinator: TestClient) -> None:
    from api.app import create_app
    from infra.passwords import hash_secret
    from tests.support import add_person

    runtime.directory().register_client("edc-app", "Site data-entry app",
                                        hash_secret("app-secret"), envelope())
    add_person(runtime, "lwei", "coordinator", site="JLU1", full_name="Li Wei")
    app = TestClient(create_app(runtime))
    # The client's credential alone signs nobody in, nor does a wrong client secret.
    assert app.post("/v1/auth/token", json={
        "username": "lwei", "password": "wrong-password", "client_id": "edc-app",
        "client_secret": "app-secret"}).status_code == 401
    assert app.post("/v1/auth/token", json={
        "username": "lwei", "password": "lwei-password", "client_id": "edc-app",
        "client_secret": "not-it"}).status_code == 401
    token = app.post("/v1/auth/token", json={
        "username": "lwei", "password": "lwei-password", "client_id": "edc-app",
        "client_secret": "app-secret"}).json()
    assert token["client"] == "edc-app"
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert app.post(f"{SUBJECT}/labs", json={**LAB, "record_id": "LB7"},
                    headers=headers).status_code == 201
    event = list(runtime.study(nct04397107.STUDY_ID).events.get(
        runtime.study(nct04397107.STUDY_ID).subject("001").id))[-1]
    assert (event.envelope.client, event.envelope.actor.printed_name) == ("edc-app", "Li Wei")


def test_enrolling_in_a_locked_study_is_423_like_every_other_casebook_write(
        runtime: Runtime) -> None:
    from api.schemas import EnrollmentIn

    app = runtime.study(nct04397107.STUDY_ID)
    register(app)
    manager = api_client(runtime, "data_manager")
    locked = manager.post(f"/v1/studies/{nct04397107.STUDY_ID}/lock",
                          json={"reason": {"code": "database_lock", "text": "final lock"}})
    assert locked.status_code == 200, locked.text
    investigator = api_client(runtime, "investigator", site="JLU1")
    example = EnrollmentIn.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
    answer = investigator.post(f"/v1/studies/{nct04397107.STUDY_ID}/subjects", json=example)
    assert answer.status_code == 423, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert not app.is_subject(example["subject"])


@pytest.mark.requirement("R11")
def test_an_edit_after_an_unlock_is_recorded_as_a_post_lock_edit(
        runtime: Runtime, coordinator: TestClient) -> None:
    manager = api_client(runtime, "data_manager")
    reason = {"reason": {"code": "new_information", "text": "late lab results"}}
    for step in ("lock", "unlock"):
        answer = manager.post(f"{SUBJECT}/{step}", json=reason)
        assert answer.status_code == 200, answer.text
    entered = coordinator.post(f"{SUBJECT}/labs", json={**LAB, "record_id": "LB9"})
    assert entered.status_code == 201, entered.text
    history = coordinator.get(f"{SUBJECT}/history", params={"limit": 1000}).json()
    assert {e["edit_point"] for e in history["entries"] if e["record_id"] == "LB9"} == {
        "post_lock"}
