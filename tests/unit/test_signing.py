"""Event signatures: what they cover, and that any change breaks them."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from infra.signing import (
    EventSigner,
    SignedState,
    SignedStateError,
    check_signature,
    key_id_for,
    signing_message,
)
from infra.signing_process import SigningProcessError

KEY = Ed25519PrivateKey.generate()
SIGNER = EventSigner("NCT04397107", KEY, "trialledger")
ARGS = ("6f1c2d4e-0000-4000-8000-000000000001", 3, "domain.subject:Subject.LabResultRecorded",
        b'{"value":1.0}', "2021-03-15T08:00:00+00:00")


def _check(envelope: SignedState, study: str = "NCT04397107", oid: str = ARGS[0],
           version: int = ARGS[1], topic: str = ARGS[2]) -> bool:
    return check_signature(study, oid, version, topic, envelope, KEY.public_key())


def test_a_signed_event_verifies_after_a_round_trip_through_its_bytes() -> None:
    envelope = SignedState.unpack(SIGNER.sign(*ARGS).pack())
    assert envelope.payload == ARGS[3]
    assert envelope.recorded_at == ARGS[4]
    assert envelope.key_id == SIGNER.key_id
    assert _check(envelope)


@pytest.mark.parametrize(
    "change",
    [
        {"study": "NCT00000000"},
        {"oid": "6f1c2d4e-0000-4000-8000-000000000002"},
        {"version": 4},
        {"topic": "domain.subject:Subject.RecordRemoved"},
    ],
)
def test_the_signature_covers_study_aggregate_version_and_topic(change: dict[str, object]) -> None:
    assert not _check(SIGNER.sign(*ARGS), **change)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["payload", "recorded_at", "key_id"])
def test_the_signature_covers_payload_recorded_time_and_key_id(field: str) -> None:
    envelope = SIGNER.sign(*ARGS)
    value = getattr(envelope, field)
    altered = value + (b"x" if isinstance(value, bytes) else "x")
    assert not _check(dataclasses.replace(envelope, **{field: altered}))


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=7))
def test_flipping_any_bit_of_the_stored_bytes_is_caught(index: int, bit: int) -> None:
    stored = bytearray(SIGNER.sign(*ARGS).pack())
    stored[index % len(stored)] ^= 1 << bit
    try:
        envelope = SignedState.unpack(bytes(stored))
    except SignedStateError:
        return
    assert not _check(envelope)


def test_another_key_does_not_verify() -> None:
    other = Ed25519PrivateKey.generate()
    envelope = SIGNER.sign(*ARGS)
    assert not check_signature("NCT04397107", *ARGS[:3], envelope, other.public_key())


def test_key_id_is_name_plus_c2sp_key_hash() -> None:
    key_id = key_id_for("trialledger", KEY.public_key())
    name, _, digest = key_id.partition("+")
    assert name == "trialledger"
    assert len(digest) == 8
    assert key_id != key_id_for("trialledger", Ed25519PrivateKey.generate().public_key())


def test_unsigned_state_is_refused() -> None:
    with pytest.raises(SignedStateError):
        SignedState.unpack(b'{"plain": "json"}')


@given(st.text(), st.integers(0, 2**63 - 1), st.text(), st.binary(), st.text())
def test_a_signers_message_is_exactly_the_message_its_signatures_are_checked_against(
        oid: str, version: int, topic: str, payload: bytes, recorded_at: str) -> None:
    assert SIGNER.message(oid, version, topic, payload, recorded_at) == signing_message(
        "NCT04397107", oid, version, topic, payload, recorded_at, SIGNER.key_id)


@given(st.text(max_size=40), st.binary(min_size=64, max_size=64), st.binary(max_size=200))
def test_a_signers_envelope_is_exactly_the_packed_signed_state(
        recorded_at: str, signature: bytes, payload: bytes) -> None:
    assert SIGNER.envelope(recorded_at, signature, payload) == SignedState(
        SIGNER.key_id, recorded_at, signature, payload).pack()


def test_the_signing_process_makes_the_very_signatures_made_in_process() -> None:
    messages = [SIGNER.message(*ARGS[:3], bytes([n % 256]) * n, ARGS[4]) for n in range(300)]
    process = SIGNER.signing_process()
    try:
        process.send(messages[:100])
        process.send(messages[100:])  # two requests in flight, answered in order
        signatures = process.receive() + process.receive()
        assert process.signatures([b""]) == [SIGNER.signature(b"")]
    finally:
        process.close()
    assert signatures == [SIGNER.signature(m) for m in messages]
    assert all(_check(SignedState(SIGNER.key_id, ARGS[4], s, bytes([n % 256]) * n))
               for n, s in enumerate(signatures))


def test_a_stopped_signing_process_is_an_error_not_a_wrong_signature() -> None:
    process = SIGNER.signing_process()
    process.close()
    with pytest.raises(SigningProcessError):
        process.signatures([b"x"])
