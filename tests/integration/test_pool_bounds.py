"""Bounded pools (issue 16, item 4): a default ``serve`` process, its sealer included, holds
at most 10 connections after a burst of requests, sealing and projecting; and a command
facing a server that refuses clients ends in one line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from application.runtime import Runtime
from domain.studies import nct04397107
from infra.settings import Settings
from tests.private_cluster import PrivateCluster
from tests.support import add_person, free_port, study_with_a_child, wait_until_ready

STUDY = nct04397107.STUDY_ID
NAME = "tl-pool-test"
# The bound on one default serve process's connections, its sealer's included.
CONNECTIONS_BOUND = 10
CLIENTS = 16
# A wait for the sealer to catch up with the burst, not a speed check.
SEALED_BOUND = 90.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL of this module (max_connections 20: a few spare for the observer)."""
    server = PrivateCluster({"max_connections": "20", "superuser_reserved_connections": "0"})
    try:
        yield server
    finally:
        server.remove()


def _named(cluster: PrivateCluster) -> int:
    """Connections open now under NAME."""
    with psycopg.connect(cluster.url(application_name="tl-pool-observer"),
                         autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           (NAME,)).fetchone()
    assert row is not None
    return int(row[0])


def _lab(client: httpx.Client, n: int) -> int:
    return client.post(f"/v1/studies/{STUDY}/subjects/001/labs",
                       json={"record_id": f"LB{n}", "observed_at": "2021-01-11T08:00:00+00:00",
                             "code": "C3", "value": 0.8, "unit": "g/L"}).status_code


def test_a_default_server_holds_at_most_ten_connections(cluster: PrivateCluster,
                                                        tmp_path: Path) -> None:
    url = cluster.url(application_name=NAME)
    home = tmp_path / "home"
    runtime = Runtime(Settings(database_url=url, home=home), url)
    try:
        study_with_a_child(runtime)
        password = add_person(runtime, "pool-coordinator", "coordinator", site="JLU1")
    finally:
        runtime.close()
    port = free_port()
    log = tmp_path / "server.log"
    environ = {k: v for k, v in os.environ.items()
               if k != "DATABASE_URL" and not k.endswith("_POOL_SIZE")}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port),
             "--database-url", url], env={**environ, "TRIALLEDGER_HOME": str(home)},
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    peak = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, _named(cluster))
            time.sleep(0.2)

    try:
        wait_until_ready(base, log, process)
        with httpx.Client(base_url=base, timeout=60) as client:
            token = client.post("/v1/auth/token",
                                json={"username": "pool-coordinator", "password": password})
            assert token.status_code == 200, token.text
            client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def burst(n: int) -> list[int]:
                return [_lab(client, n),
                        client.get(f"/v1/studies/{STUDY}/subjects/001/history").status_code,
                        client.get(f"/v1/studies/{STUDY}/subjects/001").status_code]

            with ThreadPoolExecutor(CLIENTS) as clients:
                statuses = [s for three in clients.map(burst, range(1, 4 * CLIENTS + 1))
                            for s in three]
            # Concurrent writes to one subject may be refused as conflicting (409).
            assert set(statuses) <= {200, 201, 409}, statuses
            written = statuses.count(201)
            assert written > 0
            # Sealed and projected: the checkpoint covers every write, the history shows them.
            deadline = time.monotonic() + SEALED_BOUND
            while True:
                checkpoint = client.get(f"/v1/studies/{STUDY}/ledger/checkpoint")
                history = client.get(f"/v1/studies/{STUDY}/subjects/001/history")
                if (checkpoint.status_code == 200 and history.status_code == 200
                        and history.text.count('"LB') >= written):
                    break
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(1)
        sampling.set()
        sampler.join()
        held = _named(cluster)
        print(f"connections: {held} held after the burst, {peak} at most during it")
        assert 0 < held <= CONNECTIONS_BOUND
        assert peak <= CONNECTIONS_BOUND
    finally:
        sampling.set()
        process.terminate()
        process.wait(timeout=30)


def test_a_command_refused_by_a_full_server_says_so_in_one_line(
        cluster: PrivateCluster, tmp_path: Path) -> None:
    holders = []
    try:
        while True:  # take every connection the server allows
            try:
                holders.append(psycopg.connect(cluster.url(), autocommit=True))
            except psycopg.OperationalError as e:
                assert "too many clients" in str(e)
                break
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "verify", "--database-url", cluster.url()],
            env={**os.environ, "TRIALLEDGER_HOME": str(tmp_path / "home"), "COLUMNS": "300"},
            capture_output=True, text=True, timeout=120)
    finally:
        for conn in holders:
            conn.close()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "too many clients" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
