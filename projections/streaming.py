"""Reading the read tables for exports: one consistent snapshot, rows streamed from the server.

An export of a large study must neither hold the study in memory nor mix rows committed while
it runs; both come from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Composable, Composed, Identifier

from domain.clock import in_offset, require_aware

FETCH_ROWS = 5000  # rows per round trip of a server-side cursor: flat memory, few round trips


@contextmanager
def consistent_read(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run the block in one REPEATABLE READ, read-only transaction.

    Every query of an export then sees the same committed data, even when the projector
    commits new rows while a long export streams. ``conn`` must not be inside a transaction.
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def stream(conn: psycopg.Connection[Any], query: Composed, params: Mapping[str, Any],
           name: str) -> Iterator[tuple[Any, ...]]:
    """The rows of ``query``, fetched ``FETCH_ROWS`` at a time through a server-side cursor."""
    with conn.cursor(name=name) as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(query, params)
        yield from cursor


def in_force(as_of: datetime | None, table: str) -> Composable:
    """SQL condition: a row of casebook versions (aliased ``table``) that the system showed at
    ``as_of`` (now when None). The statement's parameters must hold ``as_of`` as ``t``."""
    t = Identifier(table)
    if as_of is None:
        return SQL("{}.recorded_to IS NULL").format(t)
    return SQL("{t}.recorded_from <= %(t)s AND ({t}.recorded_to IS NULL "
               "OR {t}.recorded_to > %(t)s)").format(t=t)


def aware(name: str, when: datetime | None) -> datetime | None:
    """``when`` in UTC (None stays None); a naive time is refused."""
    return None if when is None else require_aware(name, when).astimezone(UTC)


# Fields of a record that hold a clinical time (an AE's end, a therapy's stop): shown, like
# the record's observed_at, at the offset the record was entered with.
TIME_FIELDS = ("ended_at", "stopped_at")


def localised(value: Any, offset: str | None) -> Any:
    """An ISO 8601 time (stored in UTC) at a record's entered ``offset`` (``+08:00``), with
    that offset; anything else, or no offset (an entry from before offsets were kept),
    unchanged."""
    if not offset or not isinstance(value, str) or "T" not in value:
        return value
    return in_offset(datetime.fromisoformat(value), offset).isoformat()


def utc_text(when: datetime) -> str:
    """ISO 8601 in UTC with an explicit offset, whatever the session's time zone."""
    return when.astimezone(UTC).isoformat()
