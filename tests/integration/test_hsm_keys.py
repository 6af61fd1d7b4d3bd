"""Signing keys on a PKCS#11 token (SoftHSM2), rotations to and between them, and a key file
replaced by hand."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pkcs11
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import AttributeSensitive
from pkcs11.util.ec import encode_named_curve_parameters
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from application.sealing import BackgroundSealer
from domain.keyring import Keyring
from infra import keys
from infra.ledger import store
from infra.pkcs11_signer import ED25519_OID, Pkcs11Signer, TokenKey, generate_key
from infra.postgres import schema_for_study
from infra.settings import Settings
from infra.signers import SigningKeyError
from infra.signing import EventSigner, SignedState, key_id_for
from tests.support import api_client, enroll, free_port, register
from trialledger_verifier.bundle import load_public_keys, verify_bundle

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN = "trialledger-tests"
PIN = "246810"
STUDY = "NCT04397107"
SCHEMA = schema_for_study(STUDY)
EVENTS = f'"{SCHEMA}".trialledger_events'


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SoftHSM2 token in a temporary directory, for this module's tests (each its own keys).

    One for the module: SoftHSM2 reads its configuration once per process, when the module
    is first loaded."""
    if not MODULE.exists():
        pytest.skip(f"SoftHSM2's PKCS#11 module {MODULE} is absent (Debian package softhsm2)")
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # signing processes and CLI runs inherit it
    try:
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin",
                        PIN, "--so-pin", "13579111"], check=True, capture_output=True)
        yield TOKEN
    finally:
        if previous is None:
            del os.environ["SOFTHSM2_CONF"]
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def on_token(settings: Settings, label: str) -> Settings:
    """The deployment's settings, signing with the token's key ``label``."""
    return dataclasses.replace(settings, pkcs11_module=str(MODULE), pkcs11_token_label=TOKEN,
                               pkcs11_key_label=label, pkcs11_pin=PIN)


def new_token_key(settings: Settings) -> tuple[Settings, str]:
    """A fresh key on the token, and the settings that sign with it."""
    label = f"key-{uuid4().hex[:8]}"
    generate_key(TokenKey(str(MODULE), TOKEN, label, PIN))
    return on_token(settings, label), label


def run(args: list[str], settings: Settings) -> tuple[int, str]:
    env: dict[str, str | None] = {"TRIALLEDGER_HOME": str(settings.home), "COLUMNS": "200"}
    if settings.pkcs11_key_label:
        env.update(TRIALLEDGER_PKCS11_MODULE=str(MODULE), TRIALLEDGER_PKCS11_TOKEN_LABEL=TOKEN,
                   TRIALLEDGER_PKCS11_KEY_LABEL=settings.pkcs11_key_label,
                   TRIALLEDGER_PKCS11_PIN=PIN)
    result = CliRunner().invoke(cli, args, env=env)
    return result.exit_code, result.output


def write(settings: Settings, db_url: str, *codes: str, first: bool = False) -> str:
    """Enroll ``codes`` (registering the study ``first``) with the settings' key, seal with a
    checkpoint; return the key's id."""
    runtime = Runtime(settings, db_url)
    try:
        app = runtime.study(STUDY)
        if first:
            register(app)
        for code in codes:
            enroll(app, code)
        runtime.seal(STUDY, force_checkpoint=True)
        return key_id_for(settings.key_name, runtime.signing_key().public_key())
    finally:
        runtime.close()


def signed_by(db_url: str) -> list[tuple[str, str]]:
    """(topic, key id) of every stored event, in log order."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(f"SELECT topic, state FROM {EVENTS} ORDER BY notification_id")
        return [(topic, SignedState.unpack(bytes(state)).key_id) for topic, state in rows]


def checkpoint_keys(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        return [k for (k,) in conn.execute(
            f'SELECT key_id FROM "{SCHEMA}".{store.CHECKPOINTS} ORDER BY tree_size')]


def verify_offline(settings: Settings, db_url: str, trusted_pem: Path, path: Path) -> int:
    """Export a bundle with the settings' key; verify it offline with ``trusted_pem`` only;
    return the number of events verified."""
    code, output = run(["export", "--study", STUDY, "--format", "bundle", "-o", str(path),
                        "--database-url", db_url], settings)
    assert code == 0, output
    return verify_bundle(path, load_public_keys(trusted_pem.read_text())).events


def test_writes_checkpoints_and_bundles_signed_on_the_token_verify_like_file_key_ones(
    settings: Settings, db_url: str, token: str, tmp_path: Path
) -> None:
    hsm = on_token(settings, f"key-{uuid4().hex[:8]}")
    code, output = run(["keys", "hsm-generate"], hsm)
    assert code == 0 and "Generated" in output, output

    key_id = write(hsm, db_url, "001", "002", first=True)
    assert {k for _, k in signed_by(db_url)} == {key_id}
    assert checkpoint_keys(db_url) and set(checkpoint_keys(db_url)) == {key_id}
    code, output = run(["verify", "--database-url", db_url], hsm)
    assert code == 0, output
    code, output = run(["keys", "export-public", "-o", str(tmp_path / "k.pem")], hsm)
    assert code == 0, output
    assert list(load_public_keys((tmp_path / "k.pem").read_text())) == [key_id]
    events = len(signed_by(db_url))
    # The bundle's manifest is signed on the token too; its export is one event more.
    assert verify_offline(hsm, db_url, tmp_path / "k.pem", tmp_path / "b.zip") == events

    # A bulk load's signing process opens a session of its own on the token and makes the
    # very signatures made here (Ed25519 is deterministic).
    signer = keys.load_signing_key(hsm)
    assert isinstance(signer, Pkcs11Signer)
    process = EventSigner(STUDY, signer, hsm.key_name).signing_process()
    try:
        messages = [b"first", b"second" * 100, b""]
        assert process.signatures(messages) == [signer.sign(m) for m in messages]
    finally:
        process.close()
        signer.close()


def test_the_private_key_never_leaves_the_token(token: str) -> None:
    label, loose = f"key-{uuid4().hex[:8]}", f"loose-{uuid4().hex[:8]}"
    generate_key(TokenKey(str(MODULE), TOKEN, label, PIN))
    with pkcs11.lib(str(MODULE)).get_token(token_label=TOKEN).open(user_pin=PIN,
                                                                    rw=True) as session:
        private = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label=label)
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.SENSITIVE] is True
        with pytest.raises(AttributeSensitive):
            private[Attribute.VALUE]
        # A key the token would let out is not one TrialLedger signs with.
        parameters = session.create_domain_parameters(
            KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
            local=True)
        parameters.generate_keypair(store=True, label=loose,
                                    mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                                    private_template={Attribute.EXTRACTABLE: True,
                                                      Attribute.SENSITIVE: False})
    with pytest.raises(SigningKeyError, match="could leave the token"):
        Pkcs11Signer(TokenKey(str(MODULE), TOKEN, loose, PIN))
    with pytest.raises(SigningKeyError, match="PIN is not correct"):
        Pkcs11Signer(TokenKey(str(MODULE), TOKEN, label, "999999"))
    with pytest.raises(SigningKeyError, match="no Ed25519 key pair labelled"):
        Pkcs11Signer(TokenKey(str(MODULE), TOKEN, "no-such-key", PIN))
    # The label is taken: a second generation is refused rather than making a twin.
    with pytest.raises(SigningKeyError, match="already holds"):
        generate_key(TokenKey(str(MODULE), TOKEN, label, PIN))


def test_rotation_from_a_file_key_to_a_token_key_and_on_to_another(
    settings: Settings, db_url: str, token: str, tmp_path: Path
) -> None:
    file_id = write(settings, db_url, "001", first=True)
    code, output = run(["keys", "export-public", "-o", str(tmp_path / "first.pem")], settings)
    assert code == 0, output

    first, first_label = new_token_key(settings)
    # Configured, not recorded: refused, nothing signed.
    before = signed_by(db_url)
    with pytest.raises(SigningKeyError, match="replaced without a rotation"):
        write(first, db_url, "002")
    assert signed_by(db_url) == before
    code, output = run(["keys", "rotate", "--from-key-file",
                        str(settings.keys_dir / f"{settings.key_name}.key"),
                        "--database-url", db_url], first)
    assert code == 0, output
    first_id = write(first, db_url, "002")
    assert first_id in output and file_id in output

    second, _ = new_token_key(settings)
    code, output = run(["keys", "rotate", "--from-pkcs11-key-label", first_label,
                        "--database-url", db_url], second)
    assert code == 0, output
    second_id = write(second, db_url, "003")

    registered, retired = Keyring.KeyRegistered.TOPIC, Keyring.KeyRetired.TOPIC
    key_events = [(t, k) for t, k in signed_by(db_url) if t in (registered, retired)]
    # Each old key vouched for its successor and retired itself.
    assert key_events == [(registered, file_id), (registered, file_id), (retired, file_id),
                          (registered, first_id), (retired, first_id)]
    assert {k for _, k in signed_by(db_url)} == {file_id, first_id, second_id}
    assert set(checkpoint_keys(db_url)) == {file_id, first_id, second_id}
    code, output = run(["verify", "--database-url", db_url], second)
    assert code == 0, output
    # Offline, from the first (file) key alone, every rotation is followed.
    assert verify_offline(second, db_url, tmp_path / "first.pem",
                          tmp_path / "b.zip") == len(signed_by(db_url)) - 1
    # The retired token key may not sign again.
    with pytest.raises(SigningKeyError, match="retired"):
        write(first, db_url, "004")


def test_a_key_file_replaced_by_hand_is_refused_until_a_rotation_records_it(
    settings: Settings, db_url: str, tmp_path: Path
) -> None:
    old_id = write(settings, db_url, "001", first=True)
    key_file = settings.keys_dir / f"{settings.key_name}.key"
    old_file = tmp_path / "old.key"
    shutil.copy2(key_file, old_file)
    replacement = Ed25519PrivateKey.generate()
    key_file.write_bytes(replacement.private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                   NoEncryption()))
    new_id = key_id_for(settings.key_name, replacement.public_key())
    before = signed_by(db_url)

    # The server refuses to start, in one line naming both keys and the way out (a server
    # that started anyway is stopped by the timeout, failing the test).
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    served = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--database-url", db_url, "--port",
         str(free_port())], env={**environ, "TRIALLEDGER_HOME": str(settings.home),
                                 "COLUMNS": "300"},
        capture_output=True, text=True, timeout=120)
    assert served.returncode == 2, served.stdout + served.stderr
    assert served.stderr.count("\n") == 1 and "Traceback" not in served.stderr
    assert f"signing key {new_id} is not in the keyring" in served.stderr
    assert old_id in served.stderr and "keys rotate" in served.stderr
    # So does every write, to a study or to the directory (people, sign-ins); sealing signs
    # no checkpoint with it either.
    with pytest.raises(SigningKeyError, match="replaced without a rotation"):
        write(settings, db_url, "002")
    runtime = Runtime(settings, db_url)
    try:
        with pytest.raises(SigningKeyError, match="replaced without a rotation"):
            runtime.seal(STUDY, force_checkpoint=True)
        with pytest.raises(SigningKeyError, match="replaced without a rotation"):
            runtime.people()
    finally:
        runtime.close()
    assert signed_by(db_url) == before and new_id not in checkpoint_keys(db_url)

    code, output = run(["keys", "rotate", "--from-key-file", str(old_file),
                        "--database-url", db_url], settings)
    assert code == 0, output
    assert write(settings, db_url, "002") == new_id
    code, output = run(["verify", "--database-url", db_url], settings)
    assert code == 0, output
    # Rotating to the key already recorded is a usage error, not a second rotation.
    code, output = run(["keys", "rotate", "--from-key-file", str(key_file),
                        "--database-url", db_url], settings)
    assert code == 2 and "already the configured key" in " ".join(output.split()), output


def test_the_servers_sealer_process_signs_checkpoints_on_the_token_with_its_own_session(
    settings: Settings, db_url: str, token: str
) -> None:
    hsm, _ = new_token_key(settings)
    runtime = Runtime(hsm, db_url)
    try:
        app = runtime.study(STUDY)
        register(app)
        enroll(app, "001")
        key_id = key_id_for(hsm.key_name, runtime.signing_key().public_key())
        # The sealer is a process of its own (spawned, as under `serve`), with its own session
        # on the token while this process keeps its own open.
        sealer = BackgroundSealer(runtime, interval=0.2, checkpoint_interval=0.5)
        sealer.start()
        try:
            deadline = time.monotonic() + 60
            while not checkpoint_keys(db_url) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            sealer.stop()
        assert checkpoint_keys(db_url) == [key_id]
        enroll(app, "002")  # this process's session still signs
    finally:
        runtime.close()
    code, output = run(["verify", "--database-url", db_url], hsm)
    assert code == 0, output


def test_a_token_that_fails_to_sign_is_a_503_with_nothing_stored(
    settings: Settings, db_url: str, token: str
) -> None:
    hsm, label = new_token_key(settings)
    runtime = Runtime(hsm, db_url)
    try:
        app = runtime.study(STUDY)
        register(app)
        enroll(app, "001")
        coordinator = api_client(runtime, "coordinator", site="JLU1")
        vitals = {"observed_at": "2021-02-09T09:00:00+00:00", "visit": "M1",
                  "measurements": {"WEIGHT": {"value": 36.0, "unit": "kg"}}}
        first = coordinator.post(f"/v1/studies/{STUDY}/subjects/001/vitals", json=vitals)
        assert first.status_code == 201, first.text
        before = signed_by(db_url)
        # The key disappears from the token under the running server (this process is
        # logged in to the token already: the new session shares the login).
        with pkcs11.lib(str(MODULE)).get_token(token_label=TOKEN).open(rw=True) as session:
            session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC_EDWARDS, label=label).destroy()
        answer = coordinator.post(f"/v1/studies/{STUDY}/subjects/001/vitals", json=vitals)
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert "cannot sign" in answer.json()["detail"] and label in answer.json()["detail"]
        assert signed_by(db_url) == before
    finally:
        runtime.close()
