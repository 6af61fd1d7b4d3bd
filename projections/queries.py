"""Questions answered from the history tables: casebooks as of a recorded time, the audit trail.

Naive timestamps are refused: every time carries an explicit offset.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.sql import SQL, Composable, Composed, Identifier

from domain.clock import require_aware
from domain.endpoints import Endpoint
from domain.errors import InvalidInput, NotFound
from domain.review import ReviewFilter
from domain.subject import subject_uuid
from projections.casebook import assemble, at_valid_time
from projections.history_view import (
    AUDIT_CHANGES,
    AUDIT_COLUMNS,
    AUDIT_EVENTS,
    FACT_PERIOD,
    OPEN_FACT,
    OUTCOME_FACTS,
    OUTCOME_SUMMARIES,
    SHOWN_CLOSED_FACT,
    SUMMARIES,
    SUMMARY_KEYS,
    VERSIONS,
    audit_column,
    casebook_history,
)
from projections.outcome_state import books_of_rows
from projections.outcomes.engine import Summary, summary_format, uncollected
from projections.outcomes.facts import outcome_facts_at_valid_time
from projections.projector import HEADER
from projections.review_sql import review_condition
from projections.streaming import stream


def casebook_as_of(conn: psycopg.Connection[Any], schema: str, study_id: str,
                   subject_code: str, as_of: datetime | None = None,
                   valid_at: datetime | None = None) -> dict[str, Any]:
    """The casebook as the system showed it at ``as_of`` (now when None), and, with
    ``valid_at``, as it said things stood at that clinical time."""
    if valid_at is not None:
        book = casebook_as_of(conn, schema, study_id, subject_code, as_of)
        return at_valid_time(book, require_aware("valid_at", valid_at))
    when = require_aware("as_of", as_of) if as_of is not None else None
    sid = subject_uuid(study_id, subject_code)
    valid = (SQL("recorded_to IS NULL") if when is None else
             SQL("recorded_from <= %(t)s AND (recorded_to IS NULL OR recorded_to > %(t)s)"))
    rows = conn.execute(
        SQL("SELECT record_id, kind, data FROM {} v WHERE subject_id = %(sid)s AND {}")
        .format(casebook_history(schema), valid), {"sid": sid, "t": when},
    ).fetchall()
    header = next((data for record_id, _, data in rows if record_id == HEADER), None)
    if header is None:
        raise NotFound(f"no subject {subject_code} in study {study_id}"
                       + (f" as of {when.isoformat()}" if when else ""))
    seen = SQL("") if when is None else SQL(" AND recorded_from <= %(t)s")
    version_row = conn.execute(
        SQL("SELECT max(version) FROM {}.{} WHERE subject_id = %(sid)s{}").format(
            Identifier(schema), Identifier(VERSIONS), seen), {"sid": sid, "t": when},
    ).fetchone()
    records = [(kind, data) for record_id, kind, data in rows
               if record_id != HEADER and data is not None]
    return assemble(header, int(version_row[0]) if version_row else 0, records, when)


def casebooks_as_of(conn: psycopg.Connection[Any], schema: str,
                    as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Every subject's casebook as the system showed it at ``as_of``, by subject code."""
    when = require_aware("as_of", as_of) if as_of is not None else None
    valid = (SQL("recorded_to IS NULL") if when is None else
             SQL("recorded_from <= %(t)s AND (recorded_to IS NULL OR recorded_to > %(t)s)"))
    seen = SQL("TRUE") if when is None else SQL("recorded_from <= %(t)s")
    versions = dict(conn.execute(
        SQL("SELECT subject_id, max(version) FROM {}.{} WHERE {} GROUP BY subject_id").format(
            Identifier(schema), Identifier(VERSIONS), seen), {"t": when}).fetchall())
    headers: dict[Any, dict[str, Any]] = {}
    records: dict[Any, list[tuple[str, dict[str, Any]]]] = {}
    rows = conn.execute(
        SQL("SELECT subject_id, record_id, kind, data FROM {} v WHERE {}").format(
            casebook_history(schema), valid), {"t": when})
    for subject_id, record_id, kind, rendering in rows:
        if record_id == HEADER:
            headers[subject_id] = rendering
        elif rendering is not None:
            records.setdefault(subject_id, []).append((kind, rendering))
    books = [assemble(header, int(versions[sid]), records.get(sid, []), when)
             for sid, header in headers.items()]
    return sorted(books, key=lambda book: str(book["subject"]))


def _shown_at(columns: Composable, schema: str, table: str,
              when: datetime | None) -> Composed:
    """The rows of the versioned ``table`` shown at ``when`` (now when None)."""
    rows = SQL("SELECT {} FROM {}.{} WHERE data IS NOT NULL AND ").format(
        columns, Identifier(schema), Identifier(table))
    # Each part matches one of the table's time indexes (their conditions spelled alike).
    query = rows + OPEN_FACT
    if when is not None:
        query += SQL(" AND recorded_from <= %(t)s UNION ALL ") + rows + SHOWN_CLOSED_FACT
        query += SQL(" AND ") + FACT_PERIOD + SQL(" @> %(t)s::timestamptz")
    return query


def outcome_facts_as_of(conn: psycopg.Connection[Any], schema: str,
                        as_of: datetime | None = None) -> list[dict[str, Any]]:
    """Every subject's outcome facts (see :func:`projections.outcomes.facts.outcome_facts`)
    as the system showed them at ``as_of`` (now when None), by subject code."""
    return sorted(each_outcome_book(conn, schema, as_of),
                  key=lambda book: str(book["subject"]))


def each_outcome_book(conn: psycopg.Connection[Any], schema: str,
                      as_of: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The books of :func:`outcome_facts_as_of` one at a time, in the order of the subjects'
    ids (not their codes): a reader of every book that needs not hold them all at once (a
    bundle's analysis datasets at 1M events: 65 MB of books)."""
    when = require_aware("as_of", as_of) if as_of is not None else None
    query = _shown_at(FACT_ROW, schema, OUTCOME_FACTS, when) + SQL(" ORDER BY 1")
    with conn.transaction():
        yield from books_of_rows(stream(conn, query, {"t": when}, "outcome_books"))


def outcome_summaries_as_of(conn: psycopg.Connection[Any], schema: str,
                            endpoints: tuple[Endpoint, ...],
                            as_of: datetime | None = None) -> list[Summary] | None:
    """Every subject's outcome summary for ``endpoints`` (see
    :func:`projections.outcomes.engine.subject_summary`) as the system showed it at ``as_of``
    (now when None), by subject code; None if one was computed for other endpoints or by
    another engine, or could not be (the tables are then computed from the facts)."""
    when = require_aware("as_of", as_of) if as_of is not None else None
    wanted = summary_format(endpoints)
    rows = conn.execute(_shown_at(SQL("kind, data::text"), schema, OUTCOME_SUMMARIES, when),
                        {"t": when}).fetchall()
    summaries = []
    with uncollected():
        for kind, text in rows:
            summary = orjson.loads(text)
            if kind != wanted or "endpoints" not in summary:
                return None
            summaries.append(summary)
    return sorted(summaries, key=lambda summary: str(summary["subject"]))


# A fact's row as text: tens of thousands of facts parse faster by orjson than as jsonb by
# the driver's json module, and the subject's id serves only to group them.
FACT_ROW = SQL("subject_id::text, kind, data::text")


def outcome_books(conn: psycopg.Connection[Any], schema: str, as_of: datetime | None = None,
                  valid_at: datetime | None = None) -> list[dict[str, Any]]:
    """What the outcome tables read as of ``as_of``: the kept outcome facts, or with
    ``valid_at`` those of what each casebook said held at that clinical time (read from the
    whole casebooks: the kept facts hold only the latest lab result of a visit)."""
    if valid_at is None:
        return outcome_facts_as_of(conn, schema, as_of)
    when = require_aware("valid_at", valid_at)
    return [outcome_facts_at_valid_time(book, when)
            for book in casebooks_as_of(conn, schema, as_of)]


def cell_sources(conn: psycopg.Connection[Any], schema: str, study_id: str,
                 contributions: dict[str, set[str]],
                 as_of: datetime | None = None) -> list[dict[str, Any]]:
    """The subjects and records behind an outcome cell (``contributions``: subject code ->
    record ids), each subject with the log position of its first event and each record with
    the positions of every event that made a version of it by ``as_of``: the events whose
    inclusion the ledger proves."""
    when = require_aware("as_of", as_of) if as_of is not None else None
    ids = {subject_uuid(study_id, code): code for code in contributions}
    seen = SQL("") if when is None else SQL(" AND recorded_from <= %(t)s")
    rows = conn.execute(
        SQL("SELECT subject_id, record_id, kind, position FROM {}.{} WHERE subject_id = ANY("
            "%(sids)s) AND (record_id = '' OR record_id = ANY(%(rids)s)){} ORDER BY position")
        .format(Identifier(schema), Identifier(VERSIONS), seen),
        {"sids": list(ids), "rids": sorted({r for rs in contributions.values() for r in rs}),
         "t": when}).fetchall()
    first: dict[str, int] = {}
    records: dict[tuple[str, str], dict[str, Any]] = {}
    for subject_id, record_id, kind, position in rows:
        code = ids[subject_id]
        if record_id == HEADER:
            first.setdefault(code, int(position))
        elif record_id in contributions[code]:
            entry = records.setdefault((code, record_id), {"record_id": record_id,
                                                          "kind": kind, "positions": []})
            entry["positions"].append(int(position))
    return [{"subject": code, "first_position": first.get(code),
             "records": [records[(code, r)] for r in sorted(contributions[code])
                         if (code, r) in records]}
            for code in sorted(contributions)]


def subject_list(conn: psycopg.Connection[Any], schema: str,
                 sites: set[str] | None) -> list[dict[str, Any]]:
    """Every subject as it stands (code, site, status, arm, lock, version), at ``sites``
    (None: every site), by subject code: from the subject summaries the projector keeps."""
    at_sites = SQL("") if sites is None else SQL(" WHERE site = ANY(%(sites)s)")
    rows = conn.execute(
        SQL("SELECT listing, version FROM {}.{}{}").format(
            Identifier(schema), Identifier(SUMMARIES), at_sites),
        {"sites": sorted(sites or ())}).fetchall()
    listed = [{**{k: listing.get(k) for k in SUMMARY_KEYS}, "version": int(version)}
              for listing, version in rows]
    return sorted(listed, key=lambda s: str(s["subject"]))


def diff(conn: psycopg.Connection[Any], schema: str, since: datetime,
         until: datetime) -> list[dict[str, Any]]:
    """What changed between two recorded times: each subject header or record whose rendering
    at ``until`` differs from that at ``since`` (None: did not exist, or removed)."""
    t1 = require_aware("from", since)
    t2 = require_aware("to", until)
    if t2 < t1:
        raise InvalidInput("to", "is before from")
    rows = conn.execute(
        SQL("WITH changed AS (SELECT DISTINCT subject_id, record_id FROM {s}.{v} "
            "WHERE recorded_from > %(t1)s AND recorded_from <= %(t2)s) "
            "SELECT c.subject_id, c.record_id, b.data, a.data, h.data->>'subject' "
            "FROM changed c "
            "LEFT JOIN {b} b ON b.subject_id = c.subject_id AND b.record_id = c.record_id "
            " AND b.recorded_from <= %(t1)s AND (b.recorded_to IS NULL OR b.recorded_to > %(t1)s) "
            "LEFT JOIN {b} a ON a.subject_id = c.subject_id AND a.record_id = c.record_id "
            " AND a.recorded_from <= %(t2)s AND (a.recorded_to IS NULL OR a.recorded_to > %(t2)s) "
            "JOIN {s}.{v} h ON h.subject_id = c.subject_id AND h.record_id = '' "
            " AND h.recorded_to IS NULL").format(s=Identifier(schema), v=Identifier(VERSIONS),
                                                 b=casebook_history(schema)),
        {"t1": t1, "t2": t2},
    ).fetchall()
    changes = [{"subject": code, "record_id": record_id, "before": before, "after": after}
               for _, record_id, before, after, code in rows if before != after]
    return sorted(changes, key=lambda c: (c["subject"], c["record_id"]))


AUDIT_FILTERS = ("site", "subject_code", "record_id", "field", "user_id", "event_type")


@dataclass
class AuditQuery:
    """Filters of the audit trail; each is optional. Times need an explicit offset."""

    filters: dict[str, str] = field(default_factory=dict)
    recorded_from: datetime | None = None
    recorded_to: datetime | None = None
    # A review filter (domain.review): only the changes it selects.
    review: ReviewFilter | None = None


def _decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        position, seq = data["after"]
        return int(position), int(seq)
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidInput("cursor", "is not a cursor this server gave out") from e


def audit_page(conn: psycopg.Connection[Any], schema: str, query: AuditQuery,
               cursor: str | None = None, limit: int = 100) -> dict[str, Any]:
    """One page of the audit trail in commit order, and the cursor of the next page."""
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit", "must be between 1 and 1000")
    unknown = sorted(set(query.filters) - set(AUDIT_FILTERS))
    if unknown:
        raise InvalidInput(unknown[0], "is not a filter of the audit trail")
    position, seq = _decode_cursor(cursor) if cursor else (0, -1)
    # The bound on each table's position lets an index of either (the one of the filter the
    # planner picks) start where the page does.
    conditions: list[Composable] = [
        SQL("e.position >= %(position)s AND c.position >= %(position)s"
            " AND (c.position, c.seq) > (%(position)s, %(seq)s)")]
    params: dict[str, Any] = {"limit": limit + 1, "position": position, "seq": seq}
    for name, value in sorted(query.filters.items()):
        conditions.append(SQL("{} = %({})s").format(audit_column(name), SQL(name)))
        params[name] = value
    if query.recorded_from is not None:
        conditions.append(SQL("e.recorded_at >= %(t_from)s"))
        params["t_from"] = require_aware("recorded_from", query.recorded_from)
    if query.recorded_to is not None:
        conditions.append(SQL("e.recorded_at < %(t_to)s"))
        params["t_to"] = require_aware("recorded_to", query.recorded_to)
    if query.review is not None:
        condition, review_params = review_condition(conn, schema, query.review, position)
        conditions.append(condition)
        params.update(review_params)
    rows = conn.execute(
        SQL("SELECT c.seq, {} FROM {s}.{e} e JOIN {s}.{c} c ON c.position = e.position "
            "WHERE {} ORDER BY c.position, c.seq LIMIT %(limit)s").format(
            SQL(", ").join(audit_column(c) for c in AUDIT_COLUMNS), SQL(" AND ").join(conditions),
            s=Identifier(schema), e=Identifier(AUDIT_EVENTS), c=Identifier(AUDIT_CHANGES)),
        params,
    ).fetchall()
    entries = [_entry(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        after = [last[1], last[0]]  # position, seq
        next_cursor = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
    return {"entries": entries, "next_cursor": next_cursor}


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    entry = dict(zip(AUDIT_COLUMNS, row[1:], strict=True))
    for key in ("recorded_at", "observed_at"):
        if entry[key] is not None:
            entry[key] = entry[key].isoformat()
    if entry["subject_id"] is not None:
        entry["subject_id"] = str(entry["subject_id"])
    return entry
