"""Builders shared by the tests: envelopes, a registered study, an enrolled child."""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from domain.clock import SimulatedClock
from domain.envelope import Actor, Envelope, Reason
from domain.service import StudyApplication
from domain.studies import nct04397107

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from application.runtime import Runtime

SITE = "JLU1"
COORDINATOR = Actor("u-coord", "Li Wei", "coordinator", SITE)
DATA_MANAGER = Actor("u-dm", "Zhang Min", "data_manager", SITE)
T0 = datetime(2021, 1, 10, 9, 0, tzinfo=UTC)


def envelope(actor: Actor = COORDINATOR, reason: Reason | None = None,
             request_id: str = "req-1") -> Envelope:
    """An envelope from the test client."""
    return Envelope(actor=actor, client="test-client", source="api", request_id=request_id,
                    reason=reason)


def correction(text: str = "transcription error found at monitoring") -> Envelope:
    """An envelope carrying a reason, as every change after first entry needs."""
    return envelope(DATA_MANAGER, Reason("transcription_error", text))


def register(app: StudyApplication) -> None:
    """Register NCT04397107 on ``app``."""
    app.register_study(nct04397107.definition(), envelope())


def enroll(app: StudyApplication, code: str = "001", *, dob: date = date(2010, 5, 1),
           consent: date = date(2021, 1, 10), arm: str = "IL2", disease: str = "SLE",
           **answers: Any) -> None:
    """Consent, screen and enroll one child (eligible unless ``answers`` say otherwise)."""
    facts = {**nct04397107.ELIGIBLE_SCREENING_ANSWERS, **answers}
    app.enroll_subject(code, SITE, dob, "F", disease, consent, facts, arm, consent, envelope())


def simulated_clock(start: datetime = T0) -> SimulatedClock:
    """A clock the test moves."""
    return SimulatedClock(start)


def study_with_a_child(runtime: Runtime, *, lab: bool = False) -> None:
    """NCT04397107 with child 001 enrolled at T0; with ``lab``, a C3 of 0.8 g/L drawn at T0
    and entered on T0 + 1 day."""
    clock = simulated_clock()
    app = runtime.study(nct04397107.STUDY_ID, clock=clock)
    register(app)
    enroll(app, "001")
    if lab:
        clock.set(T0 + timedelta(days=1))
        app.on_subject("001", lambda s, t: s.record_lab_result(
            "LB1", T0, "C3", 0.8, "g/L", envelope(), t))
    app.close()


def study_with_a_corrected_lab(runtime: Runtime) -> None:
    """NCT04397107 with child 001 whose C3 of 0.8 g/L (entered T0 + 1 day) was corrected to
    0.6 g/L on T0 + 9 days."""
    clock = simulated_clock()
    app = runtime.study(nct04397107.STUDY_ID, clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + timedelta(days=1))
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB1", T0, "C3", 0.8, "g/L", envelope(), t))
    clock.set(T0 + timedelta(days=9))
    app.on_subject("001", lambda s, t: s.correct("LB1", "value", 0.6, correction(), t))
    app.close()


def three_children_sealed(runtime: Runtime) -> None:
    """NCT04397107 with children 001-003 enrolled an hour apart, each with a lab; sealed,
    with checkpoints after the second child (size 11) and the third (size 15)."""
    clock = simulated_clock()
    app = runtime.study(nct04397107.STUDY_ID, clock=clock)
    register(app)
    for n, code in enumerate(("001", "002", "003")):
        clock.set(T0 + timedelta(hours=n))
        enroll(app, code)
        app.on_subject(code, lambda s, t: s.record_lab_result(
            "LB1", T0, "C3", 0.8, "g/L", envelope(), t))
        if n == 1:
            runtime.seal(nct04397107.STUDY_ID, force_checkpoint=True)
    runtime.seal(nct04397107.STUDY_ID, force_checkpoint=True)
    app.close()


def add_person(runtime: Runtime, username: str, role: str, *, study: str = "NCT04397107",
               site: str = "*", full_name: str | None = None) -> str:
    """Register ``username`` (password ``<username>-password``) holding ``role``; return the
    password."""
    from infra.passwords import hash_password

    password = f"{username}-password"
    runtime.directory().register_user(
        username, full_name or username.title(), hash_password(password), envelope(),
        lambda user, at: user.grant(role, study, site, envelope(), at))
    return password


def api_client(runtime: Runtime, role: str = "regulator", *, site: str = "*",
               username: str | None = None, study: str = "NCT04397107") -> TestClient:
    """An in-process HTTP client signed in as a new person holding ``role`` at ``site``."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    name = username or f"{role}-{site}".replace("*", "all")
    password = add_person(runtime, name, role, site=site, study=study)
    client = TestClient(create_app(runtime))
    token = client.post("/v1/auth/token", json={"username": name, "password": password})
    assert token.status_code == 200, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


# How long a served process may take to answer /readyz: a wait, not a speed check (an
# embedded server's first start runs initdb; beside another full run on 2 cores, 30 s ran out).
SERVER_START_BOUND = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(base: str, log: Path, process: subprocess.Popen[bytes] | None = None,
                     bound: float = SERVER_START_BOUND) -> None:
    """Wait for the server at ``base`` to answer /readyz; otherwise (or if ``process`` ends
    first) kill ``process`` and fail the test with the server's log."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    if process is not None:
        process.kill()
        process.wait()
    pytest.fail(f"the server did not start: {log.read_text() if log.exists() else ''}")
