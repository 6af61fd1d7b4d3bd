"""Ed25519 signatures over stored events, and the byte layout of a signed stored event.

A stored event's ``state`` column holds a signed envelope::

    b"TLS1" | u16 len | key_id | u16 len | recorded_at | signature (64 bytes) | payload

``payload`` is the transcoded event exactly as the mapper produced it. The signature covers
the study, the aggregate id and version, the topic, the payload bytes, ``recorded_at`` and the
key id, each length-prefixed under a fixed domain-separation label, so that no field can be
moved into another and no signature can be replayed onto another study or position.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from infra.ledger.note import key_hash
from infra.signers import Signer, handover
from infra.signing_process import SigningProcess

MAGIC = b"TLS1"
SIGNATURE_LABEL = b"trialledger/event-signature/v1"
SIGNATURE_SIZE = 64


class SignedStateError(ValueError):
    """A stored event's state is not a well-formed signed envelope."""


def key_id_for(name: str, public_key: Ed25519PublicKey) -> str:
    """The key id ``<name>+<hex of the C2SP 4-byte key hash>`` (see ``infra.ledger.note``)."""
    return f"{name}+{key_hash(name, public_key).hex()}"


def signing_message(
    study: str,
    originator_id: str,
    originator_version: int,
    topic: str,
    payload: bytes,
    recorded_at: str,
    key_id: str,
) -> bytes:
    """The exact bytes an event signature covers."""
    return _length_prefixed([
        SIGNATURE_LABEL,
        study.encode(),
        originator_id.encode(),
        str(originator_version).encode(),
        topic.encode(),
        payload,
        recorded_at.encode(),
        key_id.encode(),
    ])


LEAF_LABEL = b"trialledger/leaf/v1"


def _length_prefixed(parts: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


def leaf_data(study: str, originator_id: str, originator_version: int, topic: str,
              state: bytes) -> bytes:
    """The bytes a ledger leaf commits to: the stored event exactly as signed.

    ``state`` is the whole signed envelope (key id, recorded_at, signature, payload).
    """
    return _length_prefixed([LEAF_LABEL, study.encode(), originator_id.encode(),
                             str(originator_version).encode(), topic.encode(), state])


@dataclass(frozen=True)
class SignedState:
    """The parts of a signed envelope."""

    key_id: str
    recorded_at: str
    signature: bytes
    payload: bytes

    def pack(self) -> bytes:
        """Serialise to the bytes stored in the ``state`` column."""
        key = self.key_id.encode()
        when = self.recorded_at.encode()
        return b"".join(
            [
                MAGIC,
                struct.pack(">H", len(key)),
                key,
                struct.pack(">H", len(when)),
                when,
                self.signature,
                self.payload,
            ]
        )

    @classmethod
    def unpack(cls, state: bytes) -> SignedState:
        """Parse the ``state`` column; raise :class:`SignedStateError` if malformed."""
        try:
            if state[:4] != MAGIC:
                raise SignedStateError("not a signed event (magic bytes missing)")
            offset = 4
            (key_len,) = struct.unpack_from(">H", state, offset)
            offset += 2
            key_id = state[offset : offset + key_len].decode()
            offset += key_len
            (when_len,) = struct.unpack_from(">H", state, offset)
            offset += 2
            recorded_at = state[offset : offset + when_len].decode()
            offset += when_len
            signature = state[offset : offset + SIGNATURE_SIZE]
            offset += SIGNATURE_SIZE
            if len(signature) != SIGNATURE_SIZE:
                raise SignedStateError("signed event truncated")
        except (struct.error, UnicodeDecodeError) as e:
            raise SignedStateError(f"malformed signed event: {e}") from e
        return cls(key_id, recorded_at, signature, state[offset:])


class EventSigner:
    """Signs events of one study with one Ed25519 key (a file key or a token's)."""

    def __init__(self, study: str, private_key: Signer, key_name: str) -> None:
        self.study = study
        self._private_key = private_key
        self.key_name = key_name
        self.public_key = private_key.public_key()
        self.key_id = key_id_for(key_name, self.public_key)
        # What every message of this signer starts and ends with (see signing_message).
        self._head = _length_prefixed([SIGNATURE_LABEL, study.encode()])
        self._tail = _length_prefixed([self.key_id.encode()])
        # What every signed envelope of this signer starts with (see SignedState.pack).
        key = self.key_id.encode()
        self._envelope_head = MAGIC + struct.pack(">H", len(key)) + key

    def message(
        self,
        originator_id: str,
        originator_version: int,
        topic: str,
        payload: bytes,
        recorded_at: str,
    ) -> bytes:
        """The bytes this signer's signature of the event covers: :func:`signing_message`'s,
        built with less work (a bulk load builds a hundred thousand)."""
        parts = (originator_id.encode(), str(originator_version).encode(), topic.encode(),
                 payload, recorded_at.encode())
        return b"".join((self._head, *(len(p).to_bytes(4, "big") + p for p in parts),
                         self._tail))

    def envelope(self, recorded_at: str, signature: bytes, payload: bytes) -> bytes:
        """The bytes of ``SignedState(self.key_id, recorded_at, signature, payload).pack()``,
        made with less work (a bulk load makes a hundred thousand)."""
        when = recorded_at.encode()
        return b"".join((self._envelope_head, struct.pack(">H", len(when)), when, signature,
                         payload))

    def signature(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message`` (deterministic: the same bytes every time)."""
        return self._private_key.sign(message)

    def sign(
        self,
        originator_id: str,
        originator_version: int,
        topic: str,
        payload: bytes,
        recorded_at: str,
    ) -> SignedState:
        """Sign one event and return its envelope."""
        message = self.message(originator_id, originator_version, topic, payload, recorded_at)
        return SignedState(self.key_id, recorded_at, self.signature(message), payload)

    def handover(self) -> bytes:
        """What another process needs to sign with this key (:func:`infra.signers.handover`)."""
        return handover(self._private_key)

    def signing_process(self) -> SigningProcess:
        """A process of its own that signs with this signer's key (see :class:`SigningProcess`).
        """
        return SigningProcess(handover(self._private_key))


def check_signature(
    study: str,
    originator_id: str,
    originator_version: int,
    topic: str,
    envelope: SignedState,
    public_key: Ed25519PublicKey,
) -> bool:
    """True when ``envelope`` carries a valid signature of this event by ``public_key``."""
    message = signing_message(
        study,
        originator_id,
        originator_version,
        topic,
        envelope.payload,
        envelope.recorded_at,
        envelope.key_id,
    )
    try:
        public_key.verify(envelope.signature, message)
    except InvalidSignature:
        return False
    return True


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    """Raw 32-byte public key, base64 (for display and key files)."""
    return base64.b64encode(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
