"""A pool checks a connection before lending it only after it rested (issue 19, item 2): a
busy connection costs no extra round trip, one the database dropped while it rested is
replaced, not handed out."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from infra.pools import CheckWhenIdle
from infra.postgres import connect

IDLE = 0.5


def _terminate(url: str, pid: int) -> None:
    """End a backend as a restart or an administrator would."""
    with connect(url) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)  # the backend is gone before the next lending


def test_a_connection_lent_again_at_once_is_not_checked_one_that_rested_is(
        db_url: str) -> None:
    with ConnectionPool(db_url, min_size=0, max_size=1, kwargs={"autocommit": True},
                        check=CheckWhenIdle(IDLE).check, open=True) as pool:
        with pool.connection() as conn:
            first = conn.info.backend_pid
        _terminate(db_url, first)
        # Lent again within IDLE: not checked (no round trip), so the dropped connection
        # comes out, and its request fails as one cut during its run would.
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("SELECT 1")
        # The pool replaced it on its return; this one rests past IDLE and is dropped.
        with pool.connection() as conn:
            second = conn.info.backend_pid
        assert second != first
        _terminate(db_url, second)
        time.sleep(IDLE)
        with pool.connection() as conn:  # checked: the dropped one is replaced first
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid not in (first, second)
