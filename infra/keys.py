"""Signing keys: the private key lives in a file (mode 0600), the environment or on a PKCS#11
token (an HSM), never in the database.

Every public key ever used is kept in ``<home>/keys/<key id>.pub`` so old events stay verifiable.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

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
from infra.signers import Signer, SigningKeyError
from infra.signing import key_id_for, public_key_b64

if TYPE_CHECKING:
    from infra.pkcs11_signer import TokenKey


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


def load_signing_key(settings: Settings) -> Signer:
    """The deployment's signing key: on a PKCS#11 token, from the environment, a file, or
    created on first use."""
    key: Signer
    if settings.pkcs11_module:
        from infra.pkcs11_signer import Pkcs11Signer

        key = Pkcs11Signer(token_key(settings))
    elif settings.signing_key_pem:
        key = _load_private(settings.signing_key_pem.encode(), "TRIALLEDGER_SIGNING_KEY")
    elif settings.signing_key_file:
        key = load_key_file(settings.signing_key_file)
    else:
        key = _load_or_create(settings.keys_dir / f"{settings.key_name}.key")
    _remember_public_key(settings.keys_dir, settings.key_name, key.public_key())
    return key


def load_key_file(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in a PEM file, which must be the owner's alone (mode 0600)."""
    _require_private_file(path, "signing key file")
    return _load_private(path.read_bytes(), str(path))


def _require_private_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise SigningKeyError(f"{path}: {what} not found")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise SigningKeyError(f"{path}: {what} must be mode 0600 (owner only)")


def token_key(settings: Settings, key_label: str | None = None) -> TokenKey:
    """Where the PKCS#11 key of the settings is (or the key ``key_label`` on the same token)."""
    from infra.pkcs11_signer import TokenKey

    if not (settings.pkcs11_module and settings.pkcs11_token_label
            and settings.pkcs11_key_label):
        raise SigningKeyError("no PKCS#11 token is configured (TRIALLEDGER_PKCS11_MODULE, "
                              "_TOKEN_LABEL, _KEY_LABEL and _PIN or _PIN_FILE)")
    pin = settings.pkcs11_pin
    if settings.pkcs11_pin_file is not None:
        _require_private_file(settings.pkcs11_pin_file, "PKCS#11 PIN file")
        pin = settings.pkcs11_pin_file.read_text().partition("\n")[0].strip()
    if not pin:
        raise SigningKeyError("the PKCS#11 PIN is empty")
    return TokenKey(settings.pkcs11_module, settings.pkcs11_token_label,
                    key_label or settings.pkcs11_key_label, pin)


def previous_key(settings: Settings, key_file: Path | None, key_label: str | None) -> Signer:
    """The key a rotation moves away from: a key file, or another label on the configured
    PKCS#11 token (the current key is the settings' own)."""
    if (key_file is None) == (key_label is None):
        raise SigningKeyError("name the previous key with one of --from-key-file and "
                              "--from-pkcs11-key-label")
    if key_file is not None:
        return load_key_file(key_file)
    from infra.pkcs11_signer import Pkcs11Signer

    return Pkcs11Signer(token_key(settings, key_label))


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
    if settings.signing_key_pem or settings.signing_key_file or settings.pkcs11_module:
        raise SigningKeyError("this key is managed outside TrialLedger (environment, file or "
                              "PKCS#11 token): configure the new key, then name the old one "
                              "with --from-key-file or --from-pkcs11-key-label")
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
