"""The tamper matrix (issue 14): a small sealed study is verified once (the verifier then
remembers its newest checkpoint), tampered with as its owner could, with real SQL, and
verified again: each case fails `trialledger verify` (exit 1) naming what broke. T-4 does
the same to the directory's log (a role grant forged), which the server also refuses."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from application.runtime import Runtime
from infra.catalog import CATALOG_SCHEMA, EVENTS_TABLE
from infra.ledger import store
from infra.ledger.logs import DIRECTORY_EVENTS
from infra.postgres import schema_for_study
from infra.settings import Settings
from infra.signing import EventSigner, SignedState
from tests.support import (
    T0,
    add_person,
    enroll,
    envelope,
    simulated_clock,
    three_children_sealed,
)

STUDY = "NCT04397107"
SCHEMA = schema_for_study(STUDY)


def table(name: str) -> str:
    return f'"{SCHEMA}"."{name}"'


EVENTS, LEAVES, NODES = table(EVENTS_TABLE), table(store.LEAVES), table(store.NODES)
CHECKPOINTS = table(store.CHECKPOINTS)

# Positions: 1-2 keyring, 3 study, then per child: consent, screening, enrollment, lab
# (4-7 child 001, 8-11 child 002, 12-15 child 003). Checkpoints at sizes 11 and 15.


@pytest.fixture
def sealed(runtime: Runtime) -> Runtime:
    three_children_sealed(runtime)
    return runtime


def verify(settings: Settings, db_url: str, study: str | None = STUDY) -> tuple[int, str]:
    """`trialledger verify` of ``study`` (None: of every log, the directory's too)."""
    result = CliRunner().invoke(
        cli, ["verify", "--database-url", db_url, *(["--study", study] if study else []),
              "--workers", "1"],
        env={"TRIALLEDGER_HOME": str(settings.home), "TRIALLEDGER_WITNESSES": ""})
    return result.exit_code, " ".join(result.output.split())


def as_owner(db_url: str, *statements: str, params: tuple[Any, ...] = (),
             tables: tuple[str, ...] = ()) -> None:
    """An attacker with the owner's credentials: triggers off, change, triggers back on."""
    tables = tables or (EVENTS, LEAVES, NODES, CHECKPOINTS, table(store.COSIGNED))
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        for name in tables:
            conn.execute(f"ALTER TABLE {name} DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement, params if "%s" in statement else None)
        for name in tables:
            conn.execute(f"ALTER TABLE {name} ENABLE TRIGGER USER")


def event_row(db_url: str, position: int) -> tuple[Any, ...]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"SELECT originator_id, originator_version, topic, state FROM "
                           f"{EVENTS} WHERE notification_id = %s", (position,)).fetchone()
    assert row is not None
    return tuple(row)


def swap(a: int, b: int) -> list[str]:
    return [f"UPDATE {EVENTS} SET notification_id = -1 WHERE notification_id = {a}",
            f"UPDATE {EVENTS} SET notification_id = {a} WHERE notification_id = {b}",
            f"UPDATE {EVENTS} SET notification_id = {b} WHERE notification_id = -1"]


Tamper = Callable[[Runtime, Settings, str], None]


def byte_flip(rt: Runtime, settings: Settings, db_url: str) -> None:
    as_owner(db_url, f"UPDATE {EVENTS} SET state = set_byte(state, length(state) - 3, "
                     "get_byte(state, length(state) - 3) # 4) WHERE notification_id = 9")


def deletion(rt: Runtime, settings: Settings, db_url: str) -> None:
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id = 6")


def insertion(rt: Runtime, settings: Settings, db_url: str) -> None:
    # A copy of child 002's lab presented as child 003's next event.
    _, _, topic, state = event_row(db_url, 11)
    child3, version3, _, _ = event_row(db_url, 15)
    as_owner(db_url, f"INSERT INTO {EVENTS} (originator_id, originator_version, topic, state) "
                     "VALUES (%s, %s, %s, %s)", params=(child3, version3 + 1, topic, state))


def reorder(rt: Runtime, settings: Settings, db_url: str) -> None:
    as_owner(db_url, *swap(5, 6))


def swap_with_leaves(rt: Runtime, settings: Settings, db_url: str) -> None:
    # Child 001's lab (7) and child 002's consent (8) trade places, each keeping its leaf
    # hash, so every event matches its leaf and every version chain holds: only the
    # checkpoint's root, and the stored tree under it, still know the order.
    as_owner(db_url, *swap(7, 8),
             f"UPDATE {LEAVES} SET leaf_hash = CASE leaf_index WHEN 6 THEN (SELECT leaf_hash "
             f"FROM {LEAVES} WHERE leaf_index = 7) ELSE (SELECT leaf_hash FROM {LEAVES} "
             "WHERE leaf_index = 6) END WHERE leaf_index IN (6, 7)")


def forged_signature(rt: Runtime, settings: Settings, db_url: str) -> None:
    # Byte 60 lies inside the signature (it starts after a ~53-byte header).
    as_owner(db_url, f"UPDATE {EVENTS} SET state = set_byte(state, 60, "
                     "get_byte(state, 60) # 255) WHERE notification_id = 11")


def truncated_tail(rt: Runtime, settings: Settings, db_url: str) -> None:
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id > 13")


def rolled_back_checkpoint(rt: Runtime, settings: Settings, db_url: str) -> None:
    # The database put back as it stood at the checkpoint of size 11: consistent in itself.
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id > 11",
             f"DELETE FROM {LEAVES} WHERE leaf_index >= 11",
             f"DELETE FROM {NODES} WHERE idx * (1 << level) + (1 << level) > 11",
             f"DELETE FROM {CHECKPOINTS} WHERE tree_size > 11")


def unknown_key(rt: Runtime, settings: Settings, db_url: str) -> None:
    intruder = EventSigner(STUDY, Ed25519PrivateKey.generate(), "trialledger")
    oid, version, topic, state = event_row(db_url, 15)
    forged = intruder.sign(str(oid), version + 1, topic,
                           SignedState.unpack(bytes(state)).payload,
                           (T0 + timedelta(days=1)).isoformat())
    as_owner(db_url, f"INSERT INTO {EVENTS} (originator_id, originator_version, topic, state) "
                     "VALUES (%s, %s, %s, %s)", params=(oid, version + 1, topic, forged.pack()))


def trusted_key_removed(rt: Runtime, settings: Settings, db_url: str) -> None:
    for pub in settings.keys_dir.glob("*.pub"):
        shutil.move(str(pub), str(pub) + ".moved")


def t1_last_event_and_ledger_emptied(rt: Runtime, settings: Settings, db_url: str) -> None:
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id = 15",
             f"DELETE FROM {LEAVES}", f"DELETE FROM {NODES}", f"DELETE FROM {CHECKPOINTS}")


def t1_then_sealed_afresh(rt: Runtime, settings: Settings, db_url: str) -> None:
    # ...and the next sealing round signs a fresh checkpoint over the edited log.
    t1_last_event_and_ledger_emptied(rt, settings, db_url)
    rt.seal(STUDY, force_checkpoint=True)


def t2_last_ten_events_with_leaves_and_checkpoints(rt: Runtime, settings: Settings,
                                                   db_url: str) -> None:
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id > 5",
             f"DELETE FROM {LEAVES} WHERE leaf_index >= 5",
             f"DELETE FROM {CHECKPOINTS} WHERE tree_size > 5")


def t3_latest_checkpoint_deleted(rt: Runtime, settings: Settings, db_url: str) -> None:
    as_owner(db_url, f"DELETE FROM {CHECKPOINTS} WHERE tree_size = 15")


def forked(rt: Runtime, settings: Settings, db_url: str) -> None:
    # The last event and everything sealed over it removed, another history written and
    # sealed in its place: the tree passes size 15 again, with other events.
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id = 15",
             f"DELETE FROM {LEAVES} WHERE leaf_index = 14",
             f"DELETE FROM {NODES} WHERE level = 0 AND idx = 14",
             f"DELETE FROM {CHECKPOINTS} WHERE tree_size = 15")
    app = rt.study(STUDY, clock=simulated_clock(T0 + timedelta(days=1)))
    enroll(app, "004")
    app.close()
    rt.seal(STUDY, force_checkpoint=True)


CASES: list[tuple[Tamper, list[str]]] = [
    (byte_flip, ["position 9", "signature does not match"]),
    (deletion, ["position 7", "version chain broken"]),
    (insertion, ["position 16", "signature does not match"]),
    (reorder, ["position 5", "version chain broken"]),
    (swap_with_leaves, ["position 7", "out of place", "leaf 6"]),
    (forged_signature, ["position 11", "signature does not match"]),
    (truncated_tail, ["deleted from the end of the log"]),
    (rolled_back_checkpoint, ["rolled back", "size 11", "(size 15)"]),
    (unknown_key, ["position 16", "unknown key"]),
    (trusted_key_removed, ["position 1", "unknown key"]),
    (t1_last_event_and_ledger_emptied, ["position 1", "not sealed"]),
    (t1_then_sealed_afresh, ["rolled back", "size 14", "(size 15)"]),
    (t2_last_ten_events_with_leaves_and_checkpoints, ["rolled back", "size 0", "(size 15)"]),
    (t3_latest_checkpoint_deleted, ["rolled back", "size 11", "(size 15)"]),
    (forked, ["forked", "size 15"]),
]


@pytest.mark.requirement("R21")
@pytest.mark.parametrize(("tamper", "named"), CASES, ids=[c[0].__name__ for c in CASES])
def test_tampering_fails_verification_naming_what_broke(
    sealed: Runtime, settings: Settings, db_url: str, tamper: Tamper, named: list[str]
) -> None:
    code, output = verify(settings, db_url)
    assert code == 0, output
    assert "15 sealed, 2 checkpoints verified" in output
    assert "unwitnessed: no witnesses are configured" in output
    tamper(sealed, settings, db_url)
    code, output = verify(settings, db_url)
    assert code == 1, output
    assert "FIRST BAD EVENT" in output
    for words in named:
        assert words in output, output


def test_an_extension_of_the_remembered_checkpoint_verifies(
    sealed: Runtime, settings: Settings, db_url: str
) -> None:
    assert verify(settings, db_url)[0] == 0
    app = sealed.study(STUDY, clock=simulated_clock(T0 + timedelta(days=1)))
    enroll(app, "004")
    app.close()
    sealed.seal(STUDY, force_checkpoint=True)
    code, output = verify(settings, db_url)
    assert code == 0, output
    assert "18 sealed, 3 checkpoints verified" in output


@pytest.mark.requirement("R21")
def test_an_older_bundle_after_a_newer_one_is_refused_as_rolled_back(
    sealed: Runtime, settings: Settings, db_url: str, tmp_path: Path
) -> None:
    env = {"TRIALLEDGER_HOME": str(settings.home), "TRIALLEDGER_WITNESSES": ""}

    def cli_run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, list(args), env=env)
        return result.exit_code, " ".join(result.output.split())

    assert cli_run("keys", "export-public", "-o", str(tmp_path / "k.pem"))[0] == 0
    for name in ("old.zip", "new.zip"):
        code, output = cli_run("export", "--study", STUDY, "--format", "bundle", "-o",
                               str(tmp_path / name), "--database-url", db_url)
        assert code == 0, output
    code, output = cli_run("verify", "--bundle", str(tmp_path / "new.zip"), "--public-key",
                           str(tmp_path / "k.pem"))
    assert code == 0, output
    assert "unwitnessed: no witnesses are configured" in output
    code, output = cli_run("verify", "--bundle", str(tmp_path / "old.zip"), "--public-key",
                           str(tmp_path / "k.pem"))
    assert code == 1
    assert "rolled back" in output and "verified before" in output


TOKEN = "/v1/auth/token"


@pytest.mark.requirement("R6", "R8")
def test_t4_a_role_grant_forged_in_the_directory_fails_verify_and_grants_nothing(
    runtime: Runtime, settings: Settings, db_url: str
) -> None:
    password = add_person(runtime, "mallory", "monitor")
    signed_in = TestClient(create_app(runtime)).post(
        TOKEN, json={"username": "mallory", "password": password})
    assert signed_in.status_code == 200, signed_in.text
    bearer = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    runtime.seal_directory(force_checkpoint=True)
    code, output = verify(settings, db_url, None)
    assert code == 0, output
    assert "✓ directory (people, roles, clients, sign-ins):" in output

    # Monitor -> admin in the grant's stored event, as the database's superuser could.
    directory_events = f'"{CATALOG_SCHEMA}"."{DIRECTORY_EVENTS}"'
    as_owner(db_url, f"UPDATE {directory_events} SET state = overlay(state placing "
                     "'admin'::bytea from position('\"monitor\"'::bytea in state) + 1 for 7) "
                     "WHERE topic = 'User.RoleGranted.v1'", tables=(directory_events,))
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"SELECT notification_id, position('\"admin\"'::bytea in state) "
                           f"FROM {directory_events} WHERE topic = 'User.RoleGranted.v1'"
                           ).fetchone()
    assert row is not None and row[1] > 0  # the forgery is in place
    code, output = verify(settings, db_url, None)
    assert code == 1, output
    assert (f"FIRST BAD EVENT the directory: event at position {row[0]} " in output
            and "User.RoleGranted.v1" in output and "signature does not match" in output), output

    # A server that loads the person now refuses them, whichever way they come in.
    fresh = Runtime(settings, db_url)
    try:
        client = TestClient(create_app(fresh))
        for answer in (client.get("/v1/users", headers=bearer),
                       client.post(TOKEN, json={"username": "mallory", "password": password})):
            assert answer.status_code == 403, answer.text
            assert "the directory's record of 'mallory' fails verification" in answer.text
            assert "signature does not match" in answer.text
        metrics = client.get("/metrics").text
        assert "trialledger_directory_verification_failures_total 2.0" in metrics
    finally:
        fresh.close()


@pytest.mark.requirement("R6", "R8")
def test_a_revocation_removed_from_the_directory_breaks_the_chain_and_grants_nothing(
    runtime: Runtime, settings: Settings, db_url: str
) -> None:
    # Granted admin, the admin role revoked, then signed in: the revocation deleted (in the
    # middle of the person's record) would hand the admin role back.
    password = add_person(runtime, "trudy", "admin")
    runtime.directory().record("trudy", lambda u: u.revoke(
        "admin", STUDY, "*", envelope(), runtime.directory().clock.now()))
    runtime.directory().record("trudy", lambda u: u.grant(
        "monitor", STUDY, "*", envelope(), runtime.directory().clock.now()))
    runtime.seal_directory(force_checkpoint=True)
    assert verify(settings, db_url, None)[0] == 0
    directory_events = f'"{CATALOG_SCHEMA}"."{DIRECTORY_EVENTS}"'
    as_owner(db_url, f"DELETE FROM {directory_events} WHERE topic = 'User.RoleRevoked.v1'",
             tables=(directory_events,))
    code, output = verify(settings, db_url, None)
    assert code == 1, output
    assert "the directory: event at position" in output and "version chain broken" in output

    fresh = Runtime(settings, db_url)
    try:
        answer = TestClient(create_app(fresh)).post(
            TOKEN, json={"username": "trudy", "password": password})
        assert answer.status_code == 403, answer.text
        assert "the directory's record of 'trudy' fails verification" in answer.text
    finally:
        fresh.close()
