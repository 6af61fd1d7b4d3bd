"""The deployment's catalogue of studies: which study lives in which PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from infra.recorder import append_only_statements

CATALOG_SCHEMA = "trialledger"
EVENTS_TABLE = "trialledger_events"


# Two processes starting at once (e.g. the workers of one server) would otherwise create the
# same tables and triggers side by side, and PostgreSQL refuses one ("tuple concurrently
# updated", or a duplicate type name). A session holding the lock may take it again.
_SET_UP_LOCK = "hashtext('trialledger:set-up')"


def _serialise(conn: psycopg.Connection[Any]) -> None:
    """Hold the set-up lock until the transaction ends."""
    conn.execute(f"SELECT pg_advisory_xact_lock({_SET_UP_LOCK})")


@contextmanager
def setting_up(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Hold the set-up lock on ``conn`` (autocommit) while tables are created through other
    connections, e.g. by the event store's recorder."""
    conn.execute(f"SELECT pg_advisory_lock({_SET_UP_LOCK})")
    try:
        yield
    finally:
        conn.execute(f"SELECT pg_advisory_unlock({_SET_UP_LOCK})")


def ensure_catalog(conn: psycopg.Connection[Any]) -> None:
    """Create the catalogue schema and its (append-only) studies table if missing."""
    with conn.transaction():
        _serialise(conn)
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(CATALOG_SCHEMA)))
        conn.execute(
            SQL(
                "CREATE TABLE IF NOT EXISTS {}.studies ("
                " study_id text PRIMARY KEY,"
                " schema_name text NOT NULL UNIQUE,"
                " created_at timestamptz NOT NULL DEFAULT now())"
            ).format(Identifier(CATALOG_SCHEMA))
        )
        for statement in append_only_statements(CATALOG_SCHEMA, "studies"):
            conn.execute(statement)


def add_study(conn: psycopg.Connection[Any], study_id: str, schema: str) -> None:
    """Create the study's schema and ledger tables and list it in the catalogue (idempotent)."""
    from infra.ledger.store import create_ledger_tables

    ensure_catalog(conn)
    with conn.transaction():
        _serialise(conn)
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(schema)))
        create_ledger_tables(conn, schema)
        conn.execute(
            SQL(
                "INSERT INTO {}.studies (study_id, schema_name) VALUES (%s, %s) "
                "ON CONFLICT (study_id) DO NOTHING"
            ).format(Identifier(CATALOG_SCHEMA)),
            (study_id, schema),
        )


def list_studies(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """Every (study id, schema) in the catalogue, by study id."""
    exists = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
        "AND table_name = 'studies'",
        (CATALOG_SCHEMA,),
    ).fetchone()
    if not exists:
        return []
    rows = conn.execute(
        SQL("SELECT study_id, schema_name FROM {}.studies ORDER BY study_id").format(
            Identifier(CATALOG_SCHEMA)
        )
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]
