"""Checkpoint and proofs over HTTP, checked with the RFC 9162 verifiers."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from application.runtime import Runtime
from infra import keys
from infra.ledger.merkle import verify_consistency, verify_inclusion
from infra.ledger.note import Checkpoint, open_note
from tests.support import T0, api_client, enroll, register, simulated_clock

BASE = "/v1/studies/NCT04397107/ledger"


@pytest.fixture
def client(runtime: Runtime) -> TestClient:
    clock = simulated_clock()
    app = runtime.study("NCT04397107", clock=clock)
    register(app)
    enroll(app, "001")
    runtime.seal("NCT04397107", force_checkpoint=True)  # size 6
    clock.set(T0 + timedelta(hours=1))
    enroll(app, "002")
    runtime.seal("NCT04397107", force_checkpoint=True)  # size 9
    return api_client(runtime)


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def test_the_checkpoint_is_a_signed_note(client: TestClient, runtime: Runtime) -> None:
    body = client.get(f"{BASE}/checkpoint").json()
    assert body["tree_size"] == 9
    key = runtime.signing_key().public_key()
    text = open_note(body["note"], runtime.settings.key_name, key)
    assert Checkpoint.parse(text) == Checkpoint("trialledger/NCT04397107", 9, b64(body["root"]))
    assert len(keys.load_public_keys(runtime.settings)) == 1


def test_every_inclusion_proof_verifies(client: TestClient) -> None:
    root = b64(client.get(f"{BASE}/checkpoint").json()["root"])
    for position in range(1, 10):
        proof = client.get(f"{BASE}/proofs/inclusion", params={"event": position}).json()
        assert verify_inclusion(b64(proof["leaf_hash"]), proof["leaf_index"], 9,
                                [b64(p) for p in proof["proof"]], root)
    older = client.get(f"{BASE}/proofs/inclusion", params={"event": 2, "tree_size": 6}).json()
    assert older["tree_size"] == 6


def test_consistency_between_checkpoints(client: TestClient) -> None:
    proof = client.get(f"{BASE}/proofs/consistency", params={"from": 6, "to": 9}).json()
    assert verify_consistency(6, 9, b64(proof["from_root"]), b64(proof["to_root"]),
                              [b64(p) for p in proof["proof"]])


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("proofs/inclusion", {"event": 99}, 404, None),
        ("proofs/inclusion", {"event": 2, "tree_size": 50}, 422, "tree_size"),
        ("proofs/inclusion", {"event": 8, "tree_size": 6}, 422, "tree_size"),
        ("proofs/inclusion", {"event": "x"}, 422, "event"),
        ("proofs/consistency", {"from": 9, "to": 6}, 422, "from"),
        ("proofs/consistency", {"from": -1}, 422, "from"),
    ],
)
def test_bad_proof_requests_are_4xx_naming_the_field(
    client: TestClient, path: str, params: dict[str, object], status: int, field: str | None
) -> None:
    response = client.get(f"{BASE}/{path}", params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    if field:
        assert response.json()["errors"][0]["field"] == field
