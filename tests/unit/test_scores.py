"""Worked examples for SELENA-SLEDAI and ESSDAI totals and activity levels."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.rules.derivation import RuleError
from domain.rules.essdai import ALLOWED_LEVELS, ESSDAI_WEIGHTS, essdai_level, essdai_total
from domain.rules.sledai import SLEDAI_DESCRIPTORS, sledai_activity, sledai_total


def test_sledai_has_24_descriptors_weighted_to_105() -> None:
    assert len(SLEDAI_DESCRIPTORS) == 24
    assert sorted(SLEDAI_DESCRIPTORS.values()).count(8) == 8
    assert sum(SLEDAI_DESCRIPTORS.values()) == 105


def test_sledai_worked_example() -> None:
    # seizure 8 + arthritis 4 + rash 2 + fever 1 = 15; absent items count 0
    total = sledai_total({"seizure": True, "arthritis": True, "rash": True, "fever": True,
                          "alopecia": False})
    assert total.value == 15
    assert total.method == "sledai.selena/1"
    assert sledai_activity(total.value) == "high"


def test_sledai_everything_present_is_105() -> None:
    assert sledai_total(dict.fromkeys(SLEDAI_DESCRIPTORS, True)).value == 105


@pytest.mark.parametrize(
    ("total", "band"),
    [(0, "none"), (1, "mild"), (5, "mild"), (6, "moderate"), (10, "moderate"), (11, "high"),
     (19, "high"), (20, "very_high")],
)
def test_sledai_activity_bands(total: int, band: str) -> None:
    assert sledai_activity(total) == band


def test_sledai_refuses_unknown_items_and_non_booleans() -> None:
    with pytest.raises(RuleError) as unknown:
        sledai_total({"headache": True})
    assert unknown.value.field == "items.headache"
    with pytest.raises(RuleError) as not_bool:
        sledai_total({"rash": 1})  # type: ignore[dict-item]
    assert not_bool.value.field == "items.rash"


@given(st.dictionaries(st.sampled_from(sorted(SLEDAI_DESCRIPTORS)), st.booleans()))
def test_sledai_total_is_the_sum_of_present_weights(items: dict[str, bool]) -> None:
    total = sledai_total(items).value
    assert total == sum(SLEDAI_DESCRIPTORS[k] for k, present in items.items() if present)
    assert 0 <= total <= 105


def test_essdai_worked_example() -> None:
    # constitutional 3 x 1 + articular 2 x 2 + renal 5 x 3 + biological 1 x 2 = 24 -> high
    total = essdai_total({"constitutional": 1, "articular": 2, "renal": 3, "biological": 2})
    assert total.value == 24
    assert essdai_level(total.value) == "high"


def test_essdai_maximum_is_123() -> None:
    top = {name: max(levels) for name, levels in ALLOWED_LEVELS.items()}
    assert essdai_total(top).value == 123
    assert len(ESSDAI_WEIGHTS) == 12


@pytest.mark.parametrize(("total", "level"),
                         [(0, "low"), (4, "low"), (5, "moderate"), (13, "moderate"),
                          (14, "high"), (123, "high")])
def test_essdai_levels(total: int, level: str) -> None:
    assert essdai_level(total) == level


@pytest.mark.parametrize(
    ("domains", "field"),
    [({"cns": 1}, "domains.cns"),  # the CNS domain has no low level
     ({"constitutional": 3}, "domains.constitutional"),  # stops at moderate
     ({"renal": 4}, "domains.renal"),
     ({"renal": True}, "domains.renal"),
     ({"spleen": 1}, "domains.spleen")],
)
def test_essdai_refuses_levels_a_domain_does_not_have(domains: dict[str, int],
                                                      field: str) -> None:
    with pytest.raises(RuleError) as refused:
        essdai_total(domains)
    assert refused.value.field == field


@given(st.fixed_dictionaries({}, optional={
    name: st.sampled_from(sorted(levels)) for name, levels in ALLOWED_LEVELS.items()}))
def test_essdai_total_stays_within_0_and_123(domains: dict[str, int]) -> None:
    assert 0 <= essdai_total(domains).value <= 123
