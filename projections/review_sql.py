"""The audit-review filters (domain.review) as SQL over the audit tables.

Each is a condition on one page's rows (``e``: audit_events, ``c``: audit_changes), kept in
commit order, so a filtered page pages like any other. after-lock and sponsor-staff read
indexed columns of the events (edit_point, role); late-entry the indexed lag of each first
entry; frequent-critical the partial index of corrections, once per page, as a set of rows;
after-signature looks up the subject's signing rows through the subject_code index.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.sql import SQL, Composable, Identifier

from domain.review import ReviewFilter
from projections.history_view import AUDIT_CHANGES, AUDIT_EVENTS, VERSIONS

DAY_S = 86_400.0


def review_condition(conn: psycopg.Connection[Any], schema: str, review: ReviewFilter,
                     after: int) -> tuple[Composable, dict[str, Any]]:
    """The WHERE condition selecting the rows ``review`` asks for, of a page starting at
    log position ``after``, and its parameters."""
    s, e, c = Identifier(schema), Identifier(AUDIT_EVENTS), Identifier(AUDIT_CHANGES)
    if review.name == "after-lock":
        # The domain marks every edit of a casebook that was once locked as post_lock.
        return SQL("e.edit_point = 'post_lock'"), {}
    if review.name == "sponsor-staff":
        return SQL("e.role = ANY(%(review_roles)s)"), {
            "review_roles": list(review.sponsor_roles)}
    if review.name == "late-entry":
        # Only first entries carry a lag: a correction of an old record is late by nature,
        # and the other filters see it.
        return (SQL("c.entry_lag_s > %(review_late_s)s"),
                {"review_late_s": review.late_days * DAY_S})
    if review.name == "after-signature":
        # A data change (not a signature, query or SDV mark) after the subject's first
        # signing; signing rows are the subject-level signature rows (record_id NULL).
        return SQL(
            "c.field NOT IN ('signature', 'query', 'sdv', 'soft_check', 'deviation')"
            " AND e.subject_code IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.{e} se"
            " JOIN {s}.{c} sc ON sc.position = se.position"
            " WHERE se.subject_code = e.subject_code AND sc.field = 'signature'"
            " AND sc.record_id IS NULL AND se.position < e.position)").format(s=s, e=e, c=c), {}
    rows = _frequent_critical(conn, review, after, s, e, c)
    # The rows found first, then the page reads them by key: one plan, whatever the trail
    # (as one query, the planner could scan the whole trail testing each row).
    return (SQL("(c.position, c.seq) IN (SELECT p, q FROM unnest(%(crit_p)s::bigint[],"
                " %(crit_q)s::int[]) AS u(p, q))"),
            {"crit_p": [p for p, _ in rows], "crit_q": [q for _, q in rows]})


def _frequent_critical(conn: psycopg.Connection[Any], review: ReviewFilter, after: int,
                       s: Identifier, e: Identifier, c: Identifier) -> list[tuple[int, int]]:
    """Changes (an existing value replaced or removed) of a critical field of one subject
    changed ``min_changes`` times or more; a lab's test code is its record's latest (one probe
    of the versions' key)."""
    if not review.critical_fields:
        return []
    query = SQL(
        "SELECT position, seq FROM (SELECT x.position, x.seq,"
        " count(*) OVER (PARTITION BY x.subject_code, x.record_kind, x.field, x.code) AS n"
        " FROM (SELECT cc.position, cc.seq, ce.subject_code, cc.record_kind, cc.field,"
        " COALESCE(k.code, '') AS code FROM {s}.{c} cc"
        " JOIN {s}.{e} ce ON ce.position = cc.position"
        " LEFT JOIN LATERAL (SELECT v.data -> 'fields' ->> 'code' AS code FROM {s}.{v} v"
        " WHERE v.subject_id = ce.subject_id AND v.record_id = cc.record_id"
        " AND v.data IS NOT NULL ORDER BY v.position DESC LIMIT 1) k ON TRUE"
        " WHERE cc.old_value IS NOT NULL AND cc.field = ANY(%(crit_fields)s)) x"
        " WHERE EXISTS (SELECT 1 FROM unnest(%(crit_kinds)s::text[], %(crit_fields)s::text[],"
        " %(crit_codes)s::text[]) AS f(kind, field, code) WHERE f.kind = x.record_kind"
        " AND f.field = x.field AND (f.code = '' OR f.code = x.code))) counted"
        " WHERE n >= %(crit_min)s AND position >= %(after)s").format(
        s=s, e=e, c=c, v=Identifier(VERSIONS))
    rows = conn.execute(query, {
        "crit_kinds": [f.kind for f in review.critical_fields],
        "crit_fields": [f.field for f in review.critical_fields],
        "crit_codes": [f.code or "" for f in review.critical_fields],
        "crit_min": review.min_changes, "after": after}).fetchall()
    return [(int(p), int(q)) for p, q in rows]
