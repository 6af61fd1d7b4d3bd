"""Password hashing: Argon2id (argon2-cffi's defaults follow RFC 9106's recommendations)."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
MIN_LENGTH = 12


class WeakPassword(ValueError):
    """The password does not meet the deployment's minimum."""


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` (refusing one shorter than :data:`MIN_LENGTH`)."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"must have at least {MIN_LENGTH} characters")
    return _HASHER.hash(password)


def hash_secret(secret: str) -> str:
    """An Argon2id hash of a generated secret (an API client's credential)."""
    return _HASHER.hash(secret)


def check_password(stored_hash: str, password: str) -> bool:
    """True if ``password`` matches ``stored_hash``."""
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_secret() -> str:
    """A fresh random secret for an API client."""
    return secrets.token_urlsafe(32)
