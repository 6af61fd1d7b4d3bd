"""The demo study's bundle from `trialledger serve` (uvicorn on loopback, real PostgreSQL): its
from tests.support import free_port, wait_until_ready
first byte arrives at once, and when the database goes away part-way the download is cut off
(no zip end record), the failure is logged and counted, and `verify --bundle` refuses what
arrived."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import free_port, wait_until_ready

STUDY = "NCT04397107"
ROUTE = "/v1/studies/{study}/exports/{export_format}"
# The bound for the demo study's first byte (it was ~80 s when the zip was built first).
FIRST_BYTE_BOUND_SECONDS = 5.0


def _cli(*args: str, home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIALLEDGER_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=600)






@pytest.mark.slow(seconds=150)
def test_the_demo_bundle_streams_at_once_and_a_cut_off_is_told(db_url: str,
                                                               tmp_path: Path) -> None:
    home = tmp_path / "home"
    demo = _cli("demo", "--no-serve", "--database-url", db_url, home=home)
    assert demo.returncode == 0, demo.stderr
    added = _cli("users", "add", "--username", "inspector", "--full-name", "Ines Pector",
                 "--role", "regulator", "--study", STUDY, "--password-stdin",
                 "--database-url", db_url, home=home, stdin="inspector-password\n")
    assert added.returncode == 0, added.stderr
    keys = _cli("keys", "export-public", "-o", str(tmp_path / "keys.pem"), home=home)
    assert keys.returncode == 0, keys.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--database-url", db_url, "--port",
             str(port)], env={**os.environ, "TRIALLEDGER_HOME": str(home)}, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        wait_until_ready(base, log, server)
        token = httpx.post(f"{base}/v1/auth/token", json={
            "username": "inspector", "password": "inspector-password"}).json()["access_token"]
        received = bytearray()
        cut_off = False
        asked = time.monotonic()
        with httpx.stream("GET", f"{base}/v1/studies/{STUDY}/exports/bundle",
                          headers={"Authorization": f"Bearer {token}"},
                          timeout=httpx.Timeout(60)) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            received += next(chunks)
            assert time.monotonic() - asked < FIRST_BYTE_BOUND_SECONDS
            assert received.startswith(b"PK\x03\x04")
            # The casebooks are still being rendered: the database goes away under them.
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            try:
                for chunk in chunks:
                    received += chunk
            except httpx.RemoteProtocolError:
                cut_off = True
        assert cut_off, "the download ended as if complete"

        partial = tmp_path / "bundle.zip"
        partial.write_bytes(bytes(received))
        verified = _cli("verify", "--bundle", str(partial), "--public-key",
                        str(tmp_path / "keys.pem"), home=home)
        assert verified.returncode == 1, verified.stdout + verified.stderr
        lines = verified.stdout.strip().splitlines()
        assert len(lines) == 1 and "cut off" in lines[0], verified.stdout
        assert "Traceback" not in verified.stdout + verified.stderr

        metrics = httpx.get(f"{base}/metrics").text
        assert (f'trialledger_http_requests_total{{method="GET",route="{ROUTE}",'
                'status="500"} 1.0') in metrics
        assert f'route="{ROUTE}",status="200"' not in metrics
    finally:
        server.terminate()
        server.wait(timeout=30)
    records = [json.loads(line) for line in log.read_text().splitlines()
               if line.startswith("{")]
    assert any(r.get("event", "").startswith("export failed after its first byte")
               for r in records)
    access = [r for r in records if r.get("route") == ROUTE]
    assert [(r["status"], r.get("aborted"), r.get("sent_status")) for r in access] == [
        (500, True, 200)]
