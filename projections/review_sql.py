"""The audit-review filters (domain.review) as SQL over the audit tables.

Each is a condition on one page's rows (``e``: audit_events, ``c``: audit_changes), kept in
commit order, so a filtered page pages like any other. after-lock and sponsor-staff read
indexed columns of the events (edit_point, role); after-signature and frequent-critical look
up the subject's signature rows and field changes through the subject_code and field indexes.
"""

from __future__ import annotations

from typing import Any

from psycopg.sql import SQL, Composable, Identifier

from domain.review import ReviewFilter
from projections.history_view import AUDIT_CHANGES, AUDIT_EVENTS


def review_condition(schema: str, review: ReviewFilter) -> tuple[Composable, dict[str, Any]]:
    """The WHERE condition selecting the rows ``review`` asks for, and its parameters."""
    s, e, c = Identifier(schema), Identifier(AUDIT_EVENTS), Identifier(AUDIT_CHANGES)
    if review.name == "after-lock":
        # The domain marks every edit of a casebook that was once locked as post_lock.
        return SQL("e.edit_point = 'post_lock'"), {}
    if review.name == "sponsor-staff":
        return SQL("e.role = ANY(%(review_roles)s)"), {
            "review_roles": list(review.sponsor_roles)}
    if review.name == "late-entry":
        # Entries (no value before), not corrections of an old record: a correction is late
        # by nature and the other filters see it.
        return (SQL("c.old_value IS NULL AND c.observed_at IS NOT NULL"
                    " AND e.recorded_at - c.observed_at"
                    " > make_interval(days => %(review_late_days)s)"),
                {"review_late_days": review.late_days})
    if review.name == "after-signature":
        # A data change (not a signature, query or SDV mark) after the subject's first
        # signing; signing rows are the subject-level signature rows (record_id NULL).
        return SQL(
            "c.field NOT IN ('signature', 'query', 'sdv', 'soft_check', 'deviation')"
            " AND e.subject_code IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.{e} se"
            " JOIN {s}.{c} sc ON sc.position = se.position"
            " WHERE se.subject_code = e.subject_code AND sc.field = 'signature'"
            " AND sc.record_id IS NULL AND se.position < e.position)").format(s=s, e=e, c=c), {}
    return _frequent_critical(review, s, e, c)


def _frequent_critical(review: ReviewFilter, s: Identifier, e: Identifier,
                       c: Identifier) -> tuple[Composable, dict[str, Any]]:
    """Changes (an existing value replaced or removed) of a critical field of one subject
    changed ``min_changes`` times or more; a lab's test code is the record's first ``code``."""
    if not review.critical_fields:
        return SQL("FALSE"), {}
    kinds = [f.kind for f in review.critical_fields]
    fields = [f.field for f in review.critical_fields]
    codes = [f.code or "" for f in review.critical_fields]
    def code_of(changes: str, events: str) -> Composable:
        # The test code a lab record was first entered with (the same record id may recur
        # in another subject's casebook).
        return SQL("COALESCE((SELECT k.new_value #>> '{{}}' FROM {s}.{c} k JOIN {s}.{e} ke"
                   " ON ke.position = k.position WHERE ke.subject_code = {ev}.subject_code"
                   " AND k.record_id = {ch}.record_id AND k.field = 'code'"
                   " ORDER BY k.position LIMIT 1), '')").format(
            s=s, c=c, e=e, ev=Identifier(events), ch=Identifier(changes))

    def critical(changes: str, events: str) -> Composable:
        return SQL(
            "{ch}.old_value IS NOT NULL AND EXISTS (SELECT 1 FROM unnest("
            "%(crit_kinds)s::text[], %(crit_fields)s::text[], %(crit_codes)s::text[])"
            " AS f(kind, field, code) WHERE f.kind = {ch}.record_kind"
            " AND f.field = {ch}.field AND (f.code = '' OR f.code = {code}))").format(
            ch=Identifier(changes), code=code_of(changes, events))

    condition = SQL(
        "{mine} AND (SELECT count(*) FROM {s}.{e} e2 JOIN {s}.{c} c2"
        " ON c2.position = e2.position WHERE e2.subject_code = e.subject_code"
        " AND c2.record_kind = c.record_kind AND c2.field = c.field AND {theirs}"
        " AND {code2} = {code1}) >= %(crit_min)s").format(
        mine=critical("c", "e"), theirs=critical("c2", "e2"), s=s, e=e, c=c,
        code1=code_of("c", "e"), code2=code_of("c2", "e2"))
    return condition, {"crit_kinds": kinds, "crit_fields": fields, "crit_codes": codes,
                       "crit_min": review.min_changes}
