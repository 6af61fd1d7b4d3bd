"""Derived values follow their inputs; therapy and dose records carry their frequency."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from domain.errors import InvalidInput
from domain.records import Context, therapy_daily_dose, validate
from domain.studies import nct04397107
from domain.study import StudyDefinition
from domain.subject import Subject
from tests.support import correction, envelope

STUDY = StudyDefinition.from_dict(nct04397107.definition())
NOW = datetime(2021, 3, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
START = datetime(2021, 1, 11, 8, 0, tzinfo=UTC)


def mosteller(height_cm: float, weight_kg: float) -> float:
    """BSA by hand: sqrt(height cm x weight kg / 3600), to 3 decimals as the rule keeps it."""
    return round(math.sqrt(height_cm * weight_kg / 3600), 3)


def enrolled() -> Subject:
    subject = Subject.consent(STUDY, "001", "JLU1", date(2010, 5, 1), "F", "SLE",
                              date(2021, 1, 10), envelope(), NOW)
    subject.screen(STUDY.eligibility, nct04397107.ELIGIBLE_SCREENING_ANSWERS, envelope(), NOW)
    subject.enroll(STUDY, "IL2", date(2021, 1, 10), envelope(), NOW)
    return subject


def vitals(subject: Subject, record_id: str, when: datetime, height: float,
           weight: float) -> None:
    subject.record_vital_signs(record_id, when, {"HEIGHT": (height, "cm"),
                                                 "WEIGHT": (weight, "kg")}, envelope(), NOW)


def dose(subject: Subject, record_id: str, when: datetime, iu: float = 500_000.0) -> None:
    subject.administer_dose(record_id, when, "IL2", iu, "IU", "SC", envelope(), NOW,
                            frequency="QD")


def per_m2(subject: Subject, record_id: str) -> Any:
    return subject.records[record_id].derived.get("dose_per_m2")


def replayed(events: list[Any]) -> Subject:
    subject: Any = None
    for event in events:
        subject = event.mutate(subject)
    assert isinstance(subject, Subject)
    return subject


@pytest.mark.requirement("R18")
def test_a_height_correction_rederives_the_bsa_and_every_later_dose_per_m2() -> None:
    subject = enrolled()
    vitals(subject, "VS1", START, 142.0, 36.5)
    dose(subject, "EX1", START + DAY)
    dose(subject, "EX2", START + 2 * DAY)
    vitals(subject, "VS2", START + 30 * DAY, 143.0, 37.0)
    dose(subject, "EX3", START + 31 * DAY)
    entered = subject.collect_events()
    assert per_m2(subject, "EX1")["value"] == round(500_000 / mosteller(142.0, 36.5), 1)

    # The height was 124 cm, mistyped as 142: the BSA and the doses it stood under follow.
    subject.correct("VS1", "HEIGHT", 124.0, correction(), NOW)
    events = subject.collect_events()

    bsa = mosteller(124.0, 36.5)  # sqrt(124 x 36.5 / 3600) = 1.121 m²
    assert bsa == 1.121
    assert subject.records["VS1"].derived["bsa"]["value"] == bsa
    for record_id in ("EX1", "EX2"):
        assert per_m2(subject, record_id)["value"] == round(500_000 / bsa, 1) == 446030.3
        assert per_m2(subject, record_id)["inputs"]["bsa_m2"] == bsa
    # EX3 stands under VS2's BSA, which did not move: nothing recomputed for it.
    assert per_m2(subject, "EX3")["value"] == round(500_000 / mosteller(143.0, 37.0), 1)
    assert [type(e).__name__ for e in events] == [
        "RecordCorrected", "DerivedValueRecomputed", "DerivedValueRecomputed"]
    recomputed = events[1]
    assert recomputed.record_id == "EX1"  # type: ignore[attr-defined]
    assert recomputed.previous["dose_per_m2"]["value"] == round(  # type: ignore[attr-defined]
        500_000 / mosteller(142.0, 36.5), 1)
    assert recomputed.trigger == {  # type: ignore[attr-defined]
        "event": "Subject.RecordCorrected.v1", "version": events[0].originator_version,
        "record_id": "VS1"}
    assert recomputed.envelope.reason == events[0].envelope.reason  # type: ignore[attr-defined]
    # The log alone gives the same casebook.
    again = replayed(entered + events)
    assert {r: again.records[r].derived for r in again.records} == {
        r: subject.records[r].derived for r in subject.records}


def test_removing_the_vitals_in_force_moves_each_dose_to_the_bsa_then_in_force() -> None:
    subject = enrolled()
    vitals(subject, "VS1", START, 150.0, 36.0)
    vitals(subject, "VS2", START + 5 * DAY, 150.0, 40.0)
    dose(subject, "EX1", START + DAY)
    dose(subject, "EX2", START + 6 * DAY)
    subject.collect_events()
    subject.remove("VS2", correction("entered for the wrong child"), NOW)
    assert per_m2(subject, "EX2")["inputs"]["bsa_m2"] == mosteller(150.0, 36.0)
    subject.remove("VS1", correction("entered for the wrong child"), NOW)
    # No height and weight in force any more: no dose per m² rather than a stale one.
    assert per_m2(subject, "EX1") is None and per_m2(subject, "EX2") is None
    names = [type(e).__name__ for e in subject.collect_events()]
    assert names == ["RecordRemoved", "DerivedValueRecomputed",
                     "RecordRemoved", "DerivedValueRecomputed", "DerivedValueRecomputed"]


def test_vitals_entered_late_but_measured_before_a_dose_rederive_it() -> None:
    subject = enrolled()
    vitals(subject, "VS1", START, 150.0, 36.0)
    dose(subject, "EX1", START + 10 * DAY)
    subject.start_therapy("CM1", START + 10 * DAY, "methotrexate", "immunosuppressant", None,
                          "PO", envelope(), NOW, dose_mg=15.0, frequency="QW")
    vitals(subject, "VS2", START + 9 * DAY, 152.0, 38.0)  # measured before, entered after
    bsa = mosteller(152.0, 38.0)
    assert per_m2(subject, "EX1")["inputs"]["bsa_m2"] == bsa
    assert per_m2(subject, "CM1") == {"value": round(15.0 / bsa, 1), "unit": "mg/m2",
                                      "method": "dose.per_m2/1",
                                      "inputs": {"dose": 15.0, "bsa_m2": bsa, "unit": "mg"}}


def test_a_change_that_moves_no_bsa_recomputes_nothing() -> None:
    subject = enrolled()
    vitals(subject, "VS1", START, 150.0, 36.0)
    dose(subject, "EX1", START + DAY)
    subject.record_vital_signs("VS2", START + 2 * DAY, {"TEMP": (37.2, "C")}, envelope(), NOW)
    subject.correct("VS2", "TEMP", 37.4, correction(), NOW)
    subject.correct("EX1", "route", "IV", correction(), NOW)
    assert "DerivedValueRecomputed" not in [type(e).__name__ for e in subject.collect_events()]


def test_a_score_item_correction_rederives_the_total_in_the_same_event() -> None:
    subject = enrolled()
    subject.record_sledai("QS1", START, {"arthritis": True, "rash": True}, envelope(), NOW)
    subject.collect_events()
    subject.correct("QS1", "items.rash", False, correction(), NOW)
    (event,) = subject.collect_events()
    assert event.derived["total"]["value"] == 4.0  # type: ignore[attr-defined]
    assert subject.records["QS1"].derived["activity"] == "mild"


def test_methotrexate_15_mg_weekly_is_recorded_as_weekly() -> None:
    subject = enrolled()
    subject.start_therapy("CM1", START, "methotrexate", "immunosuppressant", None, "PO",
                          envelope(), NOW, dose_mg=15.0, frequency="QW")
    record = subject.records["CM1"]
    assert (record.fields["dose_mg"], record.fields["frequency"]) == (15.0, "QW")
    assert "dose_mg_per_day" not in record.fields
    # 15 mg once a week is 2.14 mg a day on average, not 15.
    assert record.derived["daily_dose"]["value"] == 2.14
    assert therapy_daily_dose(record.fields) == 2.14
    subject.change_therapy("CM1", START + 28 * DAY, None, envelope(), NOW, dose_mg=20.0)
    assert subject.records["CM1"].derived["daily_dose"]["value"] == 2.86
    with pytest.raises(InvalidInput) as wrong_terms:
        subject.change_therapy("CM1", START + 29 * DAY, 3.0, envelope(), NOW)
    assert wrong_terms.value.problems[0].field == "dose_mg"


@pytest.mark.parametrize(("frequency", "dose_mg", "per_day"),
                         [("QD", 10.0, 10.0), ("BID", 10.0, 20.0), ("QW", 14.0, 2.0)])
def test_the_prednisone_equivalent_is_per_day_at_the_frequency(
        frequency: str, dose_mg: float, per_day: float) -> None:
    subject = enrolled()
    subject.start_therapy("CM1", START, "prednisone", "glucocorticoid", None, "PO",
                          envelope(), NOW, dose_mg=dose_mg, frequency=frequency)
    assert subject.records["CM1"].derived["prednisone_equivalent"]["value"] == per_day


def test_a_single_pulse_has_a_prednisone_equivalent_per_dose_not_per_day() -> None:
    subject = enrolled()
    subject.start_therapy("CM1", START, "methylprednisolone", "glucocorticoid", None, "IV",
                          envelope(), NOW, dose_mg=500.0, frequency="ONCE")
    derived = subject.records["CM1"].derived
    assert "prednisone_equivalent" not in derived and "daily_dose" not in derived
    assert derived["prednisone_equivalent_dose"]["value"] == 625.0
    assert derived["prednisone_equivalent_dose"]["unit"] == "mg"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"dose_mg": 15.0, "frequency": "WEEKLY"}, "frequency"),
    ({"dose_mg": 15.0}, "frequency"),
    ({"dose_mg": 15.0, "frequency": "QW", "dose_mg_per_day": 15.0}, "dose_mg_per_day"),
    ({"dose_mg_per_day": 15.0, "frequency": "QW"}, "frequency"),
    ({}, "dose_mg"),
])
def test_a_dose_and_frequency_that_do_not_fit_are_refused_naming_the_field(
        kwargs: dict[str, Any], field: str) -> None:
    subject = enrolled()
    per_day = kwargs.pop("dose_mg_per_day", None)
    with pytest.raises(InvalidInput) as refused:
        subject.start_therapy("CM1", START, "methotrexate", "immunosuppressant", per_day,
                              "PO", envelope(), NOW, **kwargs)
    assert refused.value.problems[0].field == field
    assert "CM1" not in subject.records


def test_a_dose_keeps_its_frequency_and_refuses_an_unknown_one() -> None:
    subject = enrolled()
    vitals(subject, "VS1", START, 150.0, 36.0)
    subject.administer_dose("EX1", START + DAY, "IL2", 600_000.0, "IU", "SC", envelope(), NOW,
                            frequency="Q2W")
    assert subject.records["EX1"].fields["frequency"] == "Q2W"
    with pytest.raises(InvalidInput) as refused:
        subject.administer_dose("EX2", START + DAY, "IL2", 600_000.0, "IU", "SC", envelope(),
                                NOW, frequency="every other week")
    assert refused.value.problems[0].field == "frequency"


def test_records_entered_before_frequencies_still_validate_without_one() -> None:
    """Fields as stored before frequencies existed: no frequency is invented for them."""
    therapy = {"drug": "prednisone", "category": "glucocorticoid", "dose_mg_per_day": 20.0,
               "route": "PO", "stopped_at": None}
    clean, derived = validate("therapies", therapy, Context(None, entry=False))
    assert "frequency" not in clean and derived["prednisone_equivalent"]["value"] == 20.0
    assert therapy_daily_dose(therapy) == 20.0
    ex = {"drug": "IL2", "dose": 500_000.0, "unit": "IU", "route": "SC"}
    clean, derived = validate("doses", ex, Context(1.225))
    assert "frequency" not in clean and derived["dose_per_m2"]["value"] == 408163.3
