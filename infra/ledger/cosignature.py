"""C2SP tlog-cosignature (cosignature/v1, Ed25519): a witness's timestamped signature over a
checkpoint, carried as one more signature line of the checkpoint's signed note.

The signed message is ``cosignature/v1\\ntime <t>\\n`` followed by the checkpoint body; the
signature line is ``— <name> base64(key id ‖ u64 big-endian t ‖ Ed25519 signature)``, with
key id SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]. A witness is named by its verifier key
(vkey) ``<name>+<hex key id>+<base64(0x04 ‖ public key)>``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from infra.ledger.note import ED25519, SIGNATURE_PREFIX, NoteError, key_hash

COSIGNATURE_V1 = b"\x04"


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def cosigner_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + COSIGNATURE_V1 + _raw(public_key)).digest()[:4]


@dataclass(frozen=True)
class Cosigner:
    """A witness as its clients know it: a name and an Ed25519 public key."""

    name: str
    public_key: Ed25519PublicKey

    @property
    def vkey(self) -> str:
        """The witness's verifier key string."""
        blob = base64.b64encode(COSIGNATURE_V1 + _raw(self.public_key)).decode()
        return f"{self.name}+{cosigner_key_id(self.name, self.public_key).hex()}+{blob}"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Cosigner) and self.name == other.name
                and _raw(self.public_key) == _raw(other.public_key))

    def __hash__(self) -> int:
        return hash((self.name, _raw(self.public_key)))


@dataclass(frozen=True)
class LogKey:
    """A log's checkpoint-signing key as a witness trusts it (a signed-note Ed25519 key)."""

    name: str
    public_key: Ed25519PublicKey


def parse_vkey(text: str) -> Cosigner | LogKey:
    """A verifier key: a witness's (type 0x04) or a log's (type 0x01); its key id must match."""
    name, sep1, rest = text.strip().partition("+")
    hex_id, sep2, blob = rest.partition("+")
    if not (name and sep1 and sep2) or any(c.isspace() for c in name):
        raise NoteError(f"not a verifier key (<name>+<key id>+<key>): {text.strip()!r}")
    try:
        raw = base64.b64decode(blob, validate=True)
        wanted = bytes.fromhex(hex_id)
    except ValueError as e:
        raise NoteError(f"verifier key {name}: {e}") from e
    if len(raw) != 33 or raw[:1] not in (COSIGNATURE_V1, ED25519):
        raise NoteError(f"verifier key {name}: not an Ed25519 key of type 0x01 or 0x04")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    actual = cosigner_key_id(name, key) if raw[:1] == COSIGNATURE_V1 else key_hash(name, key)
    if actual != wanted:
        raise NoteError(f"verifier key {name}: its key id does not match its key")
    return Cosigner(name, key) if raw[:1] == COSIGNATURE_V1 else LogKey(name, key)


def parse_cosigner(text: str) -> Cosigner:
    """A witness's verifier key (type 0x04)."""
    parsed = parse_vkey(text)
    if not isinstance(parsed, Cosigner):
        raise NoteError(f"verifier key {parsed.name} is a log key, not a witness's "
                        "(cosignature/v1) key")
    return parsed


def _message(body: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def cosign(body: str, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> str:
    """The cosignature line (newline-terminated) of checkpoint ``body`` at POSIX ``timestamp``."""
    if not 0 <= timestamp < 2**63:
        raise NoteError("cosignature timestamp out of range")
    signature = private_key.sign(_message(body, timestamp))
    blob = cosigner_key_id(name, private_key.public_key()) + struct.pack(">Q", timestamp)
    return f"{SIGNATURE_PREFIX}{name} {base64.b64encode(blob + signature).decode()}\n"


def split_note(note: str) -> tuple[str, list[str]]:
    """(body, signature lines) of a signed note."""
    body, separator, signatures = note.rpartition("\n\n")
    if not separator:
        raise NoteError("signed note has no signature block")
    return body + "\n", [line for line in signatures.split("\n") if line]


def cosigned_at(note: str, cosigner: Cosigner) -> int | None:
    """The timestamp of ``cosigner``'s valid cosignature on ``note`` (None: it has none);
    a line that claims to be the cosigner's but does not verify is refused."""
    body, lines = split_note(note)
    wanted = cosigner_key_id(cosigner.name, cosigner.public_key)
    for line in lines:
        signer, _, blob = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
        if signer != cosigner.name:
            continue
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError as e:
            raise NoteError(f"signature by {signer} is not base64: {e}") from e
        if raw[:4] != wanted:
            continue
        if len(raw) != 4 + 8 + 64:
            raise NoteError(f"cosignature by {signer} is malformed")
        (timestamp,) = struct.unpack(">Q", raw[4:12])
        try:
            cosigner.public_key.verify(raw[12:], _message(body, timestamp))
        except InvalidSignature:
            raise NoteError(f"cosignature by witness {signer} does not verify") from None
        return int(timestamp)
    return None


def witnesses_of(note: str, cosigners: list[Cosigner]) -> list[str]:
    """The names of ``cosigners`` whose valid cosignature ``note`` carries."""
    return [c.name for c in cosigners if cosigned_at(note, c) is not None]


def add_cosignatures(note: str, lines: list[str]) -> str:
    """``note`` with the signature ``lines`` appended (each once)."""
    _, present = split_note(note)
    new = [line.rstrip("\n") for line in lines if line.rstrip("\n") not in present]
    return note + "".join(f"{line}\n" for line in new)
