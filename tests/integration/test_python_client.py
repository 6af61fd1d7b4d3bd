"""The Python client (``trialledger_client``) against a real server: uvicorn on loopback in a
thread, serving a deployment on real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from application.runtime import Runtime
from domain.studies import nct04397107
from infra.postgres import temporary_database
from infra.settings import Settings
from tests.support import add_person, free_port, register, wait_until_ready
from trialledger_client import (
    AsyncClient,
    Client,
    InvalidInput,
    Reason,
    StaleVersion,
    Unauthorized,
)

pytestmark = pytest.mark.slow(seconds=40)  # a real server; people signed in; exports

STUDY = nct04397107.STUDY_ID
T0 = datetime(2021, 1, 11, 8, tzinfo=UTC)
TYPO = Reason(code="transcription_error", text="the lab report says otherwise")


@dataclass
class Served:
    """A served deployment: its URL and the runtime behind it (to register people)."""

    base: str
    runtime: Runtime

    def client(self, role: str, username: str | None = None, **options: object) -> Client:
        """A client signed in as a new person holding ``role`` at every site."""
        name = username or f"{role}-{len(self.people)}"
        self.people.append(name)
        password = add_person(self.runtime, name, role)
        client = Client(self.base, **options)  # type: ignore[arg-type]
        client.sign_in(name, password)
        return client

    people: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def served(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("client-home")
    with temporary_database(server_url, "tl_client") as url:
        runtime = Runtime(Settings(database_url=url, home=home), url)
        register(runtime.study(STUDY))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(runtime), host="127.0.0.1",
                                               port=port, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, home / "no-log")
            yield Served(base, runtime)
        finally:
            server.should_exit = True
            thread.join(timeout=20)
            runtime.close()


def _enrol(client: Client, subject: str) -> None:
    client.enrol(STUDY, subject, site="JLU1", date_of_birth=date(2010, 5, 1), sex="F",
                 disease="SLE", consent_date=date(2021, 1, 10),
                 screening=nct04397107.ELIGIBLE_SCREENING_ANSWERS, arm="IL2",
                 enrolled_on=date(2021, 1, 10))


def test_create_then_correct_with_if_match_sent_by_itself(served: Served) -> None:
    entering = served.client("coordinator")
    other = served.client("investigator")
    _enrol(entering, "101")
    written = entering.record_lab(STUDY, "101", observed_at=T0, code="C3", value=0.8,
                                  unit="g/L", record_id="LB1")
    assert entering.version(STUDY, "101") == written.version

    # Both read the casebook; one corrects; the other's correction is now on stale data.
    assert other.casebook(STUDY, "101").record("LB1").fields["value"] == 0.8
    entering.casebook(STUDY, "101")
    corrected = entering.correct(STUDY, "101", "labs", "LB1", field="value", value=0.6,
                                 reason=TYPO)
    assert corrected.version > written.version
    with pytest.raises(StaleVersion) as stale:
        other.correct(STUDY, "101", "labs", "LB1", field="value", value=0.7, reason=TYPO)
    assert stale.value.status == 412
    assert other.casebook(STUDY, "101").record("LB1").fields["value"] == 0.6

    # Read again, the same correction goes through.
    other.correct(STUDY, "101", "labs", "LB1", field="value", value=0.7, reason=TYPO)
    book = entering.casebook(STUDY, "101")
    assert book.record("LB1").fields["value"] == 0.7
    assert book.version == entering.version(STUDY, "101")
    # As it stood before the first correction, the old value; the version stays current.
    past = entering.casebook(STUDY, "101", as_of=corrected.recorded_at - timedelta(microseconds=1))
    assert past.record("LB1").fields["value"] == 0.8
    assert entering.version(STUDY, "101") == book.version


def test_refusals_are_typed_and_name_the_field(served: Served) -> None:
    client = served.client("coordinator")
    _enrol(client, "102")
    with pytest.raises(InvalidInput) as invalid:
        client.record_lab(STUDY, "102", observed_at=T0, code="C3", value=0.8, unit="furlongs")
    assert invalid.value.field_names == ["unit"]
    with pytest.raises(Unauthorized):
        Client(served.base).sign_in(served.people[-1], "not the password")


class LoseFirstAnswer(httpx.HTTPTransport):
    """A connection that breaks once, after the server answered a POST to ``path``: the
    write was stored but its answer never arrived. Records every key sent to ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and request.url.path == self.path:
            self.keys.append(request.headers["idempotency-key"])
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset after the answer", request=request)
        return response


def test_a_retry_after_a_lost_answer_sends_the_same_key_and_stores_one_event(
        served: Served) -> None:
    path = f"/v1/studies/{STUDY}/subjects/103/labs"
    transport = LoseFirstAnswer(path)
    client = served.client("coordinator", transport=transport)
    _enrol(client, "103")
    written = client.record_lab(STUDY, "103", observed_at=T0, code="C3", value=0.8,
                                unit="g/L", record_id="LB1")
    assert written.replayed
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    monitor = served.client("monitor")
    events = {e.position for e in monitor.audit_trail(STUDY, subject="103", record_id="LB1")}
    assert len(events) == 1
    # The next logical write has a key of its own, and is stored once more.
    again = client.record_lab(STUDY, "103", observed_at=T0, code="C4", value=0.1, unit="g/L",
                              record_id="LB2")
    assert not again.replayed
    assert len(transport.keys) == 3 and transport.keys[2] != transport.keys[0]


class ConflictFirst(httpx.HTTPTransport):
    """A server whose first answer to a POST to ``path`` is the 409 with Retry-After of a
    write refused for another's, committed first (the server freed its key). Records every
    key sent to ``path``."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == self.path:
            self.keys.append(request.headers["idempotency-key"])
            if len(self.keys) == 1:
                return httpx.Response(409, headers={"Retry-After": "1",
                                                    "Content-Type": "application/problem+json"},
                                      json={"title": "Conflict", "status": 409,
                                            "detail": "concurrent write, please re-read and retry"})
        return super().handle_request(request)


def test_a_write_refused_for_another_s_is_sent_again_with_its_key(served: Served) -> None:
    path = f"/v1/studies/{STUDY}/subjects/110/labs"
    transport = ConflictFirst(path)
    client = served.client("coordinator", transport=transport)
    _enrol(client, "110")
    written = client.record_lab(STUDY, "110", observed_at=T0, code="C3", value=0.8, unit="g/L")
    assert not written.replayed
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]


def test_the_audit_trail_pages_give_every_row_once(served: Served) -> None:
    client = served.client("coordinator")
    _enrol(client, "104")
    for n in range(6):
        client.record_lab(STUDY, "104", observed_at=T0 + timedelta(days=n), code="C3",
                          value=0.8 + n / 10, unit="g/L", record_id=f"LB{n}")
    monitor = served.client("monitor")
    whole = monitor.audit_page(STUDY, subject="104", limit=1000)
    assert whole.next_cursor is None and len(whole.entries) > 9
    paged = list(monitor.audit_trail(STUDY, subject="104", page_size=4))
    assert paged == whole.entries
    assert list(monitor.history(STUDY, "104", page_size=5)) == whole.entries


def test_the_monitoring_workflow_reads_and_an_export(served: Served, tmp_path: Path) -> None:
    coordinator = served.client("coordinator")
    investigator = served.client("investigator", username="wfang")
    monitor = served.client("monitor")
    data_manager = served.client("data_manager")
    _enrol(coordinator, "105")
    coordinator.record_vitals(STUDY, "105", observed_at=T0, visit="BASELINE",
                              measurements={"HEIGHT": (142.0, "cm"), "WEIGHT": (36.5, "kg")})
    coordinator.record_dose(STUDY, "105", observed_at=T0 + timedelta(hours=1), drug="IL2",
                            dose=600000, unit="IU", route="SC", frequency="QD", record_id="EX1")
    coordinator.start_therapy(STUDY, "105", observed_at=T0, drug="methotrexate",
                              category="immunosuppressant", route="PO", dose_mg=15,
                              frequency="QW", record_id="CM1")
    coordinator.record_assessment(STUDY, "105", observed_at=T0, instrument="SLEDAI",
                                  items={"arthritis": True}, record_id="QS1")
    coordinator.record_lab(STUDY, "105", observed_at=T0, code="C3", value=0.8, unit="g/L",
                           record_id="LB1")
    coordinator.report_adverse_event(
        STUDY, "105", observed_at=T0 + timedelta(days=1), term="Injection site reaction",
        category="injection_site_reaction", grade=1, serious=False, relationship="probable",
        action_taken="none", outcome="recovering", record_id="AE1")
    coordinator.update_adverse_event(STUDY, "105", "AE1", observed_at=T0 + timedelta(days=2),
                                     changes={"grade": 2})
    coordinator.remove(STUDY, "105", "labs", "LB1", reason=Reason(
        code="entered_in_error", text="entered in the wrong casebook"))

    query = monitor.open_query(STUDY, "105", record_id="EX1", field="dose", text="check dose",
                               query_id="Q1")
    assert query.record_id == "Q1"
    # Each writes on the version it last saw: each reads what the others wrote first.
    with pytest.raises(StaleVersion):
        coordinator.answer_query(STUDY, "105", "Q1", text="checked against the source")
    assert coordinator.casebook(STUDY, "105").queries["Q1"]["status"] == "open"
    coordinator.answer_query(STUDY, "105", "Q1", text="checked against the source")
    monitor.casebook(STUDY, "105")
    monitor.close_query(STUDY, "105", "Q1", text="resolved")
    monitor.verify_source(STUDY, "105", record_id="EX1")
    investigator.casebook(STUDY, "105")
    investigator.sign(STUDY, "105", meaning="approval", username="wfang",
                      password="wfang-password", signature_id="SIG1")

    book = monitor.casebook(STUDY, "105")
    assert book.queries["Q1"]["status"] == "closed"
    assert book.signatures["SIG1"]["status"] == "valid"
    assert "EX1" in book.sdv
    assert "labs" not in book.records
    assert book.record("AE1").fields["grade"] == 2
    assert book.record("CM1").fields["frequency"] == "QW"
    # At the onset, the adverse event's first grade was in force.
    then = monitor.casebook(STUDY, "105", valid_at=T0 + timedelta(days=1, hours=1))
    assert then.record("AE1").fields["grade"] == 1

    tables = monitor.outcomes(STUDY)
    assert tables["study_id"] == STUDY and tables["endpoints"]
    target = tmp_path / "csv.zip"
    size = data_manager.export(STUDY, "csv", target)
    assert size == target.stat().st_size > 0
    assert "audit_trail.csv" in {Path(n).name for n in zipfile.ZipFile(target).namelist()}
    into = io.BytesIO()
    data_manager.export(STUDY, "odm-snapshot", into)
    assert into.getvalue().startswith(b"<?xml")


def test_the_asyncio_client_writes_and_reads(served: Served) -> None:
    name = "async-coordinator"
    password = add_person(served.runtime, name, "coordinator")
    _enrol(served.client("coordinator"), "106")

    async def scenario() -> float:
        async with AsyncClient(served.base) as client:
            await client.sign_in(name, password)
            await client.record_lab(STUDY, "106", observed_at=T0, code="C3", value=0.9,
                                    unit="g/L", record_id="LB1")
            book = await client.casebook(STUDY, "106")
            value: float = book.record("LB1").fields["value"]
            return value

    assert asyncio.run(scenario()) == 0.9


def test_the_client_works_without_the_server_packages() -> None:
    # As installed alone: none of the server's packages can be imported.
    code = ("import sys\n"
            "for name in ('domain', 'application', 'projections', 'infra', 'api'):\n"
            "    sys.modules[name] = None\n"
            "import trialledger_client\n"
            "trialledger_client.Client('http://127.0.0.1:9').close()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
