"""CTCAE grades and AE vocabularies; lab and vital-sign units."""

from __future__ import annotations

import pytest

from domain.rules.ctcae import (
    AE_CATEGORIES,
    check_grade_outcome,
    require_choice,
    validate_grade,
)
from domain.rules.derivation import RuleError
from domain.rules.units import check_lab_unit, check_vital_sign


@pytest.mark.parametrize("grade", [1, 2, 3, 4, 5])
def test_ctcae_grades_1_to_5_are_accepted(grade: int) -> None:
    assert validate_grade(grade) == grade


@pytest.mark.parametrize("grade", [0, 6, -1, True, 2.5, "3"])
def test_other_grades_are_refused(grade: object) -> None:
    with pytest.raises(RuleError) as refused:
        validate_grade(grade)  # type: ignore[arg-type]
    assert refused.value.field == "grade"


def test_grade_5_goes_with_a_fatal_outcome() -> None:
    check_grade_outcome(5, "fatal")
    check_grade_outcome(2, "recovered")
    with pytest.raises(RuleError):
        check_grade_outcome(5, "recovered")
    with pytest.raises(RuleError):
        check_grade_outcome(3, "fatal")


def test_choices_name_the_field_and_list_the_options() -> None:
    assert require_choice("category", "fever", AE_CATEGORIES) == "fever"
    with pytest.raises(RuleError) as refused:
        require_choice("category", "headache", AE_CATEGORIES)
    assert refused.value.field == "category"
    assert "injection_site_reaction" in refused.value.message


def test_lab_units() -> None:
    assert check_lab_unit("C3", "g/L").name == "Complement C3"
    assert check_lab_unit("C3", "mg/dL").code == "C3"
    with pytest.raises(RuleError) as unit:
        check_lab_unit("C3", "mmol/L")
    assert unit.value.field == "unit"
    with pytest.raises(RuleError) as code:
        check_lab_unit("XYZ", "g/L")
    assert code.value.field == "code"


@pytest.mark.parametrize(
    ("code", "value", "unit", "field"),
    [("HEIGHT", 150.0, "in", "unit"), ("WEIGHT", 900.0, "kg", "value"),
     ("TEMP", float("inf"), "C", "value"), ("BMI", 20.0, "kg/m2", "code")],
)
def test_vital_signs_refuse_unknown_units_and_implausible_values(
    code: str, value: float, unit: str, field: str
) -> None:
    with pytest.raises(RuleError) as refused:
        check_vital_sign(code, value, unit)
    assert refused.value.field == field
