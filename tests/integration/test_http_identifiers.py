"""Identifiers and times the server cannot hold are refused with 422 naming the field: study
ids up to the longest a PostgreSQL schema name allows, subject codes safe in URLs and as file
names on every OS, and times past the calendar's ends in UTC (issue 14, item 6)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from application.runtime import Runtime
from domain import identifiers
from domain.studies import nct04397107
from projections.casebook_doc import file_stem
from tests.support import T0, add_person, api_client, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
ENROLMENT = {"site": "JLU1", "date_of_birth": "2010-05-01", "sex": "F", "disease": "SLE",
             "consent_date": "2021-01-10", "screening": nct04397107.ELIGIBLE_SCREENING_ANSWERS,
             "arm": "IL2", "enrolled_on": "2021-01-10"}
# Valid ISO 8601, but 14 h past datetime.max once in UTC (and its mirror before year 1).
PAST_THE_END = "9999-12-31T23:59:59-14:00"
BEFORE_THE_START = "0001-01-01T00:00:00+14:00"


def _fields(response: Any) -> list[str]:
    return [e["field"] for e in response.json().get("errors", [])]


@pytest.fixture
def admin(runtime: Runtime) -> TestClient:
    """A client signed in as an admin of every study."""
    password = add_person(runtime, "root-admin", "admin", study="*")
    client = TestClient(create_app(runtime))
    token = client.post("/v1/auth/token", json={"username": "root-admin", "password": password})
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


@pytest.fixture
def enrolled(runtime: Runtime) -> Iterator[Runtime]:
    """NCT04397107 with child 001 and a lab entered a day later."""
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + timedelta(days=1))
    app.on_subject("001", lambda s, t: s.record_lab_result("LB1", T0, "C3", 0.8, "g/L",
                                                           envelope(), t))
    app.close()
    yield runtime


def _definition(study_id: str) -> dict[str, Any]:
    definition = nct04397107.definition()
    return {**definition, "study_id": study_id}


def test_the_longest_study_id_works_end_to_end_and_one_more_is_422(
        runtime: Runtime, admin: TestClient) -> None:
    longest = "S" + "x" * (identifiers.STUDY_ID - 1)
    registered = admin.post("/v1/studies", json=_definition(longest))
    assert registered.status_code == 201, registered.text
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    runtime.directory().record("coordinator-JLU1", lambda u: u.grant(
        "coordinator", longest, "JLU1", envelope(), runtime.directory().clock.now()))
    enrolled = coordinator.post(f"/v1/studies/{longest}/subjects",
                                json={**ENROLMENT, "subject": "01-701-1015"})
    assert enrolled.status_code == 201, enrolled.text
    read = coordinator.get(f"/v1/studies/{longest}/subjects/01-701-1015")
    assert read.status_code == 200, read.text

    too_long = admin.post("/v1/studies", json=_definition(longest + "x"))
    assert too_long.status_code == 422
    assert _fields(too_long) == ["study_id"]


@pytest.mark.parametrize("study_id", ["CON", "nul", "-lead", "a.b", "a/b", "é1"])
def test_a_study_id_unsafe_as_a_name_is_refused(admin: TestClient, study_id: str) -> None:
    refused = admin.post("/v1/studies", json=_definition(study_id))
    assert refused.status_code == 422, refused.text
    assert _fields(refused) == ["study_id"]


def test_the_openapi_states_the_identifier_rules(admin: TestClient) -> None:
    schemas = admin.get("/openapi.json").json()["components"]["schemas"]
    study_id = schemas["StudyIn"]["properties"]["study_id"]
    subject = schemas["EnrollmentIn"]["properties"]["subject"]
    assert (study_id["maxLength"], study_id["pattern"]) == (
        identifiers.STUDY_ID, identifiers.STUDY_ID_PATTERN)
    assert (subject["maxLength"], subject["pattern"]) == (
        identifiers.SUBJECT_CODE, identifiers.SUBJECT_CODE_PATTERN)


@pytest.mark.parametrize("code", ["a/b", "a\\b", "CON", "con.txt", "LPT1", "COM9", "x.",
                                  "x ", "a:b", "..", "x" * (identifiers.SUBJECT_CODE + 1)])
def test_a_subject_code_unsafe_in_a_url_or_as_a_file_name_cannot_be_enrolled(
        enrolled: Runtime, code: str) -> None:
    coordinator = api_client(enrolled, "coordinator", site="JLU1")
    refused = coordinator.post(f"/v1/studies/{STUDY}/subjects",
                               json={**ENROLMENT, "subject": code})
    assert refused.status_code == 422, refused.text
    assert _fields(refused) == ["subject"]
    assert not enrolled.study(STUDY).is_subject(code)


def test_the_domain_refuses_an_unsafe_subject_code_whoever_calls(enrolled: Runtime) -> None:
    from domain.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        enroll(enrolled.study(STUDY), "AUX")
    assert [p.field for p in refused.value.problems] == ["subject_code"]


@pytest.mark.parametrize("code", ["CON", "aux.html", "Lpt3"])
def test_a_casebook_file_is_never_named_as_a_windows_device(code: str) -> None:
    stem = file_stem(code)
    assert stem != code and stem.startswith(code.replace(".", "_") + "-")


@pytest.mark.parametrize("when", [PAST_THE_END, BEFORE_THE_START])
@pytest.mark.parametrize(("path", "name"), [
    ("/subjects/001", "as_of"), ("/subjects/001", "valid_at"), ("/outcomes", "as_of"),
    ("/outcomes", "valid_at"),
    ("/audit", "from"), ("/audit", "to"), ("/exports/csv", "as_of")])
def test_a_time_the_server_cannot_represent_is_422_naming_the_parameter(
        enrolled: Runtime, path: str, name: str, when: str) -> None:
    reader = api_client(enrolled, "data_manager")
    answer = reader.get(f"/v1/studies/{STUDY}{path}", params={name: when})
    assert answer.status_code == 422, answer.text
    assert _fields(answer) == [name]


def test_a_body_time_the_server_cannot_represent_is_422_naming_the_field(
        enrolled: Runtime) -> None:
    coordinator = api_client(enrolled, "coordinator", site="JLU1")
    answer = coordinator.post(f"/v1/studies/{STUDY}/subjects/001/labs", json={
        "observed_at": PAST_THE_END, "code": "C3", "value": 0.8, "unit": "g/L"})
    assert answer.status_code == 422, answer.text
    assert _fields(answer) == ["observed_at"]

