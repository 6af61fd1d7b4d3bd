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
            " created_at timestamptz NOT NULL DEFAULT now(),"
            " UNIQUE (subject_id, record_id, field))").format(s, Identifier(KEY_TABLE)),
        SQL("CREATE TABLE IF NOT EXISTS {}.{} (key_id text PRIMARY KEY,"
            " subject_id text NOT NULL, record_id text NOT NULL, field text NOT NULL,"
            " redacted_on date NOT NULL, reason text NOT NULL, request_id text NOT NULL,"
            " destroyed_at timestamptz NOT NULL DEFAULT now())").format(
                s, Identifier(SHREDDED_TABLE)),
    ]


def key_id(subject_id: str, record_id: str, field: str, generation: int = 1) -> str:
    """The id of a data key of one field of one record of one subject: after a redaction,
    a new value of that field gets a key of the next generation."""
    base = f"{subject_id}/{record_id}/{field}"
    return base if generation == 1 else f"{base}#{generation}"


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
        """The (id, data key) of this field: its current key, else one made and stored
        (wrapped), of the generation after any destroyed.

        Stored before the event that uses it commits: a key whose event never committed
        is an orphan that seals nothing, never an event without its key.
        """
        with self._pool.connection() as conn:
            # A first entry, the common case, is one round trip: its first key is new.
            made = self._insert(conn, subject_id, record_id, field, 1)
            if made is not None:
                return made
            current = self._current(conn, subject_id, record_id, field)
            if current is not None:
                return current
            shredded = conn.execute(SQL(
                "SELECT count(*) FROM {} WHERE subject_id = %s AND record_id = %s AND field = %s"
            ).format(self._shredded), (subject_id, record_id, field)).fetchone()
            generation = 1 + (shredded[0] if shredded else 0)
            made = self._insert(conn, subject_id, record_id, field, generation)
            # Else another writer made it at the same moment: use theirs.
            current = made or self._current(conn, subject_id, record_id, field)
        if current is None:
            raise FieldKeyError(f"the key of {record_id}.{field} was destroyed as it was made")
        return current

    def _insert(self, conn: psycopg.Connection[Any], subject_id: str, record_id: str,
                field: str, generation: int) -> tuple[str, bytes] | None:
        """Store a new key of ``generation`` for the field; None if one exists (this
        generation, or another current one) or this generation was destroyed."""
        kid = key_id(subject_id, record_id, field, generation)
        data_key = secrets.token_bytes(32)
        # Never a key id that was destroyed: its values must stay unreadable.
        made = conn.execute(SQL(
            "INSERT INTO {} (key_id, subject_id, record_id, field, wrapped)"
            " SELECT %(k)s, %(s)s, %(r)s, %(f)s, %(w)s WHERE NOT EXISTS"
            " (SELECT 1 FROM {} WHERE key_id = %(k)s)"
            " ON CONFLICT DO NOTHING RETURNING key_id").format(self._keys, self._shredded),
            {"k": kid, "s": subject_id, "r": record_id, "f": field,
             "w": aes_key_wrap(self._kek, data_key)}).fetchone()
        return None if made is None else (kid, data_key)

    def for_change(self, subject_id: str, record_id: str, field: str
                   ) -> tuple[str, bytes] | None:
        """The key a change of this field is sealed under: its current key, a new one if
        its values were redacted, None if it never had one (a record entered before its
        study declared the field, or this existed: its values stay plain)."""
        with self._pool.connection() as conn:
            current = self._current(conn, subject_id, record_id, field)
            if current is not None:
                return current
            redacted = conn.execute(SQL(
                "SELECT 1 FROM {} WHERE subject_id = %s AND record_id = %s AND field = %s"
                " LIMIT 1").format(self._shredded), (subject_id, record_id, field)).fetchone()
        return None if redacted is None else self.create(subject_id, record_id, field)

    def _current(self, conn: psycopg.Connection[Any], subject_id: str, record_id: str,
                 field: str) -> tuple[str, bytes] | None:
        row = conn.execute(SQL(
            "SELECT key_id, wrapped FROM {} WHERE subject_id = %s AND record_id = %s"
            " AND field = %s").format(self._keys), (subject_id, record_id, field)).fetchone()
        return None if row is None else (row[0], self._unwrap(row[0], bytes(row[1])))

    def _unwrap(self, kid: str, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._kek, wrapped)
        except InvalidUnwrap as e:
            raise FieldKeyError(f"the data key {kid} does not unwrap under this deployment's "
                                "key-encryption key") from e

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
        return self._unwrap(kid, bytes(row[0]))

    def opened(self, kid: str) -> bytes | str:
        """The data key ``kid``, else the text to show in place of its values."""
        key = self.data_key(kid)
        return KEY_UNAVAILABLE if key is None else key

    def shred(self, subject_id: str, items: Sequence[dict[str, str]], on: date, reason: str,
              request_id: str) -> int:
        """Destroy the current data keys of ``items`` (record_id, field) of the subject,
        remembering when and why; return how many were destroyed (a retry destroys none)."""
        records = [i["record_id"] for i in items]
        fields = [i["field"] for i in items]
        covered = ("subject_id = %(s)s AND (record_id, field) IN"
                   " (SELECT * FROM unnest(%(r)s::text[], %(f)s::text[]))")
        values = {"s": subject_id, "r": records, "f": fields, "on": on, "why": reason,
                  "req": request_id}
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(SQL(
                "INSERT INTO {} (key_id, subject_id, record_id, field, redacted_on, reason,"
                " request_id) SELECT key_id, subject_id, record_id, field, %(on)s, %(why)s,"
                " %(req)s FROM {} WHERE " + covered + " ON CONFLICT (key_id) DO NOTHING"
            ).format(self._shredded, self._keys), values)
            deleted = conn.execute(SQL("DELETE FROM {} WHERE " + covered).format(self._keys),
                                   values).rowcount
        return deleted

    def close(self) -> None:
        """Close the pool."""
        self._pool.close()


def create_key_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the study's key tables if missing."""
    with conn.transaction():
        for statement in key_tables(schema):
            conn.execute(statement)
