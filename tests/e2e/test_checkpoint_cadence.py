"""A real `trialledger serve` signs a checkpoint covering a new event within the documented
checkpoint interval, so a client can check the event's inclusion proof that soon."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from application.runtime import Runtime
from domain.studies import nct04397107
from infra import keys
from infra.catalog import EVENTS_TABLE
from infra.ledger.merkle import leaf_hash, verify_inclusion
from infra.ledger.note import Checkpoint, open_note
from infra.ledger.sealer import CHECKPOINT_INTERVAL, origin
from infra.postgres import schema_for_study
from infra.settings import Settings
from infra.signing import leaf_data
from tests.support import add_person, free_port, register, wait_until_ready

STUDY = nct04397107.STUDY_ID
# What a busy 2-core machine may add to the interval: the round in progress, the HTTP calls.
ROUND_ALLOWANCE = 10.0
STARTUP_BOUND = 60.0




@pytest.fixture
def base(runtime: Runtime, settings: Settings, db_url: str, tmp_path: Path) -> Iterator[str]:
    """A server with the default cadence on a deployment holding the study, a coordinator
    and a regulator."""
    register(runtime.study(STUDY))
    add_person(runtime, "coord", "coordinator", site="JLU1")
    add_person(runtime, "inspector", "regulator")
    runtime.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TRIALLEDGER_CHECKPOINT_INTERVAL"}
    env["TRIALLEDGER_HOME"] = str(settings.home)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--database-url", db_url,
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _token(base: str, username: str) -> dict[str, str]:
    response = httpx.post(f"{base}/v1/auth/token",
                          json={"username": username, "password": f"{username}-password"})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}




def test_a_signed_checkpoint_covers_a_new_event_within_the_interval(
        base: str, settings: Settings, db_url: str, tmp_path: Path) -> None:
    wait_until_ready(base, tmp_path / "server.log")
    coordinator, regulator = _token(base, "coord"), _token(base, "inspector")
    # The first round signs the study's registration: from then on checkpoints are rationed
    # to the interval, the case that takes longest.
    deadline = time.monotonic() + STARTUP_BOUND
    while httpx.get(f"{base}/v1/studies/{STUDY}/ledger/checkpoint",
                    headers=regulator).status_code != 200:
        assert time.monotonic() < deadline, "no first checkpoint"
        time.sleep(0.2)

    enrolled = httpx.post(f"{base}/v1/studies/{STUDY}/subjects", headers=coordinator, json={
        "subject": "001", "site": "JLU1", "date_of_birth": "2010-05-01", "sex": "F",
        "disease": "SLE", "consent_date": "2021-01-10", "arm": "IL2",
        "enrolled_on": "2021-01-10", "screening": nct04397107.ELIGIBLE_SCREENING_ANSWERS})
    written = time.monotonic()
    assert enrolled.status_code == 201, enrolled.text
    schema = schema_for_study(STUDY)
    with psycopg.connect(db_url) as conn:
        row = conn.execute(SQL("SELECT notification_id, originator_id, originator_version, "
                               "topic, state FROM {}.{} ORDER BY notification_id DESC LIMIT 1")
                           .format(Identifier(schema), Identifier(EVENTS_TABLE))).fetchone()
    assert row is not None
    position, oid, version, topic, state = row

    # An inclusion proof is served against the latest checkpoint only once one covers it.
    while True:
        proof = httpx.get(f"{base}/v1/studies/{STUDY}/ledger/proofs/inclusion",
                          params={"event": position}, headers=regulator)
        if proof.status_code == 200:
            break
        assert proof.status_code in (404, 422), proof.text  # not sealed / not yet signed
        assert time.monotonic() - written < CHECKPOINT_INTERVAL + ROUND_ALLOWANCE, (
            f"no signed checkpoint covers event {position} "
            f"{CHECKPOINT_INTERVAL + ROUND_ALLOWANCE} s after its commit")
        time.sleep(0.1)

    body = proof.json()
    checkpoint = httpx.get(f"{base}/v1/studies/{STUDY}/ledger/checkpoint",
                           headers=regulator).json()
    assert checkpoint["tree_size"] == body["tree_size"] > body["leaf_index"]
    # The client's own checks: the note is signed by the deployment's key, names this log's
    # root, and the event as stored is a leaf under that root.
    (key_id, public_key), = keys.load_public_keys(settings).items()
    signed = Checkpoint.parse(open_note(checkpoint["note"], key_id.rpartition("+")[0],
                                        public_key))
    assert signed.origin == origin(STUDY) and signed.size == body["tree_size"]
    leaf = leaf_hash(leaf_data(STUDY, str(oid), version, topic, bytes(state)))
    assert base64.b64decode(body["leaf_hash"]) == leaf
    assert verify_inclusion(leaf, body["leaf_index"], signed.size,
                            [base64.b64decode(p) for p in body["proof"]], signed.root)
