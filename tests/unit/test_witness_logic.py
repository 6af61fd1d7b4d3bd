"""The witness's checks (C2SP tlog-witness) and cosignatures (tlog-cosignature), without HTTP:
it cosigns a consistent extension only, refuses a rollback, a fork, a bad proof, an unknown
log or key, and keeps its state on disk."""

from __future__ import annotations

import base64
import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.ledger.cosignature import (
    Cosigner,
    LogKey,
    add_cosignatures,
    cosigned_at,
    parse_cosigner,
    parse_vkey,
    witnesses_of,
)
from infra.ledger.merkle import MemoryTree, consistency_proof, leaf_hash
from infra.ledger.note import Checkpoint, NoteError, sign_note, verifier_key
from infra.witness.state import WitnessState
from infra.witness.witness import Witness, WitnessRefused, request_body

ORIGIN = "trialledger/NCT04397107"
LOG_KEY = Ed25519PrivateKey.generate()


def tree(n: int, tag: bytes = b"") -> MemoryTree:
    return MemoryTree(leaf_hash(tag + str(i).encode()) for i in range(n))


def note_of(t: MemoryTree, key: Ed25519PrivateKey = LOG_KEY, origin: str = ORIGIN) -> str:
    return sign_note(Checkpoint(origin, t.size, t.frontier.root()).body(), "trialledger", key)


def submit(w: Witness, old: int, t: MemoryTree, *, note: str | None = None) -> str:
    proof = consistency_proof(t.node, old, t.size) if 0 < old <= t.size else []
    return w.add_checkpoint(request_body(old, proof, note or note_of(t)))


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    state = WitnessState(tmp_path / "w")
    state.init("witness.example/w1")
    return Witness(state, [LogKey("trialledger", LOG_KEY.public_key())], "trialledger/",
                   clock=lambda: 1_700_000_000)


def test_cosigns_a_first_checkpoint_then_an_extension(witness: Witness) -> None:
    first, second = tree(5), tree(12)
    line = submit(witness, 0, first)
    note = add_cosignatures(note_of(first), [line])
    assert cosigned_at(note, witness.cosigner) == 1_700_000_000
    # The signed message and key id are the ones tlog-cosignature defines.
    raw = base64.b64decode(line.rstrip("\n").split(" ")[2])
    name, pub = witness.name, witness.cosigner.public_key
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    pub_raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert raw[:4] == hashlib.sha256(name.encode() + b"\n\x04" + pub_raw).digest()[:4]
    assert struct.unpack(">Q", raw[4:12]) == (1_700_000_000,)
    body = note.split("\n\n")[0] + "\n"
    pub.verify(raw[12:], b"cosignature/v1\ntime 1700000000\n" + body.encode())
    assert submit(witness, 5, second)
    assert witness.state.latest(ORIGIN).size == 12  # type: ignore[union-attr]


def test_a_state_survives_a_new_witness_process(witness: Witness) -> None:
    submit(witness, 0, tree(7))
    again = Witness(WitnessState(witness.state.directory), witness.log_keys, "trialledger/")
    with pytest.raises(WitnessRefused) as refused:
        submit(again, 0, tree(9))
    assert refused.value.status == 409 and refused.value.body == "7\n"
    assert refused.value.content_type == "text/x.tlog.size"


def test_a_rolled_back_log_is_refused(witness: Witness) -> None:
    submit(witness, 0, tree(10))
    with pytest.raises(WitnessRefused) as refused:
        submit(witness, 6, tree(6))
    assert refused.value.status == 409 and refused.value.body == "10\n"
    with pytest.raises(WitnessRefused) as refused:  # claiming the right old size
        submit(witness, 10, tree(6))
    assert refused.value.status == 400


def test_a_forked_log_is_refused(witness: Witness) -> None:
    submit(witness, 0, tree(8))
    with pytest.raises(WitnessRefused) as same_size:
        submit(witness, 8, tree(8, b"other"))
    assert same_size.value.status == 409 and "forked" in str(same_size.value)
    forked = tree(11, b"other")
    with pytest.raises(WitnessRefused) as bigger:
        submit(witness, 8, forked)
    assert bigger.value.status == 422
    assert witness.state.latest(ORIGIN).size == 8  # type: ignore[union-attr]


def test_unknown_logs_and_keys_are_refused(witness: Witness) -> None:
    with pytest.raises(WitnessRefused) as unknown_log:
        submit(witness, 0, tree(3), note=note_of(tree(3), origin="other.example/log"))
    assert unknown_log.value.status == 404
    with pytest.raises(WitnessRefused) as unknown_key:
        submit(witness, 0, tree(3), note=note_of(tree(3), Ed25519PrivateKey.generate()))
    assert unknown_key.value.status == 403
    forged = note_of(tree(3)).replace("\n3\n", "\n4\n", 1)
    with pytest.raises(WitnessRefused) as bad_signature:
        submit(witness, 0, tree(4), note=forged)
    assert bad_signature.value.status == 403


@pytest.mark.parametrize("body", ["old 01\n\nx", "new 0\n\nx", "old 0\nnot-base64\n\nx",
                                  "old 0\n" + "AA==\n" + "\nx"])
def test_malformed_requests_are_bad_requests(witness: Witness, body: str) -> None:
    with pytest.raises(WitnessRefused) as refused:
        witness.add_checkpoint(body)
    assert refused.value.status == 400


def test_vkeys_round_trip_and_are_checked() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    cosigner = Cosigner("witness.example/w1", key)
    assert parse_cosigner(cosigner.vkey) == cosigner
    assert isinstance(parse_vkey(verifier_key("trialledger", key)), LogKey)
    name, _, blob = cosigner.vkey.split("+", 2)
    with pytest.raises(NoteError, match="does not match"):
        parse_vkey(f"{name}+00000000+{blob}")
    with pytest.raises(NoteError, match="log key"):
        parse_cosigner(verifier_key("trialledger", key))


def test_a_changed_cosignature_is_refused_and_others_ignored(witness: Witness) -> None:
    t = tree(4)
    note = add_cosignatures(note_of(t), [submit(witness, 0, t)])
    stranger = Cosigner("witness.example/w2", Ed25519PrivateKey.generate().public_key())
    assert witnesses_of(note, [witness.cosigner, stranger]) == [witness.name]
    head, _, last = note.rstrip("\n").rpartition("\n")
    raw = bytearray(base64.b64decode(last.split(" ")[2]))
    raw[20] ^= 1
    changed = f"{head}\n\u2014 {witness.name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(NoteError, match="does not verify"):
        cosigned_at(changed, witness.cosigner)
