"""The Subject aggregate refuses what a data manager would refuse, and keeps every change."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from domain.envelope import Reason
from domain.errors import EligibilityRefused, InvalidInput, InvalidState, Locked
from domain.studies import nct04397107
from domain.study import StudyDefinition
from domain.subject import Subject
from tests.support import correction, envelope

STUDY = StudyDefinition.from_dict(nct04397107.definition())
NOW = datetime(2021, 2, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def consented(dob: date = date(2010, 5, 1), consent: date = date(2021, 1, 10)) -> Subject:
    return Subject.consent(STUDY, "001", "JLU1", dob, "F", "SLE", consent, envelope(), NOW)


def enrolled(**answers: Any) -> Subject:
    subject = consented()
    subject.screen(STUDY.eligibility, {**nct04397107.ELIGIBLE_SCREENING_ANSWERS, **answers},
                   envelope(), NOW)
    subject.enroll(STUDY, "IL2", date(2021, 1, 10), envelope(), NOW)
    return subject


def with_bsa(subject: Subject, at: datetime = NOW - 10 * DAY) -> Subject:
    subject.record_vital_signs("VS1", at, {"HEIGHT": (150.0, "cm"), "WEIGHT": (36.0, "kg")},
                               envelope(), NOW)
    return subject


@pytest.mark.requirement("R4")
def test_enrollment_stores_consent_screening_and_arm_as_three_events() -> None:
    subject = enrolled()
    events = subject.collect_events()
    assert [type(e).__name__ for e in events] == ["Consented", "Screened", "Enrolled"]
    assert subject.status == "enrolled" and subject.arm == "IL2"
    assert all(e.envelope.actor.user_id == "u-coord" for e in events)  # type: ignore[attr-defined]
    assert events[1].facts["age_years"] == 10  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("dob", "answers", "criterion"),
    [
        (date(2003, 1, 10), {}, "I1"),  # 18 on the day of consent
        (date(2010, 5, 1), {"hbv_negative": False}, "I4"),
        (date(2010, 5, 1), {"alt_u_l": 120.0, "alt_uln_u_l": 40.0}, "E2"),  # 3 x ULN
    ],
)
def test_screening_refuses_an_ineligible_child_naming_the_criterion(
    dob: date, answers: dict[str, Any], criterion: str
) -> None:
    subject = consented(dob=dob)
    subject.collect_events()
    with pytest.raises(EligibilityRefused) as refused:
        subject.screen(STUDY.eligibility, {**nct04397107.ELIGIBLE_SCREENING_ANSWERS, **answers},
                       envelope(), NOW)
    assert [cid for cid, _, _ in refused.value.failures] == [criterion]
    assert subject.collect_events() == []


def test_records_are_refused_before_enrollment() -> None:
    subject = consented()
    with pytest.raises(InvalidState, match="enrolled"):
        with_bsa(subject)


@pytest.mark.parametrize(
    ("observed_at", "message"),
    [
        (NOW + timedelta(minutes=1), "in the future"),
        (datetime(2009, 1, 1, tzinfo=UTC), "date of birth"),
        (datetime(2020, 12, 1, tzinfo=UTC), "before informed consent"),
    ],
)
@pytest.mark.requirement("R7")
def test_valid_time_must_lie_between_consent_and_recording(observed_at: datetime,
                                                          message: str) -> None:
    subject = enrolled()
    with pytest.raises(InvalidInput, match=message):
        subject.record_lab_result("LB1", observed_at, "C3", 0.8, "g/L", envelope(), NOW)


@pytest.mark.requirement("R7")
def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(InvalidInput, match="naive"):
        enrolled().record_lab_result("LB1", datetime(2021, 1, 20), "C3", 0.8, "g/L",
                                     envelope(), NOW)


def test_unknown_units_grades_and_negative_doses_are_refused_naming_the_field() -> None:
    subject = with_bsa(enrolled())
    with pytest.raises(InvalidInput) as bad_unit:
        subject.record_lab_result("LB1", NOW - DAY, "C3", 0.8, "mmol/L", envelope(), NOW)
    assert bad_unit.value.problems[0].field == "unit"
    with pytest.raises(InvalidInput) as bad_dose:
        subject.administer_dose("EX1", NOW - DAY, "IL2", -1.0, "IU", "SC", envelope(), NOW)
    assert bad_dose.value.problems[0].field == "dose"
    details = {"term": "Pyrexia", "category": "fever", "grade": 6, "serious": False,
               "relationship": "possible", "action_taken": "none", "outcome": "recovering"}
    with pytest.raises(InvalidInput) as bad_grade:
        subject.report_adverse_event("AE1", NOW - DAY, details, envelope(), NOW)
    assert bad_grade.value.problems[0].field == "grade"
    assert "LB1" not in subject.records and "EX1" not in subject.records


def test_dose_per_m2_uses_the_bsa_in_force() -> None:
    subject = with_bsa(enrolled())
    subject.administer_dose("EX1", NOW - DAY, "IL2", 500_000.0, "IU", "SC", envelope(), NOW)
    derived = subject.records["EX1"].derived["dose_per_m2"]
    # Mosteller: sqrt(150 x 36 / 3600) = 1.225 m²; 500,000 / 1.225 = 408,163.3 IU/m²
    assert derived["value"] == pytest.approx(408163.3, abs=0.1)
    assert derived["inputs"]["bsa_m2"] == pytest.approx(1.225)


def test_a_dose_without_a_bsa_is_refused() -> None:
    with pytest.raises(InvalidInput, match="body-surface area"):
        enrolled().administer_dose("EX1", NOW - DAY, "IL2", 500_000.0, "IU", "SC",
                                   envelope(), NOW)


@pytest.mark.requirement("R1", "R2", "R3")
def test_a_correction_names_field_old_new_and_reason_and_rederives() -> None:
    subject = with_bsa(enrolled())
    subject.collect_events()
    subject.correct("VS1", "WEIGHT", 40.0, correction(), NOW + DAY)
    (event,) = subject.collect_events()
    assert type(event).__name__ == "RecordCorrected"
    assert event.changes == {"WEIGHT": {"old": 36.0, "new": 40.0}}  # type: ignore[attr-defined]
    assert event.envelope.reason.code == "transcription_error"  # type: ignore[attr-defined]
    # sqrt(150 x 40 / 3600) = 1.291
    assert subject.records["VS1"].derived["bsa"]["value"] == pytest.approx(1.291)


@pytest.mark.requirement("R3")
def test_a_correction_or_removal_without_a_reason_is_refused() -> None:
    subject = with_bsa(enrolled())
    with pytest.raises(InvalidInput, match="reason"):
        subject.correct("VS1", "WEIGHT", 40.0, envelope(), NOW)
    with pytest.raises(InvalidInput, match="reason"):
        subject.remove("VS1", envelope(), NOW)
    with pytest.raises(InvalidInput, match="reason"):
        Reason("transcription_error", "  ")


@pytest.mark.requirement("R1")
def test_a_removal_keeps_the_removed_values_in_the_event() -> None:
    subject = with_bsa(enrolled())
    subject.collect_events()
    subject.remove("VS1", correction("entered for the wrong subject"), NOW)
    (event,) = subject.collect_events()
    assert event.removed_fields == {"HEIGHT": 150.0, "WEIGHT": 36.0}  # type: ignore[attr-defined]
    assert subject.records["VS1"].removed


@pytest.mark.requirement("R11")
def test_a_locked_subject_refuses_edits_until_unlocked() -> None:
    subject = with_bsa(enrolled())
    subject.lock(correction("database lock"), NOW)
    with pytest.raises(Locked):
        subject.record_lab_result("LB1", NOW - DAY, "C3", 0.8, "g/L", envelope(), NOW)
    with pytest.raises(Locked):
        subject.correct("VS1", "WEIGHT", 40.0, correction(), NOW)
    subject.unlock(correction("query on week 12 labs"), NOW)
    subject.collect_events()
    # After an unlock every edit is a post-lock edit: the domain says so, whatever the caller
    # named.
    subject.record_lab_result("LB1", NOW - DAY, "C3", 0.8, "g/L", envelope(), NOW)
    subject.correct("VS1", "WEIGHT", 40.0, correction(), NOW)
    assert "LB1" in subject.records
    assert {e.envelope.edit_point for e in subject.collect_events()  # type: ignore[attr-defined]
            } == {"post_lock"}


def test_therapy_taper_and_stop_are_dated_clinical_facts() -> None:
    subject = enrolled()
    start = datetime(2021, 1, 11, tzinfo=UTC)
    subject.start_therapy("CM1", start, "methylprednisolone", "glucocorticoid", 16.0, "PO",
                          envelope(), NOW)
    # 16 mg methylprednisolone = 20 mg prednisone
    assert subject.records["CM1"].derived["prednisone_equivalent"]["value"] == 20.0
    subject.change_therapy("CM1", start + 10 * DAY, 8.0, envelope(), NOW)
    assert subject.records["CM1"].derived["prednisone_equivalent"]["value"] == 10.0
    subject.stop_therapy("CM1", start + 20 * DAY, envelope(), NOW)
    with pytest.raises(InvalidState):
        subject.change_therapy("CM1", start + 21 * DAY, 4.0, envelope(), NOW)


def test_adverse_event_report_update_and_resolve() -> None:
    subject = enrolled()
    onset = datetime(2021, 1, 20, tzinfo=UTC)
    details = {"term": "Pneumonia", "category": "infection", "grade": 2, "serious": False,
               "relationship": "unlikely", "action_taken": "none", "outcome": "recovering"}
    subject.report_adverse_event("AE1", onset, details, envelope(), NOW)
    subject.update_adverse_event("AE1", onset + DAY, {"grade": 3}, envelope(), NOW)
    subject.update_adverse_event("AE1", onset + DAY, {"serious": True,
                                 "seriousness_criteria": ["hospitalisation"]},
                                 correction("admitted to hospital"), NOW)
    with pytest.raises(InvalidInput, match="seriousness_criteria"):
        subject.update_adverse_event("AE1", onset + DAY, {"seriousness_criteria": []},
                                     correction(), NOW)
    subject.resolve_adverse_event("AE1", onset + 5 * DAY, "recovered", envelope(), NOW)
    fields = subject.records["AE1"].fields
    assert (fields["grade"], fields["serious"], fields["outcome"]) == (3, True, "recovered")
    with pytest.raises(InvalidState, match="already resolved"):
        subject.resolve_adverse_event("AE1", onset + 6 * DAY, "recovered", envelope(), NOW)


def test_sledai_and_essdai_totals_are_derived_and_rederived_on_correction() -> None:
    subject = enrolled()
    subject.record_sledai("QS1", NOW - DAY, {"seizure": True, "arthritis": True, "rash": True,
                                              "fever": True}, envelope(), NOW, visit="BASELINE")
    assert subject.records["QS1"].derived["total"]["value"] == 15  # 8 + 4 + 2 + 1
    subject.correct("QS1", "items.seizure", False, correction(), NOW)
    assert subject.records["QS1"].derived["total"]["value"] == 7
    subject.record_essdai("QS2", NOW - DAY, {"renal": 3, "muscular": 2}, envelope(), NOW)
    # 5 x 3 + 6 x 2 = 27 -> high
    assert subject.records["QS2"].derived["total"]["value"] == 27
    assert subject.records["QS2"].derived["activity"] == "high"


def test_the_dose_in_force_follows_clinical_time_and_corrections_fix_it_where_entered() -> None:
    subject = enrolled()
    start = datetime(2021, 1, 11, tzinfo=UTC)
    subject.start_therapy("CM1", start, "prednisone", "glucocorticoid", 40.0, "PO",
                          envelope(), NOW)
    subject.change_therapy("CM1", start + 10 * DAY, 30.0, envelope(), NOW)
    subject.change_therapy("CM1", start + 20 * DAY, 20.0, envelope(), NOW)
    record = subject.records["CM1"]
    assert record.in_force("dose_mg_per_day", start - DAY) is None
    assert record.in_force("dose_mg_per_day", start + 5 * DAY) == 40.0
    assert record.in_force("dose_mg_per_day", start + 15 * DAY) == 30.0
    assert record.in_force("dose_mg_per_day", start + 25 * DAY) == 20.0
    # The latest step was mistyped: 25 mg, not 20. The correction fixes that step only.
    subject.correct("CM1", "dose_mg_per_day", 25.0, correction(), NOW)
    assert record.in_force("dose_mg_per_day", start + 25 * DAY) == 20.0  # a snapshot: unchanged
    record = subject.records["CM1"]
    assert record.in_force("dose_mg_per_day", start + 15 * DAY) == 30.0
    assert record.in_force("dose_mg_per_day", start + 25 * DAY) == 25.0
    assert record.revisions == 3
