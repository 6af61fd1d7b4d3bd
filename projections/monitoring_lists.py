"""Queries and e-signatures across a study's subjects, from their current headers in the
read tables: the monitor's work queue and the signatures in force."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier, Literal

from projections.history_view import VERSIONS


def _marks(conn: psycopg.Connection[Any], schema: str, key: str, sites: set[str] | None,
           site: str | None, subject: str | None) -> list[dict[str, Any]]:
    """Every entry of the header's ``key`` map of the subjects at ``sites`` (None: every
    site), optionally of one ``site`` or ``subject``, each with its subject and site."""
    rows = conn.execute(
        SQL("SELECT h.data FROM {}.{} h WHERE h.record_id = '' AND h.recorded_to IS NULL"
            " AND h.data->{} <> '{{}}'::jsonb").format(
            Identifier(schema), Identifier(VERSIONS), Literal(key))).fetchall()
    return [{"subject": h["subject"], "site": h["site"], **mark}
            for (h,) in rows
            if (sites is None or h["site"] in sites) and site in (None, h["site"])
            and subject in (None, h["subject"])
            for mark in h[key].values()]


def query_list(conn: psycopg.Connection[Any], schema: str, sites: set[str] | None, now: datetime,
               *, site: str | None = None, subject: str | None = None,
               status: str | None = None, older_than_days: int | None = None
               ) -> list[dict[str, Any]]:
    """The queries of the subjects at ``sites`` (None: every site), optionally of one site,
    subject or status, or opened at least ``older_than_days`` days before ``now``; oldest
    first, each with its age in whole days."""
    listed = []
    for query in _marks(conn, schema, "queries", sites, site, subject):
        age = (now - datetime.fromisoformat(query["opened_at"])).days
        if status in (None, query["status"]) and (older_than_days is None
                                                  or age >= older_than_days):
            listed.append({**query, "age_days": age})
    return sorted(listed, key=lambda q: (q["opened_at"], str(q["subject"]), q["query_id"]))


def signature_list(conn: psycopg.Connection[Any], schema: str, sites: set[str] | None, *,
                   site: str | None = None, subject: str | None = None
                   ) -> list[dict[str, Any]]:
    """The e-signatures of the subjects at ``sites`` (None: every site), optionally of one
    site or subject, by subject and time."""
    return sorted(_marks(conn, schema, "signatures", sites, site, subject),
                  key=lambda s: (str(s["subject"]), s["signed_at"], s["signature_id"]))
