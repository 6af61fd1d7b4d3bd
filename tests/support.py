"""Builders shared by the tests: envelopes, a registered study, an enrolled child."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def start_serve(home: Path, log: Path, *args: str, cli_options: Sequence[str] = (),
                **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``trialledger [cli_options] serve --port P [args]`` as a process with
    ``TRIALLEDGER_HOME=home`` and ``env`` (DATABASE_URL unset: ``args`` name the database),
    its output in ``log``; return the process and its base URL once it is ready."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *cli_options, "serve", "--port", str(port),
             *args], env={**environ, "TRIALLEDGER_HOME": str(home), **env}, stdout=out,
            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(base, log, process)
    return process, base


def home_of_a_served_study(db_url: str, home: Path) -> Path:
    """``home``, whose key signed NCT04397107 with child 001 enrolled, and coordinator
    ``lwei`` (password ``lwei-password``) at JLU1."""
    from application.runtime import Runtime
    from infra.settings import Settings

    runtime = Runtime(Settings(database_url=db_url, home=home), db_url)
    try:
        app = runtime.study(nct04397107.STUDY_ID, clock=simulated_clock())
        register(app)
        enroll(app, "001")
        app.close()
        add_person(runtime, "lwei", "coordinator", site=SITE)
    finally:
        runtime.close()
    return home


@contextmanager
def served_witness(state: Path, log_key: str, home: Path, log: Path) -> Iterator[str]:
    """``trialledger witness serve`` on the state in ``state`` (made by ``witness init``),
    cosigning the log of ``log_key``, its output in ``log``; yields its URL once it is
    ready, and stops it after."""
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "witness", "serve", "--state-dir", str(state),
             "--port", str(port), "--log-key", log_key],
            env={**os.environ, "PYTHONPATH": str(root), "TRIALLEDGER_HOME": str(home)},
            cwd=root, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, log, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
