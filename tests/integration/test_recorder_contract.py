"""eventsourcing's own recorder test cases, run unchanged against TrialLedger's recorders."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
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
    if request.instance is not None:
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


def test_events_are_stored_as_given_whatever_bytes_they_hold(db_url: str) -> None:
    """The insert's arrays go in binary: quotes, backslashes, braces, NUL and every other
    byte of a state, and odd topics, come back as they went in, with and without the
    versions relied on (the insert that checks them); versions past 32 bits too."""
    holder = _OnPostgres()
    holder.db_url = db_url
    recorder = AppendOnlyApplicationRecorder(holder.make_datastore(),
                                             events_table_name="trialledger_events")
    recorder.create_table()
    try:
        first, second, relied = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        states = [bytes(range(256)), b'{"a": "\\"q\\" \\\\ {x,y} NULL"}', b"", b"\x00" * 3,
                  b'"', b"\\x41"]
        topics = ['t:"quoted"', "t:back\\slash", "t:{braces},comma", "t: NULL", "t:ü\u2028"]
        events = [StoredEvent(first, n + 1, topics[n % len(topics)], state)
                  for n, state in enumerate(states)]
        recorder.insert_events(events)
        recorder.insert_events([StoredEvent(relied, 2**40, "t:relied", b"r")])
        later = [StoredEvent(second, 2**33 + n, topics[n], state)
                 for n, state in enumerate(states[:3])]
        recorder.insert_events(later, expected_versions=[(relied, 2**40), (first, 6)])
        stored = [(e.originator_id, e.originator_version, e.topic, e.state)
                  for e in recorder.select_notifications(start=None, limit=100)]
        assert stored == [(e.originator_id, e.originator_version, e.topic, e.state)
                          for e in [*events, StoredEvent(relied, 2**40, "t:relied", b"r"),
                                    *later]]
    finally:
        holder.datastore.close()
