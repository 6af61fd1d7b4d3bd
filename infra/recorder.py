"""The event recorders: eventsourcing's PostgreSQL recorders, made append-only by triggers.

The triggers belong to the table owner. The application connects as a role that owns none of
the tables (see ``infra/roles.py``), so it can neither disable them nor drop the tables.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
)
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


class AppendOnlyProcessRecorder(PostgresProcessRecorder):
    """eventsourcing's process recorder (events + tracking) whose events table refuses change.

    Tracking rows are positions, not events: they are updated as a projection advances.
    """

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            append_only_statements(datastore.schema, self.events_table_name)
        )
