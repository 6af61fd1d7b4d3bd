"""Every connection of every process honours every parameter of the database URL (issue 16,
item 3): on a PostgreSQL started by the test with TLS and a CA the test made, with
``sslmode=verify-full`` and an ``application_name``, every connection the server sees is
encrypted and carries the name; and ``serve`` speaks HTTPS with a certificate and key."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from application.runtime import Runtime
from domain.studies import nct04397107
from infra.postgres import temporary_database
from infra.settings import Settings
from tests.private_cluster import Certificates, PrivateCluster, make_certificates
from tests.support import add_person, api_client, free_port, study_with_a_child

STUDY = nct04397107.STUDY_ID
NAME = "tl-tls-test"
OBSERVER = "tl-tls-observer"
# A wait for the server's sealer to have sealed, not a speed check.
SEALED_BOUND = 60.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA of this test and a server certificate for localhost it signed."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def cluster(certificates: Certificates) -> Iterator[PrivateCluster]:
    """A PostgreSQL of this module serving TLS with the test's certificate."""
    server = PrivateCluster(certificates=certificates)
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(autouse=True)
def no_tls_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq's defaults say no TLS and no name: a connection made without the URL's
    parameters shows up unencrypted and unnamed."""
    monkeypatch.setenv("PGSSLMODE", "disable")
    monkeypatch.delenv("PGAPPNAME", raising=False)


def _url(cluster: PrivateCluster, certificates: Certificates, name: str = NAME,
         database: str = "postgres") -> str:
    return cluster.url(database, sslmode="verify-full", sslrootcert=str(certificates.ca),
                       application_name=name)


@pytest.fixture
def url(cluster: PrivateCluster, certificates: Certificates) -> Iterator[str]:
    """The TLS URL of a new database of this test, named NAME."""
    with temporary_database(_url(cluster, certificates, OBSERVER)) as observed:
        yield _url(cluster, certificates, database=conninfo_to_dict(observed)["dbname"])


def _connections(cluster: PrivateCluster, certificates: Certificates
                 ) -> list[tuple[str, bool, int]]:
    """(application name, encrypted?, pid) of every client connection but the observer's."""
    with psycopg.connect(_url(cluster, certificates, OBSERVER), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name, s.ssl, a.pid FROM pg_stat_activity a "
            "JOIN pg_stat_ssl s USING (pid) WHERE a.backend_type = 'client backend' "
            "AND a.pid <> pg_backend_pid()").fetchall()
    return [(str(name), bool(encrypted), int(pid)) for name, encrypted, pid in rows]


def _authorized_since(cluster: PrivateCluster, offset: int) -> list[str]:
    """The server's log lines of connections authorized after ``offset`` bytes of its log."""
    with cluster.log.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if "connection authorized" in line]


def _assert_all_named_and_encrypted(lines: list[str]) -> None:
    assert lines, "no connection was seen"
    for line in lines:
        if f"application_name={OBSERVER}" in line:
            continue
        assert f"application_name={NAME}" in line, line
        assert re.search(r"SSL enabled", line), line


@pytest.mark.requirement("R25")
def test_a_runtime_connects_only_with_the_whole_url(cluster: PrivateCluster,
                                                    certificates: Certificates, url: str,
                                                    tmp_path: Path) -> None:
    offset = cluster.log.stat().st_size
    runtime = Runtime(Settings(database_url=url, home=tmp_path / "home"), url)
    try:
        study_with_a_child(runtime, lab=True)  # writes
        client = api_client(runtime, "monitor")  # the directory, sessions
        history = client.get(f"/v1/studies/{STUDY}/subjects/001/history")  # reads, projects
        assert history.status_code == 200, history.text
        assert runtime.seal(STUDY, force_checkpoint=True).sealed > 0
        live = _connections(cluster, certificates)
        assert live, "the runtime holds no connection"
        assert all(name == NAME and encrypted for name, encrypted, _ in live), live
    finally:
        runtime.close()
    # Every connection made meanwhile, those already closed too, as the server logged them.
    _assert_all_named_and_encrypted(_authorized_since(cluster, offset))


@pytest.mark.requirement("R25")
def test_serve_connects_with_tls_and_answers_https(cluster: PrivateCluster,
                                                   certificates: Certificates, url: str,
                                                   tmp_path: Path) -> None:
    home = tmp_path / "home"
    runtime = Runtime(Settings(database_url=url, home=home), url)
    try:
        study_with_a_child(runtime, lab=True)
        password = add_person(runtime, "tls-monitor", "monitor")
    finally:
        runtime.close()
    offset = cluster.log.stat().st_size
    port = free_port()
    log = tmp_path / "server.log"
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port),
             "--database-url", url, "--tls-cert", str(certificates.cert),
             "--tls-key", str(certificates.key)],
            env={**environ, "TRIALLEDGER_HOME": str(home)}, stdout=out,
            stderr=subprocess.STDOUT)
    base = f"https://localhost:{port}"
    try:
        _wait_https(base, certificates, log, process)
        with httpx.Client(base_url=base, verify=_trusting(certificates)) as client:
            token = client.post("/v1/auth/token",
                                json={"username": "tls-monitor", "password": password})
            assert token.status_code == 200, token.text
            client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            assert client.get(f"/v1/studies/{STUDY}/subjects/001/history").status_code == 200
            deadline = time.monotonic() + SEALED_BOUND
            while client.get(f"/v1/studies/{STUDY}/ledger/checkpoint").status_code != 200:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        # Plain HTTP is not served.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://localhost:{port}/healthz", timeout=5)
        live = _connections(cluster, certificates)
        assert len(live) >= 2, live  # the server's and its sealer's
        assert all(name == NAME and encrypted for name, encrypted, _ in live), live
    finally:
        process.terminate()
        process.wait(timeout=30)
    _assert_all_named_and_encrypted(_authorized_since(cluster, offset))


def _trusting(certificates: Certificates) -> ssl.SSLContext:
    """A TLS context that trusts the test's CA alone."""
    return ssl.create_default_context(cafile=str(certificates.ca))


def _wait_https(base: str, certificates: Certificates, log: Path,
                process: subprocess.Popen[bytes]) -> None:
    """Wait until the server answers /readyz over HTTPS, verified against the test's CA."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base}/readyz", verify=_trusting(certificates),
                         timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    pytest.fail(f"the server did not start: {log.read_text()}")
