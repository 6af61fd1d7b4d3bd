"""`trialledger verify`: passes an untouched store, names the first altered or missing event."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from infra.catalog import EVENTS_TABLE
from infra.postgres import schema_for_study
from infra.settings import Settings
from tests.support import T0, enroll, envelope, register, simulated_clock

STUDY = "NCT04397107"
TABLE = f'"{schema_for_study(STUDY)}"."{EVENTS_TABLE}"'


@pytest.fixture
def store(runtime: Runtime) -> Runtime:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    for code in ("001", "002", "003"):
        enroll(app, code)
        clock.advance(timedelta(hours=1))
    app.on_subject("002", lambda s, t: s.record_vital_signs(
        "VS1", T0 + timedelta(hours=1), {"HEIGHT": (150.0, "cm"), "WEIGHT": (36.0, "kg")},
        envelope(), t))
    app.close()
    # Sealed, as a server does within seconds: events left unsealed longer fail verification.
    runtime.seal(STUDY, force_checkpoint=True)
    return runtime


def run_verify(settings: Settings, db_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["verify", "--database-url", db_url, *args],
        env={"TRIALLEDGER_HOME": str(settings.home)},
    )
    return result.exit_code, " ".join(result.output.split())  # rich wraps at its width


def owner_sql(db_url: str, statement: str) -> None:
    """What an attacker with the owner's credentials could do: switch the guard off."""
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        conn.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
        conn.execute(statement)
        conn.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")


def test_an_untouched_store_verifies(store: Runtime, settings: Settings, db_url: str) -> None:
    code, output = run_verify(settings, db_url)
    assert code == 0, output
    assert f"{STUDY}: 13 events" in output


@pytest.mark.parametrize("offset_from_end", [1, 40])
def test_one_changed_byte_is_caught_and_the_event_named(
    store: Runtime, settings: Settings, db_url: str, offset_from_end: int
) -> None:
    # Positions: 1-2 keyring, 3 study, 4-6 subject 001, 7-9 subject 002, 10-12 subject 003,
    # 13 vitals. Position 8 is subject 002's screening; change one byte of its payload.
    owner_sql(db_url, f"UPDATE {TABLE} SET state = set_byte(state, length(state) - "
                      f"{offset_from_end}, get_byte(state, length(state) - {offset_from_end}) # 1)"
                      " WHERE notification_id = 8")
    code, output = run_verify(settings, db_url)
    assert code == 1
    assert "FIRST BAD EVENT" in output
    assert "position 8" in output
    assert "signature does not match" in output


def test_a_changed_signature_byte_is_caught(store: Runtime, settings: Settings,
                                            db_url: str) -> None:
    # Byte 60 lies inside the signature (it starts after a ~53-byte header).
    owner_sql(db_url, f"UPDATE {TABLE} SET state = set_byte(state, 60, "
                      f"get_byte(state, 60) # 255) WHERE notification_id = 11")
    code, output = run_verify(settings, db_url, "--study", STUDY)
    assert code == 1
    assert "position 11" in output


def test_a_deleted_event_breaks_the_version_chain(store: Runtime, settings: Settings,
                                                  db_url: str) -> None:
    # Delete subject 001's screening (its version 2): its enrollment (v3) is then named.
    owner_sql(db_url, f"DELETE FROM {TABLE} WHERE notification_id = 5")
    code, output = run_verify(settings, db_url)
    assert code == 1
    assert "position 6" in output
    assert "version chain broken" in output


def test_an_event_from_an_unknown_key_is_caught(store: Runtime, settings: Settings,
                                                db_url: str, tmp_path: object) -> None:
    # Verify with a keyring that lacks the deployment's key.
    import shutil

    for pub in settings.keys_dir.glob("*.pub"):
        shutil.move(str(pub), str(pub) + ".moved")
    code, output = run_verify(settings, db_url)
    assert code == 1
    assert "unknown key" in output
    assert "position 1" in output


def test_an_unknown_study_is_a_usage_error(store: Runtime, settings: Settings,
                                           db_url: str) -> None:
    code, output = run_verify(settings, db_url, "--study", "NCT00000000")
    assert code == 2
    assert "No study NCT00000000" in output
