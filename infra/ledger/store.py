"""The ledger's tables in a study's schema: leaves, complete-subtree nodes, signed checkpoints,
and the checkpoints witnesses cosigned (the note with their cosignature lines appended).

All four are append-only (triggers), like the events table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Composed, Identifier

from infra.ledger.merkle import NodeSource
from infra.recorder import append_only_statements

LEAVES = "ledger_leaves"
NODES = "ledger_nodes"
CHECKPOINTS = "ledger_checkpoints"
COSIGNED = "ledger_cosigned"


def create_ledger_tables(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the ledger tables (idempotent)."""
    s = Identifier(schema)
    statements: list[Composed] = [
        SQL("CREATE TABLE IF NOT EXISTS {}.{} ("
            " leaf_index bigint PRIMARY KEY,"
            " notification_id bigint NOT NULL UNIQUE,"
            " leaf_hash bytea NOT NULL)").format(s, Identifier(LEAVES)),
        SQL("CREATE TABLE IF NOT EXISTS {}.{} ("
            " level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL,"
            " PRIMARY KEY (level, idx))").format(s, Identifier(NODES)),
        SQL("CREATE TABLE IF NOT EXISTS {}.{} ("
            " tree_size bigint PRIMARY KEY,"
            " root bytea NOT NULL,"
            " note text NOT NULL,"
            " key_id text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())").format(s, Identifier(CHECKPOINTS)),
        SQL("CREATE TABLE IF NOT EXISTS {}.{} ("
            " tree_size bigint PRIMARY KEY,"
            " note text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())").format(s, Identifier(COSIGNED)),
    ]
    for table in (LEAVES, NODES, CHECKPOINTS, COSIGNED):
        statements.extend(append_only_statements(schema, table))
    with conn.transaction():
        for statement in statements:
            conn.execute(statement)


def has_ledger(conn: psycopg.Connection[Any], schema: str) -> bool:
    """True if ``schema`` holds the ledger tables."""
    row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{LEAVES}"',)).fetchone()
    return row is not None and row[0] is not None


def node_source(conn: psycopg.Connection[Any], schema: str) -> NodeSource:
    """Read complete-subtree hashes from the nodes table."""
    query = SQL("SELECT hash FROM {}.{} WHERE level = %s AND idx = %s").format(
        Identifier(schema), Identifier(NODES))

    def get(level: int, index: int) -> bytes:
        row = conn.execute(query, (level, index), prepare=True).fetchone()
        if row is None:
            raise LookupError(f"ledger node ({level}, {index}) is missing")
        return bytes(row[0])

    return get


def tree_size(conn: psycopg.Connection[Any], schema: str) -> int:
    """Number of sealed leaves."""
    row = conn.execute(SQL("SELECT count(*) FROM {}.{}").format(
        Identifier(schema), Identifier(LEAVES))).fetchone()
    return int(row[0]) if row else 0


def sealed_extent(conn: psycopg.Connection[Any], schema: str) -> tuple[int, int]:
    """(number of sealed leaves, position of the last event sealed; 0 for none), read off the
    last leaf by its key: leaves are appended in log order, indexes from 0 without gaps."""
    row = conn.execute(SQL("SELECT leaf_index + 1, notification_id FROM {}.{} "
                           "ORDER BY leaf_index DESC LIMIT 1").format(
        Identifier(schema), Identifier(LEAVES))).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def checkpoints(conn: psycopg.Connection[Any], schema: str) -> list[tuple[int, bytes, str]]:
    """Every (tree size, root, signed note), smallest first."""
    rows = conn.execute(SQL("SELECT tree_size, root, note FROM {}.{} ORDER BY tree_size").format(
        Identifier(schema), Identifier(CHECKPOINTS))).fetchall()
    return [(int(size), bytes(root), str(note)) for size, root, note in rows]


def latest_checkpoint(conn: psycopg.Connection[Any],
                      schema: str) -> tuple[int, bytes, str] | None:
    """The newest (tree size, root, signed note), or None before the first checkpoint."""
    row = conn.execute(SQL("SELECT tree_size, root, note FROM {}.{} ORDER BY tree_size DESC "
                           "LIMIT 1").format(Identifier(schema), Identifier(CHECKPOINTS))
                       ).fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]), str(row[2]))


def checkpoint_signed_at(conn: psycopg.Connection[Any], schema: str,
                         size: int) -> datetime | None:
    """When the checkpoint of ``size`` was signed and stored (None: there is none)."""
    row = conn.execute(SQL("SELECT created_at FROM {}.{} WHERE tree_size = %s").format(
        Identifier(schema), Identifier(CHECKPOINTS)), (size,)).fetchone()
    return None if row is None else row[0]


def leaf_index_of(conn: psycopg.Connection[Any], schema: str, position: int) -> int | None:
    """The leaf index of the event at notification id ``position``, if sealed."""
    row = conn.execute(SQL("SELECT leaf_index FROM {}.{} WHERE notification_id = %s").format(
        Identifier(schema), Identifier(LEAVES)), (position,)).fetchone()
    return None if row is None else int(row[0])


def cosigned(conn: psycopg.Connection[Any], schema: str) -> list[tuple[int, str]]:
    """Every witnessed checkpoint (tree size, note with cosignatures), smallest first."""
    rows = conn.execute(SQL("SELECT tree_size, note FROM {}.{} ORDER BY tree_size").format(
        Identifier(schema), Identifier(COSIGNED))).fetchall()
    return [(int(size), str(note)) for size, note in rows]


def latest_cosigned(conn: psycopg.Connection[Any], schema: str) -> tuple[int, str] | None:
    """The newest witnessed checkpoint (tree size, note with cosignatures), if any."""
    row = conn.execute(SQL("SELECT tree_size, note FROM {}.{} ORDER BY tree_size DESC LIMIT 1")
                       .format(Identifier(schema), Identifier(COSIGNED))).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def add_cosigned(conn: psycopg.Connection[Any], schema: str, size: int, note: str) -> None:
    """Store the checkpoint of ``size`` with the cosignatures it gathered (once)."""
    conn.execute(SQL("INSERT INTO {}.{} (tree_size, note) VALUES (%s, %s) "
                     "ON CONFLICT (tree_size) DO NOTHING").format(
        Identifier(schema), Identifier(COSIGNED)), (size, note))
