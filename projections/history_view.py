"""The casebook history and audit-trail tables, and their tracking position, in one view.

``casebook_versions`` holds every version of every subject header and record, each with the
recorded-time interval during which the system showed it ([recorded_from, recorded_to); open
while current). A header version leaves out the subject's queries, source-data verification
marks and deviations: ``header_marks`` keeps each of their entries as versions of its own, and
readers of whole headers put each header version together with the entries as of it
(:func:`casebook_history`).
``audit_trail`` holds one row per field-level change with its whole envelope.
Rows and the tracking position commit in the same transaction: exactly once, resumable.
The tables are disposable: ``trialledger rebuild`` replays them into new tables, which then
replace them in one transaction.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg import Cursor
from psycopg.sql import SQL, Composable, Composed, Identifier, Literal

from projections.casebook import MARK_KEYS
from projections.iso_time import iso

VERSIONS = "casebook_versions"
# Versions of each entry of a header's queries, SDV marks and deviations (``kind``: which map,
# ``item``: its key there), each shown from its position until the entry's next version.
MARKS = "header_marks"
AUDIT = "audit_trail"  # a view: each change with the columns of its event
AUDIT_EVENTS = "audit_events"  # one row per event that changed something: who, when, why
AUDIT_CHANGES = "audit_changes"  # one row per field-level change, numbered within its event
SHAPE = "history_projection_version"
PROJECTION_VERSION = 9  # bump when the tables' shape or content changes: forces a rebuild

OUTCOME_FACTS = "outcome_facts"  # versions of what the outcome tables read of each subject
OUTCOME_SUMMARIES = "outcome_summaries"  # versions of what each subject adds to the tables
SUMMARIES = "subject_summaries"  # each subject as it stands: what the list and dashboard show
OPEN_QUERIES = "open_queries"  # each query open now, by the time it was opened
STAGED = "_staged"  # suffix of the unlogged heaps a rebuild's versions land in, as they come
REBUILT = "_rebuild"  # suffix of the tables a rebuild fills, until they replace the old ones
# A rebuild's own transactions (loading, sorting, indexing its new tables) commit without
# waiting for their WAL to reach disk: a crash before the swap loses nothing acknowledged, only
# the new tables, which the next rebuild drops and makes again (the old ones stay in place).
# The swap commits as usual, flushing all of it. Their sorts and index builds get memory
# enough to stay off disk at 1M events (PostgreSQL's defaults, 4 MB and 64 MB, spill them).
REBUILD_SETTINGS: tuple[SQL, ...] = (SQL("SET LOCAL synchronous_commit = off"),
                    SQL("SET LOCAL work_mem = '256MB'"),
                    SQL("SET LOCAL maintenance_work_mem = '256MB'"))
# The new tables are left alone by autovacuum while a rebuild fills them (it would scan them
# again and again, competing for the cores, and the rebuild analyzes them once at the end).
NO_AUTOVACUUM = SQL(" WITH (autovacuum_enabled = false)")

VERSIONS_DDL = SQL(
    "subject_id uuid NOT NULL, record_id text NOT NULL, kind text NOT NULL, data jsonb,"
    " version bigint NOT NULL, position bigint NOT NULL, recorded_from timestamptz NOT NULL,"
    " recorded_to timestamptz")
VERSIONS_KEY = SQL("subject_id, record_id, position")
VERSION_COLUMNS = ("subject_id", "record_id", "kind", "data", "version", "position",
                   "recorded_from", "recorded_to")
# Versions of a subject's outcome facts (see projections.outcome_state), keyed by ``fact``.
FACTS_DDL = SQL(
    "subject_id uuid NOT NULL, fact text NOT NULL, kind text NOT NULL, data jsonb,"
    " version bigint NOT NULL, position bigint NOT NULL, recorded_from timestamptz NOT NULL,"
    " recorded_to timestamptz")
FACTS_KEY = SQL("subject_id, fact, position")
FACT_COLUMNS = ("subject_id", "fact", "kind", "data", "version", "position", "recorded_from",
                "recorded_to")
# Kept from each subject's current header (which holds every query ever raised on it: tens of
# kB that the subject list and the dashboard would otherwise unpack on every request).
SUMMARY_KEYS = ("subject", "site", "status", "arm", "disease", "locked")  # the list's columns
SUMMARIES_DDL = SQL(
    "subject_id uuid NOT NULL, subject text COLLATE \"C\", site text, arm text,"
    " listing jsonb NOT NULL, version bigint NOT NULL, records bigint NOT NULL,"
    " verified bigint NOT NULL, open_queries bigint NOT NULL, signature text NOT NULL")
SUMMARY_COLUMNS = ("subject_id", "subject", "site", "arm", "listing", "version", "records",
                   "verified", "open_queries", "signature")
MARKS_DDL = SQL(
    "subject_id uuid NOT NULL, kind text NOT NULL, item text NOT NULL, data jsonb NOT NULL,"
    " position bigint NOT NULL")
MARK_COLUMNS = ("subject_id", "kind", "item", "data", "position")
OPEN_QUERIES_DDL = SQL(
    "subject_id uuid NOT NULL, query_id text COLLATE \"C\" NOT NULL,"
    " subject text COLLATE \"C\", site text, opened_at text COLLATE \"C\", query jsonb NOT NULL")
OPEN_QUERY_COLUMNS = ("subject_id", "query_id", "subject", "site", "opened_at", "query")
# An event's columns are kept once, not once per changed field (a lab result changes five).
EVENTS_DDL = SQL(
    "position bigint NOT NULL, recorded_at timestamptz NOT NULL, event_type text NOT NULL,"
    " subject_id uuid, subject_code text, site text, user_id text, printed_name text,"
    " role text, actor_site text, client text, source text, request_id text, edit_point text,"
    " reason_code text, reason_text text")
EVENTS_KEY = SQL("position")
CHANGES_DDL = SQL(
    "position bigint NOT NULL, seq integer NOT NULL, record_id text, record_kind text,"
    " field text NOT NULL, old_value jsonb, new_value jsonb, observed_at timestamptz,"
    " entry_lag_s double precision")
CHANGES_KEY = SQL("position, seq")

EVENT_COLUMNS = (
    "position", "recorded_at", "event_type", "subject_id", "subject_code", "site", "user_id",
    "printed_name", "role", "actor_site", "client", "source", "request_id", "edit_point",
    "reason_code", "reason_text",
)
# entry_lag_s: of a first entry (no old value), seconds from observation to recording (the
# late-entry review filter's column; the audit trail's rows do not show it).
CHANGE_COLUMNS = ("position", "seq", "record_id", "record_kind", "field", "old_value",
                  "new_value", "observed_at", "entry_lag_s")
# Each filter of the audit trail has an index on the table holding its column, in commit
# order after it: a filtered page is one ordered index range, however rare the value.
# (edit_point and role: the after-lock and sponsor-staff review filters.)
EVENTS_INDEXED = ("subject_code", "site", "user_id", "event_type", "recorded_at", "edit_point",
                  "role")
CHANGES_INDEXED = ("record_id", "field")
AUDIT_COLUMNS = (
    "position", "recorded_at", "event_type", "subject_id", "subject_code", "site", "record_id",
    "record_kind", "field", "old_value", "new_value", "observed_at", "user_id", "printed_name",
    "role", "actor_site", "client", "source", "request_id", "edit_point", "reason_code",
    "reason_text",
)


def audit_column(name: str, events: str = "e", changes: str = "c") -> Composed:
    """``name`` of the audit trail, qualified by the alias of the table that holds it
    (``position`` from the changes, whose key orders the trail)."""
    table = events if name in EVENT_COLUMNS and name != "position" else changes
    return SQL("{}.{}").format(Identifier(table), Identifier(name))


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


@dataclass(slots=True)
class Rows:
    """What a batch of events adds to the tables.

    ``events`` and ``changes`` hold audit rows as lines of COPY text (see :func:`copy_text`):
    the projector formats each event's columns once for all of its changes.
    """

    versions: list[Version] = field(default_factory=list)
    # The outcome facts an event changed, as versions (``record_id``: the fact's key).
    facts: list[Version] = field(default_factory=list)
    # The subjects' outcome summaries the facts changed (``kind``: the summary's format).
    summaries: list[Version] = field(default_factory=list)
    # The versions of header marks an event made, as lines of COPY text (see mark_line).
    marks: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Index:
    """A look-up index of a read table: its name (after the table's), columns, access method
    and, for a partial index, its condition."""

    name: str
    columns: Composable
    where: Composable | None = None
    method: str = "btree"


@dataclass(frozen=True)
class _Table:
    """A read table: its columns, key and look-up indexes."""

    name: str
    ddl: Composable
    key: Composable
    indexes: tuple[_Index, ...]
    columns: tuple[str, ...]

    def index_names(self, suffix: str) -> list[tuple[str, str]]:
        """(name with ``suffix``, name without) of the key and each index."""
        names = [(f"{self.name}{suffix}_pkey", f"{self.name}_pkey")]
        return names + [(f"{self.name}{suffix}_{index.name}", f"{self.name}_{index.name}")
                        for index in self.indexes]

    def create_indexes(self, s: Identifier, suffix: str) -> list[Composed]:
        """CREATE INDEX statements of the table named with ``suffix``."""
        return [SQL("CREATE INDEX IF NOT EXISTS {} ON {}.{} USING {} ({}){}").format(
            Identifier(f"{self.name}{suffix}_{index.name}"), s, Identifier(self.name + suffix),
            SQL(index.method), index.columns,
            SQL("") if index.where is None else SQL(" WHERE ") + index.where)
            for index in self.indexes]

    def add_key(self, s: Identifier, suffix: str) -> Composed:
        """The statement giving the table named with ``suffix`` its primary key."""
        return SQL("ALTER TABLE {}.{} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
            s, Identifier(self.name + suffix), Identifier(f"{self.name}{suffix}_pkey"), self.key)


VERSIONS_TABLE = _Table(VERSIONS, VERSIONS_DDL, VERSIONS_KEY, (
    _Index("current", SQL("subject_id, record_id"), SQL("recorded_to IS NULL")),
    _Index("time", SQL("recorded_from")),
    # A subject's latest version in one probe (the subject list asks it of every subject;
    # otherwise each read all of the subject's versions: 1 s for the list at 1M events).
    _Index("version", SQL("subject_id, version")),
    # Each subject's count of records as they stand (the dashboard's), from the index alone
    # rather than a scan of every version: 0.9 s at 1M events.
    _Index("records", SQL("subject_id"),
           SQL("recorded_to IS NULL AND data IS NOT NULL AND record_id <> ''"))), VERSION_COLUMNS)
# The outcome tables as of T read the facts shown at T: the open ones recorded by T, and the
# closed ones whose interval holds T (found by a GiST range index, as a history table's
# period is). Versions superseded within their own commit (an empty interval: most of a lab
# panel's interim "latest" results) were never shown and stay out of the index.
OPEN_FACT = SQL("recorded_to IS NULL")
SHOWN_CLOSED_FACT = SQL("recorded_to IS NOT NULL AND recorded_to > recorded_from")
FACT_PERIOD = SQL("tstzrange(recorded_from, recorded_to)")
FACTS_TABLE = _Table(OUTCOME_FACTS, FACTS_DDL, FACTS_KEY, (
    _Index("open", SQL("recorded_from"), OPEN_FACT),
    _Index("period", FACT_PERIOD, SHOWN_CLOSED_FACT, "gist")), FACT_COLUMNS)
# A subject's outcome summary as of each recorded time its facts changed it (``fact`` is
# empty: one per subject; ``kind``: the format it was computed in, see
# projections.outcomes.engine.summary_format), found as of T as the facts are.
OUTCOME_SUMMARIES_TABLE = _Table(OUTCOME_SUMMARIES, FACTS_DDL, FACTS_KEY, (
    _Index("open", SQL("recorded_from"), OPEN_FACT),
    _Index("period", FACT_PERIOD, SHOWN_CLOSED_FACT, "gist")), FACT_COLUMNS)
EVENTS_TABLE = _Table(AUDIT_EVENTS, EVENTS_DDL, EVENTS_KEY, tuple(
    _Index(column, SQL("{}, position").format(Identifier(column)))
    for column in EVENTS_INDEXED), EVENT_COLUMNS)
CHANGES_TABLE = _Table(AUDIT_CHANGES, CHANGES_DDL, CHANGES_KEY, (
    *(_Index(column, SQL("{}, position, seq").format(Identifier(column)))
      for column in CHANGES_INDEXED),
    # The review filters: late entries (rare), and corrections (a value replaced or removed:
    # few beside the entries) of critical fields.
    _Index("entry_lag_s", SQL("entry_lag_s, position, seq"), SQL("entry_lag_s IS NOT NULL")),
    _Index("corrections", SQL("field, record_kind, position, seq"),
           SQL("old_value IS NOT NULL"))),
    CHANGE_COLUMNS)
SUMMARIES_TABLE = _Table(SUMMARIES, SUMMARIES_DDL, SQL("subject_id"), (),
                         SUMMARY_COLUMNS)
OPEN_QUERIES_TABLE = _Table(OPEN_QUERIES, OPEN_QUERIES_DDL, SQL("subject_id, query_id"), (
    # The dashboard's oldest open queries, in the order it lists them.
    _Index("oldest", SQL("opened_at, subject, query_id")),), OPEN_QUERY_COLUMNS)
# The key finds a subject's marks (as of a header version: each entry's latest by then) and
# one entry's latest version (a record's SDV mark).
MARKS_TABLE = _Table(MARKS, MARKS_DDL, SQL("subject_id, kind, item, position"), (),
                     MARK_COLUMNS)
TABLES = (VERSIONS_TABLE, MARKS_TABLE, FACTS_TABLE, OUTCOME_SUMMARIES_TABLE, EVENTS_TABLE,
          CHANGES_TABLE, SUMMARIES_TABLE, OPEN_QUERIES_TABLE)
# Closed by their next version (recorded_to).
VERSIONED = (VERSIONS_TABLE, FACTS_TABLE, OUTCOME_SUMMARIES_TABLE)
DERIVED = (SUMMARIES_TABLE, OPEN_QUERIES_TABLE)  # derived from the current versions


def read_tables_ready(conn: Any, schema: str) -> bool:
    """True if ``schema`` holds the read tables as this code's projection version builds
    them (a standby may not have replayed their creation or their rebuild yet)."""
    shape = f"{schema}.{SHAPE}"
    row = conn.execute(SQL("SELECT to_regclass(%s) IS NOT NULL"), (shape,)).fetchone()
    if row is None or not row[0]:
        return False
    version = conn.execute(SQL("SELECT max(version) FROM {}.{}").format(
        Identifier(schema), Identifier(SHAPE))).fetchone()
    return version is not None and version[0] == PROJECTION_VERSION


class HistoryView(PostgresTrackingRecorder):
    """Tracking recorder plus the history and audit tables."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        # Processes that open the view at once take turns (concurrent CREATE ... IF NOT
        # EXISTS collide in the catalogue); the lock ends with the creating transaction.
        self.sql_create_statements.insert(0, SQL(
            "SELECT pg_advisory_xact_lock(hashtext({}))").format(
                Literal(f"create:{datastore.schema}")))
        self.sql_create_statements.extend(self._tables(datastore.schema))

    @staticmethod
    def _tables(schema: str) -> list[Composed]:
        s = Identifier(schema)
        statements = [_drop_audit(schema, tables_only=True)]
        for table in TABLES:
            statements.append(SQL("CREATE TABLE IF NOT EXISTS {}.{} ({}, PRIMARY KEY ({}))")
                              .format(s, Identifier(table.name), table.ddl, table.key))
            if table is CHANGES_TABLE:
                # Tables of projection version 5 lack it (their rebuild follows); its index
                # needs it first.
                statements.append(_unless_present(
                    SQL("NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass({})"
                        " AND attname = 'entry_lag_s' AND NOT attisdropped)").format(
                        Literal(_qualified(schema, table.name))),
                    SQL("ALTER TABLE {}.{} ADD COLUMN entry_lag_s double precision").format(
                        s, Identifier(table.name))))
            statements.extend(
                _unless_present(SQL("to_regclass({}) IS NULL").format(
                    Literal(_qualified(schema, name))), create)
                for (name, _), create in zip(table.index_names("")[1:],
                                             table.create_indexes(s, ""), strict=True))
        statements.append(SQL("CREATE TABLE IF NOT EXISTS {}.{} (version int NOT NULL)").format(
            s, Identifier(SHAPE)))
        statements.append(_create_audit_view(s))
        return statements

    def begin_rebuild(self) -> None:
        """Make empty tables to rebuild into, beside the ones readers keep using meanwhile.

        Versions land in unlogged heaps without keys (the cheapest load there is); the audit
        rows in the new audit tables, their keys and indexes built once at the end. What an
        interrupted rebuild left behind is dropped first.
        """
        s = Identifier(self.datastore.schema)
        with self.datastore.transaction(commit=True) as curs:
            # (casebook_versions_staged and audit_trail_rebuild: what an interrupted rebuild
            # of version 2 left.)
            for name in (VERSIONS + "_staged", AUDIT + REBUILT,
                         *(t.name + STAGED for t in (*VERSIONED, MARKS_TABLE)),
                         *(t.name + REBUILT for t in TABLES)):
                curs.execute(SQL("DROP TABLE IF EXISTS {}.{}").format(s, Identifier(name)))
            for table in (*VERSIONED, MARKS_TABLE):
                curs.execute(SQL("CREATE UNLOGGED TABLE {}.{} ({}){}").format(
                    s, Identifier(table.name + STAGED), table.ddl, NO_AUTOVACUUM))
            for table in (EVENTS_TABLE, CHANGES_TABLE):
                curs.execute(_create_rebuilt(s, table))

    def stage_batch(self, rows: Rows) -> None:
        """Load one batch of a rebuild (no tracking: a rebuild becomes visible all at once)."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(REBUILD_SETTINGS[0])
            self._copy(curs, rows, STAGED, REBUILT)

    def finish_rebuild(self, application_name: str, tracking: Tracking | None,
                       version: int) -> None:
        """Index the rebuilt tables, then put them in place of the old ones with the tracking
        position and projection version, in one transaction.

        The versions are written in subject order (one subject's casebook on a few pages, not
        hundreds: as-of p95 at 300k events 15 ms -> 3 ms), each closed by the next version of
        its header or record.
        """
        s = Identifier(self.datastore.schema)
        with ThreadPoolExecutor(2, thread_name_prefix="rebuild-index") as pool:
            for done in [pool.submit(self._execute, step) for step in self.finish_steps()]:
                done.result()
        with self.datastore.transaction(commit=True) as curs:
            # The application's role (``trialledger db grant``) keeps its rights on the
            # tables and the view that replace those it was granted them on.
            grants = _grants(curs, self.datastore.schema,
                             [t.name for t in TABLES] + [AUDIT])
            curs.execute(_drop_audit(self.datastore.schema, tables_only=False))
            for table in TABLES:
                curs.execute(SQL("DROP TABLE IF EXISTS {}.{}").format(s, Identifier(table.name)))
                curs.execute(SQL("ALTER TABLE {}.{} RESET (autovacuum_enabled)").format(
                    s, Identifier(table.name + REBUILT)))
                curs.execute(SQL("ALTER TABLE {}.{} RENAME TO {}").format(
                    s, Identifier(table.name + REBUILT), Identifier(table.name)))
                for new, old in table.index_names(REBUILT):
                    curs.execute(SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                        s, Identifier(new), Identifier(old)))
            curs.execute(_create_audit_view(s))
            for relation, grantee, privilege in grants:
                curs.execute(SQL("GRANT {} ON {}.{} TO {}").format(
                    SQL(privilege), s, Identifier(relation),
                    SQL("PUBLIC") if grantee == "PUBLIC" else Identifier(grantee)))
            # Only this projection's position: the table's other row marks its own format.
            curs.execute(SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
                s, Identifier(self.tracking_table_name)), (application_name,))
            if tracking is not None:
                self._insert_tracking(curs, tracking)
            curs.execute(SQL("DELETE FROM {}.{}").format(s, Identifier(SHAPE)))
            curs.execute(SQL("INSERT INTO {}.{} (version) VALUES (%s)").format(
                s, Identifier(SHAPE)), (version,))

    def finish_steps(self) -> list[list[Composed]]:
        """The statements of a rebuild's finish before the swap (ordering, keys, indexes,
        statistics), in steps of one transaction each; steps may run side by side."""
        s = Identifier(self.datastore.schema)
        # The longest first: each step is one scan of its table, two connections keep two
        # going, and the small ones fill in at the end.
        return [
            [CHANGES_TABLE.add_key(s, REBUILT)],
            # The summaries read the rebuilt versions and marks once they are indexed.
            _closed_in_order(s, VERSIONS_TABLE) + _in_order(s, MARKS_TABLE)
            + _derived_rebuilt(s),
            _closed_in_order(s, FACTS_TABLE),
            _closed_in_order(s, OUTCOME_SUMMARIES_TABLE),
            *[[statement] for statement in CHANGES_TABLE.create_indexes(s, REBUILT)],
            [EVENTS_TABLE.add_key(s, REBUILT)],
            *[[statement] for statement in EVENTS_TABLE.create_indexes(s, REBUILT)],
            # The planner's statistics, for its choice among the filters' indexes.
            *[[SQL("ANALYZE {}.{}").format(s, Identifier(t.name + REBUILT))]
              for t in (EVENTS_TABLE, CHANGES_TABLE)],
        ]

    def _execute(self, statements: list[Composed]) -> None:
        """Run a step of a rebuild's finish in one transaction (see REBUILD_SETTINGS)."""
        with self.datastore.transaction(commit=True) as curs:
            for setting in REBUILD_SETTINGS:
                curs.execute(setting)
            for statement in statements:
                curs.execute(statement)

    def _copy(self, curs: Cursor[Any], rows: Rows, versioned_suffix: str, suffix: str) -> None:
        s = Identifier(self.datastore.schema)
        for table, name, lines in (
                (VERSIONS_TABLE, VERSIONS + versioned_suffix, [_version_line(v)
                                                              for v in rows.versions]),
                (FACTS_TABLE, OUTCOME_FACTS + versioned_suffix, [_version_line(v)
                                                                for v in rows.facts]),
                (OUTCOME_SUMMARIES_TABLE, OUTCOME_SUMMARIES + versioned_suffix,
                 [_version_line(v) for v in rows.summaries]),
                (MARKS_TABLE, MARKS + versioned_suffix, rows.marks),
                (EVENTS_TABLE, AUDIT_EVENTS + suffix, rows.events),
                (CHANGES_TABLE, AUDIT_CHANGES + suffix, rows.changes)):
            if lines:
                with curs.copy(SQL("COPY {}.{} ({}) FROM STDIN").format(
                        s, Identifier(name),
                        SQL(", ").join(Identifier(c) for c in table.columns))) as copy:
                    copy.write("".join(lines).encode())

    def record_batch(self, rows: Rows, tracking: Tracking) -> None:
        """Write one batch of versions and audit rows, and the tracking position, atomically."""
        schema = Identifier(self.datastore.schema)
        with self.datastore.transaction(commit=True) as curs:
            for table, versions in ((VERSIONS_TABLE, rows.versions),
                                    (FACTS_TABLE, rows.facts),
                                    (OUTCOME_SUMMARIES_TABLE, rows.summaries)):
                closing = _closing(versions)
                if closing:
                    key = Identifier(table.columns[1])
                    curs.execute(
                        SQL("UPDATE {}.{} AS v SET recorded_to = c.closed FROM unnest("
                            "%s::uuid[], %s::text[], %s::timestamptz[]) AS c(sid, rid, closed) "
                            "WHERE v.subject_id = c.sid AND v.{} = c.rid "
                            "AND v.recorded_to IS NULL").format(schema, Identifier(table.name),
                                                                key),
                        ([v.subject_id for v in closing], [v.record_id for v in closing],
                         [v.recorded_from for v in closing]),
                    )
            self._copy(curs, rows, "", "")
            touched = sorted({v.subject_id for v in rows.versions})
            if touched:
                # Only a new header version changes what a subject's open queries are.
                headers = sorted({v.subject_id for v in rows.versions if v.record_id == ""})
                for statement in _derive(schema, "", subjects=True):
                    curs.execute(statement, {"subjects": touched, "headers": headers})
            self._insert_tracking(curs, tracking)

    def analyze(self) -> None:
        """Refresh the planner's statistics of the tables (a role that owns them may; for
        another, PostgreSQL skips them with a warning)."""
        with self.datastore.transaction(commit=True) as curs:
            for table in TABLES:
                curs.execute(SQL("ANALYZE {}.{}").format(Identifier(self.datastore.schema),
                                                        Identifier(table.name)))

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
            curs.execute(_drop_audit(self.datastore.schema, tables_only=False))
            for table in (*(t.name for t in TABLES), SHAPE, self.tracking_table_name):
                curs.execute(SQL("DROP TABLE IF EXISTS {}.{}").format(schema, Identifier(table)))


def _closing(versions: list[Version]) -> list[Version]:
    """Close the versions superseded inside the batch (before they are written); return the
    first version of each entity that closes the one already open in the table, if the
    projector saw one there (a new record has none: no look-up for it)."""
    latest: dict[tuple[str, str], Version] = {}
    closing: list[Version] = []
    for version in versions:
        key = (version.subject_id, version.record_id)
        if key in latest:
            latest[key].recorded_to = version.recorded_from
        elif version.supersedes:
            closing.append(version)
        latest[key] = version
    return closing


_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES",
                         "TRIGGER"})


def _grants(curs: Cursor[Any], schema: str, relations: list[str]) -> list[tuple[str, str, str]]:
    """(relation, grantee, privilege) of what others than their owner were granted on
    ``relations``."""
    curs.execute(
        "SELECT table_name, grantee, privilege_type FROM information_schema.table_privileges"
        " WHERE table_schema = %s AND table_name = ANY(%s) AND grantee <> current_user"
        " ORDER BY 1, 2, 3", (schema, relations))
    return [(row["table_name"], row["grantee"], row["privilege_type"])
            for row in curs.fetchall() if row["privilege_type"] in _PRIVILEGES]


def _closed_in_order(s: Identifier, table: _Table) -> list[Composed]:
    """Fill the rebuilt ``table`` from its staged versions in subject order, each closed by
    the next version of its key; then its key, indexes and statistics."""
    new, staged, key = (Identifier(table.name + REBUILT), Identifier(table.name + STAGED),
                        Identifier(table.columns[1]))
    return [
        _create_rebuilt(s, table),
        SQL("INSERT INTO {s}.{new} SELECT subject_id, {key}, kind, data, version, position, "
            "recorded_from, lead(recorded_from) OVER (PARTITION BY subject_id, {key} "
            "ORDER BY position) FROM {s}.{staged} ORDER BY subject_id, {key}, position").format(
                s=s, new=new, staged=staged, key=key),
        SQL("DROP TABLE {}.{}").format(s, staged),
        table.add_key(s, REBUILT),
        *table.create_indexes(s, REBUILT),
        SQL("ANALYZE {}.{}").format(s, new),
    ]


def _in_order(s: Identifier, table: _Table) -> list[Composed]:
    """Fill the rebuilt ``table`` from its staged rows in the order of its key (a subject's
    rows on a few pages); then its key, indexes and statistics."""
    new, staged = Identifier(table.name + REBUILT), Identifier(table.name + STAGED)
    return [
        _create_rebuilt(s, table),
        SQL("INSERT INTO {s}.{new} SELECT * FROM {s}.{staged} ORDER BY {key}").format(
            s=s, new=new, staged=staged, key=table.key),
        SQL("DROP TABLE {}.{}").format(s, staged),
        table.add_key(s, REBUILT),
        *table.create_indexes(s, REBUILT),
        SQL("ANALYZE {}.{}").format(s, new),
    ]


def _marks_as_of(s: Identifier, marks: Identifier, header: str) -> Composed:
    """An expression: the JSON object of the queries, SDV marks and deviations (each a map,
    empty if none) of the subject of the header version aliased ``header``, as they stood at
    its position: each entry's latest version by then."""
    h = Identifier(header)
    maps = SQL(", ").join(
        SQL("{kind}, COALESCE(jsonb_object_agg(m.item, m.data) FILTER (WHERE m.kind = {kind}),"
            " '{{}}'::jsonb)").format(kind=Literal(kind)) for kind in MARK_KEYS)
    return SQL(
        "(SELECT jsonb_build_object({maps}) FROM (SELECT DISTINCT ON (m.kind, m.item) m.kind,"
        " m.item, m.data FROM {s}.{marks} m WHERE m.subject_id = {h}.subject_id"
        " AND m.position <= {h}.position ORDER BY m.kind, m.item, m.position DESC) m)").format(
        maps=maps, s=s, marks=marks, h=h)


def casebook_history(schema: str) -> Composed:
    """A FROM item (alias it): ``casebook_versions`` with each header version put together
    with its marks, for the readers of whole headers.

    A subquery (the planner folds it into the query as it would a view) rather than a view:
    no object in the database depends on the read tables, so that an earlier version of the
    code, going back an upgrade, can still replace them with its own.
    """
    s = Identifier(schema)
    columns = SQL(", ").join(
        SQL("CASE WHEN v.record_id = '' THEN v.data || {} ELSE v.data END AS data").format(
            _marks_as_of(s, Identifier(MARKS), "v")) if c == "data"
        else SQL("v.{}").format(Identifier(c)) for c in VERSION_COLUMNS)
    return SQL("(SELECT {} FROM {}.{} v)").format(columns, s, Identifier(VERSIONS))


def current_headers(s: Identifier, suffix: str = "", subjects: Composable | None = None
                    ) -> Composed:
    """A FROM item: each subject's current header with its marks (``h.subject_id``, ``h.d``:
    its JSON), of the tables named with ``suffix``.

    The header is put together once per row for the rest of the query to read; OFFSET 0 keeps
    the planner from folding it back into each use.
    """
    return SQL("(SELECT v.subject_id, v.data || {} AS d FROM {}.{} v WHERE v.record_id = ''"
               " AND v.recorded_to IS NULL{} OFFSET 0) h").format(
                   _marks_as_of(s, Identifier(MARKS + suffix), "v"), s,
                   Identifier(VERSIONS + suffix), subjects or SQL(""))


def _derive(s: Identifier, suffix: str, *, subjects: bool) -> list[Composed]:
    """Statements writing the summaries and open queries (of the tables named with
    ``suffix``) from the current versions: of the subjects bound to ``%(subjects)s``, their
    open queries of those bound to ``%(headers)s`` (or, without ``subjects``, of all)."""
    versions = Identifier(VERSIONS + suffix)
    summaries, queries = (Identifier(SUMMARIES + suffix), Identifier(OPEN_QUERIES + suffix))
    only = SQL(" AND v.subject_id = ANY(%(subjects)s)") if subjects else SQL("")
    only_headers = SQL(" AND v.subject_id = ANY(%(headers)s)") if subjects else SQL("")
    # What each column was computed from, as the dashboard and the list did from the headers;
    # a subject's records as they stand are counted by the index casebook_versions_records.
    summary = SQL(
        "INSERT INTO {s}.{summaries} ({columns}) SELECT h.subject_id, h.d->>'subject',"
        " h.d->>'site', h.d->>'arm', jsonb_build_object({listing}),"
        " (SELECT max(v.version) FROM {s}.{versions} v WHERE v.subject_id = h.subject_id),"
        " (SELECT count(*) FROM {s}.{versions} r WHERE r.subject_id = h.subject_id"
        "  AND r.recorded_to IS NULL AND r.data IS NOT NULL AND r.record_id <> ''),"
        " (SELECT count(*) FROM jsonb_object_keys(h.d->'sdv')),"
        " (SELECT count(*) FROM jsonb_each(h.d->'queries') q"
        "  WHERE q.value->>'status' <> 'closed'),"
        " (SELECT CASE WHEN 'valid' = ANY(a) THEN 'valid' WHEN 'invalidated' = ANY(a)"
        "  THEN 'invalidated' ELSE 'unsigned' END FROM (SELECT ARRAY("
        "  SELECT g.value->>'status' FROM jsonb_each(h.d->'signatures') g) AS a) sig)"
        " FROM {h}{upsert}").format(
        s=s, summaries=summaries, versions=versions,
        columns=SQL(", ").join(Identifier(c) for c in SUMMARY_COLUMNS),
        listing=SQL(", ").join(SQL("{}, h.d->{}").format(Literal(k), Literal(k))
                               for k in SUMMARY_KEYS),
        h=current_headers(s, suffix, only),
        upsert=SQL(" ON CONFLICT (subject_id) DO UPDATE SET {}").format(SQL(", ").join(
            SQL("{} = EXCLUDED.{}").format(Identifier(c), Identifier(c))
            for c in SUMMARY_COLUMNS[1:])) if subjects else SQL(""))
    opened = SQL(
        "INSERT INTO {s}.{queries} ({columns}) SELECT h.subject_id, q.key, h.d->>'subject',"
        " h.d->>'site', q.value->>'opened_at', q.value FROM {h}"
        " CROSS JOIN LATERAL jsonb_each(h.d->'queries') q"
        " WHERE q.value->>'status' <> 'closed'").format(
        s=s, queries=queries, h=current_headers(s, suffix, only_headers),
        columns=SQL(", ").join(Identifier(c) for c in OPEN_QUERY_COLUMNS))
    if not subjects:
        return [summary, opened]
    return [summary, SQL("DELETE FROM {}.{} WHERE subject_id = ANY(%(headers)s)").format(
        s, queries), opened]


def _derived_rebuilt(s: Identifier) -> list[Composed]:
    """Make and fill the rebuild's summaries and open queries from its (indexed) versions."""
    statements = [_create_rebuilt(s, t) for t in DERIVED]
    statements += _derive(s, REBUILT, subjects=False)
    for table in DERIVED:
        statements += [table.add_key(s, REBUILT), *table.create_indexes(s, REBUILT),
                       SQL("ANALYZE {}.{}").format(s, Identifier(table.name + REBUILT))]
    return statements


def _create_rebuilt(s: Identifier, table: _Table) -> Composed:
    """Make the empty table a rebuild fills in place of ``table`` (autovacuum off till the
    swap)."""
    return SQL("CREATE TABLE {}.{} ({}){}").format(s, Identifier(table.name + REBUILT),
                                                  table.ddl, NO_AUTOVACUUM)


def _create_audit_view(s: Identifier) -> Composed:
    """The audit trail as one relation: each change with the columns of its event."""
    columns = [audit_column(name) for name in AUDIT_COLUMNS]
    columns.insert(1, SQL("{}.{}").format(Identifier("c"), Identifier("seq")))
    return SQL("CREATE OR REPLACE VIEW {s}.{view} AS SELECT {columns} FROM {s}.{changes} c "
               "JOIN {s}.{events} e ON e.position = c.position").format(
                   s=s, view=Identifier(AUDIT), columns=SQL(", ").join(columns),
                   changes=Identifier(AUDIT_CHANGES), events=Identifier(AUDIT_EVENTS))


def _qualified(schema: str, name: str) -> str:
    """``schema.name`` as ``to_regclass`` reads it, each part quoted."""
    return f'"{schema}"."{name}"'


def _unless_present(missing: Composable, statement: Composed) -> Composed:
    """``statement``, run only if the condition ``missing`` (what it makes is not there)
    holds. Every process that opens the view runs its DDL, while another may be recording a
    batch: CREATE INDEX IF NOT EXISTS and ALTER TABLE ... ADD COLUMN IF NOT EXISTS lock their
    table (share, exclusive) before finding the index or column there, and such a lock, taken
    beside a batch's inserts into the tables in another order, ended in a deadlock that
    failed a projection round. A catalogue look-up locks nothing."""
    return SQL("DO $$BEGIN IF {} THEN EXECUTE {}; END IF; END$$").format(
        missing, Literal(statement.as_string()))


def _drop_audit(schema: str, *, tables_only: bool) -> Composed:
    """Drop ``audit_trail`` if it is a table (as projection version 2 made it), or, unless
    ``tables_only``, a view."""
    s = Identifier(schema)
    drop_view = SQL("") if tables_only else SQL("ELSIF kind = 'v' THEN EXECUTE {}; ").format(
        Literal(SQL("DROP VIEW {}.{}").format(s, Identifier(AUDIT)).as_string()))
    return SQL(
        "DO $$ DECLARE kind text; BEGIN "
        "SELECT c.relkind::text INTO kind FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = {schema} AND c.relname = {name}; "
        "IF kind = 'r' THEN EXECUTE {drop_table}; {drop_view}END IF; END $$"
    ).format(schema=Literal(schema), name=Literal(AUDIT), drop_view=drop_view,
             drop_table=Literal(SQL("DROP TABLE {}.{}").format(s, Identifier(AUDIT)).as_string()))


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
    return NULL if value is None else iso(value)


def mark_line(subject_id: str, kind: str, item: str, data: str, position: int) -> str:
    """A line of COPY text of ``header_marks``: a version of a header mark (``data``: JSON)."""
    return (f"{subject_id}\t{copy_text(kind)}\t{copy_text(item)}\t{copy_json_text(data)}\t"
            f"{position}\n")


def _version_line(v: Version) -> str:
    return (f"{v.subject_id}\t{copy_text(v.record_id)}\t{copy_text(v.kind)}\t"
            f"{copy_json_text(v.data)}\t{v.version}\t{v.position}\t{iso(v.recorded_from)}\t"
            f"{copy_time(v.recorded_to)}\n")
