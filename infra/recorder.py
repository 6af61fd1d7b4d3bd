"""The event recorders: eventsourcing's PostgreSQL recorders, made append-only by triggers.

The triggers belong to the table owner. The application connects as a role that owns none of
the tables (see ``infra/roles.py``), so it can neither disable them nor drop the tables.

The application recorder inserts a batch as one array per column, and takes
``expected_versions``: aggregates a write relied on without writing to them (a subject's
command reads the study's lock). They are checked under the table lock every insert takes,
so no event of theirs can commit between the check and the write; if one has moved on, or
the batch itself writes to one, nothing is inserted and
:class:`~eventsourcing.persistence.IntegrityError` is raised, as for a version clash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
)
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

REFUSE_FUNCTION = "trialledger_refuse_change"


def append_only_statements(schema: str, table: str) -> list[Composed]:
    """SQL that makes ``schema.table`` refuse UPDATE, DELETE and TRUNCATE, for everyone."""
    function = SQL(
        "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger "
        "LANGUAGE plpgsql AS $body$ BEGIN "
        "RAISE EXCEPTION 'TrialLedger is append-only: % on %.% is refused', "
        "TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; "
        "END $body$"
    ).format(schema=Identifier(schema), function=Identifier(REFUSE_FUNCTION))
    row_trigger = SQL(
        "CREATE OR REPLACE TRIGGER {name} BEFORE UPDATE OR DELETE ON {schema}.{table} "
        "FOR EACH ROW EXECUTE FUNCTION {schema}.{function}()"
    ).format(
        name=Identifier(f"{table}_no_update_delete"),
        schema=Identifier(schema),
        table=Identifier(table),
        function=Identifier(REFUSE_FUNCTION),
    )
    truncate_trigger = SQL(
        "CREATE OR REPLACE TRIGGER {name} BEFORE TRUNCATE ON {schema}.{table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}()"
    ).format(
        name=Identifier(f"{table}_no_truncate"),
        schema=Identifier(schema),
        table=Identifier(table),
        function=Identifier(REFUSE_FUNCTION),
    )
    return [function, row_trigger, truncate_trigger]


# From this many events on, insert_events stores them with COPY (see copy_events).
COPY_FROM = 100


class AppendOnlyApplicationRecorder(PostgresApplicationRecorder):
    """eventsourcing's application recorder whose events table refuses change.

    A large batch is stored with COPY rather than eventsourcing's INSERT (an array of composite
    values, sent in pipeline mode): the same rows under the same table lock, several times
    faster, and with no bound on the batch (a large pipelined INSERT stalls: psycopg #685).
    """

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            append_only_statements(datastore.schema, self.events_table_name)
        )
        table = SQL("{}.{}").format(Identifier(datastore.schema),
                                    Identifier(self.events_table_name))
        self._copy_statement = SQL(
            "COPY {} (originator_id, originator_version, topic, state) FROM STDIN "
            "(FORMAT BINARY)").format(table)
        self._last_id_statement = SQL(
            "SELECT currval(pg_get_serial_sequence({}, 'notification_id')) AS last_id"
        ).format(Literal(f'"{datastore.schema}"."{self.events_table_name}"'))
        names = {"schema": Identifier(datastore.schema),
                 "table": Identifier(self.events_table_name),
                 "id_type": Identifier(datastore.originator_id_type)}
        insert = (
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[])"
        )
        self._insert_columns_statement = SQL(insert + " RETURNING notification_id").format(
            **names)
        # Inserts nothing if an aggregate relied on is no longer at the version given.
        self._insert_if_unmoved_statement = SQL(
            insert + " WHERE NOT EXISTS (SELECT FROM unnest(%s::{id_type}[], %s::bigint[])"
            " AS relied(id, version) WHERE relied.version <> coalesce((SELECT"
            " max(originator_version) FROM {schema}.{table} WHERE originator_id = relied.id),"
            " 0)) RETURNING notification_id").format(**names)

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        """Store the events in one transaction; a large batch with COPY."""
        ids: Sequence[int] | None
        if len(stored_events) >= COPY_FROM and not kwargs:
            ids = self.copy_events(stored_events)
        else:
            ids = super().insert_events(stored_events, **kwargs)
        return ids

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)  # as insert_events
    def copy_events(self, stored_events: Sequence[StoredEvent]) -> Sequence[int]:
        """Store the events with COPY in one transaction; return their notification ids.

        The transaction first takes the table lock eventsourcing's INSERT takes, so that
        notification ids are issued in commit order (what the sealer and projections follow)
        and those of one batch are consecutive. A duplicate (aggregate id, version) fails the
        whole batch with :class:`eventsourcing.persistence.IntegrityError`: all of it is
        stored, or none.
        """
        if not stored_events:
            return []
        with self.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor() as curs:
            self._lock_table(curs)
            self._notify_channel(curs)
            with curs.copy(self._copy_statement) as copy:
                copy.set_types([self.datastore.originator_id_type, "int8", "text", "bytea"])
                for event in stored_events:
                    copy.write_row((event.originator_id, event.originator_version,
                                    event.topic, event.state))
            row = curs.execute(self._last_id_statement).fetchone()
            assert row is not None
        # Under the lock nothing else draws from the table's sequence: this batch's ids are
        # the last len(stored_events) ones drawn.
        last = int(row["last_id"])
        return list(range(last - len(stored_events) + 1, last + 1))

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        # One array per column, sent in binary: eventsourcing's array of composite values is
        # rendered as text by Python code, escaping every byte of every event, which cost
        # more than the signing. RETURNING gives the notification ids in insertion order.
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        expected: Sequence[tuple[UUID, int]] = kwargs.get("expected_versions") or ()
        if expected:
            written = {e.originator_id for e in stored_events}
            clash = sorted(str(i) for i, _ in expected if i in written)
            if clash:
                raise IntegrityError(
                    f"the batch writes to {', '.join(clash)}, which it relies on")
        self._lock_table(curs)
        self._notify_channel(curs)
        if expected:
            # Checked by the insert itself, under the table lock taken above: nothing can
            # commit to these aggregates before this batch does.
            curs.execute(self._insert_if_unmoved_statement, (
                *columns, [i for i, _ in expected], [v for _, v in expected],
            ), binary=True, prepare=True)
        else:
            curs.execute(self._insert_columns_statement, columns, binary=True, prepare=True)

    def _fetch_ids_after_insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if len(ids or ()) != len(stored_events):
            # The insert found a relied-on aggregate moved on and stored nothing; the commit
            # that follows is an empty one.
            moved = ", ".join(str(i) for i, _ in kwargs.get("expected_versions") or ())
            raise IntegrityError(f"{moved}: moved on since it was read")
        return ids


class AppendOnlyProcessRecorder(PostgresProcessRecorder):
    """eventsourcing's process recorder (events + tracking) whose events table refuses change.

    Tracking rows are positions, not events: they are updated as a projection advances.
    """

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            append_only_statements(datastore.schema, self.events_table_name)
        )
