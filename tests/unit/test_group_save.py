"""The group commit stores a batch with the steps of eventsourcing's ``Application.save``,
less its per-event protocol check (``StudyApplication._save_events``): if an upgrade of
eventsourcing changes those steps, this says so before a batch is stored differently."""

from __future__ import annotations

import inspect
import re

from eventsourcing.application import Application


def test_application_save_is_still_the_steps_the_group_commit_repeats() -> None:
    body = inspect.getsource(Application.save).split('"""')[-1]
    steps = [line.strip() for line in body.splitlines() if line.strip()]
    assert [re.sub(r"\s+#.*$", "", step) for step in steps] == [
        "processing_event: ProcessingEvent[TAggregateID] = ProcessingEvent()",
        "processing_event.collect_events(*objs, **kwargs)",
        "recordings = self._record(processing_event)",
        "self._take_snapshots(processing_event)",
        "self._notify(recordings)",
        "self.notify(processing_event.events)",
        "return recordings",
    ]
