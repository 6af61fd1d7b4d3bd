"""Queries and e-signatures across a study's subjects, from their current headers in the
read tables: the monitor's work queue and the signatures in force."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier, Literal

from projections.casebook import MARK_KEYS
from projections.history_view import VERSIONS, casebook_history, current_headers


def _marks(conn: psycopg.Connection[Any], schema: str, key: str, sites: set[str] | None,
           site: str | None, subject: str | None) -> list[dict[str, Any]]:
    """Every entry of the header's ``key`` map of the subjects at ``sites`` (None: every
    site), optionally of one ``site`` or ``subject``, each with its subject and site."""
    versions = (casebook_history(schema) if key in MARK_KEYS
                else SQL("{}.{}").format(Identifier(schema), Identifier(VERSIONS)))
    rows = conn.execute(
        SQL("SELECT h.data FROM {} h WHERE h.record_id = '' AND h.recorded_to IS NULL"
            " AND h.data->{} <> '{{}}'::jsonb").format(versions, Literal(key))).fetchall()
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


def sdv_worklist(conn: psycopg.Connection[Any], schema: str, sites: set[str] | None,
                 limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The records awaiting source-data verification at ``sites`` (None: every site): those
    never verified, or changed since their verification. Their number, and the first
    ``limit`` by subject and clinical time, each with the verification it had (if any)."""
    site_filter = SQL("") if sites is None else SQL(" AND h.d->>'site' = ANY(%(sites)s)")
    rows = conn.execute(
        SQL("SELECT count(*) OVER (), h.d->>'subject', h.d->>'site', r.record_id, r.kind,"
            " r.data->>'visit', r.data->>'observed_at', (r.data->>'changes')::int,"
            " h.d->'sdv'->r.record_id"
            " FROM {s}.{v} r JOIN {h} ON h.subject_id = r.subject_id"
            " WHERE r.record_id <> '' AND r.recorded_to IS NULL AND r.data IS NOT NULL"
            " AND (h.d->'sdv'->r.record_id IS NULL"
            " OR (h.d->'sdv'->r.record_id->>'revision')::int <> (r.data->>'changes')::int)"
            "{f} ORDER BY h.d->>'subject', r.data->>'observed_at', r.record_id"
            " LIMIT %(limit)s").format(s=Identifier(schema), v=Identifier(VERSIONS),
                                       h=current_headers(Identifier(schema)), f=site_filter),
        {"sites": sorted(sites or ()), "limit": limit}).fetchall()
    return (int(rows[0][0]) if rows else 0,
            [{"subject": subject, "site": site, "record_id": record_id, "kind": kind,
              "visit": visit, "observed_at": observed_at, "revision": revision,
              "verified": verified}
             for _, subject, site, record_id, kind, visit, observed_at, revision, verified
             in rows])
