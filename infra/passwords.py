"""Password hashing: Argon2id (argon2-cffi's defaults follow RFC 9106's recommendations).

Which passwords are acceptable is the application's rule (``application.password_rules``);
this module only hashes and checks.
"""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password``."""
    return _HASHER.hash(password)


def hash_secret(secret: str) -> str:
    """An Argon2id hash of a generated secret (an API client's credential)."""
    return _HASHER.hash(secret)


@cache
def _dummy_hash() -> str:
    # A hash with the same parameters as every real one, of a secret nobody knows.
    return _HASHER.hash(secrets.token_urlsafe(32))


def check_password(stored_hash: str | None, password: str) -> bool:
    """True if ``password`` matches ``stored_hash``.

    With no stored hash (no such person) the password is checked against a dummy hash with
    the same parameters, so an unknown username costs as long as a known one, and False is
    answered.
    """
    try:
        return _HASHER.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_secret() -> str:
    """A fresh random secret for an API client."""
    return secrets.token_urlsafe(32)
