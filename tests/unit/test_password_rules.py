"""Password rules per NIST SP 800-63B (issue 14, A-3) and the TOTP second factor."""

from __future__ import annotations

import time

import pyotp
import pytest

from application.password_rules import password_problem
from application.second_factor import new_totp_secret, provisioning_uri, totp_matches


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "password1234", "123456789012",
                                      "qwertyuiop12", "abcdefghijkl"])
def test_common_and_patterned_passwords_are_refused(password: str) -> None:
    assert "too easy to guess" in (password_problem(password) or "")


def test_short_passwords_are_refused_and_long_phrases_accepted() -> None:
    assert password_problem("Sh0rt&sw33t") == "must have at least 12 characters"
    assert password_problem("amber canyon whistle") is None
    assert password_problem("amber canyon whistle " * 10) is None  # longer than zxcvbn rates
    assert password_problem("x" * 1025) == "must have at most 1024 characters"


def test_the_persons_own_names_make_a_password_guessable() -> None:
    assert password_problem("pellucidity9x") is None
    assert password_problem("pellucidity9x", ("pellucidity", "Pel Lucidity")) is not None


def test_totp_codes_match_their_secret_only_around_now() -> None:
    secret = new_totp_secret()
    totp = pyotp.TOTP(secret)
    assert totp_matches(secret, totp.now())
    assert totp_matches(secret, totp.at(time.time() - 30))  # one step of drift
    assert not totp_matches(secret, totp.at(time.time() - 120))
    assert not totp_matches(secret, None)
    assert not totp_matches(secret, "12345a")
    assert provisioning_uri(secret, "lwei") == totp.provisioning_uri(
        name="lwei", issuer_name="TrialLedger")
