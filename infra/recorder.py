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

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
)
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

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


class AppendOnlyApplicationRecorder(PostgresApplicationRecorder):
    """eventsourcing's application recorder whose events table refuses change."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            append_only_statements(datastore.schema, self.events_table_name)
        )
        self._insert_columns_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[])"
            " RETURNING notification_id"
        ).format(schema=Identifier(datastore.schema), table=Identifier(self.events_table_name),
                 id_type=Identifier(datastore.originator_id_type))
        self._versions_statement = SQL(
            "SELECT originator_id, max(originator_version) AS version FROM {schema}.{table}"
            " WHERE originator_id = ANY(%s) GROUP BY originator_id"
        ).format(schema=Identifier(datastore.schema), table=Identifier(self.events_table_name))

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        self._lock_table(curs)
        expected: Sequence[tuple[UUID, int]] = kwargs.get("expected_versions") or ()
        if expected:
            self._check_versions(curs, stored_events, expected)
        self._notify_channel(curs)
        # One array per column, sent in binary: eventsourcing's array of composite values is
        # rendered as text by Python code, escaping every byte of every event, which cost
        # more than the signing. RETURNING gives the notification ids in insertion order.
        curs.execute(self._insert_columns_statement, (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        ), binary=True, prepare=True)

    def _check_versions(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                        expected: Sequence[tuple[UUID, int]]) -> None:
        """Refuse the batch (nothing inserted yet) unless every aggregate it relies on is
        still at the version given. Runs under the table lock: nothing can commit to these
        aggregates before this batch does."""
        written = {e.originator_id for e in stored_events}
        clash = sorted(str(i) for i, _ in expected if i in written)
        if clash:
            raise IntegrityError(f"the batch writes to {', '.join(clash)}, which it relies on")
        curs.execute(self._versions_statement, ([i for i, _ in expected],), prepare=True)
        current = {UUID(str(row["originator_id"])): int(row["version"])
                   for row in curs.fetchall()}
        moved = sorted(str(i) for i, version in expected if current.get(i, 0) != version)
        if moved:
            # The commit that follows is an empty one.
            raise IntegrityError(f"{', '.join(moved)} moved on since it was read")


class AppendOnlyProcessRecorder(PostgresProcessRecorder):
    """eventsourcing's process recorder (events + tracking) whose events table refuses change.

    Tracking rows are positions, not events: they are updated as a projection advances.
    """

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            append_only_statements(datastore.schema, self.events_table_name)
        )
