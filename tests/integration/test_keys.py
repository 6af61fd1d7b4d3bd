"""Key rotation and revocation: recorded as events, followed by both verifiers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from domain.keyring import Keyring
from infra import keys
from infra.ledger.bundle import write_bundle
from infra.postgres import schema_for_study
from infra.settings import Settings
from infra.signing import EventSigner, SignedState, key_id_for
from tests.support import T0, enroll, register, simulated_clock
from trialledger_verifier.bundle import BundleInvalid, load_public_keys, verify_bundle

STUDY = "NCT04397107"
EVENTS = f'"{schema_for_study(STUDY)}".trialledger_events'


def run(args: list[str], settings: Settings) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env={"TRIALLEDGER_HOME": str(settings.home),
                                                "COLUMNS": "200"})
    return result.exit_code, result.output


def test_rotation_is_vouched_for_by_the_old_key_and_verifiable_from_the_first_key(
    runtime: Runtime, settings: Settings, db_url: str, tmp_path: Path
) -> None:
    app = runtime.study(STUDY, clock=simulated_clock())
    register(app)
    enroll(app, "001")
    app.close()
    old_key = runtime.signing_key()
    old_id = key_id_for(settings.key_name, old_key.public_key())
    code, output = run(["keys", "export-public", "-o", str(tmp_path / "first.pem")], settings)
    assert code == 0, output

    code, output = run(["keys", "rotate", "--database-url", db_url], settings)
    assert code == 0, output
    new_key = keys.load_signing_key(settings)
    new_id = key_id_for(settings.key_name, new_key.public_key())
    assert new_id != old_id and new_id in output

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(f"SELECT topic, state FROM {EVENTS} WHERE topic = ANY(%s) "
                            "ORDER BY notification_id",
                            ([Keyring.KeyRegistered.TOPIC, Keyring.KeyRetired.TOPIC],)).fetchall()
    signed_by = [(topic, SignedState.unpack(bytes(state)).key_id) for topic, state in rows]
    # The first key registered itself; the old key registered the new one and retired itself.
    registered, retired = Keyring.KeyRegistered.TOPIC, Keyring.KeyRetired.TOPIC
    assert signed_by == [(registered, old_id), (registered, old_id), (retired, old_id)]

    # Later events are signed by the new key, and everything verifies, online and offline
    # from the first key alone.
    later = Runtime(settings, db_url)
    app = later.study(STUDY, clock=simulated_clock(T0 + timedelta(days=1)))
    enroll(app, "002")
    app.close()
    later.seal(STUDY)
    later.close()
    code, output = run(["verify", "--database-url", db_url], settings)
    assert code == 0, output
    code, output = run(["export", "--study", STUDY, "--format", "bundle", "-o",
                        str(tmp_path / "b.zip"), "--database-url", db_url], settings)
    assert code == 0, output
    trusted = load_public_keys((tmp_path / "first.pem").read_text())
    assert list(trusted) == [old_id]
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(f"SELECT count(*) FROM {EVENTS}").fetchone()
    # Every event but the export's own record, made once the file was complete.
    assert stored is not None
    assert verify_bundle(tmp_path / "b.zip", trusted).events == stored[0] - 1

    # The retired key signing anything afterwards is caught.
    with psycopg.connect(db_url) as conn:
        oid, version, topic, state = conn.execute(
            f"SELECT originator_id, originator_version, topic, state FROM {EVENTS} "
            "ORDER BY notification_id DESC LIMIT 1").fetchone()
    payload = SignedState.unpack(bytes(state)).payload
    forged = EventSigner(STUDY, old_key, settings.key_name).sign(
        str(oid), version + 1, topic, payload, (T0 + timedelta(days=2)).isoformat())
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {EVENTS} (originator_id, originator_version, topic, state) "
                     "VALUES (%s, %s, %s, %s)", (oid, version + 1, topic, forged.pack()))
    code, output = run(["verify", "--database-url", db_url], settings)
    assert code == 1
    assert "after its retirement" in " ".join(output.split())


def test_revocation_needs_an_explicit_offset(runtime: Runtime, settings: Settings,
                                             db_url: str) -> None:
    app = runtime.study(STUDY, clock=simulated_clock())
    register(app)
    app.close()
    key_id = key_id_for(settings.key_name, runtime.signing_key().public_key())
    code, output = run(["keys", "revoke", "--key-id", key_id, "--effective-at",
                        "2021-01-01T00:00:00", "--reason", "lost laptop",
                        "--database-url", db_url], settings)
    assert code == 2
    assert "naive" in output


def test_an_offline_bundle_from_a_revoked_key_fails(runtime: Runtime, settings: Settings,
                                                    db_url: str, tmp_path: Path) -> None:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    clock.set(T0 + timedelta(hours=2))
    enroll(app, "001")
    app.close()
    runtime.seal(STUDY)  # as a server would have, before the compromise came to light
    key_id = key_id_for(settings.key_name, runtime.signing_key().public_key())
    run(["keys", "export-public", "-o", str(tmp_path / "k.pem")], settings)
    code, output = run(["keys", "revoke", "--key-id", key_id, "--effective-at",
                        (T0 + timedelta(hours=1)).isoformat(), "--reason", "compromised",
                        "--database-url", db_url], settings)
    assert code == 0, output
    # The export is itself an event, which the revoked key may not sign: refused (a key the
    # deployment may not use, exit 2), no file.
    code, output = run(["export", "--study", STUDY, "--format", "bundle", "-o",
                        str(tmp_path / "b.zip"), "--database-url", db_url], settings)
    assert code == 2 and "revoked" in output
    assert not (tmp_path / "b.zip").exists()
    # A ledger bundle written all the same has its manifest signed by the revoked key: it must
    # not verify. (Written by the ledger's writer: the export path also renders, and a study
    # whose key is revoked refuses to be opened for that.)
    with psycopg.connect(db_url, autocommit=True) as conn:
        write_bundle(conn, STUDY, schema_for_study(STUDY), tmp_path / "b.zip",
                     keys.load_public_keys(settings), runtime.signing_key(), settings.key_name)
    with pytest.raises(BundleInvalid, match="after its revocation"):
        verify_bundle(tmp_path / "b.zip", load_public_keys((tmp_path / "k.pem").read_text()))
