"""Idempotency keys: a retried POST gets the first result instead of a second write.

A request claims its (person, key) before it runs and records its response after. A claim
left without a response (the process died mid-request) answers 409 to retries: whether the
write committed is then read from the data, never guessed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.sql import SQL, Identifier

from infra.catalog import CATALOG_SCHEMA

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Replay:
    """What an earlier request with the same key got (status None: still in flight)."""

    request_sha256: str
    status: int | None
    body: Any


def request_digest(method: str, path: str, body: bytes) -> str:
    """SHA-256 of what a request asked for; a key reused for another request is refused."""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


class IdempotencyStore:
    """``trialledger.idempotency``: one row per (person, key)."""

    def __init__(self) -> None:
        self._table = SQL("{}.idempotency").format(Identifier(CATALOG_SCHEMA))

    def create_table(self, conn: psycopg.Connection[Any]) -> None:
        """Create the table if missing."""
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(CATALOG_SCHEMA)))
        conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (username text NOT NULL, key text NOT NULL,"
            " request_sha256 text NOT NULL, status integer, body jsonb,"
            " claimed_at timestamptz NOT NULL, completed_at timestamptz,"
            " PRIMARY KEY (username, key))").format(self._table))

    def claim(self, conn: psycopg.Connection[Any], username: str, key: str,
              request_sha256: str) -> Replay | None:
        """Claim the key for this request; None if claimed now, else the earlier request."""
        inserted = conn.execute(SQL(
            "INSERT INTO {} (username, key, request_sha256, claimed_at) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING 1").format(self._table),
            (username, key, request_sha256, datetime.now(UTC))).fetchone()
        if inserted is not None:
            return None
        row = conn.execute(SQL("SELECT request_sha256, status, body FROM {}"
                               " WHERE username = %s AND key = %s").format(self._table),
                           (username, key)).fetchone()
        assert row is not None  # claimed by an earlier request, and claims are never removed
        return Replay(row[0], row[1], row[2])

    def complete(self, conn: psycopg.Connection[Any], username: str, key: str, status: int,
                 body: Any) -> None:
        """Record the response the first request got."""
        conn.execute(SQL("UPDATE {} SET status = %s, body = %s::jsonb, completed_at = %s"
                         " WHERE username = %s AND key = %s").format(self._table),
                     (status, orjson.dumps(body).decode(), datetime.now(UTC), username, key))

    def release(self, conn: psycopg.Connection[Any], username: str, key: str) -> None:
        """Free a claim whose request failed on the server's side, so a retry runs."""
        conn.execute(SQL("DELETE FROM {} WHERE username = %s AND key = %s AND status IS NULL"
                         ).format(self._table), (username, key))
