"""`trialledger serve` as a real process (uvicorn on loopback, real PostgreSQL), played through
from tests.support import free_port, wait_until_ready
the whole workflow over HTTP by every role, from the first admin to the regulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.studies import nct04397107
from tests.support import free_port, wait_until_ready

pytestmark = pytest.mark.slow  # every test here starts real servers

STUDY = nct04397107.STUDY_ID
SUBJECT = f"/v1/studies/{STUDY}/subjects/001"
def password_of(username: str) -> str:
    """Each person's password (one the password rules accept)."""
    return f"{username} amber canyon whistle"


PEOPLE = {
    "lwei": ("Li Wei", "coordinator", "JLU1"),
    "wfang": ("Dr Wang Fang", "investigator", "JLU1"),
    "mchen": ("Chen Mei", "monitor", "JLU1"),
    "zmin": ("Zhang Min", "data_manager", "*"),
    "inspector": ("Ines Pector", "regulator", "*"),
}




def _cli(*args: str, db_url: str, home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIALLEDGER_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "api.cli", *args, "--database-url", db_url],
                          input=stdin, env=env, capture_output=True, text=True, timeout=120)


@dataclass
class Server:
    """A served deployment: its base URL and the file its log goes to."""

    base: str
    log: Path

    def token(self, username: str) -> dict[str, str]:
        response = httpx.post(f"{self.base}/v1/auth/token",
                              json={"username": username, "password": password_of(username)})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


# One process, and two workers (sealing and projecting in the parent; the workers' reads
# catch the read tables up under a lock shared across processes).
@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def server(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    home = tmp_path / "home"
    bootstrap = _cli("users", "add", "--username", "ada", "--full-name", "Ada Admin",
                     "--role", "admin", "--study", "*", "--password-stdin",
                     db_url=db_url, home=home, stdin=f"{password_of('ada')}\n")
    assert bootstrap.returncode == 0, bootstrap.stderr
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "TRIALLEDGER_HOME": str(home)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--database-url", db_url,
             "--port", str(port), "--workers", str(request.param)], env=env, stdout=out,
            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, log, process)
        assert f"with {request.param} process" in log.read_text()
        yield Server(base, log)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_the_whole_workflow_over_http(server: Server) -> None:
    base = server.base
    admin = server.token("ada")
    _ok(httpx.post(f"{base}/v1/studies", json=nct04397107.definition(), headers=admin), 201)
    for username, (name, role, site) in PEOPLE.items():
        _ok(httpx.post(f"{base}/v1/users", headers=admin, json={
            "username": username, "full_name": name, "password": password_of(username),
            "roles": [{"role": role, "study": STUDY, "site": site}],
            "identity_verified_by": "hospital badge checked in person"}), 201)
    coordinator, investigator, monitor, data_manager, regulator = (
        server.token(u) for u in PEOPLE)

    # The coordinator enrolls a child and enters vitals and a C3 result.
    enrolment = {"subject": "001", "site": "JLU1", "date_of_birth": "2010-05-01", "sex": "F",
                 "disease": "SLE", "consent_date": "2021-01-10", "arm": "IL2",
                 "enrolled_on": "2021-01-10", "screening": nct04397107.ELIGIBLE_SCREENING_ANSWERS}
    _ok(httpx.post(f"{base}/v1/studies/{STUDY}/subjects", json=enrolment, headers=coordinator),
        201)
    _ok(httpx.post(f"{base}{SUBJECT}/vitals", headers=coordinator, json={
        "record_id": "VS1", "observed_at": "2021-01-11T08:00:00+00:00", "visit": "BASELINE",
        "measurements": {"HEIGHT": {"value": 142.0, "unit": "cm"},
                         "WEIGHT": {"value": 36.5, "unit": "kg"}}}), 201)
    lab = _ok(httpx.post(f"{base}{SUBJECT}/labs", headers=coordinator, json={
        "record_id": "LB1", "observed_at": "2021-01-11T08:00:00+00:00", "visit": "BASELINE",
        "code": "C3", "value": 0.8, "unit": "g/L"}), 201)
    before_correction = datetime.fromisoformat(lab["recorded_at"]) + timedelta(microseconds=1)

    # The monitor queries it; the coordinator corrects it in answer, with a reason.
    _ok(httpx.post(f"{base}{SUBJECT}/queries", headers=monitor, json={
        "query_id": "Q1", "record_id": "LB1", "field": "value",
        "text": "0.8 does not match the lab report"}), 201)
    time.sleep(0.01)
    read = httpx.get(f"{base}{SUBJECT}", headers=coordinator)
    corrected = httpx.patch(f"{base}{SUBJECT}/labs/LB1", headers={
        **coordinator, "If-Match": read.headers["etag"]}, json={
        "field": "value", "value": 0.6, "query_id": "Q1",
        "reason": {"code": "transcription_error", "text": "lab report says 0.6"}})
    _ok(corrected)
    # The same If-Match again is stale now.
    stale = httpx.patch(f"{base}{SUBJECT}/labs/LB1", headers={
        **coordinator, "If-Match": read.headers["etag"]}, json={
        "field": "value", "value": 0.7,
        "reason": {"code": "transcription_error", "text": "stale"}})
    assert stale.status_code == 412
    book = _ok(httpx.get(f"{base}{SUBJECT}", headers=monitor))
    assert book["queries"]["Q1"]["status"] == "answered"
    # The answer (the last event written) names the correction just before it.
    answer = book["queries"]["Q1"]["answers"][0]
    assert answer["correction_version"] == corrected.json()["version"] - 1
    assert answer["text"] == "lab report says 0.6"
    _ok(httpx.post(f"{base}{SUBJECT}/queries/Q1/close", headers=monitor,
                   json={"text": "resolved"}))

    # The investigator signs, re-entering username and password.
    wrong = httpx.post(f"{base}{SUBJECT}/signatures", headers=investigator, json={
        "meaning": "approval", "username": "wfang", "password": "not-the-password"})
    assert wrong.status_code == 401
    _ok(httpx.post(f"{base}{SUBJECT}/signatures", headers=investigator, json={
        "signature_id": "SIG1", "meaning": "approval", "username": "wfang",
        "password": password_of("wfang")}), 201)
    signature = _ok(httpx.get(f"{base}{SUBJECT}", headers=regulator))["signatures"]["SIG1"]
    assert signature["status"] == "valid"
    assert signature["printed_name"] == "Dr Wang Fang"
    assert signature["meaning_text"] == nct04397107.definition()["signature_meanings"][2]["text"]
    assert datetime.fromisoformat(signature["signed_at"]).utcoffset() == timedelta(0)

    # A later correction invalidates the signature, visibly; the history keeps both.
    _ok(httpx.patch(f"{base}{SUBJECT}/labs/LB1", headers=coordinator, json={
        "field": "reference_low", "value": 0.9,
        "reason": {"code": "source_document_updated", "text": "range added from the report"}}))
    signature = _ok(httpx.get(f"{base}{SUBJECT}", headers=regulator))["signatures"]["SIG1"]
    assert signature["status"] == "invalidated"
    history = _ok(httpx.get(f"{base}{SUBJECT}/history", headers=monitor,
                            params={"limit": 1000}))["entries"]
    signature_rows = [e for e in history if e["field"] == "signature"]
    assert [json.loads(json.dumps(e["new_value"]))["status"] for e in signature_rows] == [
        "valid", "invalidated"]

    # The data manager locks the casebook; an edit after the lock is refused, nothing stored.
    _ok(httpx.post(f"{base}{SUBJECT}/lock", headers=data_manager, json={
        "reason": {"code": "database_lock", "text": "casebook complete"}}))
    version = _ok(httpx.get(f"{base}{SUBJECT}", headers=regulator))["version"]
    refused = httpx.post(f"{base}{SUBJECT}/labs", headers=coordinator, json={
        "observed_at": "2021-02-11T08:00:00+00:00", "code": "C4", "value": 0.1, "unit": "g/L"})
    assert refused.status_code == 423
    assert _ok(httpx.get(f"{base}{SUBJECT}", headers=regulator))["version"] == version

    # The regulator reads the casebook as it stood before the correction: the old value.
    past = _ok(httpx.get(f"{base}{SUBJECT}", headers=regulator,
                         params={"as_of": before_correction.astimezone(UTC).isoformat()}))
    assert past["records"]["labs"][0]["fields"]["value"] == 0.8
    now = _ok(httpx.get(f"{base}{SUBJECT}", headers=regulator))
    assert now["records"]["labs"][0]["fields"]["value"] == 0.6
    # ... and may not write.
    assert httpx.post(f"{base}{SUBJECT}/labs", headers=regulator, json={
        "observed_at": "2021-02-11T08:00:00+00:00", "code": "C4", "value": 0.1,
        "unit": "g/L"}).status_code == 403

    # Every request is in the access log with its id, person, route, status and latency.
    entries = [json.loads(line) for line in server.log.read_text().splitlines()
               if line.startswith("{") and '"request"' in line]
    locked_out = [e for e in entries if e["status"] == 423]
    assert locked_out and locked_out[0]["person"] == "lwei"
    assert locked_out[0]["route"] == "/v1/studies/{study}/subjects/{subject}/labs"
    assert all({"request_id", "client", "latency_ms"} <= set(e) for e in entries)


def test_the_server_seals_in_the_background(server: Server) -> None:
    admin = server.token("ada")
    _ok(httpx.post(f"{server.base}/v1/studies", json=nct04397107.definition(), headers=admin),
        201)
    _ok(httpx.post(f"{server.base}/v1/users", headers=admin, json={
        "username": "inspector", "full_name": "Ines Pector", "password": password_of("inspector"),
        "roles": [{"role": "regulator", "study": STUDY, "site": "*"}]}), 201)
    regulator = server.token("inspector")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.base}/v1/studies/{STUDY}/ledger/checkpoint",
                             headers=regulator)
        if response.status_code == 200:
            # keyring opened + key registered + study registered
            assert response.json()["tree_size"] == 3
            return
        time.sleep(0.5)
    pytest.fail("no checkpoint was written by the background sealer")
