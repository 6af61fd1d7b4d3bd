"""Opening a study's read tables (every process that projects or reads them does, each with
the view's DDL) takes no lock on them once they exist: CREATE INDEX IF NOT EXISTS and ADD
COLUMN IF NOT EXISTS locked their table before finding it all there, and beside a projector
recording a batch into the same tables that ended in a deadlock (a failed projection round
in the failover drill of tests/integration/test_auto_failover.py)."""

from __future__ import annotations

import threading

from psycopg.sql import SQL, Identifier

from application.runtime import Runtime
from infra.postgres import connect, schema_for_study
from projections.history_view import AUDIT_CHANGES, TABLES
from tests.support import study_with_a_child

STUDY = "NCT04397107"


def test_the_read_tables_open_while_a_batch_is_being_recorded_into_them(
        runtime: Runtime) -> None:
    study_with_a_child(runtime, lab=True)
    runtime.project(STUDY)
    schema = Identifier(schema_for_study(STUDY))
    opened = threading.Event()
    failed: list[BaseException] = []

    def open_view() -> None:
        try:
            runtime.history_view(STUDY).datastore.close()
            opened.set()
        except BaseException as e:  # reported by the test's own thread
            failed.append(e)

    opener = threading.Thread(target=open_view, daemon=True)
    with connect(runtime.url) as batch, batch.transaction():
        # What a batch's inserts hold on every read table until it commits.
        for table in TABLES:
            batch.execute(SQL("LOCK TABLE {}.{} IN ROW EXCLUSIVE MODE").format(
                schema, Identifier(table.name)))
        opener.start()
        # It must not wait for the batch (it waited as long as the batch was open).
        assert opened.wait(30), "opening the read tables waited for a batch being recorded"
    opener.join(30)
    assert not failed, failed
    # Opened on tables that exist, nothing changed: the column added once is still there.
    with connect(runtime.url) as conn:
        row = conn.execute(SQL("SELECT count(entry_lag_s) >= 0 FROM {}.{}").format(
            schema, Identifier(AUDIT_CHANGES))).fetchone()
    assert row == (True,)
