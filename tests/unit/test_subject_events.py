"""A subject's events are defined in their own module and named on Subject: eventsourcing
registers the stored names of an aggregate's own event classes only."""

from __future__ import annotations

import inspect

from eventsourcing.utils import resolve_topic

from domain.subject import Subject, events


def test_every_event_of_the_module_is_named_on_subject_and_resolves_by_its_stored_name() -> None:
    defined = {name: cls for name, cls in vars(events).items()
               if inspect.isclass(cls) and issubclass(cls, events.Event)
               and cls.__module__ == events.__name__}
    assert len(defined) > 30
    for name, cls in defined.items():
        assert vars(Subject).get(name) is cls, f"Subject does not name {name}"
        if name != "Event":
            assert resolve_topic(vars(cls)["TOPIC"]) is cls, name
