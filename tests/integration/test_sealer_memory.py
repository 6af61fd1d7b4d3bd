"""The sealer keeps what it learnt of a log between batches and rounds (sealing costs what is
new, not the log's size), and never trusts it once the database moved on without it: another
sealer sealed in between, or its own transaction rolled back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from application.runtime import Runtime, system_envelope
from domain.errors import NotFound
from domain.studies import nct04397107
from infra import keys
from infra.ledger import sealer, store
from infra.ledger.checker import EventChecker
from infra.ledger.sealer import SealerMemory, SealingRefused, SealResult, seal
from infra.postgres import schema_for_study
from tests.support import T0, enroll, register, simulated_clock

STUDY = nct04397107.STUDY_ID
SCHEMA = schema_for_study(STUDY)


def add_children(runtime: Runtime, *codes: str) -> None:
    """Enroll ``codes`` (4 events each: consent, screening, enrollment, lab), unsealed; the
    first time, register the study (3 events: keyring, key, study) before them."""
    clock = simulated_clock(T0 + timedelta(days=1))
    app = runtime.study(STUDY, clock=clock)
    try:
        app.study()
    except NotFound:
        register(app)
    for code in codes:
        enroll(app, code)
        app.on_subject(code, lambda s, t: s.record_lab_result(
            "LB1", T0, "C3", 0.8, "g/L", system_envelope(), t))
    app.close()


def sealer_of(runtime: Runtime, db_url: str, memory: SealerMemory | None
              ) -> Callable[..., SealResult]:
    """A sealer on its own connection, with ``memory`` (None: a fresh one per call)."""
    def run(**options: Any) -> SealResult:
        with psycopg.connect(db_url) as conn:
            return seal(conn, STUDY, SCHEMA, keys.load_public_keys(runtime.settings),
                        runtime.signing_key(), runtime.settings.key_name, memory=memory,
                        **options)
    return run


@pytest.fixture
def checkers_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The study of every checker the sealer builds from the log (a rebuild reads it all)."""
    built: list[str] = []

    def counted(study: str, *args: Any, **kwargs: Any) -> EventChecker:
        built.append(study)
        return EventChecker(study, *args, **kwargs)

    monkeypatch.setattr(sealer, "EventChecker", counted)
    return built


def test_one_checker_serves_every_batch_and_round(runtime: Runtime, db_url: str,
                                                  checkers_built: list[str]) -> None:
    add_children(runtime, "001", "002", "003")  # 3 set-up events + 12
    ours = sealer_of(runtime, db_url, SealerMemory())
    assert ours(batch_size=4).tree_size == 15  # four batches
    add_children(runtime, "004")
    assert ours(batch_size=4).tree_size == 19  # the next round
    assert checkers_built == [STUDY]


def test_a_checker_left_behind_by_another_sealer_is_rebuilt(
        runtime: Runtime, db_url: str, checkers_built: list[str]) -> None:
    add_children(runtime, "001")
    ours, other = sealer_of(runtime, db_url, SealerMemory()), sealer_of(runtime, db_url, None)
    assert ours().tree_size == 7
    add_children(runtime, "002")
    app = runtime.study(STUDY, clock=simulated_clock(T0 + timedelta(days=2)))
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB2", T0, "C4", 0.2, "g/L", system_envelope(), t))
    assert other().tree_size == 12  # child 001's lab v5 sealed without us
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB3", T0, "C3", 0.9, "g/L", system_envelope(), t))
    app.close()
    # A stale checker would expect v5 of child 001 and refuse v6.
    assert ours().tree_size == 13
    assert checkers_built == [STUDY, STUDY, STUDY]


def test_a_rolled_back_round_leaves_the_checker_where_the_database_is(
        runtime: Runtime, db_url: str) -> None:
    add_children(runtime, "001")
    ours = sealer_of(runtime, db_url, SealerMemory())
    assert ours(force_checkpoint=True).checkpoint_size == 7
    add_children(runtime, "002")
    checkpoints = Identifier(SCHEMA), Identifier(store.CHECKPOINTS)
    with psycopg.connect(db_url, autocommit=True) as conn:  # an attacker, triggers off
        conn.execute(SQL("ALTER TABLE {}.{} DISABLE TRIGGER USER").format(*checkpoints))
        root = conn.execute(SQL("SELECT root FROM {}.{}").format(*checkpoints)).fetchone()
        conn.execute(SQL("UPDATE {}.{} SET root = %s").format(*checkpoints), (bytes(32),))
    # The round checks and hashes child 002's events, then refuses to sign: all rolled back.
    with pytest.raises(SealingRefused, match="not consistent with the checkpoint of size 7"):
        ours(force_checkpoint=True)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert root is not None
        conn.execute(SQL("UPDATE {}.{} SET root = %s").format(*checkpoints), (root[0],))
        conn.execute(SQL("ALTER TABLE {}.{} ENABLE TRIGGER USER").format(*checkpoints))
    assert ours(force_checkpoint=True).checkpoint_size == 11


def test_a_revocation_committed_after_the_checker_was_kept_is_honoured(
        runtime: Runtime, db_url: str) -> None:
    add_children(runtime, "001")
    ours = sealer_of(runtime, db_url, SealerMemory())
    assert ours().tree_size == 7
    app = runtime.study(STUDY, clock=simulated_clock(T0 + timedelta(days=2)))
    key_id = next(iter(app.keyring().keys))  # type: ignore[union-attr]
    app.revoke_key(key_id, T0 + timedelta(days=1, hours=12), "key file found on a shared drive",
                   system_envelope())
    app.close()
    with pytest.raises(SealingRefused, match="after its revocation"):
        ours()
