"""A subject's changes at a glance, from the audit tables: the recorded instants its casebook
changed at (the console's time slider), and for each field how often it changed by a time
and its last change (who, when, why), without reading the rows of its history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from domain.errors import NotFound
from projections.history_view import AUDIT_CHANGES, AUDIT_EVENTS


@dataclass(frozen=True)
class Instants:
    """Where a subject is, and the recorded times its casebook changed at, oldest first."""

    site: str
    times: list[datetime]


def change_instants(conn: psycopg.Connection[Any], schema: str, subject_code: str) -> Instants:
    """The subject's site and change instants (NotFound when the trail never names it)."""
    rows = conn.execute(
        SQL("SELECT recorded_at, min(site) FROM {}.{} WHERE subject_code = %s"
            " GROUP BY recorded_at ORDER BY recorded_at").format(
            Identifier(schema), Identifier(AUDIT_EVENTS)), (subject_code,)).fetchall()
    if not rows:
        raise NotFound(f"no subject {subject_code}")
    return Instants(str(next(site for _, site in rows if site is not None)),
                    [at for at, _ in rows])


def field_changes(conn: psycopg.Connection[Any], schema: str, subject_code: str,
                  as_of: datetime | None) -> dict[tuple[str, str], dict[str, Any]]:
    """For each (record, field) of the subject: how many audit rows it had by ``as_of``
    (None: now) and who, when and why of the last."""
    bound = SQL("") if as_of is None else SQL(" AND e.recorded_at <= %(t)s")
    rows = conn.execute(
        SQL("SELECT DISTINCT ON (c.record_id, c.field) c.record_id, c.field,"
            " count(*) OVER (PARTITION BY c.record_id, c.field), e.recorded_at,"
            " e.printed_name, e.reason_code, e.reason_text"
            " FROM {s}.{e} e JOIN {s}.{c} c ON c.position = e.position"
            " WHERE e.subject_code = %(code)s{bound}"
            " ORDER BY c.record_id, c.field, c.position DESC, c.seq DESC").format(
            s=Identifier(schema), e=Identifier(AUDIT_EVENTS), c=Identifier(AUDIT_CHANGES),
            bound=bound), {"code": subject_code, "t": as_of}).fetchall()
    return {(record or "", name or ""): {"count": count, "recorded_at": at.isoformat(),
                                         "printed_name": who, "reason_code": code,
                                         "reason_text": text}
            for record, name, count, at, who, code, text in rows}


def removed_records(conn: psycopg.Connection[Any], schema: str, subject_code: str,
                    as_of: datetime | None) -> list[dict[str, Any]]:
    """The subject's records removed by ``as_of`` (None: now), oldest removal first: each
    with its kind, the values it held, and who removed it, when and why."""
    bound = SQL("") if as_of is None else SQL(" AND e.recorded_at <= %(t)s")
    rows = conn.execute(
        SQL("SELECT c.record_id, min(c.record_kind), e.position, e.recorded_at,"
            " e.printed_name, e.role, e.reason_code, e.reason_text,"
            " jsonb_object_agg(c.field, c.old_value)"
            " FROM {s}.{e} e JOIN {s}.{c} c ON c.position = e.position"
            " WHERE e.subject_code = %(code)s AND e.event_type = 'RecordRemoved'{bound}"
            " GROUP BY c.record_id, e.position ORDER BY e.position").format(
            s=Identifier(schema), e=Identifier(AUDIT_EVENTS), c=Identifier(AUDIT_CHANGES),
            bound=bound), {"code": subject_code, "t": as_of}).fetchall()
    return [{"record_id": record, "kind": kind, "position": position,
             "removed_at": at.isoformat(), "printed_name": who, "role": role,
             "reason_code": code, "reason_text": text, "fields": fields}
            for record, kind, position, at, who, role, code, text, fields in rows]
