"""Witnesses as their own processes (C2SP tlog-witness): a witness cosigns a consistent
extension and refuses a rolled-back or forked log; a deployment serves only checkpoints its
witnesses' quorum cosigned, and `verify` says who witnessed them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from application.runtime import Runtime
from infra.ledger import store
from infra.ledger.cosignature import Cosigner, cosigned_at, parse_cosigner
from infra.ledger.merkle import consistency_proof, root
from infra.ledger.note import Checkpoint, sign_note, verifier_key
from infra.postgres import schema_for_study
from infra.settings import Settings
from infra.witness.witness import request_body
from tests.support import (
    T0,
    add_person,
    enroll,
    free_port,
    served_witness,
    simulated_clock,
    study_with_a_child,
)

STUDY = "NCT04397107"
SCHEMA = schema_for_study(STUDY)


@dataclasses.dataclass
class ServedWitness:
    url: str
    vkey: str
    state_dir: Path


def _cli(*args: str, home: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"TRIALLEDGER_HOME": str(home)})
    return result.exit_code, result.output


@pytest.fixture
def witness(settings: Settings, runtime: Runtime, tmp_path: Path) -> Iterator[ServedWitness]:
    """`trialledger witness init` then `witness serve`, a process of its own, trusting the
    deployment's log key."""
    state = tmp_path / "witness-state"
    code, vkey = _cli("witness", "init", "--state-dir", str(state), "--name",
                      "witness.test/w1", home=settings.home)
    assert code == 0, vkey
    log_key = verifier_key(settings.key_name, runtime.signing_key().public_key())
    with served_witness(state, log_key, settings.home, tmp_path / "witness.log") as url:
        yield ServedWitness(url, vkey.strip(), state)


def witnessed(runtime: Runtime, *entries: str, quorum: int | None = None) -> Runtime:
    """The same deployment, naming witnesses."""
    settings = dataclasses.replace(runtime.settings, witnesses=entries, witness_quorum=quorum)
    return Runtime(settings, runtime.url)


def checkpoint_response(runtime: Runtime) -> httpx.Response:
    add_person(runtime, "regulator1", "regulator")
    client = TestClient(create_app(runtime))
    token = client.post("/v1/auth/token", json={"username": "regulator1",
                                                "password": "regulator1-password"})
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client.get(f"/v1/studies/{STUDY}/ledger/checkpoint")


@pytest.mark.requirement("R21")
def test_a_witnessed_deployment_serves_cosigned_checkpoints_and_verify_names_the_witness(
    runtime: Runtime, witness: ServedWitness, settings: Settings, db_url: str
) -> None:
    study_with_a_child(runtime)
    deployment = witnessed(runtime, f"{witness.url}={witness.vkey}")
    try:
        deployment.seal(STUDY, force_checkpoint=True)
        app = deployment.study(STUDY, clock=simulated_clock(T0 + timedelta(days=1)))
        enroll(app, "002")
        app.close()
        deployment.seal(STUDY, force_checkpoint=True)  # from the size the witness cosigned
        with psycopg.connect(db_url) as conn:
            sizes = [size for size, _ in store.cosigned(conn, SCHEMA)]
        assert sizes == [6, 9]
        served = checkpoint_response(deployment)
        assert served.status_code == 200, served.text
        assert served.json()["tree_size"] == 9
        assert cosigned_at(served.json()["note"], parse_cosigner(witness.vkey)) is not None
        # The directory's log (the regulator just registered and signed in) is witnessed too.
        directory = deployment.seal_directory(force_checkpoint=True)
        assert directory is not None and directory.checkpoint_size
    finally:
        deployment.close()
    result = CliRunner().invoke(
        cli, ["verify", "--database-url", db_url, "--workers", "1"],
        env={"TRIALLEDGER_HOME": str(settings.home),
             "TRIALLEDGER_WITNESSES": f"{witness.url}={witness.vkey}"})
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    assert "checkpoint of size 9 witnessed by witness.test/w1 (quorum 1)" in output
    assert (f"directory (people, roles, clients, sign-ins): {directory.tree_size} events"
            in output), output
    assert (f"checkpoint of size {directory.tree_size} witnessed by witness.test/w1 "
            "(quorum 1)" in output), output


@pytest.mark.requirement("R21")
def test_the_witness_refuses_a_rolled_back_or_forked_log(
    runtime: Runtime, witness: ServedWitness, db_url: str
) -> None:
    study_with_a_child(runtime)
    deployment = witnessed(runtime, f"{witness.url}={witness.vkey}")
    try:
        deployment.seal(STUDY, force_checkpoint=True)
    finally:
        deployment.close()
    with psycopg.connect(db_url) as conn:
        size, _, note = store.checkpoints(conn, SCHEMA)[-1]
        nodes = store.node_source(conn, SCHEMA)
        older = 3
        proof = consistency_proof(nodes, older, size)
        old_root = root(nodes, older)
    # The log shown as it stood at size 3, signed by the log's own key: a rollback.
    key = runtime.signing_key()
    rolled_back = sign_note(Checkpoint(f"trialledger/{STUDY}", older, old_root).body(),
                            runtime.settings.key_name, key)
    answer = httpx.post(f"{witness.url}/add-checkpoint",
                        content=request_body(size, [], rolled_back))
    assert answer.status_code == 400  # old size above the checkpoint's
    answer = httpx.post(f"{witness.url}/add-checkpoint", content=request_body(0, [], rolled_back))
    assert answer.status_code == 409 and answer.text == f"{size}\n"
    assert answer.headers["content-type"].startswith("text/x.tlog.size")
    # A fork: the same size with another root, and a larger tree not extending it.
    forked = sign_note(Checkpoint(f"trialledger/{STUDY}", size, bytes(32)).body(),
                       runtime.settings.key_name, key)
    assert httpx.post(f"{witness.url}/add-checkpoint",
                      content=request_body(size, [], forked)).status_code == 409
    bigger = sign_note(Checkpoint(f"trialledger/{STUDY}", size + 4, bytes(32)).body(),
                       runtime.settings.key_name, key)
    assert httpx.post(f"{witness.url}/add-checkpoint",
                      content=request_body(size, proof[:1] or [bytes(32)], bigger)
                      ).status_code == 422
    # The same checkpoint again is cosigned (nothing new, nothing rolled back); an unknown
    # key is refused.
    assert httpx.post(f"{witness.url}/add-checkpoint",
                      content=request_body(size, [], note)).status_code == 200
    stranger = sign_note(Checkpoint(f"trialledger/{STUDY}", size, bytes(32)).body(),
                         runtime.settings.key_name, Ed25519PrivateKey.generate())
    assert httpx.post(f"{witness.url}/add-checkpoint",
                      content=request_body(size, [], stranger)).status_code == 403


def test_a_checkpoint_without_the_quorum_is_not_served(
    runtime: Runtime, witness: ServedWitness, db_url: str
) -> None:
    study_with_a_child(runtime)
    # A second witness, down: nothing listens at its address.
    other = Cosigner("witness.test/down", Ed25519PrivateKey.generate().public_key())
    deployment = witnessed(runtime, f"{witness.url}={witness.vkey}",
                           f"http://127.0.0.1:{free_port()}={other.vkey}", quorum=2)
    try:
        deployment.seal(STUDY, force_checkpoint=True)
        with psycopg.connect(db_url) as conn:
            assert store.latest_checkpoint(conn, SCHEMA) is not None  # signed by the log...
            assert store.cosigned(conn, SCHEMA) == []  # ...but one cosignature of two
        served = checkpoint_response(deployment)
        assert served.status_code == 404
        assert "no witnessed checkpoint" in served.text
    finally:
        deployment.close()
