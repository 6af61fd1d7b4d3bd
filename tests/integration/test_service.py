"""The application service on PostgreSQL: all-or-nothing commands, time travel, conflicts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest
from eventsourcing.postgres import PostgresDatastore

from application.runtime import Runtime
from domain.errors import AlreadyExists, Conflict, EligibilityRefused, InvalidInput
from domain.service import StudyApplication
from infra.catalog import list_studies
from infra.postgres import connect
from infra.settings import Settings
from tests.support import T0, correction, enroll, envelope, register, simulated_clock

STUDY = "NCT04397107"


@pytest.fixture
def app(runtime: Runtime) -> StudyApplication:
    application = runtime.study(STUDY, clock=simulated_clock())
    register(application)
    return application


def event_count(app: StudyApplication) -> int:
    return app.recorder.max_notification_id() or 0


@pytest.mark.parametrize(
    ("dob", "answers", "criterion"),
    [
        (date(2003, 1, 10), {}, "I1"),
        (date(2010, 5, 1), {"hbv_negative": False}, "I4"),
        (date(2010, 5, 1), {"alt_u_l": 120.0, "alt_uln_u_l": 40.0}, "E2"),
    ],
)
def test_a_refused_enrollment_stores_nothing(app: StudyApplication, dob: date,
                                             answers: dict[str, object], criterion: str) -> None:
    before = event_count(app)
    with pytest.raises(EligibilityRefused) as refused:
        enroll(app, "001", dob=dob, **answers)
    assert criterion in str(refused.value)
    assert event_count(app) == before


def test_enrolling_twice_is_refused(app: StudyApplication) -> None:
    enroll(app, "001")
    with pytest.raises(AlreadyExists):
        enroll(app, "001")


def test_the_study_registers_once(app: StudyApplication) -> None:
    with pytest.raises(AlreadyExists):
        register(app)


@pytest.mark.requirement("R13")
def test_the_casebook_as_of_a_past_time_shows_the_old_value(app: StudyApplication) -> None:
    clock = app.clock
    assert hasattr(clock, "set")
    enroll(app, "001")
    clock.set(T0 + timedelta(days=3))
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB1", T0 + timedelta(days=2), "C3", 0.8, "g/L", envelope(), t))
    clock.set(T0 + timedelta(days=30))
    app.on_subject("001", lambda s, t: s.correct("LB1", "value", 0.6, correction(), t))
    assert app.subject("001").records["LB1"].fields["value"] == 0.6
    before = app.subject_as_of("001", T0 + timedelta(days=10))
    assert before.records["LB1"].fields["value"] == 0.8
    assert "LB1" not in app.subject_as_of("001", T0 + timedelta(days=1)).records
    with pytest.raises(InvalidInput, match="naive"):
        app.subject_as_of("001", datetime(2021, 2, 1))


def test_a_stale_expected_version_is_a_conflict_and_stores_nothing(app: StudyApplication) -> None:
    enroll(app, "001")
    version = app.subject("001").version
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB1", T0, "C3", 0.8, "g/L", envelope(), t), expected_version=version)
    before = event_count(app)
    with pytest.raises(Conflict):
        app.on_subject("001", lambda s, t: s.record_lab_result(
            "LB2", T0, "C4", 0.2, "g/L", envelope(), t), expected_version=version)
    assert event_count(app) == before


@pytest.mark.requirement("R7")
def test_recorded_time_comes_from_the_service_clock(app: StudyApplication) -> None:
    clock = app.clock
    assert hasattr(clock, "set")
    clock.set(datetime(2021, 3, 15, 8, 30, tzinfo=UTC))
    enroll(app, "001")
    events = list(app.events.get(app.subject("001").id))
    assert {e.timestamp for e in events} == {datetime(2021, 3, 15, 8, 30, tzinfo=UTC)}


def test_db_functions_are_off(app: StudyApplication) -> None:
    datastore = app.factory.datastore  # type: ignore[attr-defined]
    assert isinstance(datastore, PostgresDatastore)
    assert datastore.enable_db_functions is False
    assert datastore.schema == "study_nct04397107"


def test_processes_opening_a_new_deployment_at_once_all_succeed(
        settings: Settings, db_url: str) -> None:
    """Server workers start together: each creates the catalogue and the study's tables if
    missing, and none may fail because another is doing the same."""
    barrier = threading.Barrier(4)

    def open_study(_: int) -> str:
        barrier.wait()
        runtime = Runtime(settings, db_url)
        try:
            runtime.directory()
            runtime.pool()  # the API's own tables (sessions, idempotency keys)
            return runtime.study("S-RACE").study_id
        finally:
            runtime.close()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(open_study, range(4))) == ["S-RACE"] * 4
    with connect(db_url) as conn:
        assert [s for s, _ in list_studies(conn)] == ["S-RACE"]
