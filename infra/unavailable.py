"""Telling a database that cannot be reached (down, restarting, refusing clients) from any
other failure, in one line fit for a log or a terminal."""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout

# What libpq and the server say when there is no usable connection (psycopg raises these as
# OperationalError, eventsourcing wraps them in its own, naming psycopg's as the cause).
_CONNECTION_LOST = (
    "connection failed",
    "connection to server",
    "too many clients",
    "server closed the connection",
    "the connection is closed",
    "the connection is lost",
    "terminating connection",
    "consuming input failed",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "couldn't get a connection",
)
TOO_MANY_CLIENTS = "too many clients"


def unavailable_reason(error: BaseException) -> str | None:
    """One line saying why the database could not be used, if ``error`` (or what caused it)
    is a failure to reach it; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        message = " ".join(str(current).split())
        if isinstance(current, PoolTimeout):
            return f"no database connection became free or could be made ({message})"
        if isinstance(current, psycopg.OperationalError) and any(
                sign in message for sign in _CONNECTION_LOST):
            if TOO_MANY_CLIENTS in message:
                return ("the database server refuses more connections (too many clients "
                        "already): its max_connections are in use; lower the pool sizes "
                        "(TRIALLEDGER_STORE_POOL_SIZE, TRIALLEDGER_API_POOL_SIZE) or raise "
                        "max_connections")
            return f"the database cannot be reached: {message}"
        current = current.__cause__ or current.__context__
    return None
