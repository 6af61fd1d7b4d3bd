"""The second factor: time-based one-time passwords (TOTP, RFC 6238), by pyotp.

Six digits, a 30-second step, SHA-1: what every authenticator app reads from an
``otpauth://`` URI. A code is accepted one step either side of now (clock drift, and the
seconds a person takes to type it).
"""

from __future__ import annotations

import pyotp

ISSUER = "TrialLedger"
_DRIFT_STEPS = 1


def new_totp_secret() -> str:
    """A fresh random secret (base32, 160 bits as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI (what an authenticator app's QR code holds) for ``secret``."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def totp_matches(secret: str, code: str | None) -> bool:
    """True if ``code`` is the current code of ``secret`` (give or take one step)."""
    if not code:
        return False
    code = code.strip().replace(" ", "")
    return code.isdigit() and pyotp.TOTP(secret).verify(code, valid_window=_DRIFT_STEPS)
