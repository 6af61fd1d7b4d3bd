"""Commands run on cached aggregates without reading the store first; what another process
wrote meanwhile is caught at the commit (or before a refusal) and the command runs again.

Two runtimes on one database stand for two server processes, each with its own cache.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from application.runtime import Runtime
from domain.errors import Conflict, InvalidInput, Locked, StaleVersion
from domain.service import StudyApplication
from domain.study import study_uuid
from domain.subject import subject_uuid
from tests.support import DATA_MANAGER, T0, correction, enroll, envelope, register

STUDY = "NCT04397107"


@pytest.fixture
def two(runtime: Runtime, other_runtime: Runtime
        ) -> Iterator[tuple[StudyApplication, StudyApplication]]:
    """The study with child 001 (with a lab LB0), as seen by two processes that have both
    cached the subject and the study."""
    first = runtime.study(STUDY)
    register(first)
    enroll(first, "001")
    lab(first, "LB0")
    second = other_runtime.study(STUDY)
    for app in (first, second):
        app.subject("001")
        app.study()
    yield first, second


def lab(app: StudyApplication, record: str, **kwargs: object) -> int:
    subject = app.on_subject("001", lambda s, t: s.record_lab_result(
        record, T0 + timedelta(hours=1), "C3", 0.8, "g/L", envelope(), t), **kwargs)
    return subject.version


def stored_versions(app: StudyApplication) -> list[int]:
    return [e.originator_version
            for e in app.recorder.select_events(subject_uuid(STUDY, "001"))]


def test_a_write_on_a_stale_cache_is_stored_after_the_others_write(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, second = two
    before = first.subject("001").version
    assert lab(first, "LB1") == before + 1
    # The second process still holds the subject at `before`: its first try clashes on the
    # version, nothing of it is stored, and it runs again on the latest state.
    assert lab(second, "LB2") == before + 2
    assert stored_versions(first) == list(range(1, before + 3))
    for app in (first, second):
        assert {"LB0", "LB1", "LB2"} <= set(app.subject("001").records)
    # Its cache now holds what it committed: the next write needs no second try.
    assert lab(second, "LB3") == before + 3


def test_a_record_written_elsewhere_can_be_corrected_here(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, second = two
    lab(first, "LB1")
    # Not in the second process's cached casebook: looked up again before refusing.
    subject = second.on_subject("001", lambda s, t: s.correct(
        "LB1", "value", 0.6, correction(), t))
    assert subject.records["LB1"].fields["value"] == 0.6
    assert first.subject("001").records["LB1"].fields["value"] == 0.6


def test_a_refusal_on_the_latest_state_stands_and_stores_nothing(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, second = two
    lab(first, "LB1")
    before = stored_versions(first)
    with pytest.raises(InvalidInput, match="already exists"):
        lab(second, "LB1")
    with pytest.raises(InvalidInput, match="already exists"):
        lab(first, "LB1")
    assert stored_versions(first) == before


def test_a_study_locked_elsewhere_refuses_the_write(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, second = two
    first.on_study(lambda study, t: study.lock(
        envelope(DATA_MANAGER, correction().reason), t))
    before = stored_versions(first)
    # The second process's cached study is unlocked, and the subject did not change: the
    # study's version, checked under the table lock at the commit, catches it.
    with pytest.raises(Locked):
        lab(second, "LB1")
    assert stored_versions(first) == before


def test_a_locked_study_refuses_an_enrolment_as_every_other_casebook_write(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, second = two
    first.on_study(lambda study, t: study.lock(
        envelope(DATA_MANAGER, correction().reason), t))
    before = stored_versions(first)
    for app in (first, second):  # the locking process, and one whose cache is older
        with pytest.raises(Locked):
            enroll(app, "002")
    assert stored_versions(first) == before


def test_a_subject_locked_elsewhere_refuses_the_write(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, second = two
    first.on_subject("001", lambda s, t: s.lock(envelope(DATA_MANAGER, correction().reason),
                                                t))
    before = stored_versions(first)
    with pytest.raises(Locked):
        lab(second, "LB1")
    assert stored_versions(first) == before


def test_if_match_compares_with_the_latest_version(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, second = two
    read = lab(first, "LB1")  # a client read this version from the first process
    # ... and writes through the second, whose cache is one version behind.
    assert lab(second, "LB2", expected_version=read) == read + 1
    with pytest.raises(StaleVersion):
        lab(first, "LB3", expected_version=read)


def test_concurrent_writers_in_two_processes_lose_nothing_and_store_nothing_twice(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, second = two
    for app in two:
        app.commit_in_groups()
    start = threading.Barrier(16)
    outcomes: dict[str, str] = {}

    def write(n: int) -> None:
        app = first if n % 2 else second
        start.wait()
        try:
            lab(app, f"LB-{n}")
            outcomes[f"LB-{n}"] = "committed"
        except Conflict:
            outcomes[f"LB-{n}"] = "refused"

    threads = [threading.Thread(target=write, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 16
    committed = {r for r, o in outcomes.items() if o == "committed"}
    stored = [r for r in first.subject("001").records if r.startswith("LB-")]
    assert sorted(stored) == sorted(committed)  # every acknowledged write, once
    versions = stored_versions(first)
    assert versions == list(range(1, len(versions) + 1))


def test_the_recorder_refuses_a_batch_relying_on_a_version_that_moved(
        two: tuple[StudyApplication, StudyApplication]) -> None:
    first, _ = two
    study = study_uuid(STUDY)
    subject = subject_uuid(STUDY, "001")
    version = first.study().version
    at = stored_versions(first)[-1] + 1

    def event(n: int, originator: UUID = subject) -> StoredEvent:
        return StoredEvent(originator, n, "tests:Nothing", b"{}")

    with pytest.raises(IntegrityError, match="moved on"):
        first.recorder.insert_events([event(at)], expected_versions=[(study, version - 1)])
    with pytest.raises(IntegrityError, match="relies on"):
        first.recorder.insert_events([event(at), event(version + 1, study)],
                                     expected_versions=[(study, version)])
    assert stored_versions(first)[-1] == at - 1
    assert first.study().version == version
