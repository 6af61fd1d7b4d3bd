"""The event store's connection pool: one per runtime, bounded, connecting with the whole URL.

eventsourcing's ``PostgresDatastore`` builds a pool of its own for every application (each
study, the directory, each study's read tables), from five parameters of the URL: the others
(``sslmode``, ``sslrootcert``, ``application_name``, ``target_session_attrs``, a list of
hosts) were dropped, and each pool kept connections of its own. A runtime opens one
:class:`SharedPool` instead and every datastore it creates lends from it (see
:class:`infra.recorder.TrialLedgerFactory`), found through a token in the eventsourcing
environment.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from typing import Any

from eventsourcing.postgres import ConnectionPool
from psycopg import Connection
from psycopg.rows import DictRow, dict_row

# How long a connection may sit in a transaction doing nothing before the server ends it
# (seconds): eventsourcing's default for its own pools, kept for every store connection.
IDLE_IN_TRANSACTION_TIMEOUT = 5

_registry: dict[str, SharedPool] = {}
_registry_lock = threading.Lock()


def _configure(conn: Connection[DictRow]) -> None:
    """What eventsourcing's datastore does to each new connection."""
    conn.autocommit = True
    conn.execute(f"SET idle_in_transaction_session_timeout = "
                 f"'{IDLE_IN_TRANSACTION_TIMEOUT * 1000}ms'")


class SharedPool(ConnectionPool[Connection[DictRow]]):
    """A pool lent to many datastores: closing one of them leaves it open for the others;
    its owner ends it with :meth:`shutdown`. Connections are opened when needed (none at
    rest after ten idle minutes), at most ``max_size`` at once."""

    def __init__(self, conninfo: str, max_size: int, *, timeout: float = 30.0) -> None:
        super().__init__(conninfo, connection_class=Connection[DictRow],
                         kwargs={"row_factory": dict_row}, min_size=0, max_size=max_size,
                         open=False, configure=_configure, timeout=timeout,
                         # A connection the database dropped (a restart) while it rested
                         # is replaced, not handed to whoever asked.
                         check=CheckWhenIdle().check)
        self.token = uuid.uuid4().hex

    def close(self, timeout: float = 5.0) -> None:
        """Closing a datastore: the pool stays open for the others."""

    def shutdown(self) -> None:
        """Close the pool and its connections; datastores that lend from it fail after."""
        with _registry_lock:
            _registry.pop(self.token, None)
        super().close()


def open_shared_pool(conninfo: str, max_size: int, **kwargs: Any) -> SharedPool:
    """A new :class:`SharedPool` on ``conninfo``, open, findable by its token."""
    pool = SharedPool(conninfo, max_size, **kwargs)
    pool.open()
    with _registry_lock:
        _registry[pool.token] = pool
    return pool


def shared_pool(token: str) -> SharedPool | None:
    """The open pool with this token, if any (a token from another process finds none)."""
    with _registry_lock:
        return _registry.get(token)


class CheckWhenIdle:
    """A pool's ``check`` that checks a connection (a round trip) only when it was last lent
    ``idle`` seconds ago or more (so it rested at least that long) or never.

    Under load a connection comes back within milliseconds, and checking it before each
    lending doubles the round trips of a short request; one the database dropped while in
    use is discarded by the pool on its return anyway, so what a check finds is one that went
    bad while resting. A restart seen by a connection lent again within ``idle`` fails that
    request (503, nothing stored), as a restart during the request would. (Not the pool's
    ``reset`` hook to note returns: with one, the pool returns every connection through a
    worker thread.)
    """

    def __init__(self, idle: float = 1.0) -> None:
        self.idle = idle
        self._lent: weakref.WeakKeyDictionary[Connection[Any], float] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def check(self, conn: Connection[Any]) -> None:
        """Check ``conn`` unless it was lent within ``idle`` seconds (raises if it is bad)."""
        now = time.monotonic()
        with self._lock:
            last = self._lent.get(conn)
            self._lent[conn] = now
        if last is None or now - last >= self.idle:
            ConnectionPool.check_connection(conn)
