"""Events encoded as binary COPY rows elsewhere (an import's worker processes) are stored as
``insert_events`` stores them: the same rows, consecutive notification ids, refused whole on
a clash, and looked up rather than written twice when the commit's outcome was lost."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent

from application.runtime import Runtime
from infra.copy_rows import CopyRows, CopyRowsWriter
from infra.recorder import AppendOnlyApplicationRecorder


@pytest.fixture
def recorder(runtime: Runtime) -> Iterator[AppendOnlyApplicationRecorder]:
    """The events table of a study of its own."""
    recorder = runtime.study("COPY1").recorder
    assert isinstance(recorder, AppendOnlyApplicationRecorder)
    yield recorder


def _events() -> list[StoredEvent]:
    first, second = uuid4(), uuid4()
    return [StoredEvent(originator_id=first, originator_version=1, topic="Subject.Enrolled.v1",
                        state=b"\x00signed\xff" * 40),
            StoredEvent(originator_id=first, originator_version=2, topic="Subject.Tópic.v1",
                        state=b""),
            StoredEvent(originator_id=second, originator_version=1, topic="T",
                        state=bytes(range(256)))]


def _rows(events: list[StoredEvent]) -> CopyRows:
    writer = CopyRowsWriter()
    for event in events:
        assert not isinstance(event.originator_id, str)
        writer.add(event.originator_id.bytes, event.originator_version, event.topic,
                   event.state)
    rows = writer.finish()
    assert rows is not None and rows.count == len(events) and rows.first == events[0]
    return rows


def test_copy_rows_store_the_very_events_with_consecutive_ids(
        recorder: AppendOnlyApplicationRecorder) -> None:
    events = _events()
    before = recorder.max_notification_id() or 0
    ids = recorder.insert_copy_rows(_rows(events))
    assert ids == [before + 1, before + 2, before + 3]
    stored = recorder.select_notifications(before + 1, 10)
    assert [(n.originator_id, n.originator_version, n.topic, n.state) for n in stored] == [
        (e.originator_id, e.originator_version, e.topic, e.state) for e in events]
    assert CopyRowsWriter().finish() is None


def test_a_clash_stores_none_of_the_batch(recorder: AppendOnlyApplicationRecorder) -> None:
    events = _events()
    recorder.insert_copy_rows(_rows(events[:1]))
    before = recorder.max_notification_id()
    with pytest.raises(IntegrityError):
        recorder.insert_copy_rows(_rows(events))
    assert recorder.max_notification_id() == before


def test_a_batch_committed_before_its_connection_failed_is_looked_up_not_written_again(
        recorder: AppendOnlyApplicationRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    write = AppendOnlyApplicationRecorder._write_copy_rows

    def committed_then_lost(self: AppendOnlyApplicationRecorder, rows: CopyRows,
                            *args: object) -> object:
        write(self, rows, *args)  # type: ignore[arg-type]
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(AppendOnlyApplicationRecorder, "_write_copy_rows", committed_then_lost)
    before = recorder.max_notification_id() or 0
    assert recorder.insert_copy_rows(_rows(_events())) == [before + 1, before + 2, before + 3]
    assert recorder.max_notification_id() == before + 3


def test_a_batch_whose_commit_could_not_be_looked_up_is_found_by_its_retry_s_clash(
        recorder: AppendOnlyApplicationRecorder, monkeypatch: pytest.MonkeyPatch) -> None:
    # The connection fails just after the commit, and so does the look-up (the database
    # away a moment): the retry's insert clashes with the batch itself, which is then found
    # stored, rather than refused (and the command run again on top of it).
    events = _events()
    write, look_up = AppendOnlyApplicationRecorder._write, AppendOnlyApplicationRecorder._stored_ids
    failures = {"write": 1, "look_up": 1}

    def committed_then_lost(self: AppendOnlyApplicationRecorder, stored: list[StoredEvent],
                            *args: object) -> object:
        ids = write(self, stored, *args)  # type: ignore[arg-type]
        if stored[0] is events[0] and failures["write"]:  # this test's batch, not another's
            failures["write"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return ids

    def unreachable_once(self: AppendOnlyApplicationRecorder, first: StoredEvent,
                         *args: object) -> object:
        if first is events[0] and failures["look_up"]:
            failures["look_up"] -= 1
            return None
        return look_up(self, first, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(AppendOnlyApplicationRecorder, "_write", committed_then_lost)
    monkeypatch.setattr(AppendOnlyApplicationRecorder, "_stored_ids", unreachable_once)
    before = recorder.max_notification_id() or 0
    assert recorder.insert_events(events) == [before + 1, before + 2, before + 3]
    assert failures == {"write": 0, "look_up": 0}  # both failed once, as meant
    assert recorder.max_notification_id() == before + 3
