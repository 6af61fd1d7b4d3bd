"""The skeleton's HTTP surface: health, and a casebook now and as of a past time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from application.runtime import Runtime
from tests.support import (
    T0,
    api_client,
    enroll,
    register,
    simulated_clock,
    study_with_a_corrected_lab,
)


@pytest.mark.requirement("R13")
def test_casebook_now_and_as_of(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    client = api_client(runtime)

    assert client.get("/healthz").json() == {"status": "ok"}
    now = client.get("/v1/studies/NCT04397107/subjects/001").json()
    assert now["records"]["labs"][0]["fields"]["value"] == 0.6
    past = client.get("/v1/studies/NCT04397107/subjects/001",
                      params={"as_of": (T0 + timedelta(days=5)).isoformat()}).json()
    assert past["records"]["labs"][0]["fields"]["value"] == 0.8


def test_errors_are_problem_json_naming_the_field(runtime: Runtime) -> None:
    app = runtime.study("NCT04397107", clock=simulated_clock())
    register(app)
    enroll(app, "001")
    client = api_client(runtime)
    naive = client.get("/v1/studies/NCT04397107/subjects/001",
                       params={"as_of": "2021-02-01T00:00:00"})
    assert naive.status_code == 422
    assert naive.headers["content-type"] == "application/problem+json"
    assert naive.json()["errors"][0]["field"] == "as_of"
    garbage = client.get("/v1/studies/NCT04397107/subjects/001", params={"as_of": "yesterday"})
    assert garbage.status_code == 422
    assert garbage.json()["errors"][0]["field"] == "as_of"
    missing = client.get("/v1/studies/NCT04397107/subjects/999")
    assert missing.status_code == 404
    assert client.get("/v1/studies/NOPE/subjects/001").status_code == 404
