"""Bearer tokens: what a sign-in hands out, with an absolute expiry and an idle timeout.

Sessions are operational state, not the record: the sign-in itself is an event on the user.
Only a SHA-256 of each token is stored, so a copy of the table grants nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from infra.catalog import CATALOG_SCHEMA


@dataclass(frozen=True)
class Session:
    """Who a token stands for, through which client, and until when."""

    username: str
    client: str
    expires_at: datetime
    last_used_at: datetime


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SessionStore:
    """Tokens in ``trialledger.sessions``, with a short in-process cache.

    The cache keeps a hot request path to no database round trip; ``touch_every`` bounds how
    stale ``last_used_at`` may be, which is far below any sensible idle timeout, and how long
    a sign-out made by another process (a server worker, the CLI) goes unseen here.
    """

    def __init__(self, url: str, *, lifetime: timedelta = timedelta(hours=8),
                 idle_timeout: timedelta = timedelta(minutes=15),
                 touch_every: timedelta = timedelta(seconds=1)) -> None:
        self.url = url
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self.touch_every = touch_every
        self._cache: dict[bytes, tuple[Session, float]] = {}
        self._lock = threading.Lock()
        self._table = SQL("{}.sessions").format(Identifier(CATALOG_SCHEMA))

    def create_table(self, conn: psycopg.Connection[Any]) -> None:
        """Create the sessions table if missing."""
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(CATALOG_SCHEMA)))
        conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (token_sha256 bytea PRIMARY KEY,"
            " username text NOT NULL, client text NOT NULL, issued_at timestamptz NOT NULL,"
            " expires_at timestamptz NOT NULL, last_used_at timestamptz NOT NULL,"
            " ended_at timestamptz)").format(self._table))

    def issue(self, conn: psycopg.Connection[Any], username: str, client: str) -> tuple[str,
                                                                                        Session]:
        """A new token for ``username`` through ``client``."""
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        session = Session(username, client, now + self.lifetime, now)
        conn.execute(SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, NULL)").format(
            self._table), (_digest(token), username, client, now, session.expires_at, now))
        return token, session

    def cached(self, token: str) -> Session | None:
        """The live session of ``token`` if this process checked it within ``touch_every``
        (no database round trip), else None: then ask :meth:`resolve`."""
        with self._lock:
            cached = self._cache.get(_digest(token))
        if cached is None or time.monotonic() - cached[1] >= self.touch_every.total_seconds():
            return None
        session = cached[0]
        now = datetime.now(UTC)
        if now < session.expires_at and now - session.last_used_at < self.idle_timeout:
            return session
        return None

    def resolve(self, conn: psycopg.Connection[Any], token: str) -> Session | None:
        """The live session of ``token`` (touched), or None if unknown, ended, expired or idle."""
        session = self.cached(token)
        if session is not None:
            return session
        key = _digest(token)
        now = datetime.now(UTC)
        row = conn.execute(SQL(
            "UPDATE {} SET last_used_at = %s WHERE token_sha256 = %s AND ended_at IS NULL"
            " AND expires_at > %s AND last_used_at > %s"
            " RETURNING username, client, expires_at").format(self._table),
            (now, key, now, now - self.idle_timeout)).fetchone()
        if row is None:
            with self._lock:
                self._cache.pop(key, None)
            return None
        session = Session(row[0], row[1], row[2], now)
        with self._lock:
            self._cache[key] = (session, time.monotonic())
        return session

    def end(self, conn: psycopg.Connection[Any], token: str) -> None:
        """End a session (sign-out)."""
        key = _digest(token)
        conn.execute(SQL("UPDATE {} SET ended_at = %s WHERE token_sha256 = %s").format(
            self._table), (datetime.now(UTC), key))
        with self._lock:
            self._cache.pop(key, None)

    def end_all(self, conn: psycopg.Connection[Any], username: str) -> None:
        """End every session of a person (deactivated, locked out, password changed)."""
        conn.execute(SQL("UPDATE {} SET ended_at = %s WHERE username = %s AND ended_at IS NULL"
                         ).format(self._table), (datetime.now(UTC), username))
        with self._lock:
            for key in [k for k, (s, _) in self._cache.items() if s.username == username]:
                del self._cache[key]
