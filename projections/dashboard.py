"""A study at a glance, from the history tables: enrolment by arm and site, open queries with
their age, source-data verification progress, and casebooks awaiting signature or whose
signature a later change invalidated. The database counts and picks out of the subject
headers what is shown: whole headers (each with every query ever raised on the subject) are
never sent, nor whole casebooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier, Literal

from domain.blinding import Mask
from projections.blinding import masked
from projections.history_view import VERSIONS
from projections.projector import HEADER
from projections.queries import current_headers


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


def overview(conn: psycopg.Connection[Any], schema: str, sites: set[str] | None,
             oldest: int = 50, mask: Mask | None = None) -> Overview:
    """The study as it stands now, at ``sites`` (None: every site), with the ``oldest`` open
    queries (all are counted); for a blind person (``mask``), enrolment by site only, the
    arms pooled."""
    params = {"h": HEADER, "sites": sorted(sites or ()), "oldest": oldest}
    # The condition of the index casebook_versions_records, word for word (a literal: with a
    # bound value the planner could not tell that the index covers it).
    counts = dict(conn.execute(
        SQL("SELECT subject_id, count(*) FROM {s}.{v} WHERE recorded_to IS NULL"
            " AND data IS NOT NULL AND record_id <> {h} GROUP BY subject_id").format(
            s=Identifier(schema), v=Identifier(VERSIONS), h=Literal(HEADER))).fetchall())
    subjects = conn.execute(
        SQL("SELECT h.subject_id, h.d->>'subject', h.d->>'site', h.d->>'arm',"
            " (SELECT count(*) FROM jsonb_object_keys(h.d->'sdv')),"
            " (SELECT count(*) FROM jsonb_each(h.d->'queries') q"
            "  WHERE q.value->>'status' <> 'closed'),"
            " ARRAY(SELECT s.value->>'status' FROM jsonb_each(h.d->'signatures') s)"
            " FROM {} ORDER BY h.d->>'subject' COLLATE \"C\"").format(
            current_headers(schema, sites)), params).fetchall()
    out = Overview()
    for subject_id, code, site, arm, verified, open_queries, statuses in subjects:
        key = (str(site), str(masked({"arm": arm}, mask)["arm"]))
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
            SQL("SELECT h.d->>'subject', q.key, q.value FROM {}"
                " CROSS JOIN LATERAL jsonb_each(h.d->'queries') q"
                " WHERE q.value->>'status' <> 'closed' ORDER BY q.value->>'opened_at' COLLATE"
                " \"C\", h.d->>'subject' COLLATE \"C\", q.key COLLATE \"C\""
                " LIMIT %(oldest)s").format(current_headers(schema, sites)),
            params)]
    return out
