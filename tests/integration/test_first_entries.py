"""First entries answered before FastAPI's routing (api/first_entries.py) answer exactly as
the routes do: the same status, body and headers, for good requests and for every kind of
refusal, and the access log and metrics name the same route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.entry_route import FirstEntryRoute
from application.runtime import Runtime
from domain.studies import nct04397107
from tests.support import T0, api_client, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
DRAWN = (T0 + timedelta(days=1)).isoformat()
LAB = {"observed_at": DRAWN, "code": "C3", "value": 0.8, "unit": "g/L"}
VITALS = {"observed_at": DRAWN, "measurements": {"WEIGHT": {"value": 36.5, "unit": "kg"}}}
DOSE = {"observed_at": DRAWN, "drug": "IL2", "dose": 600000.0, "unit": "IU", "route": "SC"}
AE = {"observed_at": DRAWN, "term": "Fever", "category": "fever", "grade": 1,
      "serious": False, "relationship": "possible", "action_taken": "none",
      "outcome": "recovering"}


@pytest.fixture
def clients(runtime: Runtime) -> Iterator[tuple[TestClient, TestClient]]:
    """The app as served, and the same app with first entries through FastAPI's routing,
    each with the same coordinator's token; subjects 001 and 002 alike."""
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    for code in ("001", "002"):
        enroll(app, code)
    clock.set(T0 + timedelta(days=1))
    for code in ("001", "002"):
        app.on_subject(code, lambda s, t: s.record_vital_signs(
            "VS1", T0, {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.0, "kg")}, envelope(), t))
    app.close()
    fast = api_client(runtime, "coordinator", site="JLU1")
    slow = TestClient(create_app(runtime, first_entries=False))
    slow.headers["Authorization"] = fast.headers["Authorization"]
    yield fast, slow


def _post(client: TestClient, subject: str, kind: str, body: Any,
          headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response: httpx.Response = client.post(
        f"/v1/studies/{STUDY}/subjects/{subject}/{kind}", content=content,
        headers={"content-type": "application/json", "x-request-id": "same-id",
                 **(headers or {})})
    return response


def _answer(response: httpx.Response, subject: str) -> tuple[int, Any, dict[str, str]]:
    """Status, body and headers, the subject's code and the recorded time made alike."""
    body = response.json()
    if isinstance(body, dict) and "recorded_at" in body:
        body = {**body, "recorded_at": "-", "subject": body["subject"].replace(subject, "S")}
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return response.status_code, body, headers


@pytest.mark.parametrize(("kind", "body"), [
    ("labs", LAB), ("labs", {**LAB, "record_id": "LB-9", "reference_low": 0.9}), ("vitals", VITALS),
    ("doses", DOSE), ("adverse-events", AE)])
def test_a_plain_first_entry_is_answered_as_the_route_answers(
        runtime: Runtime, clients: tuple[TestClient, TestClient], kind: str,
        body: dict[str, Any]) -> None:
    fast, slow = clients
    given = {"record_id": "R1", **body}
    answers = [_answer(_post(client, code, kind, given), code)
               for client, code in ((fast, "001"), (slow, "002"))]
    assert answers[0][0] == 201
    assert answers[0] == answers[1]
    # Both stored, each under its subject.
    for code in ("001", "002"):
        assert given["record_id"] in runtime.study(STUDY).subject(code).records


@pytest.mark.parametrize(("kind", "body", "headers"), [
    ("labs", {**LAB, "unit": "furlongs"}, {}),  # the body does not validate: 422
    ("labs", {**LAB, "colour": "red"}, {}),  # an unknown field
    ("labs", {**LAB, "visit": "M7"}, {}),  # validates, but the command refuses it
    ("labs", {**LAB, "observed_at": "2021-01-11T08:00:00"}, {}),  # naive
    ("labs", b'{"observed_at": ', {}),  # not JSON
    ("labs", b"[1, 2]", {}),  # JSON, not an object
    ("labs", LAB, {"content-type": "text/plain"}),
    ("labs", LAB, {"authorization": ""}),  # no token: 401
    ("labs", LAB, {"authorization": "Bearer not-a-token"}),
    ("labs", LAB, {"authorization": "Basic dXNlcjpwdw=="}),
    ("labs", LAB, {"if-match": "\"1\""}),  # stale: 412
    ("labs", LAB, {"if-match": "seven"}),  # not an ETag: 422
    ("vitals", {**VITALS, "measurements": {"WEIGHT": {"value": 36, "unit": "lb"}}}, {}),
    ("adverse-events", {**AE, "term": "Fever\u0000"}, {}),
    ("doses", {**DOSE, "dose": -1.0}, {}),
])
def test_a_refused_first_entry_is_refused_as_the_route_refuses(
        clients: tuple[TestClient, TestClient], kind: str, body: Any,
        headers: dict[str, str]) -> None:
    fast, slow = clients
    answers = [_answer(_post(client, "001", kind, body, headers), "001")
               for client in (fast, slow)]
    assert 400 <= answers[0][0] < 500, answers[0]
    assert answers[0] == answers[1]


@pytest.mark.parametrize("path", [
    f"/v1/studies/{STUDY}/subjects/999/labs",  # no such subject
    "/v1/studies/NCT00000000/subjects/001/labs",  # no such study
    f"/v1/studies/{STUDY}/subjects/001/labs/",  # not the route's path
])
def test_a_first_entry_to_nothing_is_refused_as_the_app_refuses(
        clients: tuple[TestClient, TestClient], path: str) -> None:
    fast, slow = clients
    answers = [client.post(path, json=LAB, headers={"x-request-id": "same-id"},
                           follow_redirects=False) for client in (fast, slow)]
    assert answers[0].status_code >= 300
    assert [(a.status_code, a.content, a.headers) for a in answers] == \
        [(a.status_code, a.content, a.headers) for a in reversed(answers)]


def test_a_person_without_the_grant_is_refused_as_the_route_refuses(
        runtime: Runtime, clients: tuple[TestClient, TestClient]) -> None:
    _, slow = clients
    monitor = api_client(runtime, "monitor")
    slow.headers["Authorization"] = monitor.headers["Authorization"]
    answers = [_answer(_post(client, "001", "labs", LAB), "001") for client in (monitor, slow)]
    assert answers[0][0] == 403
    assert answers[0] == answers[1]


def test_the_metrics_name_the_route_of_a_first_entry_answered_first(
        clients: tuple[TestClient, TestClient]) -> None:
    fast, _ = clients
    assert _post(fast, "001", "labs", LAB).status_code == 201
    metrics = fast.get("/metrics").text
    assert ('method="POST",route="/v1/studies/{study}/subjects/{subject}/labs",status="201"'
            in metrics)


def test_a_plain_first_entry_does_not_reach_the_router(
        monkeypatch: pytest.MonkeyPatch, clients: tuple[TestClient, TestClient]) -> None:
    fast, _ = clients

    async def routed(*_: Any) -> None:
        raise AssertionError("routed through FastAPI")

    monkeypatch.setattr(FirstEntryRoute, "handle", routed)
    assert _post(fast, "001", "labs", LAB).status_code == 201
    with pytest.raises(AssertionError, match="routed"):  # a refusal of the schema is routed
        _post(fast, "001", "labs", {**LAB, "unit": "furlongs"})
