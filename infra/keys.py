"""Signing keys: the private key lives in a file (mode 0600) or the environment, never the database.

Every public key ever used is kept in ``<home>/keys/<key id>.pub`` so old events stay verifiable.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from infra.ledger.note import verifier_key
from infra.settings import Settings
from infra.signing import key_id_for, public_key_b64


class SigningKeyError(RuntimeError):
    """A signing key cannot be loaded or is stored unsafely."""


def _load_private(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{source}: not a PEM private key ({e})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{source}: not an Ed25519 key")
    return key


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def public_pem(key: Ed25519PublicKey) -> bytes:
    """A public key as SubjectPublicKeyInfo PEM."""
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _remember_public_key(keys_dir: Path, name: str, key: Ed25519PublicKey) -> None:
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / f"{key_id_for(name, key)}.pub"
    if not path.exists():
        path.write_bytes(public_pem(key))


def trust_public_keys(settings: Settings, public_keys: dict[str, Ed25519PublicKey]) -> None:
    """Keep ``public_keys`` (by key id) among the deployment's known keys, e.g. those a
    restored log was signed with, so that online verification can anchor it."""
    settings.keys_dir.mkdir(parents=True, exist_ok=True)
    for key_id, key in public_keys.items():
        # The id names a file: a key name with a path in it must not write elsewhere.
        if "/" in key_id or "\\" in key_id or key_id.startswith("."):
            raise ValueError(f"key id {key_id!r} cannot name a key file")
        path = settings.keys_dir / f"{key_id}.pub"
        if not path.exists():
            path.write_bytes(public_pem(key))


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The deployment's signing key: from the environment, a file, or created on first use."""
    if settings.signing_key_pem:
        key = _load_private(settings.signing_key_pem.encode(), "TRIALLEDGER_SIGNING_KEY")
    elif settings.signing_key_file:
        path = settings.signing_key_file
        if not path.exists():
            raise SigningKeyError(f"{path}: signing key file not found")
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise SigningKeyError(f"{path}: signing key file must be mode 0600 (owner only)")
        key = _load_private(path.read_bytes(), str(path))
    else:
        key = _load_or_create(settings.keys_dir / f"{settings.key_name}.key")
    _remember_public_key(settings.keys_dir, settings.key_name, key.public_key())
    return key


def _load_or_create(path: Path) -> Ed25519PrivateKey:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once must not both create (and one lose) a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise SigningKeyError(f"{path}: signing key file must be mode 0600") from None
        return _load_private(path.read_bytes(), str(path))
    key = Ed25519PrivateKey.generate()
    with os.fdopen(fd, "wb") as f:
        f.write(_private_pem(key))
    return key


def verifier_key_of(key_id: str, public_key: str) -> str:
    """The C2SP verifier key of a keyring's key: its id ``<name>+<hex key hash>`` and its
    base64 raw Ed25519 key."""
    name = key_id.rpartition("+")[0]
    raw = base64.b64decode(public_key)
    return verifier_key(name, Ed25519PublicKey.from_public_bytes(raw))


def load_public_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Every known public key by key id: the keyring directory plus a configured signing key.

    Never creates a key: verifying must not change the deployment.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    if settings.signing_key_pem or settings.signing_key_file:
        public = load_signing_key(settings).public_key()
        keys[key_id_for(settings.key_name, public)] = public
    if settings.keys_dir.exists():
        for path in sorted(settings.keys_dir.glob("*.pub")):
            key = load_pem_public_key(path.read_bytes())
            if isinstance(key, Ed25519PublicKey):
                keys[path.name.removesuffix(".pub")] = key
    return keys


def rotate(settings: Settings, register: Callable[[str, str], object]) -> str:
    """Replace the signing key: create the next key, let ``register(key_id, public_key_b64)``
    record it in every study (signed by the current key), then make it current.

    Resumable: the next key is kept in its own file until the switch, so a rotation that
    stopped half-way picks up the same key when run again.
    """
    if settings.signing_key_pem or settings.signing_key_file:
        raise SigningKeyError("this key is managed outside TrialLedger (environment or file): "
                              "rotate it there")
    current = settings.keys_dir / f"{settings.key_name}.key"
    upcoming = settings.keys_dir / f"{settings.key_name}.next.key"
    new_key = _load_or_create(upcoming)
    public = new_key.public_key()
    _remember_public_key(settings.keys_dir, settings.key_name, public)
    new_id = key_id_for(settings.key_name, public)
    register(new_id, public_key_b64(public))
    # The retired private key is not kept: it must never sign again. Its public key stays.
    os.replace(upcoming, current)
    return new_id
