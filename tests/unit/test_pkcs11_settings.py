"""The PKCS#11 key's settings: all or nothing, with one PIN, never beside a key file."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import keys
from infra.settings import Settings
from infra.signers import SigningKeyError

TOKEN_VARIABLES = {"TRIALLEDGER_PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
                   "TRIALLEDGER_PKCS11_TOKEN_LABEL": "trialledger",
                   "TRIALLEDGER_PKCS11_KEY_LABEL": "signing-2026"}


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*TOKEN_VARIABLES, "TRIALLEDGER_PKCS11_PIN", "TRIALLEDGER_PKCS11_PIN_FILE",
                 "TRIALLEDGER_SIGNING_KEY", "TRIALLEDGER_SIGNING_KEY_FILE"]:
        monkeypatch.delenv(name, raising=False)


def test_a_token_key_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    for name, value in TOKEN_VARIABLES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TRIALLEDGER_PKCS11_PIN_FILE", str(tmp_path / "pin"))
    settings = Settings.from_env()
    assert (settings.pkcs11_module, settings.pkcs11_token_label, settings.pkcs11_key_label,
            settings.pkcs11_pin, settings.pkcs11_pin_file) == (
        *TOKEN_VARIABLES.values(), None, tmp_path / "pin")
    assert Settings.from_env().signing_key_file is None


def test_without_token_variables_the_file_key_stays_the_default() -> None:
    assert Settings.from_env().pkcs11_module is None


@pytest.mark.parametrize(("missing", "extra", "message"), [
    ("TRIALLEDGER_PKCS11_TOKEN_LABEL", {"TRIALLEDGER_PKCS11_PIN": "1234"},
     "TRIALLEDGER_PKCS11_TOKEN_LABEL must be set"),
    (None, {}, "set one of TRIALLEDGER_PKCS11_PIN and TRIALLEDGER_PKCS11_PIN_FILE"),
    (None, {"TRIALLEDGER_PKCS11_PIN": "1234", "TRIALLEDGER_PKCS11_PIN_FILE": "/p"},
     "set one of TRIALLEDGER_PKCS11_PIN and TRIALLEDGER_PKCS11_PIN_FILE"),
    (None, {"TRIALLEDGER_PKCS11_PIN": "1234", "TRIALLEDGER_SIGNING_KEY_FILE": "/k.pem"},
     "name two signing keys"),
])
def test_an_incomplete_or_doubled_key_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, missing: str | None, extra: dict[str, str], message: str
) -> None:
    for name, value in {**TOKEN_VARIABLES, **extra}.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_the_pin_file_is_the_owners_alone_and_its_first_line_is_the_pin(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text("246810\nnot part of it\n")
    pin_file.chmod(0o644)
    settings = Settings(None, tmp_path, pkcs11_module="/m.so", pkcs11_token_label="t",
                        pkcs11_key_label="k", pkcs11_pin_file=pin_file)
    with pytest.raises(SigningKeyError, match="must be mode 0600"):
        keys.token_key(settings)
    pin_file.chmod(0o600)
    assert keys.token_key(settings).pin == "246810"
    assert keys.token_key(settings, "other").key_label == "other"
