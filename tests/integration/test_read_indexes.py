"""The read tables' look-up indexes: made with the tables, added to an existing database by its
set-up (start-up, or ``db grant`` as the owner), and carried over by a rebuild."""

from __future__ import annotations

import psycopg

from application.runtime import Runtime
from infra.postgres import schema_for_study
from projections.history_view import TABLES
from tests.support import enroll, register, simulated_clock

STUDY = "NCT04397107"
SCHEMA = schema_for_study(STUDY)
DECLARED = {old for table in TABLES for _, old in table.index_names("")}


def _indexes(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (SCHEMA,))}


def test_every_declared_index_is_made_kept_added_and_rebuilt(runtime: Runtime,
                                                              db_url: str) -> None:
    app = runtime.study(STUDY, clock=simulated_clock())
    register(app)
    enroll(app)
    app.close()
    runtime.project(STUDY)
    assert "casebook_versions_version" in DECLARED
    assert _indexes(db_url) >= DECLARED
    # A database set up before an index was declared gets it when its read tables are next
    # set up: what the server's start-up and ``trialledger db grant`` do.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'DROP INDEX "{SCHEMA}".casebook_versions_version')
    assert "casebook_versions_version" not in _indexes(db_url)
    runtime.history_view(STUDY).datastore.close()
    assert _indexes(db_url) >= DECLARED
    runtime.project(STUDY, rebuild=True)
    assert _indexes(db_url) >= DECLARED
