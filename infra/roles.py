"""Least privilege: the application runs as a role that owns none of TrialLedger's tables.

The owner (who ran the set-up) keeps the tables and their append-only triggers. The application
role may read and insert. It is also granted UPDATE on the events table for one reason only:
eventsourcing's recorder takes ``LOCK TABLE ... IN EXCLUSIVE MODE`` to keep notification ids in
commit order, and PostgreSQL allows that lock mode only to holders of UPDATE, DELETE or TRUNCATE.
The trigger still refuses every UPDATE, and only the owner could disable it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier, Literal

from infra.catalog import CATALOG_SCHEMA, EVENTS_TABLE
from infra.field_keys import KEY_TABLE
from infra.ledger import store

READ_TABLES = ("casebook_versions", "header_marks", "outcome_facts", "outcome_summaries",
               "audit_events", "audit_changes", "subject_summaries", "open_queries",
               "history_tracking", "history_projection_version")


def create_login_role(conn: psycopg.Connection[Any], role: str, password: str | None) -> None:
    """Create ``role`` (LOGIN, no superuser, no CREATEDB/CREATEROLE) if it does not exist."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if exists:
        return
    statement = SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
        Identifier(role)
    )
    if password is not None:
        statement += SQL(" PASSWORD {}").format(Literal(password))
    conn.execute(statement)


def grant_app_role(conn: psycopg.Connection[Any], role: str, schema: str) -> None:
    """Let ``role`` use the study stored in ``schema``: read, insert, lock — nothing more."""
    with conn.transaction():
        for statement in (
            SQL("GRANT USAGE ON SCHEMA {}, {} TO {}"),
            SQL("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA {1} TO {2}"),
            SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {1} TO {2}"),
            SQL("GRANT SELECT ON {0}.studies TO {2}"),
        ):
            conn.execute(
                statement.format(Identifier(CATALOG_SCHEMA), Identifier(schema), Identifier(role))
            )
        conn.execute(
            SQL("GRANT UPDATE ON {}.{} TO {}").format(
                Identifier(schema), Identifier(EVENTS_TABLE), Identifier(role)
            )
        )
        # A redaction destroys data keys (infra.field_keys): keys, never events.
        conn.execute(
            SQL("GRANT DELETE ON {}.{} TO {}").format(
                Identifier(schema), Identifier(KEY_TABLE), Identifier(role)
            )
        )
        # The read tables are disposable projections, not records: the projector updates
        # their rows (closing a version, moving its tracking position).
        for table in READ_TABLES:
            conn.execute(
                SQL("GRANT UPDATE, DELETE ON {}.{} TO {}").format(
                    Identifier(schema), Identifier(table), Identifier(role)
                )
            )


def grant_directory(conn: psycopg.Connection[Any], role: str) -> None:
    """Let ``role`` use the deployment's people (append-only events, like a study's), its
    sign-in sessions and its idempotency keys (operational state it updates)."""
    catalog = Identifier(CATALOG_SCHEMA)
    with conn.transaction():
        conn.execute(SQL("GRANT USAGE ON SCHEMA {} TO {}").format(catalog, Identifier(role)))
        conn.execute(SQL("GRANT SELECT, INSERT ON {}.directory_events TO {}").format(
            catalog, Identifier(role)))
        # The events table's LOCK TABLE needs UPDATE; its trigger refuses every UPDATE.
        conn.execute(SQL("GRANT UPDATE ON {}.directory_events TO {}").format(
            catalog, Identifier(role)))
        # The directory's own ledger (sealed by the server, like a study's).
        for table in (store.LEAVES, store.NODES, store.CHECKPOINTS, store.COSIGNED):
            conn.execute(SQL("GRANT SELECT, INSERT ON {}.{} TO {}").format(
                catalog, Identifier(table), Identifier(role)))
        conn.execute(SQL("GRANT SELECT, INSERT, UPDATE ON {}.sessions TO {}").format(
            catalog, Identifier(role)))
        conn.execute(SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {}.idempotency TO {}").format(
            catalog, Identifier(role)))
        # An answer is inserted once, and deleted only with its claim (a redaction).
        conn.execute(SQL("GRANT SELECT, INSERT, DELETE ON {}.idempotency_answers TO {}").format(
            catalog, Identifier(role)))
        # A receipt (a keyed request's events are stored) likewise.
        conn.execute(SQL("GRANT SELECT, INSERT, DELETE ON {}.idempotency_applied TO {}").format(
            catalog, Identifier(role)))
        conn.execute(SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            catalog, Identifier(role)))
