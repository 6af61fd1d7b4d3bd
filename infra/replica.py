"""Reads a standby may answer (``DATABASE_READ_URL``), and what an answer says about it.

A hot standby replays the primary's write-ahead log: what it answers is the primary as it
stood at its replay position. So every answer read there names that position (the LSN) and
the commit time of the last transaction replayed. A question about a time later than that
commit time cannot be answered there (the standby may not yet hold what was recorded up to
then), so the primary answers it, and the answer says so. A standby that does not answer at
once is passed over the same way: reads must not wait on a convenience.

Reads the primary answers lend from a pool of their own, as bounded as the standby's: a burst
of audit pages or exports waits its turn instead of opening a connection each (which would
take the connections the writes need, up to the server's ``max_connections``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg_pool import ConnectionPool, PoolTimeout

from infra.pools import CheckWhenIdle

_log = structlog.get_logger(__name__)

PRIMARY = "primary"
STANDBY = "standby"

# How long a read waits for a standby connection before the primary answers instead.
STANDBY_WAIT = 1.0


@dataclass(frozen=True)
class ReadSource:
    """Which server answered a read and, for a standby, how far it had replayed."""

    server: str
    replay_lsn: str | None = None
    replayed_at: datetime | None = None
    why_primary: str | None = None

    def headers(self) -> dict[str, str]:
        """The answer's headers naming the server and the standby's replay position."""
        headers = {"TrialLedger-Read-From": self.server}
        if self.replay_lsn is not None:
            headers["TrialLedger-Standby-LSN"] = self.replay_lsn
        if self.replayed_at is not None:
            headers["TrialLedger-Standby-Replayed-At"] = self.replayed_at.isoformat()
        if self.why_primary is not None:
            headers["TrialLedger-Read-From-Reason"] = self.why_primary
        return headers


ON_PRIMARY = ReadSource(PRIMARY)


def open_read_pool(url: str, max_size: int, timeout: float = STANDBY_WAIT,
                   check: Callable[[psycopg.Connection[Any]], None] | None = None
                   ) -> ConnectionPool:
    """A small pool of autocommit connections, opened when needed (``check``: before each
    lending, default a round trip; ``timeout``: the wait for one, default a standby's)."""
    return ConnectionPool(url, min_size=0, max_size=max_size, kwargs={"autocommit": True},
                          open=True, check=check or ConnectionPool.check_connection,
                          timeout=timeout)


def replay_position(conn: psycopg.Connection[Any]) -> tuple[str | None, datetime | None]:
    """The standby's replay LSN and the commit time of its last replayed transaction (both
    None on a server that is not in recovery: a promoted standby is a primary, current)."""
    row = conn.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                       "pg_last_xact_replay_timestamp()").fetchone()
    assert row is not None
    in_recovery, lsn, replayed_at = row[0], row[1], row[2]
    if not in_recovery:
        return None, None
    return lsn, replayed_at


class Reads:
    """Lends connections for reads: from the standby when one is configured and can answer
    the question, from the primary otherwise; at most ``pool_size`` to each. A read of the
    primary waits up to ``primary_wait`` seconds for one (then ``PoolTimeout``: 503)."""

    def __init__(self, primary_url: str, standby_url: str | None, pool_size: int,
                 primary_wait: float) -> None:
        self.primary_url = primary_url
        self.standby_url = standby_url
        self._pool_size = pool_size
        self._primary_wait = primary_wait
        self._pool: ConnectionPool | None = None
        self._primary_pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _standby_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                assert self.standby_url is not None
                self._pool = open_read_pool(self.standby_url, self._pool_size)
            return self._pool

    @property
    def primary_pool(self) -> ConnectionPool | None:
        """The pool of the primary's reads, once a read has opened it."""
        return self._primary_pool

    @contextmanager
    def primary(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection to the primary for a read (a restart there is noticed as the
        store's pool notices it: checked when it rested a second or more)."""
        with self._lock:
            if self._primary_pool is None:
                self._primary_pool = open_read_pool(
                    self.primary_url, self._pool_size, timeout=self._primary_wait,
                    check=CheckWhenIdle().check)
            pool = self._primary_pool
        with pool.connection() as conn:
            yield conn

    @contextmanager
    def connection(self, later_than: datetime | None = None,
                   holds: Callable[[psycopg.Connection[Any]], bool] | None = None
                   ) -> Iterator[tuple[psycopg.Connection[Any], ReadSource]]:
        """A connection to read from and the server it is on. ``later_than``: the latest
        recorded time the question is about (an as-of time, the end of a range), if any;
        a standby that has not replayed a commit at least that late does not answer, nor one
        that does not pass ``holds`` (it has not replayed the tables the read needs)."""
        if self.standby_url is None:
            with self.primary() as conn:
                yield conn, ON_PRIMARY
            return
        why: str
        with ExitStack() as standby:
            try:
                conn = standby.enter_context(self._standby_pool().connection())
                lsn, replayed_at = replay_position(conn)
            except (PoolTimeout, psycopg.OperationalError) as e:
                _log.warning("the standby did not answer; reading from the primary",
                             error=str(e))
                why = "the standby did not answer"
            else:
                if holds is not None and not holds(conn):
                    why = "the standby has not replayed the tables this read needs yet"
                elif lsn is None:  # promoted: as current as the primary
                    yield conn, ReadSource(STANDBY)
                    return
                elif later_than is None or (replayed_at is not None
                                            and later_than <= replayed_at):
                    yield conn, ReadSource(STANDBY, lsn, replayed_at)
                    return
                else:
                    shown = replayed_at.isoformat() if replayed_at else "none yet"
                    why = ("asked about a time later than the standby's last replayed commit"
                           f" ({shown})")
        with self.primary() as conn:
            yield conn, ReadSource(PRIMARY, why_primary=why)

    def close(self) -> None:
        """Close the pools, if open."""
        with self._lock:
            pools, self._pool, self._primary_pool = (
                [p for p in (self._pool, self._primary_pool) if p is not None], None, None)
        for pool in pools:
            pool.close()
