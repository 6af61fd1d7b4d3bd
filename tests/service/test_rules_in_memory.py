"""The trial's rules, held by the application service itself: every test runs a real
StudyApplication on eventsourcing's in-memory recorder (no PostgreSQL), so the whole rule
suite takes seconds. Each test names the rule it holds the service to; the HTTP tests show
the routes get the same answers from it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.errors import EligibilityRefused, InvalidInput, Locked
from domain.service import StudyApplication
from domain.subject import Subject
from tests.support import DATA_MANAGER, T0, correction, enroll, envelope, register, simulated_clock

DAY = timedelta(days=1)
AE = {"term": "Injection site erythema", "category": "injection_site_reaction", "grade": 1,
      "serious": False, "relationship": "probable", "action_taken": "none",
      "outcome": "recovering"}


@pytest.fixture
def app() -> StudyApplication:
    """NCT04397107 with child 001 enrolled, in memory, on a clock the test moves."""
    clock = simulated_clock()
    application = StudyApplication("NCT04397107", clock=clock)
    assert type(application.recorder).__module__.startswith("eventsourcing.popo")
    register(application)
    enroll(application, "001")
    clock.set(T0 + 30 * DAY)
    return application


def stored(app: StudyApplication) -> int:
    return int(app.recorder.max_notification_id() or 0)


def write(app: StudyApplication, command: Any) -> Subject:
    return app.on_subject("001", command)


def test_an_ineligible_child_is_refused_and_nothing_is_stored(app: StudyApplication) -> None:
    before = stored(app)
    with pytest.raises(EligibilityRefused):
        enroll(app, "002", hbv_negative=False)
    assert stored(app) == before and not app.is_subject("002")


def test_a_locked_study_refuses_enrolment_and_every_casebook_write(
        app: StudyApplication) -> None:
    app.on_study(lambda study, t: study.lock(envelope(DATA_MANAGER, correction().reason), t))
    before = stored(app)
    with pytest.raises(Locked):
        enroll(app, "002")
    with pytest.raises(Locked):
        write(app, lambda s, t: s.record_lab_result("LB1", T0 + DAY, "C3", 0.8, "g/L",
                                                    envelope(), t))
    assert stored(app) == before


@pytest.mark.requirement("R11")
def test_after_a_lock_every_edit_is_a_post_lock_edit(app: StudyApplication) -> None:
    lock = envelope(DATA_MANAGER, correction("database lock").reason)
    write(app, lambda s, t: s.lock(lock, t))
    with pytest.raises(Locked):
        write(app, lambda s, t: s.record_lab_result("LB1", T0 + DAY, "C3", 0.8, "g/L",
                                                    envelope(), t))
    write(app, lambda s, t: s.unlock(lock, t))
    write(app, lambda s, t: s.record_lab_result("LB1", T0 + DAY, "C3", 0.8, "g/L",
                                                envelope(), t))
    *_, entered = app.events.get(app.subject("001").id)
    assert entered.envelope.edit_point == "post_lock"  # type: ignore[attr-defined]


def test_a_change_of_causality_needs_a_reason_and_keeps_old_and_new(
        app: StudyApplication) -> None:
    write(app, lambda s, t: s.report_adverse_event("AE1", T0 + DAY, AE, envelope(), t))
    before = stored(app)
    with pytest.raises(InvalidInput) as refused:
        write(app, lambda s, t: s.update_adverse_event(
            "AE1", T0 + 2 * DAY, {"relationship": "not_related"}, envelope(), t))
    assert [p.field for p in refused.value.problems] == ["reason"]
    assert stored(app) == before
    write(app, lambda s, t: s.update_adverse_event(
        "AE1", T0 + 2 * DAY, {"relationship": "not_related"},
        correction("causality re-assessed by the investigator"), t))
    assert app.subject("001").records["AE1"].fields["relationship"] == "not_related"


def test_a_correction_is_held_to_the_entry_limits(app: StudyApplication) -> None:
    write(app, lambda s, t: s.report_adverse_event("AE1", T0 + DAY, AE, envelope(), t))
    before = stored(app)
    with pytest.raises(InvalidInput) as refused:
        write(app, lambda s, t: s.correct("AE1", "term", "x" * 10_000, correction(), t))
    assert [p.field for p in refused.value.problems] == ["term"]
    assert stored(app) == before


def test_a_suspicious_value_is_kept_flagged_and_queried(app: StudyApplication) -> None:
    write(app, lambda s, t: s.record_lab_result("LB1", T0 + DAY, "C3", 4.5, "g/L",
                                                envelope(), t))
    subject = app.subject("001")
    assert subject.records["LB1"].fields["value"] == 4.5  # the first value is kept
    assert subject.records["LB1"].flags
    (query,) = [q for q in subject.queries.values() if q["record_id"] == "LB1"]
    assert query["status"] == "open" and query["field"] == "value"


def test_a_height_correction_rederives_the_dose_per_m2(app: StudyApplication) -> None:
    write(app, lambda s, t: s.record_vital_signs(
        "VS1", T0 + DAY, {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.5, "kg")}, envelope(), t))
    write(app, lambda s, t: s.administer_dose("EX1", T0 + 2 * DAY, "IL2", 500_000.0, "IU",
                                              "SC", envelope(), t, frequency="QD"))
    write(app, lambda s, t: s.correct("VS1", "HEIGHT", 124.0, correction(), t))
    bsa = round(math.sqrt(124.0 * 36.5 / 3600), 3)  # Mosteller, by hand: 1.121 m²
    derived = app.subject("001").records["EX1"].derived["dose_per_m2"]
    assert derived["value"] == round(500_000 / bsa, 1)
    assert derived["inputs"]["bsa_m2"] == bsa


@pytest.mark.requirement("R7")
def test_the_service_clock_dates_what_is_recorded(app: StudyApplication) -> None:
    subject = write(app, lambda s, t: s.record_lab_result("LB1", T0 + DAY, "C3", 0.8, "g/L",
                                                          envelope(), t))
    assert subject.modified_on == T0 + 30 * DAY != datetime.now(UTC)
