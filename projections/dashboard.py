"""A study at a glance, from the history tables: enrolment by arm and site, open queries with
their age, source-data verification progress, and casebooks awaiting signature or whose
signature a later change invalidated. The database counts and picks out of the subject
headers what is shown: whole headers (each with every query ever raised on the subject) are
never sent, nor whole casebooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL, Composable, Composed, Identifier

from projections.history_view import VERSIONS
from projections.projector import HEADER


@dataclass
class Overview:
    """What the dashboard shows of a study, at the sites asked for."""

    enrolment: dict[tuple[str, str], int] = field(default_factory=dict)  # (site, arm) → n
    open_query_count: int = 0
    oldest_open_queries: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    verified: int = 0
    unsigned: list[str] = field(default_factory=list)
    invalidated: list[str] = field(default_factory=list)


def _headers(schema: str, sites: set[str] | None, joined: Composable | None = None) -> Composed:
    """FROM and WHERE of the current subject headers (alias ``h``) at ``sites`` (None: every
    site), and what is ``joined`` to each."""
    at_sites = SQL("") if sites is None else SQL(" AND h.data->>'site' = ANY(%(sites)s)")
    return SQL("{s}.{v} h{joined} WHERE h.record_id = %(h)s AND h.recorded_to IS NULL{at}"
               ).format(s=Identifier(schema), v=Identifier(VERSIONS), joined=joined or SQL(""),
                        at=at_sites)


def overview(conn: psycopg.Connection[Any], schema: str, sites: set[str] | None,
             oldest: int = 50) -> Overview:
    """The study as it stands now, at ``sites`` (None: every site), with the ``oldest`` open
    queries (all are counted)."""
    params = {"h": HEADER, "sites": sorted(sites or ()), "oldest": oldest}
    counts = dict(conn.execute(
        SQL("SELECT subject_id, count(*) FROM {s}.{v} WHERE record_id <> %(h)s"
            " AND recorded_to IS NULL AND data IS NOT NULL GROUP BY subject_id").format(
            s=Identifier(schema), v=Identifier(VERSIONS)), params).fetchall())
    subjects = conn.execute(
        SQL("SELECT h.subject_id, h.data->>'subject', h.data->>'site', h.data->>'arm',"
            " (SELECT count(*) FROM jsonb_object_keys(h.data->'sdv')),"
            " (SELECT count(*) FROM jsonb_each(h.data->'queries') q"
            "  WHERE q.value->>'status' <> 'closed'),"
            " ARRAY(SELECT s.value->>'status' FROM jsonb_each(h.data->'signatures') s)"
            " FROM {} ORDER BY h.data->>'subject' COLLATE \"C\"").format(_headers(schema, sites)),
        params).fetchall()
    out = Overview()
    for subject_id, code, site, arm, verified, open_queries, statuses in subjects:
        key = (str(site), str(arm))
        out.enrolment[key] = out.enrolment.get(key, 0) + 1
        out.open_query_count += int(open_queries)
        out.records += int(counts.get(subject_id, 0))
        out.verified += int(verified)
        if "valid" not in statuses:
            (out.invalidated if "invalidated" in statuses else out.unsigned).append(str(code))
    # Oldest first; at the same time by subject and query, as they are listed.
    out.oldest_open_queries = [
        {"subject": code, "query_id": query_id, **query}
        for code, query_id, query in conn.execute(
            SQL("SELECT h.data->>'subject', q.key, q.value FROM {}"
                " AND q.value->>'status' <> 'closed' ORDER BY q.value->>'opened_at' COLLATE"
                " \"C\", h.data->>'subject' COLLATE \"C\", q.key COLLATE \"C\""
                " LIMIT %(oldest)s").format(_headers(
                    schema, sites, SQL(" CROSS JOIN LATERAL jsonb_each(h.data->'queries') q"))),
            params)]
    return out
