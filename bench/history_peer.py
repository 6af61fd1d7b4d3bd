"""The outcome tables' baseline: the same outcome facts kept the usual way of a temporal
table, a current table and a history table, each row with its system period (a tstzrange)
and a GiST index on it, asked the same question as of T.

The peer is loaded from the facts the projector wrote, into the state a history trigger
would have left (each version shown for a while, with the period it was shown; versions never
shown, superseded within their own commit, and removals are no rows at all), so that both
answer from the same data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from projections.history_view import OUTCOME_FACTS
from projections.outcome_state import facts_of_rows
from projections.queries import FACT_ROW

PEER = "history_peer"
COLUMNS = SQL("subject_id uuid NOT NULL, fact text NOT NULL, kind text NOT NULL,"
              " data jsonb NOT NULL, sys_period tstzrange NOT NULL")


def build(conn: psycopg.Connection[Any], schema: str) -> int:
    """(Re)make the peer's tables in schema ``history_peer`` from ``schema``'s outcome facts;
    return how many rows they hold."""
    facts = SQL("{}.{}").format(Identifier(schema), Identifier(OUTCOME_FACTS))
    peer = Identifier(PEER)
    with conn.transaction():
        conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(peer))
        conn.execute(SQL("CREATE SCHEMA {}").format(peer))
        conn.execute(SQL("CREATE TABLE {}.current ({}, PRIMARY KEY (subject_id, fact))")
                     .format(peer, COLUMNS))
        conn.execute(SQL("CREATE TABLE {}.history ({})").format(peer, COLUMNS))
        conn.execute(SQL(
            "INSERT INTO {}.current SELECT subject_id, fact, kind, data,"
            " tstzrange(recorded_from, NULL) FROM {} WHERE recorded_to IS NULL"
            " AND data IS NOT NULL").format(peer, facts))
        conn.execute(SQL(
            "INSERT INTO {}.history SELECT subject_id, fact, kind, data,"
            " tstzrange(recorded_from, recorded_to) FROM {} WHERE recorded_to > recorded_from"
            " AND data IS NOT NULL").format(peer, facts))
        for table in ("current", "history"):
            conn.execute(SQL("CREATE INDEX ON {}.{} USING gist (sys_period)").format(
                peer, Identifier(table)))
            conn.execute(SQL("ANALYZE {}.{}").format(peer, Identifier(table)))
    row = conn.execute(SQL("SELECT (SELECT count(*) FROM {0}.current)"
                           " + (SELECT count(*) FROM {0}.history)").format(peer)).fetchone()
    return int(row[0]) if row else 0


def facts_as_of(conn: psycopg.Connection[Any], as_of: datetime) -> list[dict[str, Any]]:
    """Every subject's outcome facts as of ``as_of``, from the peer's tables (the rows
    read and assembled as :func:`projections.queries.outcome_facts_as_of` reads its own)."""
    rows = conn.execute(SQL(
        "SELECT {1} FROM {0}.current WHERE sys_period @> %(t)s::timestamptz"
        " UNION ALL SELECT {1} FROM {0}.history WHERE sys_period @> %(t)s::timestamptz")
        .format(Identifier(PEER), FACT_ROW), {"t": as_of})
    return facts_of_rows(rows)


def drop(conn: psycopg.Connection[Any]) -> None:
    """Drop the peer's tables (a kept store is left as it was generated)."""
    with conn.transaction():
        conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(PEER)))
