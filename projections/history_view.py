"""The casebook history and audit-trail tables, and their tracking position, in one view.

``casebook_versions`` holds every version of every subject header and record, each with the
recorded-time interval during which the system showed it ([recorded_from, recorded_to); open
while current). ``audit_trail`` holds one row per field-level change with its whole envelope.
Rows and the tracking position commit in the same transaction: exactly once, resumable.
The tables are disposable: ``trialledger rebuild`` replays them into new tables, which then
replace them in one transaction.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Cursor
from psycopg.sql import SQL, Composed, Identifier

VERSIONS = "casebook_versions"
AUDIT = "audit_trail"
SHAPE = "history_projection_version"
PROJECTION_VERSION = 2  # bump when the tables' shape or content changes: forces a rebuild

STAGED = "casebook_versions_staged"  # a rebuild's versions, as they come
REBUILT = "_rebuild"  # suffix of the tables a rebuild fills, until they replace the old ones

VERSIONS_DDL = SQL(
    "subject_id uuid NOT NULL, record_id text NOT NULL, kind text NOT NULL, data jsonb,"
    " version bigint NOT NULL, position bigint NOT NULL, recorded_from timestamptz NOT NULL,"
    " recorded_to timestamptz")
VERSIONS_KEY = SQL("subject_id, record_id, position")
AUDIT_DDL = SQL(
    "id bigserial, position bigint NOT NULL, recorded_at timestamptz NOT NULL,"
    " event_type text NOT NULL, subject_id uuid, subject_code text, site text, record_id text,"
    " record_kind text, field text NOT NULL, old_value jsonb, new_value jsonb,"
    " observed_at timestamptz, user_id text, printed_name text, role text, actor_site text,"
    " client text, source text, request_id text, edit_point text, reason_code text,"
    " reason_text text")

AUDIT_INDEXED = ("subject_code", "site", "record_id", "field", "user_id", "event_type",
                 "recorded_at")
AUDIT_COLUMNS = (
    "position", "recorded_at", "event_type", "subject_id", "subject_code", "site", "record_id",
    "record_kind", "field", "old_value", "new_value", "observed_at", "user_id", "printed_name",
    "role", "actor_site", "client", "source", "request_id", "edit_point", "reason_code",
    "reason_text",
)


@dataclass(slots=True)
class Version:
    """One version of a subject header (record_id '') or of a record."""

    subject_id: str
    record_id: str
    kind: str
    # The rendering as JSON text, taken when the event was projected: the aggregate it was
    # rendered from keeps changing (None: the record was removed).
    data: str | None
    version: int
    position: int
    recorded_from: datetime
    # An earlier version of the same header or record exists (in the table or the batch),
    # still open until this one closes it.
    supersedes: bool
    recorded_to: datetime | None = None


class HistoryView(PostgresTrackingRecorder):
    """Tracking recorder plus the history and audit tables."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        s = Identifier(datastore.schema)
        self.sql_create_statements.extend(self._tables(s))

    @staticmethod
    def _tables(s: Identifier) -> list[Composed]:
        return [
            SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, PRIMARY KEY ({}))").format(
                s, Identifier(VERSIONS), VERSIONS_DDL, VERSIONS_KEY),
            SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, PRIMARY KEY (id))").format(
                s, Identifier(AUDIT), AUDIT_DDL),
            SQL("CREATE TABLE IF NOT EXISTS {}.{} (version int NOT NULL)").format(
                s, Identifier(SHAPE)),
            *HistoryView._indexes(s, ""),
        ]

    @staticmethod
    def _indexes(s: Identifier, suffix: str) -> list[Composed]:
        """The indexes (besides the keys) of the tables named with ``suffix``."""
        return [statement for _, statement in (*_version_indexes(s, suffix),
                                               *_audit_indexes(s, suffix))]

    def begin_rebuild(self) -> None:
        """Make empty tables to rebuild into, beside the ones readers keep using meanwhile.

        Versions land in an unlogged heap without keys (the cheapest load there is); the audit
        rows in the new audit table, its keys and indexes built once at the end. What an
        interrupted rebuild left behind is dropped first.
        """
        s = Identifier(self.datastore.schema)
        with self.datastore.transaction(commit=True) as curs:
            for table in (STAGED, VERSIONS + REBUILT, AUDIT + REBUILT):
                curs.execute(SQL("DROP TABLE IF EXISTS {}.{}").format(s, Identifier(table)))
            curs.execute(SQL("CREATE UNLOGGED TABLE {}.{} ({})").format(
                s, Identifier(STAGED), VERSIONS_DDL))
            curs.execute(SQL("CREATE TABLE {}.{} ({})").format(
                s, Identifier(AUDIT + REBUILT), AUDIT_DDL))

    def stage_batch(self, versions: list[Version], audit: list[str]) -> None:
        """Load one batch of a rebuild (no tracking: a rebuild becomes visible all at once)."""
        s = Identifier(self.datastore.schema)
        with self.datastore.transaction(commit=True) as curs:
            self._copy(curs, SQL("{}.{}").format(s, Identifier(STAGED)), versions, audit,
                       SQL("{}.{}").format(s, Identifier(AUDIT + REBUILT)))

    def finish_rebuild(self, application_name: str, tracking: Tracking | None,
                       version: int) -> None:
        """Index the rebuilt tables, then put them in place of the old ones with the tracking
        position and projection version, in one transaction.

        The versions are written in subject order (one subject's casebook on a few pages, not
        hundreds: as-of p95 at 300k events 15 ms -> 3 ms), each closed by the next version of
        its header or record.
        """
        s = Identifier(self.datastore.schema)
        versions, audit, staged = (Identifier(VERSIONS + REBUILT), Identifier(AUDIT + REBUILT),
                                   Identifier(STAGED))
        steps = [
            [SQL("CREATE TABLE {}.{} ({})").format(s, versions, VERSIONS_DDL),
             SQL("INSERT INTO {0}.{1} SELECT subject_id, record_id, kind, data, version, "
                 "position, recorded_from, lead(recorded_from) OVER (PARTITION BY subject_id, "
                 "record_id ORDER BY position) FROM {0}.{2} "
                 "ORDER BY subject_id, record_id, position").format(s, versions, staged),
             SQL("DROP TABLE {}.{}").format(s, staged),
             SQL("ALTER TABLE {}.{} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                 s, versions, Identifier(f"{VERSIONS}{REBUILT}_pkey"), VERSIONS_KEY),
             *[statement for _, statement in _version_indexes(s, REBUILT)],
             SQL("ANALYZE {}.{}").format(s, versions)],
            [SQL("ALTER TABLE {}.{} ADD CONSTRAINT {} PRIMARY KEY (id)").format(
                s, audit, Identifier(f"{AUDIT}{REBUILT}_pkey"))],
            *[[statement] for _, statement in _audit_indexes(s, REBUILT)],
        ]
        # Each index is built in one scan of its table; two connections keep two going.
        with ThreadPoolExecutor(2, thread_name_prefix="rebuild-index") as pool:
            for done in [pool.submit(self._execute, step) for step in steps]:
                done.result()
        renames = [("TABLE", t + REBUILT, t) for t in (VERSIONS, AUDIT)]
        renames += [("INDEX", f"{t}{REBUILT}_pkey", f"{t}_pkey") for t in (VERSIONS, AUDIT)]
        renames.append(("SEQUENCE", f"{AUDIT}{REBUILT}_id_seq", f"{AUDIT}_id_seq"))
        renames += [("INDEX", new, old) for (new, _), (old, _) in zip(
            [*_version_indexes(s, REBUILT), *_audit_indexes(s, REBUILT)],
            [*_version_indexes(s, ""), *_audit_indexes(s, "")], strict=True)]
        with self.datastore.transaction(commit=True) as curs:
            for table in (VERSIONS, AUDIT):
                curs.execute(SQL("DROP TABLE {}.{}").format(s, Identifier(table)))
            for kind, new, old in renames:
                curs.execute(SQL("ALTER {} {}.{} RENAME TO {}").format(
                    SQL(kind), s, Identifier(new), Identifier(old)))
            # Only this projection's position: the table's other row marks its own format.
            curs.execute(SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
                s, Identifier(self.tracking_table_name)), (application_name,))
            if tracking is not None:
                self._insert_tracking(curs, tracking)
            curs.execute(SQL("DELETE FROM {}.{}").format(s, Identifier(SHAPE)))
            curs.execute(SQL("INSERT INTO {}.{} (version) VALUES (%s)").format(
                s, Identifier(SHAPE)), (version,))

    def _execute(self, statements: list[Composed]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for statement in statements:
                curs.execute(statement)

    @staticmethod
    def _copy(curs: Cursor[Any], versions_table: Composed, versions: list[Version],
              audit: list[str], audit_table: Composed) -> None:
        if versions:
            with curs.copy(SQL("COPY {} (subject_id, record_id, kind, data, version, "
                               "position, recorded_from, recorded_to) FROM STDIN").format(
                               versions_table)) as copy:
                copy.write("".join([_version_line(v) for v in versions]).encode())
        if audit:
            with curs.copy(SQL("COPY {} ({}) FROM STDIN").format(
                    audit_table, SQL(", ").join(Identifier(c) for c in AUDIT_COLUMNS))) as copy:
                copy.write("".join(audit).encode())

    def record_batch(self, versions: list[Version], audit: list[str],
                     tracking: Tracking) -> None:
        """Write one batch of versions and audit rows, and the tracking position, atomically.

        ``audit`` holds the rows as lines of COPY text (see :func:`copy_text`): the projector
        formats each event's shared columns once for all of its rows.
        """
        schema = Identifier(self.datastore.schema)
        # Versions superseded inside the batch are closed before they are written; the first
        # version of each entity in the batch closes the one already open in the table, if
        # the projector saw one there (a new record has none: no look-up for it).
        latest: dict[tuple[str, str], Version] = {}
        closing: list[Version] = []
        for version in versions:
            key = (version.subject_id, version.record_id)
            if key in latest:
                latest[key].recorded_to = version.recorded_from
            elif version.supersedes:
                closing.append(version)
            latest[key] = version
        with self.datastore.transaction(commit=True) as curs:
            if closing:
                curs.execute(
                    SQL("UPDATE {}.{} AS v SET recorded_to = c.closed FROM unnest("
                        "%s::uuid[], %s::text[], %s::timestamptz[]) AS c(sid, rid, closed) "
                        "WHERE v.subject_id = c.sid AND v.record_id = c.rid "
                        "AND v.recorded_to IS NULL").format(schema, Identifier(VERSIONS)),
                    ([v.subject_id for v in closing], [v.record_id for v in closing],
                     [v.recorded_from for v in closing]),
                )
            self._copy(curs, SQL("{}.{}").format(schema, Identifier(VERSIONS)), versions, audit,
                       SQL("{}.{}").format(schema, Identifier(AUDIT)))
            self._insert_tracking(curs, tracking)

    def shape_version(self) -> int | None:
        """The projection version the tables were built by (None: never stamped)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT max(version) AS v FROM {}.{}").format(
                Identifier(self.datastore.schema), Identifier(SHAPE)))
            row = curs.fetchone()
        return None if row is None else row["v"]

    def stamp_shape_version(self, version: int = PROJECTION_VERSION) -> None:
        """Record which projection version built the tables."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("INSERT INTO {}.{} (version) VALUES (%s)").format(
                Identifier(self.datastore.schema), Identifier(SHAPE)), (version,))

    def drop(self) -> None:
        """Drop the tables and the tracking position (before a rebuild)."""
        schema = Identifier(self.datastore.schema)
        with self.datastore.transaction(commit=True) as curs:
            for table in (VERSIONS, AUDIT, SHAPE, self.tracking_table_name):
                curs.execute(SQL("DROP TABLE IF EXISTS {}.{}").format(schema, Identifier(table)))


_COPY_SPECIAL = re.compile(r"[\\\n\r\t]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
NULL = "\\N"  # NULL in COPY text


def copy_text(value: str | None) -> str:
    """One column of a COPY text row: NULL, or ``value`` with its special characters escaped."""
    if value is None:
        return NULL
    if _COPY_SPECIAL.search(value) is None:
        return value
    return value.translate(_COPY_ESCAPES)


def copy_json_text(text: str | None) -> str:
    """A jsonb column of a COPY text row from JSON text, which holds no raw tab, newline or
    carriage return (JSON escapes them): only its backslashes need escaping."""
    if text is None:
        return NULL
    return text.replace("\\", "\\\\") if "\\" in text else text


def copy_time(value: datetime | None) -> str:
    """A timestamptz column of a COPY text row (always aware: naive times are refused)."""
    return NULL if value is None else value.isoformat()


def _version_line(v: Version) -> str:
    return (f"{v.subject_id}\t{copy_text(v.record_id)}\t{copy_text(v.kind)}\t"
            f"{copy_json_text(v.data)}\t{v.version}\t{v.position}\t{v.recorded_from.isoformat()}\t"
            f"{copy_time(v.recorded_to)}\n")


def _version_indexes(s: Identifier, suffix: str) -> list[tuple[str, Composed]]:
    """(name, statement) of the versions table's indexes besides its key."""
    table = Identifier(VERSIONS + suffix)
    current, time = f"{VERSIONS}{suffix}_current", f"{VERSIONS}{suffix}_time"
    return [
        (current, SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} (subject_id, record_id) "
                      "WHERE recorded_to IS NULL").format(Identifier(current), s, table)),
        (time, SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} (recorded_from)").format(
            Identifier(time), s, table)),
    ]


def _audit_indexes(s: Identifier, suffix: str) -> list[tuple[str, Composed]]:
    """(name, statement) of the audit table's look-up indexes."""
    table = Identifier(AUDIT + suffix)
    names = [(f"{AUDIT}{suffix}_{column}", column) for column in AUDIT_INDEXED]
    return [(name, SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} ({}, id)").format(
        Identifier(name), s, table, Identifier(column))) for name, column in names]
