"""A study at a glance, from the history tables: enrolment by arm and site, open queries with
their age, source-data verification progress, and casebooks awaiting signature or whose
signature a later change invalidated. Only the subject headers and a count of records are
read, never whole casebooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from domain.blinding import Mask
from projections.blinding import masked
from projections.history_view import VERSIONS
from projections.projector import HEADER


@dataclass
class Overview:
    """What the dashboard shows of a study, at the sites asked for."""

    enrolment: dict[tuple[str, str], int] = field(default_factory=dict)  # (site, arm) → n
    open_queries: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    verified: int = 0
    unsigned: list[str] = field(default_factory=list)
    invalidated: list[str] = field(default_factory=list)


def overview(conn: psycopg.Connection[Any], schema: str, sites: set[str] | None,
             mask: Mask | None = None) -> Overview:
    """The study as it stands now, at ``sites`` (None: every site); for a blind person
    (``mask``), enrolment by site only, the arms pooled."""
    counts = dict(conn.execute(
        SQL("SELECT subject_id, count(*) FROM {s}.{v} WHERE record_id <> %(h)s"
            " AND recorded_to IS NULL AND data IS NOT NULL GROUP BY subject_id").format(
            s=Identifier(schema), v=Identifier(VERSIONS)), {"h": HEADER}).fetchall())
    headers = conn.execute(
        SQL("SELECT subject_id, data FROM {s}.{v} WHERE record_id = %(h)s"
            " AND recorded_to IS NULL").format(s=Identifier(schema), v=Identifier(VERSIONS)),
        {"h": HEADER}).fetchall()
    out = Overview()
    for subject_id, shown in sorted(headers, key=lambda row: str(row[1]["subject"])):
        header = masked(shown, mask)
        if sites is not None and header["site"] not in sites:
            continue
        code = str(header["subject"])
        key = (str(header["site"]), str(header["arm"]))
        out.enrolment[key] = out.enrolment.get(key, 0) + 1
        out.open_queries += [{"subject": code, "query_id": query_id, **query}
                             for query_id, query in sorted(header["queries"].items())
                             if query["status"] != "closed"]
        out.records += int(counts.get(subject_id, 0))
        out.verified += len(header["sdv"])
        statuses = [s["status"] for s in header["signatures"].values()]
        if "valid" not in statuses:
            (out.invalidated if "invalidated" in statuses else out.unsigned).append(code)
    out.open_queries.sort(key=lambda q: str(q["opened_at"]))
    return out
