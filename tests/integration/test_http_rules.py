"""Each rule of the trial service, as the HTTP routes answer it: the route builds a command
and hands it over, and the service's refusal comes back as problem+json (the rules
themselves are tested in tests/service/test_front_door.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from application.runtime import Runtime
from tests.support import T0, api_client, study_with_a_child

S = "/v1/studies/NCT04397107"
SUBJ = f"{S}/subjects/001"
REASON = {"code": "transcription_error", "text": "checked against source"}
AE = {"record_id": "AE1", "observed_at": (T0 + timedelta(days=1)).isoformat(),
      "term": "Injection site erythema", "category": "injection_site_reaction", "grade": 1,
      "serious": False, "relationship": "probable", "action_taken": "none",
      "outcome": "recovering"}


def lab(record_id: str = "LB1", **extra: Any) -> dict[str, Any]:
    return {"record_id": record_id, "observed_at": (T0 + timedelta(days=1)).isoformat(),
            "code": "C3", "value": 0.8, "unit": "g/L", **extra}


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def named(response: httpx.Response, status: int) -> list[str]:
    return [e["field"] for e in problem(response, status)["errors"]]


@pytest.fixture
def runtime_with_child(runtime: Runtime) -> Runtime:
    study_with_a_child(runtime)
    return runtime


def test_a_role_elsewhere_is_refused_403(runtime_with_child: Runtime) -> None:
    elsewhere = api_client(runtime_with_child, "coordinator", site="JLU2")
    assert "JLU1" in problem(elsewhere.post(f"{SUBJ}/labs", json=lab()), 403)["detail"]


def test_medical_coding_by_a_data_manager(runtime_with_child: Runtime) -> None:
    api_client(runtime_with_child, "coordinator", site="JLU1").post(
        f"{SUBJ}/adverse-events", json=AE).raise_for_status()
    dm = api_client(runtime_with_child, "data_manager")
    coded = dm.patch(f"{SUBJ}/adverse-events/AE1",
                     json={"field": "meddra_pt", "value": "10015150", "reason": REASON})
    assert coded.status_code == 200, coded.text
    refused = dm.patch(f"{SUBJ}/adverse-events/AE1",
                       json={"field": "term", "value": "Rash", "reason": REASON})
    assert "enter" in problem(refused, 403)["detail"]


def test_a_record_of_another_kind_is_not_found_404(runtime_with_child: Runtime) -> None:
    client = api_client(runtime_with_child, "coordinator", site="JLU1")
    client.post(f"{SUBJ}/adverse-events", json=AE).raise_for_status()
    wrong = client.patch(f"{SUBJ}/labs/AE1",
                         json={"field": "grade", "value": 2, "reason": REASON})
    assert "labs" in problem(wrong, 404)["detail"]


def test_a_visit_outside_the_schedule_is_422_naming_visit(runtime_with_child: Runtime) -> None:
    client = api_client(runtime_with_child, "coordinator", site="JLU1")
    assert named(client.post(f"{SUBJ}/labs", json=lab(visit="M2")), 422) == ["visit"]


@pytest.mark.requirement("R9")
def test_a_signature_re_authenticates_its_signer(runtime_with_child: Runtime) -> None:
    inv = api_client(runtime_with_child, "investigator", site="JLU1", username="inv")
    body = {"meaning": "responsibility", "username": "inv", "password": "wrong"}
    wrong = inv.post(f"{SUBJ}/signatures", json=body)
    problem(wrong, 401)
    assert wrong.headers["www-authenticate"] == "Bearer"
    other = api_client(runtime_with_child, "investigator", site="JLU1", username="other")
    not_own = other.post(f"{SUBJ}/signatures", json={**body, "password": "inv-password"})
    assert "username" in problem(not_own, 403)["detail"]
    signed = inv.post(f"{SUBJ}/signatures", json={**body, "password": "inv-password"})
    assert signed.status_code == 201, signed.text


def test_a_locked_study_is_423_for_enrolment_and_writes(runtime_with_child: Runtime) -> None:
    api_client(runtime_with_child, "data_manager").post(
        f"{S}/lock", json={"reason": REASON}).raise_for_status()
    client = api_client(runtime_with_child, "coordinator", site="JLU1")
    problem(client.post(f"{SUBJ}/labs", json=lab()), 423)
    enrolment = client.post(f"{S}/subjects", json={
        "subject": "002", "site": "JLU1", "date_of_birth": "2010-05-01", "sex": "F",
        "disease": "SLE", "consent_date": "2021-01-10", "arm": "IL2",
        "enrolled_on": "2021-01-10", "screening": {}})
    problem(enrolment, 423)


def test_a_judgement_change_without_reason_is_422_naming_reason(
        runtime_with_child: Runtime) -> None:
    client = api_client(runtime_with_child, "coordinator", site="JLU1")
    client.post(f"{SUBJ}/adverse-events", json=AE).raise_for_status()
    update = client.post(f"{SUBJ}/adverse-events/AE1/updates", json={
        "observed_at": (T0 + timedelta(days=2)).isoformat(),
        "changes": {"relationship": "not_related"}})
    assert named(update, 422) == ["reason"]


def test_a_stale_if_match_is_412(runtime_with_child: Runtime) -> None:
    client = api_client(runtime_with_child, "coordinator", site="JLU1")
    version = client.get(SUBJ).headers["etag"]
    client.post(f"{SUBJ}/labs", json=lab(), headers={"If-Match": version}).raise_for_status()
    stale = client.post(f"{SUBJ}/labs", json=lab("LB2"), headers={"If-Match": version})
    assert "version" in problem(stale, 412)["detail"]
