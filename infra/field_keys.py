"""The keys of a study's identifying values (crypto-shredding).

Each declared identifying value is sealed with a data key of its own, one per subject x
record x field (every version of that field shares it). Data keys are stored wrapped
(RFC 3394 AES key wrap) by the key-encryption key (KEK), which lives outside the database:
a file, mode 0600, in ``$TRIALLEDGER_HOME/keys`` by default (``TRIALLEDGER_FIELD_KEK_FILE``
to put it elsewhere). Events are never changed, so a redaction deletes the wrapped data key
from ``field_keys`` — the one deletion the application makes of something that is not a read
table — and leaves in ``shredded_keys`` when, why and by which request; the event recording
the approval is the audit.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool

from domain.redaction import KEY_UNAVAILABLE, marker
from infra.settings import Settings

KEY_TABLE = "field_keys"
SHREDDED_TABLE = "shredded_keys"
KEK_SIZE = 32  # AES-256


class FieldKeyError(RuntimeError):
    """The key-encryption key is missing, unreadable by others' rights, or wrong."""


def load_kek(settings: Settings) -> bytes:
    """The deployment's key-encryption key: the configured file, or one created on first use
    in ``home/keys`` (mode 0600)."""
    if settings.field_kek_file is not None:
        path = settings.field_kek_file
        if not path.exists():
            raise FieldKeyError(f"{path}: key-encryption key file not found")
        return _read_kek(path)
    path = settings.keys_dir / "field-kek.key"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once must not both create (and one lose) a KEK.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_kek(path)
    kek = secrets.token_bytes(KEK_SIZE)
    with os.fdopen(fd, "wb") as f:
        f.write(kek)
    return kek


def _read_kek(path: Path) -> bytes:
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise FieldKeyError(f"{path}: key-encryption key file must be mode 0600 (owner only)")
    kek = path.read_bytes()
    if len(kek) != KEK_SIZE:
        raise FieldKeyError(f"{path}: a key-encryption key is {KEK_SIZE} bytes")
    return kek


def key_tables(schema: str) -> list[SQL | Any]:
    """The statements creating a study's key tables (idempotent)."""
    s = Identifier(schema)
    return [
        SQL("CREATE TABLE IF NOT EXISTS {}.{} (key_id text PRIMARY KEY, subject_id text NOT NULL,"
            " record_id text NOT NULL, field text NOT NULL, wrapped bytea NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())").format(s, Identifier(KEY_TABLE)),
        SQL("CREATE TABLE IF NOT EXISTS {}.{} (key_id text PRIMARY KEY,"
            " subject_id text NOT NULL, record_id text NOT NULL, field text NOT NULL,"
            " redacted_on date NOT NULL, reason text NOT NULL, request_id text NOT NULL,"
            " destroyed_at timestamptz NOT NULL DEFAULT now())").format(
                s, Identifier(SHREDDED_TABLE)),
    ]


def key_id(subject_id: str, record_id: str, field: str) -> str:
    """The id of the data key of one field of one record of one subject."""
    return f"{subject_id}/{record_id}/{field}"


class FieldKeys:
    """A study's data keys: made on first use, unwrapped for reading, destroyed on redaction.

    Nothing is cached across calls: once a key is destroyed, no process can read its values
    again (a cache would keep them readable until it expired).
    """

    def __init__(self, url: str, schema: str, kek: bytes) -> None:
        self._schema = schema
        self._kek = kek
        self._pool = ConnectionPool(url, min_size=0, max_size=2, kwargs={"autocommit": True},
                                    open=True, check=ConnectionPool.check_connection)
        self._keys = SQL("{}.{}").format(Identifier(schema), Identifier(KEY_TABLE))
        self._shredded = SQL("{}.{}").format(Identifier(schema), Identifier(SHREDDED_TABLE))

    def create(self, subject_id: str, record_id: str, field: str) -> tuple[str, bytes]:
        """The (id, data key) of this field, made and stored (wrapped) if it has none.

        Stored before the event that uses it commits: a key whose event never committed
        is an orphan that seals nothing, never an event without its key.
        """
        kid = key_id(subject_id, record_id, field)
        data_key = secrets.token_bytes(32)
        with self._pool.connection() as conn:
            row = conn.execute(SQL(
                "INSERT INTO {} (key_id, subject_id, record_id, field, wrapped)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key_id) DO NOTHING"
                " RETURNING key_id").format(self._keys),
                (kid, subject_id, record_id, field, aes_key_wrap(self._kek, data_key))).fetchone()
        if row is not None:
            return kid, data_key
        existing = self.data_key(kid)
        if not isinstance(existing, bytes):
            raise FieldKeyError(f"the key of {kid} was destroyed: its field is redacted")
        return kid, existing

    def data_key(self, kid: str) -> bytes | str | None:
        """The data key ``kid``; the redaction marker if it was destroyed; None if this
        study never had it."""
        with self._pool.connection() as conn:
            row = conn.execute(SQL("SELECT wrapped FROM {} WHERE key_id = %s").format(
                self._keys), (kid,)).fetchone()
            if row is None:
                gone = conn.execute(SQL("SELECT redacted_on, reason FROM {} WHERE key_id = %s"
                                        ).format(self._shredded), (kid,)).fetchone()
                return None if gone is None else marker(gone[0], gone[1])
        try:
            return aes_key_unwrap(self._kek, bytes(row[0]))
        except InvalidUnwrap as e:
            raise FieldKeyError(f"the data key {kid} does not unwrap under this deployment's "
                                "key-encryption key") from e

    def opened(self, kid: str) -> bytes | str:
        """The data key ``kid``, else the text to show in place of its values."""
        key = self.data_key(kid)
        return KEY_UNAVAILABLE if key is None else key

    def shred(self, subject_id: str, items: Sequence[dict[str, str]], on: date, reason: str,
              request_id: str) -> int:
        """Destroy the data keys of ``items`` (record_id, field) of the subject, remembering
        when and why; return how many were destroyed (a retry destroys none again)."""
        kids = [key_id(subject_id, i["record_id"], i["field"]) for i in items]
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(SQL(
                "INSERT INTO {} (key_id, subject_id, record_id, field, redacted_on, reason,"
                " request_id) SELECT key_id, subject_id, record_id, field, %s, %s, %s"
                " FROM {} WHERE key_id = ANY(%s) ON CONFLICT (key_id) DO NOTHING").format(
                    self._shredded, self._keys), (on, reason, request_id, kids))
            deleted = conn.execute(SQL("DELETE FROM {} WHERE key_id = ANY(%s)").format(
                self._keys), (kids,)).rowcount
        return deleted

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()


def create_key_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the study's key tables if missing."""
    with conn.transaction():
        for statement in key_tables(schema):
            conn.execute(statement)
