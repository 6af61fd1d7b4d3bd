"""eventsourcing's own recorder test cases, run unchanged against TrialLedger's recorders."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
)
from psycopg.conninfo import conninfo_to_dict

from infra.recorder import AppendOnlyApplicationRecorder, AppendOnlyProcessRecorder


@pytest.fixture(autouse=True)
def _database(request: pytest.FixtureRequest, db_url: str) -> None:
    # unittest-style cases get the fresh database through the instance.
    request.instance.db_url = db_url


class _OnPostgres:
    db_url: str
    datastore: PostgresDatastore

    def make_datastore(self) -> PostgresDatastore:
        schema = f"contract_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        params: dict[str, Any] = conninfo_to_dict(self.db_url)
        self.datastore = PostgresDatastore(
            dbname=str(params["dbname"]),
            host=str(params.get("host") or "localhost"),
            port=str(params.get("port") or "5432"),
            user=str(params.get("user") or "postgres"),
            password=str(params.get("password") or ""),
            schema=schema,
            pool_size=4,
            max_overflow=8,
            enable_db_functions=False,
        )
        return self.datastore

    def tearDown(self) -> None:
        self.datastore.close()


class TestApplicationRecorder(
    _OnPostgres, ApplicationRecorderTestCase[AppendOnlyApplicationRecorder]
):
    def create_recorder(self) -> AppendOnlyApplicationRecorder:
        recorder = AppendOnlyApplicationRecorder(
            self.make_datastore(), events_table_name="trialledger_events"
        )
        recorder.create_table()
        return recorder


class TestProcessRecorder(_OnPostgres, ProcessRecorderTestCase):
    def create_recorder(self) -> AppendOnlyProcessRecorder:
        recorder = AppendOnlyProcessRecorder(
            self.make_datastore(),
            events_table_name="trialledger_events",
            tracking_table_name="trialledger_tracking",
        )
        recorder.create_table()
        return recorder


class TestNonInterleavingNotificationIDs(_OnPostgres, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> AppendOnlyApplicationRecorder:
        recorder = AppendOnlyApplicationRecorder(
            self.make_datastore(), events_table_name="trialledger_events"
        )
        recorder.create_table()
        return recorder
