"""The tamper matrix: each way of altering a sealed store is caught, and the failure says what
and where. An untouched store passes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.sql import SQL, Identifier

from application.runtime import Runtime, system_envelope
from infra import keys
from infra.catalog import EVENTS_TABLE
from infra.ledger import store
from infra.ledger.note import Checkpoint
from infra.ledger.sealer import SealingRefused
from infra.postgres import schema_for_study
from infra.signing import EventSigner
from infra.verify import StudyVerification, verify_study
from tests.support import T0, enroll, simulated_clock, three_children_sealed

STUDY = "NCT04397107"
SCHEMA = schema_for_study(STUDY)


def table(name: str) -> str:
    return f'"{SCHEMA}"."{name}"'


EVENTS = table(EVENTS_TABLE)


@pytest.fixture
def sealed(runtime: Runtime) -> Runtime:
    """Three children enrolled an hour apart, with labs; sealed, checkpointed twice."""
    three_children_sealed(runtime)
    return runtime


def verify(runtime: Runtime, db_url: str, trusted: Checkpoint | None = None,
           workers: int = 1) -> StudyVerification:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return verify_study(conn, STUDY, SCHEMA, keys.load_public_keys(runtime.settings), trusted,
                            batch_size=4, workers=workers)


def as_owner(db_url: str, *statements: str, params: tuple[Any, ...] = ()) -> None:
    """An attacker with the owner's credentials: triggers off, change, triggers back on."""
    tables = [EVENTS, table(store.LEAVES), table(store.NODES), table(store.CHECKPOINTS)]
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        for name in tables:
            conn.execute(f"ALTER TABLE {name} DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement, params if "%s" in statement else None)
        for name in tables:
            conn.execute(f"ALTER TABLE {name} ENABLE TRIGGER USER")


def latest_checkpoint(db_url: str) -> Checkpoint:
    with psycopg.connect(db_url) as conn:
        size, root, _ = store.checkpoints(conn, SCHEMA)[-1]
    return Checkpoint(f"trialledger/{STUDY}", size, root)


def event_row(db_url: str, position: int) -> tuple[Any, ...]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"SELECT originator_id, originator_version, topic, state FROM {EVENTS} "
                           "WHERE notification_id = %s", (position,)).fetchone()
    assert row is not None
    return tuple(row)


# Positions: 1-2 keyring, 3 study, then per child: consent, screening, enrollment, lab
# (4-7 child 001, 8-11 child 002, 12-15 child 003). Checkpoints at 11 and 15.


def test_an_untouched_store_passes(sealed: Runtime, db_url: str) -> None:
    result = verify(sealed, db_url, latest_checkpoint(db_url))
    assert result.ok, result.first_bad
    assert (result.events_checked, result.sealed, result.checkpoints) == (15, 15, 2)


@pytest.mark.requirement("R21")
@pytest.mark.parametrize("workers", [1, 2])
def test_one_changed_byte(sealed: Runtime, db_url: str, workers: int) -> None:
    as_owner(db_url, f"UPDATE {EVENTS} SET state = set_byte(state, length(state) - 3, "
                     f"get_byte(state, length(state) - 3) # 4) WHERE notification_id = 9")
    bad = verify(sealed, db_url, workers=workers).first_bad
    assert bad is not None and bad.position == 9
    assert "signature does not match" in bad.reason


def test_worker_processes_give_the_same_answers(sealed: Runtime, db_url: str) -> None:
    assert verify(sealed, db_url, workers=2) == verify(sealed, db_url, workers=1)
    assert verify(sealed, db_url, workers=2).ok


def test_a_deleted_event(sealed: Runtime, db_url: str) -> None:
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id = 6")
    bad = verify(sealed, db_url).first_bad
    assert bad is not None and bad.position == 7
    assert "version chain broken" in bad.reason


def test_a_deleted_event_of_its_own_aggregate_breaks_the_leaf_order(sealed: Runtime,
                                                                    db_url: str) -> None:
    # The last event of child 001 (its lab, position 7): no version chain to break.
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id = 7")
    bad = verify(sealed, db_url).first_bad
    assert bad is not None and bad.position == 8
    assert "should be leaf 6" in bad.reason


def test_a_forged_event_inserted(sealed: Runtime, db_url: str) -> None:
    # A copy of child 002's lab presented as child 003's next event.
    _, _, topic, state = event_row(db_url, 11)
    child3, version3, _, _ = event_row(db_url, 15)
    as_owner(db_url, f"INSERT INTO {EVENTS} (originator_id, originator_version, topic, state) "
                     "VALUES (%s, %s, %s, %s)", params=(child3, version3 + 1, topic, state))
    bad = verify(sealed, db_url).first_bad
    assert bad is not None and bad.position == 16
    assert "signature does not match" in bad.reason
    with pytest.raises(SealingRefused, match="position 16"):
        sealed.seal(STUDY)


@pytest.mark.requirement("R21")
def test_two_events_swapped(sealed: Runtime, db_url: str) -> None:
    as_owner(
        db_url,
        f"UPDATE {EVENTS} SET notification_id = -1 WHERE notification_id = 5",
        f"UPDATE {EVENTS} SET notification_id = 5 WHERE notification_id = 6",
        f"UPDATE {EVENTS} SET notification_id = 6 WHERE notification_id = -1",
    )
    bad = verify(sealed, db_url).first_bad
    assert bad is not None and bad.position == 5
    assert "version chain broken" in bad.reason


def test_the_tail_cut_off(sealed: Runtime, db_url: str) -> None:
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id > 13")
    bad = verify(sealed, db_url).first_bad
    assert bad is not None
    assert "deleted from the end of the log" in bad.reason


def test_the_tail_cut_off_with_its_leaves_and_checkpoint(sealed: Runtime, db_url: str) -> None:
    held = latest_checkpoint(db_url)
    as_owner(db_url, f"DELETE FROM {EVENTS} WHERE notification_id > 11",
             f"DELETE FROM {table(store.LEAVES)} WHERE leaf_index >= 11",
             f"DELETE FROM {table(store.NODES)}",
             f"DELETE FROM {table(store.CHECKPOINTS)} WHERE tree_size > 11")
    # Cut consistently, the log just looks shorter: that is why a verifier keeps checkpoints.
    assert verify(sealed, db_url).ok
    bad = verify(sealed, db_url, held).first_bad
    assert bad is not None
    assert "rolled back" in bad.reason


def test_a_checkpoint_replaced_by_an_older_one(sealed: Runtime, db_url: str) -> None:
    held = latest_checkpoint(db_url)
    as_owner(db_url, f"DELETE FROM {table(store.CHECKPOINTS)} WHERE tree_size = 15")
    assert verify(sealed, db_url).ok  # an older checkpoint alone is not a lie...
    bad = verify(sealed, db_url, held).first_bad  # ...but it is, to someone holding a newer one
    assert bad is not None
    assert "rolled back" in bad.reason and "size 11" in bad.reason


def test_a_checkpoint_with_a_forged_root(sealed: Runtime, db_url: str) -> None:
    as_owner(db_url, f"UPDATE {table(store.CHECKPOINTS)} SET root = %s WHERE tree_size = 15",
             params=(bytes(32),))
    bad = verify(sealed, db_url).first_bad
    assert bad is not None and "checkpoint of size 15" in bad.reason


def test_an_event_signed_by_an_unknown_key(sealed: Runtime, db_url: str) -> None:
    intruder = EventSigner(STUDY, Ed25519PrivateKey.generate(), "trialledger")
    oid, version, topic, state = event_row(db_url, 15)
    from infra.signing import SignedState

    forged = intruder.sign(str(oid), version + 1, topic, SignedState.unpack(bytes(state)).payload,
                           (T0 + timedelta(days=1)).isoformat())
    as_owner(db_url, f"INSERT INTO {EVENTS} (originator_id, originator_version, topic, state) "
                     "VALUES (%s, %s, %s, %s)", params=(oid, version + 1, topic, forged.pack()))
    bad = verify(sealed, db_url).first_bad
    assert bad is not None and bad.position == 16
    assert "unknown key" in bad.reason


def test_a_key_used_after_its_revocation(sealed: Runtime, db_url: str) -> None:
    # The key is found compromised from 30 minutes after T0: child 002 (enrolled at T0 + 1h)
    # and everything after it were signed with a key no longer trustworthy.
    app = sealed.study(STUDY, clock=simulated_clock(T0 + timedelta(days=2)))
    key_id = next(iter(app.keyring().keys))  # type: ignore[union-attr]
    app.revoke_key(key_id, T0 + timedelta(minutes=30), "key file found on a shared drive",
                   system_envelope())
    app.close()
    for workers in (1, 2):
        bad = verify(sealed, db_url, workers=workers).first_bad
        assert bad is not None and bad.position == 8
        assert "after its revocation" in bad.reason


def test_sealing_resumes_without_duplicates(sealed: Runtime, db_url: str) -> None:
    again = sealed.seal(STUDY, force_checkpoint=True)
    assert (again.sealed, again.tree_size, again.checkpoint_size) == (0, 15, None)
    with psycopg.connect(db_url) as conn:
        leaves = conn.execute(SQL("SELECT count(*), count(DISTINCT notification_id) FROM {}.{}")
                              .format(Identifier(SCHEMA), Identifier(store.LEAVES))).fetchone()
    assert leaves == (15, 15)


def test_the_sealer_never_signs_a_checkpoint_inconsistent_with_the_last(
    sealed: Runtime, db_url: str
) -> None:
    as_owner(db_url, f"UPDATE {table(store.CHECKPOINTS)} SET root = %s WHERE tree_size = 15",
             params=(bytes(32),))
    app = sealed.study(STUDY, clock=simulated_clock(T0 + timedelta(days=1)))
    enroll(app, "004")
    app.close()
    with pytest.raises(SealingRefused, match="not consistent with the checkpoint of size 15"):
        sealed.seal(STUDY, force_checkpoint=True)
    with psycopg.connect(db_url) as conn:
        assert [size for size, _, _ in store.checkpoints(conn, SCHEMA)] == [11, 15]
