"""A session ends by itself: 15 minutes idle, or 8 hours after sign-in however busy."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from psycopg.sql import SQL

from infra.sessions import SessionStore, _digest


@pytest.mark.requirement("R19")
def test_a_session_idle_15_minutes_or_8_hours_old_is_refused(db_url: str) -> None:
    store = SessionStore(db_url, touch_every=timedelta(0))  # every check asks the database
    with psycopg.connect(db_url, autocommit=True) as conn:
        store.create_table(conn)
        fresh, _ = store.issue(conn, "inv", "test-client")
        idle, _ = store.issue(conn, "inv", "test-client")
        old, _ = store.issue(conn, "inv", "test-client")
        # Time passing, told to the store's table: one left alone 16 minutes, one issued
        # 8 hours and a minute ago though used a moment ago.
        conn.execute(SQL("UPDATE trialledger.sessions SET last_used_at = last_used_at - "
                         "interval '16 minutes' WHERE token_sha256 = %s"), (_digest(idle),))
        conn.execute(SQL("UPDATE trialledger.sessions SET issued_at = issued_at - interval "
                         "'481 minutes', expires_at = expires_at - interval '481 minutes' "
                         "WHERE token_sha256 = %s"), (_digest(old),))
        assert store.resolve(conn, fresh) is not None
        assert store.resolve(conn, idle) is None
        assert store.resolve(conn, old) is None
        assert store.lifetime == timedelta(hours=8)
        assert store.idle_timeout == timedelta(minutes=15)
