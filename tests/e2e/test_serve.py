"""`trialledger serve` as a real process (uvicorn on loopback, real PostgreSQL), played through
the whole workflow over HTTP by every role, from the first admin to the regulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from domain.studies import nct04397107
from tests.support import free_port, wait_until_ready
from trialledger_client import (
    Client,
    Forbidden,
    Locked,
    NotFound,
    Reason,
    StaleVersion,
    Unauthorized,
)

pytestmark = pytest.mark.slow  # every test here starts real servers

STUDY = nct04397107.STUDY_ID
T0 = datetime(2021, 1, 11, 8, tzinfo=UTC)
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

    def client(self, username: str) -> Client:
        """A Python client signed in as ``username``."""
        client = Client(self.base)
        client.sign_in(username, password_of(username))
        return client


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


def test_the_whole_workflow_over_http(server: Server) -> None:
    admin = server.client("ada")
    admin.register_study(nct04397107.definition())
    for username, (name, role, site) in PEOPLE.items():
        admin.add_user(username, name, password_of(username),
                       roles=[{"role": role, "study": STUDY, "site": site}],
                       identity_verified_by="hospital badge checked in person")
    coordinator, investigator, monitor, data_manager, regulator = (
        server.client(u) for u in PEOPLE)

    # The coordinator enrolls a child and enters vitals and a C3 result.
    coordinator.enrol(STUDY, "001", site="JLU1", date_of_birth=date(2010, 5, 1), sex="F",
                      disease="SLE", consent_date=date(2021, 1, 10), arm="IL2",
                      enrolled_on=date(2021, 1, 10),
                      screening=nct04397107.ELIGIBLE_SCREENING_ANSWERS)
    coordinator.record_vitals(STUDY, "001", record_id="VS1", observed_at=T0, visit="BASELINE",
                              measurements={"HEIGHT": (142.0, "cm"), "WEIGHT": (36.5, "kg")})
    lab = coordinator.record_lab(STUDY, "001", record_id="LB1", observed_at=T0,
                                 visit="BASELINE", code="C3", value=0.8, unit="g/L")
    before_correction = lab.recorded_at + timedelta(microseconds=1)

    # The monitor queries it; the coordinator corrects it in answer, with a reason (If-Match:
    # the version the coordinator read, sent by the client).
    monitor.open_query(STUDY, "001", query_id="Q1", record_id="LB1", field="value",
                       text="0.8 does not match the lab report")
    time.sleep(0.01)
    read = coordinator.casebook(STUDY, "001")
    corrected = coordinator.correct(STUDY, "001", "labs", "LB1", field="value", value=0.6,
                                    query_id="Q1", reason=Reason(
                                        code="transcription_error", text="lab report says 0.6"))
    # The same If-Match again is stale now.
    with pytest.raises(StaleVersion):
        coordinator.correct(STUDY, "001", "labs", "LB1", field="value", value=0.7,
                            version=read.version,
                            reason=Reason(code="transcription_error", text="stale"))
    book = monitor.casebook(STUDY, "001")
    assert book.queries["Q1"]["status"] == "answered"
    # The answer (the last event written) names the correction just before it.
    answer = book.queries["Q1"]["answers"][0]
    assert answer["correction_version"] == corrected.version - 1
    assert answer["text"] == "lab report says 0.6"
    monitor.close_query(STUDY, "001", "Q1", text="resolved")

    # The investigator signs, re-entering username and password.
    investigator.casebook(STUDY, "001")
    with pytest.raises(Unauthorized):
        investigator.sign(STUDY, "001", meaning="approval", username="wfang",
                          password="not-the-password")
    investigator.sign(STUDY, "001", signature_id="SIG1", meaning="approval", username="wfang",
                      password=password_of("wfang"))
    signature = regulator.casebook(STUDY, "001").signatures["SIG1"]
    assert signature["status"] == "valid"
    assert signature["printed_name"] == "Dr Wang Fang"
    assert signature["meaning_text"] == nct04397107.definition()["signature_meanings"][2]["text"]
    assert datetime.fromisoformat(signature["signed_at"]).utcoffset() == timedelta(0)

    # A later correction invalidates the signature, visibly; the history keeps both.
    coordinator.casebook(STUDY, "001")
    coordinator.correct(STUDY, "001", "labs", "LB1", field="reference_low", value=0.9,
                        reason=Reason(code="source_document_updated",
                                      text="range added from the report"))
    signature = regulator.casebook(STUDY, "001").signatures["SIG1"]
    assert signature["status"] == "invalidated"
    signature_rows = [e for e in monitor.history(STUDY, "001", page_size=1000)
                      if e.field == "signature"]
    assert [e.new_value["status"] for e in signature_rows] == ["valid", "invalidated"]

    # The data manager locks the casebook; an edit after the lock is refused, nothing stored.
    data_manager.casebook(STUDY, "001")
    data_manager.lock_subject(STUDY, "001", reason=Reason(code="database_lock",
                                                          text="casebook complete"))
    version = regulator.casebook(STUDY, "001").version
    coordinator.casebook(STUDY, "001")
    with pytest.raises(Locked):
        coordinator.record_lab(STUDY, "001", observed_at=T0 + timedelta(days=31), code="C4",
                               value=0.1, unit="g/L")
    assert regulator.casebook(STUDY, "001").version == version

    # The regulator reads the casebook as it stood before the correction: the old value.
    past = regulator.casebook(STUDY, "001", as_of=before_correction)
    assert past.record("LB1").fields["value"] == 0.8
    assert regulator.casebook(STUDY, "001").record("LB1").fields["value"] == 0.6
    # ... and may not write.
    with pytest.raises(Forbidden):
        regulator.record_lab(STUDY, "001", observed_at=T0 + timedelta(days=31), code="C4",
                             value=0.1, unit="g/L")

    # Every request is in the access log with its id, person, route, status and latency.
    entries = [json.loads(line) for line in server.log.read_text().splitlines()
               if line.startswith("{") and '"request"' in line]
    locked_out = [e for e in entries if e["status"] == 423]
    assert locked_out and locked_out[0]["person"] == "lwei"
    assert locked_out[0]["route"] == "/v1/studies/{study}/subjects/{subject}/labs"
    assert all({"request_id", "client", "latency_ms"} <= set(e) for e in entries)


def test_the_server_seals_in_the_background(server: Server) -> None:
    admin = server.client("ada")
    admin.register_study(nct04397107.definition())
    admin.add_user("inspector", "Ines Pector", password_of("inspector"),
                   roles=[{"role": "regulator", "study": STUDY, "site": "*"}])
    regulator = server.client("inspector")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            checkpoint = regulator.checkpoint(STUDY)
        except NotFound:
            time.sleep(0.5)
            continue
        # keyring opened + key registered + study registered
        assert checkpoint["tree_size"] == 3
        return
    pytest.fail("no checkpoint was written by the background sealer")
