"""C2SP checkpoints (tlog-checkpoint) wrapped in C2SP signed notes, with Ed25519 signatures.

A checkpoint body is three lines — origin, tree size, base64 root hash — each ending in a
newline. A signed note is the body, an empty line, and one line per signature:
``— <key name> <base64(4-byte key hash ‖ 64-byte Ed25519 signature)>``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from infra.signers import Signer

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
ED25519 = b"\x01"


class NoteError(ValueError):
    """A note or checkpoint is malformed, or its signature does not verify."""


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """C2SP key hash: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + raw).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP verifier key string ``<name>+<hex key hash>+<base64(0x01 ‖ key)>``."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{name}+{key_hash(name, public_key).hex()}+{base64.b64encode(ED25519 + raw).decode()}"


@dataclass(frozen=True)
class Checkpoint:
    """A log's size and root hash, for one origin."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The checkpoint text (what is signed)."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        """Parse a checkpoint body; refuse anything malformed."""
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("checkpoint must be at least three newline-terminated lines")
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        if not origin or not size_text.isdigit() or (size_text != "0" and size_text[0] == "0"):
            raise NoteError("checkpoint origin or tree size is malformed")
        try:
            root = base64.b64decode(root_text, validate=True)
        except ValueError as e:
            raise NoteError(f"checkpoint root hash is not base64: {e}") from e
        if len(root) != 32:
            raise NoteError("checkpoint root hash is not 32 bytes")
        return cls(origin, int(size_text), root)


def sign_note(body: str, name: str, private_key: Signer) -> str:
    """The signed note of ``body`` by key ``name``."""
    if not body.endswith("\n"):
        raise NoteError("note text must end with a newline")
    signature = private_key.sign(body.encode())
    blob = base64.b64encode(key_hash(name, private_key.public_key()) + signature).decode()
    return f"{body}\n{SIGNATURE_PREFIX}{name} {blob}\n"


def open_note(note: str, name: str, public_key: Ed25519PublicKey) -> str:
    """The body of ``note`` if it carries a valid signature by (``name``, ``public_key``)."""
    body, separator, signatures = note.rpartition("\n\n")
    if not separator:
        raise NoteError("signed note has no signature block")
    body += "\n"
    wanted = key_hash(name, public_key)
    for line in signatures.splitlines():
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteError("malformed signature line")
        signer, _, blob = line[len(SIGNATURE_PREFIX):].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError as e:
            raise NoteError(f"signature is not base64: {e}") from e
        if base64.b64encode(raw).decode() != blob:  # one encoding only: no byte may change
            raise NoteError("signature is not in canonical base64")
        if signer != name or raw[:4] != wanted:
            continue
        try:
            public_key.verify(raw[4:], body.encode())
        except InvalidSignature:
            raise NoteError(f"signature by {name} does not verify") from None
        return body
    raise NoteError(f"note carries no signature by {name}")
