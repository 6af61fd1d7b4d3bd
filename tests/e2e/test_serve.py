"""`trialledger serve` as a real process: uvicorn on loopback, real PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from api.runtime import Runtime
from tests.support import T0, study_with_a_corrected_lab


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(runtime: Runtime, db_url: str, tmp_path: Path) -> Iterator[str]:
    study_with_a_corrected_lab(runtime)
    port = _free_port()
    env = {**os.environ, "TRIALLEDGER_HOME": str(runtime.settings.home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--database-url", db_url,
         "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            process.kill()
            pytest.fail(f"server did not start: {process.stdout.read() if process.stdout else ''}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_served_api_answers_now_and_as_of(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    url = f"{server}/v1/studies/NCT04397107/subjects/001"
    assert httpx.get(url).json()["records"]["labs"][0]["fields"]["value"] == 0.6
    before = httpx.get(url, params={"as_of": (T0 + timedelta(days=2)).isoformat()}).json()
    assert before["records"]["labs"][0]["fields"]["value"] == 0.8
    assert httpx.get(f"{server}/openapi.json").status_code == 200


def test_the_server_seals_in_the_background(server: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = httpx.get(f"{server}/v1/studies/NCT04397107/ledger/checkpoint")
        if response.status_code == 200:
            # keyring 2 + study 1 + subject 3 + lab 1 + correction 1
            assert response.json()["tree_size"] == 8
            return
        time.sleep(0.5)
    pytest.fail("no checkpoint was written by the background sealer")
