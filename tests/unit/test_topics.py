"""Stored event names are explicit, versioned and independent of where the code lives."""

from __future__ import annotations

import inspect

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic, resolve_topic

from domain.topics import AGGREGATES, LEGACY_TOPICS, stored_names


def _stored_classes() -> list[type]:
    classes: list[type] = []
    for aggregate in AGGREGATES:
        classes.append(aggregate)
        classes.extend(obj for name, obj in vars(aggregate).items()
                       if inspect.isclass(obj) and issubclass(obj, Aggregate.Event)
                       and name != "Event")
    return classes


def test_every_aggregate_and_event_class_has_its_own_versioned_name() -> None:
    names = []
    for cls in _stored_classes():
        own = vars(cls).get("TOPIC")  # its own, not inherited from a base event
        assert own is not None, f"{cls.__qualname__} has no explicit stored name"
        assert get_topic(cls) == own, cls
        assert ":" not in own and not own.startswith("domain."), own
        assert own.rsplit(".", 1)[1].startswith("v"), f"{own} carries no version"
        names.append(own)
    assert len(names) == len(set(names))


def test_names_stored_before_still_resolve_to_the_same_classes() -> None:
    # A sample written by main at 69e9d0d, literally: the table must never lose these.
    for old, cls_name in [("domain.subject:Subject.RecordCorrected", "RecordCorrected"),
                          ("domain.subject:Subject", "Subject"),
                          ("domain.keyring:Keyring.KeyRegistered", "KeyRegistered"),
                          ("domain.study:Study.Registered", "Registered")]:
        assert resolve_topic(old).__name__ == cls_name
    for old, new in LEGACY_TOPICS.items():
        assert resolve_topic(old) is resolve_topic(new), old


def test_selecting_a_class_covers_its_legacy_names() -> None:
    from domain.subject import Subject

    assert stored_names(Subject.Enrolled) == ("Subject.Enrolled.v1",
                                              "domain.subject:Subject.Enrolled")
