"""C2SP checkpoints and signed notes."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.ledger.note import Checkpoint, NoteError, open_note, sign_note, verifier_key

KEY = Ed25519PrivateKey.generate()
CHECKPOINT = Checkpoint("trialledger/NCT04397107", 2458, bytes(range(32)))


def test_checkpoint_text_is_three_lines() -> None:
    body = CHECKPOINT.body()
    assert body == ("trialledger/NCT04397107\n2458\n"
                    f"{base64.b64encode(bytes(range(32))).decode()}\n")
    assert Checkpoint.parse(body) == CHECKPOINT


def test_a_signed_note_opens_with_the_right_key_only() -> None:
    note = sign_note(CHECKPOINT.body(), "trialledger", KEY)
    assert note.startswith(CHECKPOINT.body() + "\n\u2014 trialledger ")
    assert open_note(note, "trialledger", KEY.public_key()) == CHECKPOINT.body()
    with pytest.raises(NoteError, match="no signature"):
        open_note(note, "trialledger", Ed25519PrivateKey.generate().public_key())


def test_a_changed_checkpoint_does_not_open() -> None:
    note = sign_note(CHECKPOINT.body(), "trialledger", KEY)
    forged = note.replace("\n2458\n", "\n2459\n")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, "trialledger", KEY.public_key())


@pytest.mark.parametrize("body", ["o\n12\n", "o\n012\nAAAA\n", "o\nx\nAAAA\n",
                                  "o\n1\n" + base64.b64encode(b"short").decode() + "\n"])
def test_malformed_checkpoints_are_refused(body: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(body)


def test_verifier_key_format() -> None:
    name, key_hash, key = verifier_key("trialledger", KEY.public_key()).split("+", 2)
    assert name == "trialledger" and len(key_hash) == 8
    assert base64.b64decode(key)[0] == 1 and len(base64.b64decode(key)) == 33


def test_a_signature_in_another_base64_spelling_of_the_same_bytes_is_refused() -> None:
    # 68 signature bytes end in '=' padding: the last character before it has unused low
    # bits, so setting one gives another text that decodes to the same bytes. No byte of a
    # signed note may change unnoticed.
    note = sign_note(CHECKPOINT.body(), "trialledger", KEY).rstrip("\n")
    blob = note.rsplit(" ", 1)[1]
    data = blob.rstrip("=")
    assert len(data) < len(blob)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = data[:-1] + alphabet[alphabet.index(data[-1]) ^ 1] + blob[len(data):]
    assert base64.b64decode(twin) == base64.b64decode(blob)
    forged = note[: -len(blob)] + twin + "\n"
    with pytest.raises(NoteError, match="canonical"):
        open_note(forged, "trialledger", KEY.public_key())
