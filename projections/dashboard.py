"""A study at a glance, from the read tables: enrolment by arm and site, open queries with
their age, source-data verification progress, and casebooks awaiting signature or whose
signature a later change invalidated. Read from the subject summaries and open queries the
projector keeps (one row each), never from the subject headers (each with every query ever
raised on the subject), nor whole casebooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL, Composable, Identifier

from domain.blinding import Mask
from projections.blinding import masked
from projections.history_view import OPEN_QUERIES, SUMMARIES


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
    params = {"sites": sorted(sites or ()), "oldest": oldest}
    at_sites: Composable = SQL("") if sites is None else SQL(" WHERE site = ANY(%(sites)s)")
    subjects = conn.execute(
        SQL("SELECT subject, site, arm, records, verified, open_queries, signature FROM {}.{}{}"
            " ORDER BY subject").format(Identifier(schema), Identifier(SUMMARIES), at_sites),
        params).fetchall()
    out = Overview()
    for code, site, arm, records, verified, open_queries, signature in subjects:
        key = (str(site), str(masked({"arm": arm}, mask)["arm"]))
        out.enrolment[key] = out.enrolment.get(key, 0) + 1
        out.open_query_count += int(open_queries)
        out.records += int(records)
        out.verified += int(verified)
        if signature != "valid":
            (out.invalidated if signature == "invalidated" else out.unsigned).append(str(code))
    # Oldest first; at the same time by subject and query, as they are listed (the columns
    # compare bytewise: COLLATE "C").
    out.oldest_open_queries = [
        {"subject": code, "query_id": query_id, **query}
        for code, query_id, query in conn.execute(
            SQL("SELECT subject, query_id, query FROM {}.{}{}"
                " ORDER BY opened_at, subject, query_id LIMIT %(oldest)s").format(
                Identifier(schema), Identifier(OPEN_QUERIES), at_sites), params)]
    return out
