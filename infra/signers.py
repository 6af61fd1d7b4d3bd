"""The signer port: an Ed25519 key wherever it lives, as the event, checkpoint and manifest
signers see it.

A file key is a :class:`cryptography` ``Ed25519PrivateKey``, which has this shape already; a key
on a PKCS#11 token is an :class:`infra.pkcs11_signer.Pkcs11Signer`. Both make the same
RFC 8032 signatures, so nothing that verifies can tell them apart.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The first byte of a hand-over (see :func:`handover`): which kind of key follows.
FILE_KEY = b"F"
TOKEN_KEY = b"P"


class SigningKeyError(RuntimeError):
    """A signing key cannot be loaded, is stored unsafely, or may not sign."""


class Signer(Protocol):
    """Signs with one Ed25519 key; its key id is :func:`infra.signing.key_id_for` of the
    deployment's key name and :meth:`public_key`."""

    def public_key(self) -> Ed25519PublicKey:
        """The key that verifies this signer's signatures."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        ...


@runtime_checkable
class HandsOver(Protocol):
    """A signer whose key another process can open for itself (a token key: the private key
    cannot be handed over, only where to find it)."""

    def handover(self) -> bytes:
        """What a signing process needs to sign with the same key (see :func:`handover`)."""
        ...


@runtime_checkable
class Closes(Protocol):
    """A signer holding something to release (a PKCS#11 session)."""

    def close(self) -> None:
        """Release it."""
        ...


def close_signer(signer: Signer) -> None:
    """Release what ``signer`` holds; a file key holds nothing."""
    if isinstance(signer, Closes):
        signer.close()


def handover(signer: Signer) -> bytes:
    """What a signing process is given, on a pipe, to sign with ``signer``'s key: the raw key of
    a file key, or the token, key label and PIN of a PKCS#11 key (each process opens its own
    session)."""
    if isinstance(signer, Ed25519PrivateKey):
        return FILE_KEY + signer.private_bytes_raw()
    if isinstance(signer, HandsOver):
        return signer.handover()
    raise SigningKeyError(f"{type(signer).__name__} cannot sign in another process")


def signer_from_handover(handed: bytes) -> Signer:
    """The signer a :func:`handover` hands over, opened in this process."""
    kind, body = handed[:1], handed[1:]
    if kind == FILE_KEY:
        return Ed25519PrivateKey.from_private_bytes(body)
    if kind == TOKEN_KEY:
        # Imported here: a file key's process has no need of the PKCS#11 library.
        from infra.pkcs11_signer import Pkcs11Signer, TokenKey

        return Pkcs11Signer(TokenKey.from_bytes(body))
    raise SigningKeyError(f"unknown key hand-over {kind!r}")
