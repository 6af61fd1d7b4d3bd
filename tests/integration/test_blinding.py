"""Blinding-aware views, over HTTP: a blinded monitor walks every read endpoint of the
OpenAPI schema, every export format and the console's pages, and the study's arm and drug
names appear in no answer; an unblinded regulator sees them; an investigator's emergency
unblinding of one subject is recorded with its reason and shows that subject to them only."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pypdf import PdfReader

from api.app import create_app
from application.runtime import Runtime
from domain.blinding import MASK
from domain.envelope import Actor, Reason
from domain.studies import nct04397107
from tests.support import SITE, T0, add_person, api_client, envelope, simulated_clock

BLIND = "NCT09999901"
S = f"/v1/studies/{BLIND}"
ARMS = {"QXARM": "Quillwort regimen", "ZYARM": "Zephyr regimen"}
DRUG, DRUG_NAME = "QXDRUG", "Quillwortase"
# What would unblind: the arm codes and names, the drug's code and name.
SECRETS = (*ARMS, *ARMS.values(), DRUG, DRUG_NAME)
INVESTIGATOR = Actor("u-inv", "Wang Fang", "investigator", SITE)
WHY = Reason("transcription_error", "checked against the source document")
EXPORTS = ("odm-snapshot", "odm-archive", "csv", "dataset-json", "dataset-ndjson", "xpt",
           "casebook", "bundle")


def blinded_definition() -> dict[str, Any]:
    """NCT04397107's protocol as a double-blind study with arms and a drug of its own."""
    definition = nct04397107.definition()
    product = definition["products"][0]
    return {**definition, "study_id": BLIND, "endpoints": [],
            "arms": [{"code": code, "name": name} for code, name in ARMS.items()],
            "products": [{**product, "code": DRUG, "name": DRUG_NAME}],
            "blinding": {"items": ["arm", "actual_arm", "doses.drug"],
                         "roles": ["investigator", "coordinator", "monitor", "data_manager"],
                         "unblinding_roles": ["investigator"]}}


def _seed(runtime: Runtime) -> None:
    clock = simulated_clock()
    app = runtime.study(BLIND, clock=clock)
    app.register_study(blinded_definition(), envelope())
    meanings = app.definition().signature_meanings
    for code, arm in zip(("001", "002"), ARMS, strict=True):
        app.enroll_subject(code, SITE, T0.date().replace(year=2010), "F", "SLE", T0.date(),
                           nct04397107.ELIGIBLE_SCREENING_ANSWERS, arm, T0.date(), envelope())
        clock.set(T0 + timedelta(days=1))
        app.on_subject(code, lambda s, t: s.record_vital_signs(
            "VS1", T0, {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.0, "kg")}, envelope(), t))
        app.on_subject(code, lambda s, t: s.administer_dose(
            "DS1", T0 + timedelta(days=1), DRUG, 600000.0, "IU", "SC", envelope(), t))
        clock.set(T0 + timedelta(days=2))
        app.on_subject(code, lambda s, t: s.correct("DS1", "dose", 610000.0,
                                                    envelope(reason=WHY), t))
        app.on_subject(code, lambda s, t: s.record_lab_result("LB1", T0, "C3", 0.8, "g/L",
                                                              envelope(), t))
        app.on_subject(code, lambda s, t: s.sign("SIG1", "approval", meanings, INVESTIGATOR,
                                                 envelope(INVESTIGATOR), t))
    app.close()
    runtime.seal(BLIND, force_checkpoint=True)


def _value(schema: dict[str, Any]) -> str:
    """A value of a required query parameter's type."""
    if schema.get("format") == "date-time":
        return datetime(2030, 1, 1, tzinfo=UTC).isoformat()
    if schema.get("type") == "integer":
        return "1"
    return "x"


def _requests(client: TestClient) -> list[tuple[str, dict[str, str]]]:
    """Every GET of the OpenAPI schema, its study and subject filled in (each export format
    and review filter, and the casebook as of a past time and at a clinical time too)."""
    schema = client.get("/openapi.json").json()
    calls: list[tuple[str, dict[str, str]]] = []
    for path, operations in sorted(schema["paths"].items()):
        if "get" not in operations:
            continue
        params: dict[str, str] = {}
        formats: list[str] = [""]
        for parameter in operations["get"].get("parameters", []):
            if parameter["in"] == "path" and parameter["name"] == "export_format":
                formats = list(parameter["schema"]["enum"])
            elif parameter["in"] == "query" and parameter.get("required"):
                params[parameter["name"]] = _value(parameter["schema"])
        url = path.replace("{study}", BLIND).replace("{subject}", "001")
        for export_format in formats:
            calls.append((url.replace("{export_format}", export_format), params))
    assert {f"{S}/exports/{f}" for f in EXPORTS} <= {url for url, _ in calls}
    past = (T0 + timedelta(days=1, hours=12)).isoformat()
    calls += [(f"{S}/subjects/001", {"as_of": past}), (f"{S}/subjects/001", {"valid_at": past}),
              (f"{S}/diff", {"from": (T0 - timedelta(days=1)).isoformat(),
                             "to": datetime(2030, 1, 1, tzinfo=UTC).isoformat()}),
              (f"{S}/ledger/proofs/inclusion", {"event": "2"})]
    calls += [(f"{S}/audit", {"review": name}) for name in (
        "after-signature", "after-lock", "sponsor-staff", "late-entry", "frequent-critical")]
    return calls


def _walk(client: TestClient) -> dict[tuple[str, str], tuple[int, bytes]]:
    answers = {}
    for url, params in _requests(client):
        response = client.get(url, params=params)
        assert response.status_code < 500, (url, response.text)
        answers[(url, str(sorted(params.items())))] = (response.status_code, response.content)
    return answers


def _console(runtime: Runtime, username: str, password: str) -> TestClient:
    client = TestClient(create_app(runtime), follow_redirects=False)
    form = client.get("/ui/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    signed = client.post("/ui/sign-in", data={"username": username, "password": password,
                                              "csrf": csrf.group(1)})
    assert signed.status_code == 303, signed.text
    return client


def _readable(body: bytes) -> bytes:
    """The body with what a zip holds unpacked and a PDF's text extracted (compressed bytes
    would hide any name)."""
    if body.startswith(b"PK"):
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return b"\n".join(_readable(archive.read(name)) for name in archive.namelist())
    if body.startswith(b"%PDF"):
        return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(body)).pages
                         ).encode()
    return body


def _leaks(body: bytes) -> list[str]:
    text = _readable(body)
    return [secret for secret in SECRETS if secret.encode() in text]


@pytest.fixture
def blinded(runtime: Runtime) -> Runtime:
    _seed(runtime)
    return runtime


@pytest.mark.requirement("R20")
def test_a_blinded_monitor_never_sees_the_allocation(blinded: Runtime) -> None:
    monitor = api_client(blinded, "monitor", study=BLIND)
    answers = _walk(monitor)
    leaks = {key: _leaks(body) for key, (_, body) in answers.items() if _leaks(body)}
    assert leaks == {}
    ok = {url for (url, _), (status, _) in answers.items() if status == 200}
    # The reads that hold blinded items answered, masked.
    for url in (f"{S}", f"{S}/subjects", f"{S}/subjects/001", f"{S}/subjects/001/history",
                f"{S}/audit", f"{S}/diff"):
        assert url in ok, url
    book = monitor.get(f"{S}/subjects/001").json()
    assert book["arm"] == MASK and book["records"]["doses"][0]["fields"]["drug"] == MASK
    assert book["records"]["doses"][0]["fields"]["dose"] == 610000.0  # what is not blinded stays
    # By-arm answers and exports are refused, saying why.
    outcomes = monitor.get(f"{S}/outcomes")
    assert outcomes.status_code == 403 and "blinded" in outcomes.text
    # The console's pages, signed in as the same kind of person.
    password = add_person(blinded, "console-monitor", "monitor", study=BLIND, site=SITE)
    console = _console(blinded, "console-monitor", password)
    for page in (f"/ui/studies/{BLIND}", f"/ui/studies/{BLIND}/subjects/001",
                 f"/ui/studies/{BLIND}/subjects/001/history", f"/ui/studies/{BLIND}/audit",
                 f"/ui/studies/{BLIND}/diff?from={T0.isoformat()}",
                 f"/ui/studies/{BLIND}/sdv", f"/ui/studies/{BLIND}/audit.csv"):
        answer = console.get(page)
        assert answer.status_code == 200, (page, answer.text)
        assert _leaks(answer.content) == [], page
    # Pages by arm or of exports are refused (an error page), and show no arm either.
    for page in (f"/ui/studies/{BLIND}/outcomes", f"/ui/studies/{BLIND}/regulator",
                 f"/ui/studies/{BLIND}/exports/csv"):
        answer = console.get(page)
        assert answer.status_code < 500 and _leaks(answer.content) == [], page


def test_blinded_exporters_are_refused_and_unblinded_ones_see_the_arms(
        blinded: Runtime) -> None:
    data_manager = api_client(blinded, "data_manager", study=BLIND)
    for export_format in EXPORTS:
        refused = data_manager.get(f"{S}/exports/{export_format}")
        assert refused.status_code == 403 and "blinded" in refused.text, export_format
    regulator = api_client(blinded, "regulator", study=BLIND)
    answers = _walk(regulator)
    seen = {secret for _, body in answers.values() for secret in _leaks(body)}
    assert seen >= {*ARMS, DRUG}
    assert "QXARM" in regulator.get(f"{S}/subjects/001").json()["arm"]
    assert regulator.get(f"{S}/outcomes").status_code == 200
    csv = regulator.get(f"{S}/exports/csv")
    assert csv.status_code == 200 and _leaks(csv.content)
    casebooks = regulator.get(f"{S}/exports/casebook")
    assert casebooks.status_code == 200 and "QXARM" in _leaks(casebooks.content)


@pytest.mark.requirement("R20")
def test_emergency_unblinding_is_recorded_and_shows_that_subject_to_its_author(
        blinded: Runtime) -> None:
    investigator = api_client(blinded, "investigator", study=BLIND, site=SITE)
    masked_copy = investigator.get(f"{S}/subjects/001")
    assert masked_copy.json()["arm"] == MASK
    no_reason = investigator.post(f"{S}/unblindings", json={"subject": "001"})
    assert no_reason.status_code == 422, no_reason.text
    monitor = api_client(blinded, "monitor", study=BLIND)
    refused = monitor.post(f"{S}/unblindings", json={"subject": "001", "reason": {
        "code": "other", "text": "curious"}})
    assert refused.status_code == 403
    done = investigator.post(f"{S}/unblindings", json={"subject": "001", "reason": {
        "code": "other", "text": "emergency: anaphylaxis, treatment depends on the arm"}})
    assert done.status_code == 201, done.text
    assert investigator.get(f"{S}/subjects/001").json()["arm"] == "QXARM"
    # A copy of the masked view is not "not modified": the view changed.
    assert investigator.get(f"{S}/subjects/001", headers={
        "If-None-Match": masked_copy.headers["ETag"]}).json()["arm"] == "QXARM"
    assert investigator.get(f"{S}/subjects/002").json()["arm"] == MASK
    subjects = {s["subject"]: s["arm"] for s in investigator.get(f"{S}/subjects").json()}
    assert subjects == {"001": "QXARM", "002": MASK}
    # The monitor stays blind, and reads the unblinding in the audit trail with its reason.
    assert monitor.get(f"{S}/subjects/001").json()["arm"] == MASK
    rows = monitor.get(f"{S}/audit", params={"event_type": "SubjectUnblinded"}).json()
    [row] = rows["entries"]
    assert row["role"] == "investigator" and row["new_value"] == {"subject_code": "001"}
    assert row["reason_text"] == "emergency: anaphylaxis, treatment depends on the arm"
    again = investigator.post(f"{S}/unblindings", json={"subject": "001", "reason": {
        "code": "other", "text": "again"}})
    assert again.status_code == 409


def test_an_open_study_masks_nothing_and_cannot_be_unblinded(runtime: Runtime) -> None:
    from tests.support import study_with_a_child

    study_with_a_child(runtime)
    monitor = api_client(runtime, "monitor")
    assert monitor.get("/v1/studies/NCT04397107/subjects/001").json()["arm"] == "IL2"
    investigator = api_client(runtime, "investigator")
    refused = investigator.post("/v1/studies/NCT04397107/unblindings", json={
        "subject": "001", "reason": {"code": "other", "text": "emergency"}})
    assert refused.status_code == 409, refused.text


def test_a_bad_blinding_declaration_is_refused_naming_its_field(runtime: Runtime) -> None:
    admin = api_client(runtime, "admin", study=BLIND)
    bad = {**blinded_definition(), "blinding": {"items": ["arm"], "roles": ["sponsor"]}}
    refused = admin.post("/v1/studies", json=bad)
    assert refused.status_code == 422, refused.text
    assert "blinding.roles" in refused.text
    assert admin.get(S).status_code == 404  # nothing stored
    registered = admin.post("/v1/studies", json=blinded_definition())
    assert registered.status_code == 201, registered.text
    assert registered.json()["definition"]["blinding"]["roles"] == [
        "investigator", "coordinator", "monitor", "data_manager"]
