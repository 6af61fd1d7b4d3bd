"""Worked examples for the derived values: BSA, dose per m², prednisone equivalents."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.rules.bsa import mosteller_bsa
from domain.rules.derivation import Derived, RuleError
from domain.rules.dosing import dose_per_m2
from domain.rules.steroids import is_glucocorticoid, prednisone_equivalent


@pytest.mark.parametrize(
    ("height", "weight", "bsa"),
    [
        (150.0, 36.0, 1.225),  # sqrt(150 x 36 / 3600) = sqrt(1.5) = 1.2247
        (120.0, 30.0, 1.0),  # sqrt(1.0) = 1
        (180.0, 80.0, 2.0),  # sqrt(4.0) = 2
        (100.0, 16.0, 0.667),  # sqrt(0.4444) = 0.6667
    ],
)
def test_mosteller_bsa(height: float, weight: float, bsa: float) -> None:
    derived = mosteller_bsa(height, weight)
    assert derived.value == bsa
    assert derived.unit == "m2"
    assert derived.method == "bsa.mosteller/1"
    assert derived.inputs == {"height_cm": height, "weight_kg": weight}


@pytest.mark.parametrize(
    ("height", "weight", "field"),
    [(0.0, 30.0, "height_cm"), (300.0, 30.0, "height_cm"), (150.0, -1.0, "weight_kg"),
     (150.0, math.nan, "weight_kg"), (150.0, 400.0, "weight_kg")],
)
def test_implausible_height_or_weight_is_refused(height: float, weight: float,
                                                 field: str) -> None:
    with pytest.raises(RuleError) as refused:
        mosteller_bsa(height, weight)
    assert refused.value.field == field


@given(st.floats(30, 249), st.floats(0.5, 249), st.floats(0.1, 1.0))
def test_bsa_grows_with_height_and_weight(height: float, weight: float, extra: float) -> None:
    base = mosteller_bsa(height, weight).value
    assert mosteller_bsa(height + extra, weight).value >= base
    assert mosteller_bsa(height, weight + extra).value >= base


def test_dose_per_m2() -> None:
    # 500,000 IU at 1.225 m² = 408,163.27 IU/m²
    derived = dose_per_m2(500_000, 1.225)
    assert derived.value == 408163.3
    assert derived.unit == "IU/m2"
    assert derived.inputs == {"dose": 500_000.0, "bsa_m2": 1.225, "unit": "IU"}
    # 10 mg methotrexate at 0.8 m² = 12.5 mg/m²
    assert dose_per_m2(10, 0.8, "mg").value == 12.5
    assert dose_per_m2(10, 0.8, "mg").unit == "mg/m2"


def test_negative_dose_or_missing_bsa_is_refused() -> None:
    with pytest.raises(RuleError, match="dose"):
        dose_per_m2(-1, 1.2)
    with pytest.raises(RuleError, match="bsa_m2"):
        dose_per_m2(100, 0)


@pytest.mark.parametrize(
    ("drug", "mg", "prednisone"),
    [
        ("prednisone", 40, 40.0),
        ("Prednisolone", 15, 15.0),  # case does not matter
        ("methylprednisolone", 16, 20.0),  # 4 mg = 5 mg prednisone
        ("dexamethasone", 0.75, 5.0),
        ("dexamethasone", 1.5, 10.0),
        ("hydrocortisone", 20, 5.0),
        ("cortisone", 25, 5.0),
        ("betamethasone", 0.6, 5.0),
        ("triamcinolone", 8, 10.0),
        ("deflazacort", 6, 5.0),
    ],
)
def test_prednisone_equivalents(drug: str, mg: float, prednisone: float) -> None:
    derived = prednisone_equivalent(drug, mg)
    assert derived.value == prednisone
    assert derived.unit == "mg/day"


def test_unknown_steroid_or_negative_dose_is_refused() -> None:
    assert not is_glucocorticoid("methotrexate")
    with pytest.raises(RuleError) as unknown:
        prednisone_equivalent("methotrexate", 10)
    assert unknown.value.field == "drug"
    with pytest.raises(RuleError) as negative:
        prednisone_equivalent("prednisone", -5)
    assert negative.value.field == "dose_mg_per_day"


def test_derived_round_trips_through_its_stored_form() -> None:
    derived = prednisone_equivalent("methylprednisolone", 16)
    assert Derived.from_dict(derived.to_dict()) == derived
