"""Limits over HTTP: every example of /openapi.json is accepted; every declared limit is
enforced the same on first entry (POST) and correction (PATCH) and on every other write;
an oversized body is refused unread; an AE's nature changes only with a reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.schemas import MAX_BODY_BYTES
from application.runtime import Runtime
from domain import limits
from domain.studies import nct04397107
from infra.passwords import hash_password
from tests.support import T0, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
SUBJECT = f"/v1/studies/{STUDY}/subjects/001"
OBSERVED = (T0 + timedelta(days=1)).isoformat()
# The bound for refusing a 1 MB value: it must not wait on anything.
ONE_MB_REFUSAL_SECONDS = 1.0


def _stored(runtime: Runtime) -> int:
    return int(runtime.study(STUDY).recorder.max_notification_id() or 0)


def _person(runtime: Runtime, username: str, password: str, role: str, site: str,
            study: str = STUDY) -> None:
    runtime.directory().register_user(
        username, username.title(), hash_password(password), envelope(),
        lambda user, at: user.grant(role, study, site, envelope(), at))


def _signed_in(api: Any, username: str, password: str) -> TestClient:
    client = TestClient(api)
    token = client.post("/v1/auth/token", json={"username": username, "password": password})
    assert token.status_code == 200, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def _fields(response: Any) -> list[str]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json().get("errors") or []]


# --- every example of the contract is accepted --------------------------------------------

EXAMPLE_PASSWORD = "correct horse battery"  # the examples' password of lwei
SUB = "/v1/studies/{study}/subjects/{subject}"


@dataclass(frozen=True)
class Step:
    """One operation of the contract, as whom, on which path parameters."""

    method: str
    path: str
    who: str
    params: dict[str, str]
    # Statuses that accept the example; a refusal of its content, never of its shape (422).
    accepted: tuple[int, ...] = (200, 201, 202, 204)


def _steps() -> list[Step]:
    at = {"study": STUDY, "subject": "047"}
    return [
        Step("POST", "/v1/auth/token", "nobody", {}),
        Step("POST", "/v1/studies", "admin", {}),
        Step("POST", "/v1/users", "admin", {}),
        Step("POST", "/v1/users/{username}/roles", "admin", {"username": "mchen"}),
        Step("POST", "/v1/users/{username}/identity", "admin", {"username": "mchen"}),
        Step("POST", "/v1/clients", "admin", {}),
        Step("POST", "/v1/studies/{study}/subjects", "lwei", at),
        *[Step("POST", f"{SUB}/{kind}", "lwei", at) for kind in
          ("vitals", "doses", "therapies", "labs", "assessments", "adverse-events")],
        Step("POST", SUB + "/therapies/{record}/changes", "lwei", {**at, "record": "CM-1"}),
        Step("POST", SUB + "/therapies/{record}/stop", "lwei", {**at, "record": "CM-1"}),
        Step("POST", SUB + "/adverse-events/{record}/updates", "lwei",
             {**at, "record": "AE-1"}),
        Step("POST", SUB + "/adverse-events/{record}/resolution", "lwei",
             {**at, "record": "AE-1"}),
        Step("POST", SUB + "/queries", "monitor", at),
        Step("PATCH", SUB + "/{kind}/{record}", "lwei", {**at, "kind": "labs", "record": "LB-1"}),
        Step("POST", SUB + "/queries/{query}/answer", "lwei", {**at, "query": "Q-1"}),
        Step("POST", SUB + "/queries/{query}/close", "monitor", {**at, "query": "Q-1"}),
        Step("POST", SUB + "/sdv", "monitor", at),
        Step("POST", SUB + "/deviations", "lwei", at),
        Step("POST", SUB + "/redactions", "data_manager", at),
        Step("POST", SUB + "/signatures", "lwei", at),
        Step("DELETE", SUB + "/{kind}/{record}", "lwei",
             {**at, "kind": "assessments", "record": "QS-1"}),
        Step("POST", SUB + "/withdrawal", "lwei", at),
        Step("POST", SUB + "/completion", "lwei", {**at, "subject": "048"}),
        Step("POST", "/v1/studies/{study}/audit/reviews", "monitor", at),
        # NCT04397107 is open-label and has no 001 here: refused for its content.
        Step("POST", "/v1/studies/{study}/unblindings", "lwei", at, (404, 409)),
        Step("POST", SUB + "/lock", "data_manager", at),
        Step("POST", SUB + "/unlock", "data_manager", at),
        Step("POST", "/v1/studies/{study}/lock", "data_manager", at),
        Step("POST", "/v1/studies/{study}/unlock", "data_manager", at),
        Step("POST", "/v1/auth/totp", "nobody", {}),
        # The example carries no code from the secret just issued: well-formed, and refused
        # for the code alone.
        Step("POST", "/v1/auth/totp/confirm", "nobody", {}, accepted=(401,)),
        Step("POST", "/v1/auth/password", "lwei", {}),  # last: it ends lwei's sessions
    ]


def test_every_example_in_the_contract_is_accepted(runtime: Runtime) -> None:
    app = runtime.study(STUDY)
    register(app)
    enroll(app, "048")  # the subject the completion example completes
    _person(runtime, "lwei", EXAMPLE_PASSWORD, "investigator", "JLU1")
    for name, role in (("monitor", "monitor"), ("data_manager", "data_manager")):
        _person(runtime, name, f"{name}-password", role, "*")
    _person(runtime, "admin", "admin-password", "admin", "*", study="*")
    api = create_app(runtime)
    spec = TestClient(api).get("/openapi.json").json()
    clients = {"nobody": TestClient(api),
               **{name: _signed_in(api, name, EXAMPLE_PASSWORD if name == "lwei"
                                   else f"{name}-password")
                  for name in ("lwei", "monitor", "data_manager", "admin")}}
    with_bodies = {(method.upper(), path) for path, ops in spec["paths"].items()
                   for method, op in ops.items() if "requestBody" in op}
    steps = _steps()
    assert {(s.method, s.path) for s in steps} == with_bodies, "an operation is not walked"
    for step in steps:
        operation = spec["paths"][step.path][step.method.lower()]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert schema.get("examples"), f"{step.method} {step.path}: no example"
        for example in schema["examples"]:
            response = clients[step.who].request(step.method, step.path.format(**step.params),
                                                 json=example)
            assert response.status_code in step.accepted, (step, example, response.text)


def test_every_property_example_is_one_of_its_vocabulary(runtime: Runtime) -> None:
    # A property's own example (shown beside the field) must be a value the field takes.
    spec = TestClient(create_app(runtime)).get("/openapi.json").json()
    for name, schema in spec["components"]["schemas"].items():
        for prop, declared in schema.get("properties", {}).items():
            for example in declared.get("examples", []):
                choices = _choices(declared)
                assert choices is None or example in choices, (name, prop, example)
                if isinstance(example, str) and "maxLength" in declared:
                    assert len(example) <= declared["maxLength"], (name, prop, example)


# --- every field limit, on POST and on PATCH ------------------------------------------------

BASE: dict[str, dict[str, Any]] = {
    "doses": {"observed_at": OBSERVED, "drug": "IL2", "dose": 600000.0, "unit": "IU",
              "route": "SC"},
    "therapies": {"observed_at": OBSERVED, "drug": "mycophenolate",
                  "category": "immunosuppressant", "dose_mg_per_day": 500.0, "route": "PO"},
    "labs": {"observed_at": OBSERVED, "code": "C3", "value": 0.8, "unit": "g/L"},
    "assessments": {"observed_at": OBSERVED, "instrument": "SLEDAI", "items": {"rash": True}},
    "adverse-events": {"observed_at": OBSERVED, "term": "Fever", "category": "fever",
                       "grade": 1, "serious": False, "relationship": "possible",
                       "action_taken": "none", "outcome": "recovering"},
}
SCHEMAS = {"doses": "DoseIn", "therapies": "TherapyIn", "labs": "LabIn",
           "assessments": "AssessmentIn", "adverse-events": "AdverseEventIn"}
REASON = {"code": "transcription_error", "text": "Checked against the source"}


@pytest.fixture
def investigator(runtime: Runtime) -> Iterator[TestClient]:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + timedelta(days=1))
    app.on_subject("001", lambda s, t: s.record_vital_signs(
        "VS1", T0, {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.0, "kg")}, envelope(), t))
    app.close()
    _person(runtime, "investigator", "investigator-password", "investigator", "JLU1")
    yield _signed_in(create_app(runtime), "investigator", "investigator-password")


def _choices(declared: dict[str, Any]) -> list[str] | None:
    """The values a property's schema allows, if it is a vocabulary."""
    for option in [declared, *declared.get("anyOf", [])]:
        if "enum" in option:
            return list(option["enum"])
        if "const" in option:
            return [option["const"]]
    return None


def test_every_record_field_limit_holds_alike_on_post_and_patch(
        runtime: Runtime, investigator: TestClient) -> None:
    spec = investigator.get("/openapi.json").json()["components"]["schemas"]
    walked = 0
    for kind, fields in limits.RECORD_TEXT.items():
        for field, limit in fields.items():
            declared = spec[SCHEMAS[kind]]["properties"][field]
            choices = _choices(declared)
            # Declared as enforced: a vocabulary's values, or the limit as maxLength.
            if choices is None:
                assert limit in [declared.get("maxLength"),
                                 *[a.get("maxLength") for a in declared.get("anyOf", [])]]
            else:
                assert all(len(c) <= limit for c in choices)
            before = _stored(runtime)
            over = investigator.post(f"{SUBJECT}/{kind}", json={**BASE[kind],
                                                                field: "x" * (limit + 1)})
            assert over.status_code == 422, (kind, field, over.text)
            assert field in _fields(over)
            assert _stored(runtime) == before
            record = f"{kind}-{field}"
            first = {**BASE[kind], "record_id": record}
            if choices is None:  # free text: the limit itself is accepted
                first[field] = "x" * limit
            entered = investigator.post(f"{SUBJECT}/{kind}", json=first)
            assert entered.status_code == 201, (kind, field, entered.text)
            # A correction may not write what the entry could not.
            before = _stored(runtime)
            patched = investigator.patch(f"{SUBJECT}/{kind}/{record}", json={
                "field": field, "value": "y" * (limit + 1), "reason": REASON})
            assert patched.status_code == 422, (kind, field, patched.text)
            assert {field, "value"} & set(_fields(patched)), patched.text
            assert _stored(runtime) == before
            if choices is None:
                patched = investigator.patch(f"{SUBJECT}/{kind}/{record}", json={
                    "field": field, "value": "y" * limit, "reason": REASON})
                assert patched.status_code == 200, (kind, field, patched.text)
            walked += 1
    assert walked == sum(len(f) for f in limits.RECORD_TEXT.values())


def test_a_ten_thousand_character_term_is_refused_by_patch_as_by_post(
        runtime: Runtime, investigator: TestClient) -> None:
    ae = {**BASE["adverse-events"], "record_id": "AE1"}
    assert investigator.post(f"{SUBJECT}/adverse-events", json=ae).status_code == 201
    before = _stored(runtime)
    long_term = "x" * 10_000
    posted = investigator.post(f"{SUBJECT}/adverse-events",
                               json={**ae, "record_id": "AE2", "term": long_term})
    patched = investigator.patch(f"{SUBJECT}/adverse-events/AE1",
                                 json={"field": "term", "value": long_term, "reason": REASON})
    updated = investigator.post(f"{SUBJECT}/adverse-events/AE1/updates", json={
        "observed_at": OBSERVED, "changes": {"term": long_term}, "reason": REASON})
    for response in (posted, patched, updated):
        assert response.status_code == 422, response.text
        assert {"term", "value", "changes.term"} & set(_fields(response)), response.text
    assert _stored(runtime) == before


def _enrolment(subject: str, **screening: Any) -> dict[str, Any]:
    return {"subject": subject, "site": "JLU1", "date_of_birth": "2010-05-01", "sex": "F",
            "disease": "SLE", "consent_date": "2021-01-10",
            "screening": {**nct04397107.ELIGIBLE_SCREENING_ANSWERS, **screening},
            "arm": "IL2", "enrolled_on": "2021-01-10"}


def test_every_other_write_holds_its_limits(runtime: Runtime, investigator: TestClient) -> None:
    assert investigator.post(f"{SUBJECT}/labs", json={**BASE["labs"], "record_id": "LB1"}
                             ).status_code == 201
    assert investigator.post(f"{SUBJECT}/adverse-events", json={
        **BASE["adverse-events"], "record_id": "AE1"}).status_code == 201
    _person(runtime, "monitor", "monitor-password", "monitor", "*")
    _person(runtime, "manager", "manager-password", "data_manager", "*")
    api = create_app(runtime)
    monitor = _signed_in(api, "monitor", "monitor-password")
    manager = _signed_in(api, "manager", "manager-password")
    assert monitor.post(f"{SUBJECT}/queries", json={
        "record_id": "LB1", "field": "value", "text": "?" * limits.TEXT, "query_id": "Q1"}
        ).status_code == 201
    long_reason = {"code": "other", "text": "r" * (limits.TEXT + 1)}
    cases: list[tuple[TestClient, str, str, dict[str, Any], str]] = [
        (investigator, "PATCH", f"{SUBJECT}/labs/LB1",
         {"field": "value", "value": 0.7, "reason": long_reason}, "reason.text"),
        (investigator, "DELETE", f"{SUBJECT}/labs/LB1", {"reason": long_reason},
         "reason.text"),
        (investigator, "POST", f"{SUBJECT}/adverse-events/AE1/updates",
         {"observed_at": OBSERVED, "changes": {"outcome": "recovered"}, "reason": long_reason},
         "reason.text"),
        (manager, "POST", f"{SUBJECT}/lock", {"reason": long_reason}, "reason.text"),
        (manager, "POST", f"/v1/studies/{STUDY}/lock", {"reason": long_reason}, "reason.text"),
        (monitor, "POST", f"{SUBJECT}/queries",
         {"record_id": "LB1", "field": "value", "text": "?" * (limits.TEXT + 1)}, "text"),
        (investigator, "POST", f"{SUBJECT}/queries/Q1/answer",
         {"text": "a" * (limits.TEXT + 1)}, "text"),
        (monitor, "POST", f"{SUBJECT}/queries/Q1/close", {"text": "c" * (limits.TEXT + 1)},
         "text"),
        (investigator, "POST", f"{SUBJECT}/signatures",
         {"meaning": "m" * (limits.ID + 1), "username": "investigator",
          "password": "investigator-password"}, "meaning"),
        (investigator, "POST", f"{SUBJECT}/withdrawal",
         {"observed_at": OBSERVED, "reason": "w" * (limits.WITHDRAWAL_REASON + 1)}, "reason"),
        (investigator, "POST", f"/v1/studies/{STUDY}/subjects",
         _enrolment("002", note="n" * (limits.SCREENING_TEXT + 1)), "screening"),
        (investigator, "POST", f"/v1/studies/{STUDY}/subjects",
         _enrolment("s" * (limits.ID + 1)), "subject"),
        (monitor, "POST", f"/v1/studies/{STUDY}/audit/reviews",
         {"through_position": 1, "comment": "c" * (limits.TEXT + 1)}, "comment"),
    ]
    before = _stored(runtime)
    for client, method, path, body, field in cases:
        response = client.request(method, path, json=body)
        assert response.status_code == 422, (path, response.text)
        assert field in _fields(response), (path, response.text)
    assert _stored(runtime) == before
    # At the limit, a reason is taken.
    at_limit = {"code": "other", "text": "r" * limits.TEXT}
    assert investigator.patch(f"{SUBJECT}/labs/LB1", json={
        "field": "value", "value": 0.7, "reason": at_limit}).status_code == 200


@pytest.mark.parametrize("body", [
    {"field": "value", "value": "v" * 1_000_000, "reason": REASON},
    _enrolment("003", note="n" * 1_000_000),
], ids=["correction", "screening answer"])
def test_a_one_megabyte_value_is_refused_unread_and_the_next_write_succeeds(
        runtime: Runtime, investigator: TestClient, body: dict[str, Any]) -> None:
    assert investigator.post(f"{SUBJECT}/labs", json={**BASE["labs"], "record_id": "LB1"}
                             ).status_code == 201
    before = _stored(runtime)
    path = (f"{SUBJECT}/labs/LB1" if "field" in body else f"/v1/studies/{STUDY}/subjects")
    started = time.monotonic()
    response = investigator.request("PATCH" if "field" in body else "POST", path, json=body)
    assert time.monotonic() - started < ONE_MB_REFUSAL_SECONDS
    assert response.status_code == 413, response.text
    assert _fields(response) == ["body"]
    assert str(MAX_BODY_BYTES) in response.json()["detail"]
    assert _stored(runtime) == before
    assert investigator.patch(f"{SUBJECT}/labs/LB1", json={
        "field": "value", "value": 0.7, "reason": REASON}).status_code == 200


# --- an adverse event's nature changes only with a reason --------------------------------

def test_changing_what_an_adverse_event_is_needs_a_reason_and_the_trail_shows_it(
        runtime: Runtime, investigator: TestClient) -> None:
    assert investigator.post(f"{SUBJECT}/adverse-events", json={
        **BASE["adverse-events"], "record_id": "AE1"}).status_code == 201
    updates = f"{SUBJECT}/adverse-events/AE1/updates"
    before = _stored(runtime)
    for change in ({"relationship": "probable"}, {"term": "Pyrexia"}, {"category": "infection"},
                   {"outcome": "not_recovered"},
                   {"serious": True, "seriousness_criteria": ["hospitalisation"]}):
        refused = investigator.post(updates, json={"observed_at": OBSERVED, "changes": change})
        assert refused.status_code == 422, refused.text
        assert "reason" in _fields(refused)
    assert _stored(runtime) == before
    # A dated clinical evolution is a new fact, not a revised judgement: no reason needed.
    assert investigator.post(updates, json={"observed_at": OBSERVED, "changes": {"grade": 2}}
                             ).status_code == 200
    because = {"code": "new_information", "text": "Biopsy links the fever to the injection"}
    assert investigator.post(updates, json={
        "observed_at": OBSERVED, "changes": {"relationship": "probable"}, "reason": because}
        ).status_code == 200
    trail = investigator.get(f"{SUBJECT}/history", params={"limit": 1000}).json()["entries"]
    entry = next(e for e in trail if e["field"] == "relationship" and e["record_id"] == "AE1"
                 and e["event_type"].endswith("AdverseEventUpdated"))
    assert (entry["old_value"], entry["new_value"]) == ("possible", "probable")
    assert (entry["reason_code"], entry["reason_text"]) == ("new_information", because["text"])
    assert (entry["printed_name"], entry["role"], entry["actor_site"]) == (
        "Investigator", "investigator", "JLU1")
