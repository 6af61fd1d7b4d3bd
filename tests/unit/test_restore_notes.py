"""A witnessed bundle's checkpoint note splits back into the note the log signed (and its
key id) and the witnesses' cosignatures, as the ledger stores them apart."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.ledger.cosignature import add_cosignatures, cosign
from infra.ledger.note import Checkpoint, sign_note
from infra.ledger.restore import log_signed
from infra.signing import key_id_for


def test_cosignatures_are_split_off_the_logs_own_signature() -> None:
    log_key, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    body = Checkpoint("trialledger/S1", 3, bytes(32)).body()
    signed = sign_note(body, "trialledger", log_key)
    cosigned = add_cosignatures(signed, [cosign(body, "w1", witness, 1_700_000_000)])
    assert cosigned != signed
    assert log_signed(cosigned) == (signed, key_id_for("trialledger", log_key.public_key()))
    assert log_signed(signed) == (signed, key_id_for("trialledger", log_key.public_key()))
