"""Over HTTP: dose frequencies as a vocabulary, and derived values that follow a correction."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from application.runtime import Runtime
from domain.rules.dosing import FREQUENCY_CODES
from domain.studies import nct04397107
from tests.support import T0, api_client, enroll, envelope, register, simulated_clock

STUDY = f"/v1/studies/{nct04397107.STUDY_ID}"
SUBJECT = f"{STUDY}/subjects/001"
GIVEN = (T0 + timedelta(days=1)).isoformat()
HEIGHT, WEIGHT, CORRECTED_HEIGHT = 142.0, 36.0, 124.0
DOSE_IU = 500_000.0
METHOTREXATE = {"observed_at": GIVEN, "drug": "methotrexate", "category": "immunosuppressant",
                "dose_mg": 15.0, "frequency": "QW", "route": "PO"}


@pytest.fixture
def coordinator(runtime: Runtime) -> Iterator[TestClient]:
    clock = simulated_clock()
    app = runtime.study(nct04397107.STUDY_ID, clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + timedelta(days=1))
    app.on_subject("001", lambda s, t: s.record_vital_signs(
        "VS1", T0, {"HEIGHT": (HEIGHT, "cm"), "WEIGHT": (WEIGHT, "kg")}, envelope(), t))
    app.close()
    yield api_client(runtime, "coordinator", site="JLU1")


def _casebook(client: TestClient) -> dict[str, Any]:
    response = client.get(SUBJECT)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_schema_declares_the_dose_frequencies(coordinator: TestClient) -> None:
    schemas = coordinator.get("/openapi.json").json()["components"]["schemas"]
    for body in ("DoseIn", "TherapyIn"):
        frequency = schemas[body]["properties"]["frequency"]
        enums = [option.get("enum") for option in frequency.get("anyOf", [frequency])]
        assert list(FREQUENCY_CODES) in enums


def test_weekly_methotrexate_is_recorded_and_shown_as_weekly(coordinator: TestClient) -> None:
    response = coordinator.post(f"{SUBJECT}/therapies", json={**METHOTREXATE,
                                                              "record_id": "CM1"})
    assert response.status_code == 201, response.text
    (therapy,) = _casebook(coordinator)["records"]["therapies"]
    assert (therapy["fields"]["dose_mg"], therapy["fields"]["frequency"]) == (15.0, "QW")
    assert therapy["derived"]["daily_dose"]["value"] == 2.14  # 15 mg / 7 days


@pytest.mark.parametrize(("body", "field"), [
    ({**METHOTREXATE, "frequency": "weekly"}, "frequency"),  # not in the vocabulary
    ({k: v for k, v in METHOTREXATE.items() if k != "frequency"}, "frequency"),
    ({**METHOTREXATE, "dose_mg": None, "dose_mg_per_day": 15.0}, "frequency"),  # not daily
])
def test_a_frequency_outside_the_vocabulary_or_the_dose_is_refused(
        coordinator: TestClient, body: dict[str, Any], field: str) -> None:
    response = coordinator.post(f"{SUBJECT}/therapies", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert "therapies" not in _casebook(coordinator)["records"]


def test_a_height_correction_rederives_the_dose_per_m2_shown(coordinator: TestClient) -> None:
    response = coordinator.post(f"{SUBJECT}/doses", json={
        "record_id": "EX1", "observed_at": GIVEN, "drug": "IL2", "dose": DOSE_IU, "unit": "IU",
        "route": "SC", "frequency": "QD"})
    assert response.status_code == 201, response.text
    (dose,) = _casebook(coordinator)["records"]["doses"]
    assert dose["fields"]["frequency"] == "QD"
    bsa = round(math.sqrt(HEIGHT * WEIGHT / 3600), 3)
    assert dose["derived"]["dose_per_m2"]["value"] == round(DOSE_IU / bsa, 1)
    response = coordinator.patch(f"{SUBJECT}/vitals/VS1", json={
        "field": "HEIGHT", "value": CORRECTED_HEIGHT,
        "reason": {"code": "transcription_error", "text": "digits swapped"}})
    assert response.status_code == 200, response.text
    bsa = round(math.sqrt(CORRECTED_HEIGHT * WEIGHT / 3600), 3)  # 1.116 m²
    (dose,) = _casebook(coordinator)["records"]["doses"]
    assert dose["derived"]["dose_per_m2"]["value"] == round(DOSE_IU / bsa, 1)
    assert dose["derived"]["dose_per_m2"]["inputs"]["bsa_m2"] == bsa
