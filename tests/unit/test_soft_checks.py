"""Soft checks keep the first value: stored, flagged, queried; protocol departures become
deviations. Hard checks still refuse, storing nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from domain.envelope import Actor
from domain.errors import InvalidInput
from domain.rules.bsa import mosteller_bsa
from domain.studies import nct04397107
from domain.study import StudyDefinition
from domain.subject import Subject
from tests.support import correction, envelope

STUDY = StudyDefinition.from_dict(nct04397107.definition())
ENROLLED = date(2021, 1, 10)
NOW = datetime(2021, 6, 1, 9, 0, tzinfo=UTC)
BASELINE = datetime(2021, 1, 10, 8, 0, tzinfo=UTC)
MONITOR = Actor("u-mon", "Chen Mei", "monitor", "JLU1")


def enrolled() -> Subject:
    subject = Subject.consent(STUDY, "001", "JLU1", date(2010, 5, 1), "F", "SLE", ENROLLED,
                              envelope(), NOW)
    subject.screen(STUDY.eligibility, nct04397107.ELIGIBLE_SCREENING_ANSWERS, envelope(), NOW)
    subject.enroll(STUDY, "IL2", ENROLLED, envelope(), NOW)
    subject.record_vital_signs("VS1", BASELINE, {"HEIGHT": (150.0, "cm"),
                                                 "WEIGHT": (36.0, "kg")}, envelope(), NOW,
                               visit="BASELINE")
    subject.collect_events()
    return subject


def names(subject: Subject) -> list[str]:
    return [type(e).__name__ for e in subject.collect_events()]


@pytest.mark.requirement("R5")
def test_a_lab_outside_the_study_range_is_stored_flagged_and_queried_by_the_system() -> None:
    subject = enrolled()
    subject.record_lab_result("LB1", BASELINE, "C3", 8.0, "g/L", envelope(), NOW, 0.9, 1.8,
                              "BASELINE")
    events = subject.collect_events()
    assert [type(e).__name__ for e in events] == ["LabResultRecorded", "RecordChecked",
                                                  "QueryOpened"]
    record = subject.records["LB1"]
    assert record.fields["value"] == 8.0  # the first value is kept
    assert [(f["check"], f["field"]) for f in record.flags] == [("range", "value")]
    query = next(iter(subject.queries.values()))
    assert query["record_id"] == "LB1" and query["field"] == "value"
    assert query["status"] == "open" and "outside the study's range" in query["text"]
    system = events[2].envelope  # type: ignore[attr-defined]
    assert (system.actor.role, system.source) == ("system", "system")


def test_a_value_inside_the_range_raises_nothing() -> None:
    subject = enrolled()
    subject.record_lab_result("LB1", BASELINE, "C3", 0.8, "g/L", envelope(), NOW, 0.9, 1.8)
    assert names(subject) == ["LabResultRecorded"]
    assert subject.records["LB1"].flags == [] and subject.queries == {}


@pytest.mark.requirement("R5")
def test_the_correction_in_answer_keeps_both_values_and_clears_the_flag() -> None:
    subject = enrolled()
    subject.record_lab_result("LB1", BASELINE, "C3", 8.0, "g/L", envelope(), NOW, 0.9, 1.8)
    (query_id,) = subject.queries
    subject.collect_events()
    subject.correct_in_answer(query_id, "LB1", "value", 0.8, correction("decimal point"), NOW)
    events = subject.collect_events()
    assert [type(e).__name__ for e in events] == ["RecordCorrected", "RecordChecked",
                                                  "QueryAnswered"]
    assert events[0].changes == {"value": {"old": 8.0, "new": 0.8}}  # type: ignore[attr-defined]
    assert events[0].envelope.reason.text == "decimal point"  # type: ignore[attr-defined]
    assert events[1].findings == []  # type: ignore[attr-defined]
    assert subject.records["LB1"].flags == []
    assert subject.queries[query_id]["status"] == "answered"


def test_a_correction_still_out_of_range_keeps_the_flag_without_a_second_query() -> None:
    subject = enrolled()
    subject.record_lab_result("LB1", BASELINE, "C3", 8.0, "g/L", envelope(), NOW)
    subject.correct("LB1", "value", 6.0, correction(), NOW)
    assert len(subject.queries) == 1
    assert "6 g/L" in subject.records["LB1"].flags[0]["message"]


def test_a_vital_sign_outside_the_study_range_is_kept_but_one_outside_physics_refused() -> None:
    subject = enrolled()
    subject.record_vital_signs("VS2", BASELINE, {"TEMP": (40.2, "C")}, envelope(), NOW)
    assert subject.records["VS2"].fields["TEMP"] == 40.2
    assert subject.records["VS2"].flags[0]["field"] == "TEMP"
    with pytest.raises(InvalidInput) as refused:
        subject.record_vital_signs("VS3", BASELINE, {"TEMP": (52.0, "C")}, envelope(), NOW)
    assert refused.value.problems[0].field.startswith("TEMP")
    assert "VS3" not in subject.records


def dose_at(subject: Subject, record_id: str, per_m2: float) -> None:
    bsa = mosteller_bsa(150.0, 36.0).value
    subject.administer_dose(record_id, BASELINE + timedelta(hours=1), "IL2",
                            round(per_m2 * bsa), "IU", "SC", envelope(), NOW)


def test_a_dose_within_ten_percent_of_the_protocol_is_no_deviation() -> None:
    subject = enrolled()
    dose_at(subject, "EX1", 545_000)
    assert names(subject) == ["DoseAdministered"]


def test_a_dose_off_the_protocol_is_kept_queried_and_a_deviation() -> None:
    subject = enrolled()
    dose_at(subject, "EX1", 400_000)
    assert names(subject) == ["DoseAdministered", "RecordChecked", "QueryOpened",
                              "DeviationRecorded"]
    (deviation,) = subject.deviations.values()
    assert deviation["category"] == "dose_deviation" and deviation["severity"] == "minor"
    assert deviation["detected_by"] == "system" and deviation["record_id"] == "EX1"
    assert deviation["occurred_on"] == "2021-01-10"
    dose_at(subject, "EX2", 100_000)
    assert [d["severity"] for d in subject.deviations.values()] == ["minor", "major"]


@pytest.mark.parametrize(("days", "deviates"), [(30 + 14, False), (30 + 15, True),
                                                (30 - 15, True)])
def test_a_visit_outside_its_window_is_a_deviation(days: int, deviates: bool) -> None:
    subject = enrolled()
    subject.record_vital_signs("VS2", BASELINE + timedelta(days=days),
                               {"WEIGHT": (36.5, "kg")}, envelope(), NOW, visit="M1")
    assert subject.records["VS2"].fields == {"WEIGHT": 36.5}
    kinds = [d["category"] for d in subject.deviations.values()]
    assert kinds == (["visit_out_of_window"] if deviates else [])


def sledai(subject: Subject, low_complement: bool, record_id: str = "QS1") -> None:
    subject.record_sledai(record_id, BASELINE + timedelta(days=2),
                          {"rash": True, "low_complement": low_complement}, envelope(), NOW)


def test_sledai_without_low_complement_beside_a_low_c3_is_queried() -> None:
    subject = enrolled()
    subject.record_lab_result("LB1", BASELINE, "C3", 0.6, "g/L", envelope(), NOW, 0.9, 1.8)
    sledai(subject, low_complement=True, record_id="QS0")
    assert subject.records["QS0"].flags == []
    sledai(subject, low_complement=False)
    (finding,) = subject.records["QS1"].flags
    assert finding["field"] == "items.low_complement" and "LB1" in finding["message"]
    assert subject.records["QS1"].derived["total"]["value"] == 2.0  # kept as scored
    subject.correct("QS1", "items.low_complement", True, correction(), NOW)
    assert subject.records["QS1"].flags == []
    assert subject.records["QS1"].derived["total"]["value"] == 4.0


def test_sledai_is_not_queried_against_a_c3_weeks_away() -> None:
    subject = enrolled()
    subject.record_lab_result("LB1", BASELINE + timedelta(days=40), "C3", 0.6, "g/L",
                              envelope(), NOW, 0.9, 1.8)
    sledai(subject, low_complement=False)
    assert subject.records["QS1"].flags == []


def test_a_person_records_a_deviation_with_their_role() -> None:
    subject = enrolled()
    subject.record_deviation("DV-M1", "missed_visit", "Month 1 visit missed (travel)",
                             date(2021, 2, 9), "major", envelope(MONITOR), NOW)
    deviation = subject.deviations["DV-M1"]
    assert deviation["detected_by"] == "monitor" and deviation["recorded_by"] == "Chen Mei"
    assert deviation["record_id"] is None


@pytest.mark.parametrize(("change", "field"), [
    ({"category": "late"}, "category"), ({"severity": "grave"}, "severity"),
    ({"description": " "}, "description"), ({"occurred_on": date(2021, 7, 1)}, "occurred_on"),
    ({"deviation_id": "DV-1"}, "deviation_id"), ({"description": "x" * 3000}, "description"),
])
def test_a_deviation_refused_names_the_field_and_stores_nothing(change: dict[str, Any],
                                                                field: str) -> None:
    subject = enrolled()
    subject.record_deviation("DV-1", "other", "first", ENROLLED, "minor", envelope(), NOW)
    subject.collect_events()
    given = {"deviation_id": "DV-2", "category": "procedure", "description": "urine not sent",
             "occurred_on": ENROLLED, "severity": "minor", **change}
    with pytest.raises(InvalidInput) as refused:
        subject.record_deviation(given["deviation_id"], given["category"],
                                 given["description"], given["occurred_on"],
                                 given["severity"], envelope(), NOW)
    assert refused.value.problems[0].field == field
    assert names(subject) == [] and list(subject.deviations) == ["DV-1"]


def test_the_checks_are_the_protocols_a_subject_loaded_without_one_checks_only_the_rest(
) -> None:
    subject = enrolled()
    subject.protocol = None
    subject.record_lab_result("LB1", BASELINE, "C3", 8.0, "g/L", envelope(), NOW)
    assert subject.records["LB1"].flags == []
    subject.use_protocol(STUDY)
    subject.record_lab_result("LB2", BASELINE, "C3", 8.0, "g/L", envelope(), NOW)
    assert subject.records["LB2"].flags != []


def test_a_reason_is_still_needed_to_correct_a_flagged_value() -> None:
    subject = enrolled()
    subject.record_lab_result("LB1", BASELINE, "C3", 8.0, "g/L", envelope(), NOW)
    with pytest.raises(InvalidInput) as refused:
        subject.correct("LB1", "value", 0.8, envelope(), NOW)
    assert refused.value.problems[0].field == "reason"
    assert subject.records["LB1"].fields["value"] == 8.0


def test_a_late_visit_is_queried_and_a_deviation_once_however_many_records_it_has() -> None:
    subject = enrolled()
    late = BASELINE + timedelta(days=30 + 20)
    subject.record_vital_signs("VS2", late, {"WEIGHT": (36.5, "kg")}, envelope(), NOW,
                               visit="M1")
    subject.record_lab_result("LB1", late, "C3", 0.8, "g/L", envelope(), NOW, visit="M1")
    assert subject.records["LB1"].flags[0]["check"] == "visit_window"
    assert len(subject.queries) == 1 and len(subject.deviations) == 1
