"""How the casebook prints values and names fields (projections.casebook_doc.model)."""

from __future__ import annotations

import pytest

from domain.rules.units import VITAL_SIGNS
from projections.casebook_doc.model import ABSENT, field_label, local, shown, text


@pytest.mark.parametrize(("value", "printed"), [
    (750000.0, "750000"), (0.8, "0.8"), (15, "15"), (True, "yes"), ("QW", "QW"),
    (None, ""), ({"b": 1, "a": 2.0}, "a: 2; b: 1"), (["CARDIAC", "RENAL"], "CARDIAC, RENAL"),
    ({"dose_mg": 5.0, "frequency": "QD"}, "dose mg: 5; frequency: QD"),
    # A checklist reads as what it found: every item not named is absent.
    ({"fever": True, "rash": False, "low_complement": True},
     "present (2 of 3): fever, low complement"),
    ({"fever": False, "rash": False}, "none of 2 present")])
def test_values_print_as_people_write_them(value: object, printed: str) -> None:
    assert text(value) == printed


def test_an_absent_value_prints_as_absent() -> None:
    assert (shown(None), shown(""), shown(0.0)) == (ABSENT, ABSENT, "0")


def test_fields_are_labelled_from_the_catalogues_not_by_their_ids() -> None:
    height = VITAL_SIGNS["HEIGHT"]
    assert field_label("vitals", "HEIGHT") == f"{height.name} ({height.unit})"
    assert field_label("labs", "value") == "Result"
    assert field_label("therapies", "dose_mg_per_day") == "Daily dose (mg)"
    # An imported study's records keep their SDTM variable names.
    assert field_label("LB", "LBORRES") == "LBORRES"
    assert field_label("labs", None) == ""


def test_a_clinical_time_shows_utc_and_the_local_time_it_was_entered_in() -> None:
    entered = "2021-02-28T23:00:00+00:00"
    assert local(entered, "+08:00") == "2021-02-28 23:00:00 UTC\n2021-03-01 07:00:00 +08:00"
    # An entry from before offsets were kept: UTC only; a date stays a date.
    assert local(entered, None) == local(entered, "+00:00") == "2021-02-28 23:00:00 UTC"
    assert local("2021-03-01", "+08:00") == "2021-03-01"


def test_derived_values_and_their_changes_are_labelled() -> None:
    assert field_label("therapies", "derived.daily_dose") == "Daily dose"
    assert field_label("labs", "soft_check") == "Soft check"
    assert field_label("", "enrolled_on") == "Enrolled on"
