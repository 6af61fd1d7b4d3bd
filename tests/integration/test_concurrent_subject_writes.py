"""Writes of one subject sent at once, without If-Match, are all stored: a process takes its
writes of one subject in turns, and a write refused for another process's, committed first,
runs again on the latest state. One that still loses is told to retry, without the
database's own words, and its Idempotency-Key is freed for the retry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from application.runtime import Runtime
from domain import service
from domain.errors import ConcurrentWrite
from tests.support import T0, api_client, study_with_a_child

SUBJECT = "/v1/studies/NCT04397107/subjects/001"


def _lab(n: int) -> dict[str, object]:
    return {"observed_at": (T0 + timedelta(days=1)).isoformat(), "code": "C3",
            "value": 0.5 + n / 100, "unit": "g/L"}


def test_writes_of_one_subject_sent_at_once_are_all_stored(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    client = api_client(runtime, "coordinator", site="JLU1")
    before = client.get(SUBJECT).json()["version"]
    # One event loop for every request, as a server process has.
    with client, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda n: client.post(f"{SUBJECT}/labs", json=_lab(n)),
                                range(12)))
    assert [a.status_code for a in answers] == [201] * 12, [a.text for a in answers]
    assert sorted(a.json()["version"] for a in answers) == list(range(before + 1, before + 13))


def test_a_write_refused_for_another_process_s_is_told_to_retry_and_frees_its_key(
        runtime: Runtime, other_runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    study_with_a_child(runtime)
    client = api_client(runtime, "coordinator", site="JLU1")
    elsewhere = TestClient(create_app(other_runtime))
    elsewhere.headers["Authorization"] = client.headers["Authorization"]
    path, headers = f"{SUBJECT}/labs", {"Idempotency-Key": "lab-race"}

    # The other process has the subject cached; this one writes it meanwhile.
    assert elsewhere.get(SUBJECT).status_code == 200
    assert client.post(path, json=_lab(1)).status_code == 201
    # By default the refused write runs again on the latest state, and is stored.
    assert elsewhere.post(path, json=_lab(2)).status_code == 201

    assert client.post(path, json=_lab(3)).status_code == 201
    monkeypatch.setattr(service, "CONFLICT_ATTEMPTS", 1)  # no second attempt
    refused = elsewhere.post(path, json=_lab(4), headers=headers)
    assert refused.status_code == 409, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["detail"] == str(ConcurrentWrite())  # no constraint, id, version
    # The retry runs (the refusal was not kept as the key's answer), and on the latest state.
    monkeypatch.undo()
    retried = elsewhere.post(path, json=_lab(4), headers=headers)
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers



def test_a_stale_if_match_is_not_told_to_retry_and_keeps_its_answer(runtime: Runtime) -> None:
    # A 412 can never pass by being sent again: no Retry-After, and its key replays it.
    study_with_a_child(runtime)
    client = api_client(runtime, "coordinator", site="JLU1")
    stale = client.get(SUBJECT).json()["version"]
    assert client.post(f"{SUBJECT}/labs", json=_lab(1)).status_code == 201
    headers = {"Idempotency-Key": "stale", "If-Match": f'"{stale}"'}
    refused = client.post(f"{SUBJECT}/labs", json=_lab(2), headers=headers)
    assert refused.status_code == 412, refused.text
    assert "retry-after" not in refused.headers
    again = client.post(f"{SUBJECT}/labs", json=_lab(2), headers=headers)
    assert again.status_code == 412
    assert again.headers["idempotent-replayed"] == "true"
