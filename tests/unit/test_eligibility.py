"""Each NCT04397107 criterion, just failing and just passing, from an eligible child."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from domain.rules.derivation import RuleError
from domain.rules.eligibility import (
    Criterion,
    age_in_years,
    derive_screening_facts,
    evaluate_eligibility,
)
from domain.studies.nct04397107 import ELIGIBILITY_CRITERIA, ELIGIBLE_SCREENING_ANSWERS

BORN = date(2010, 5, 1)
CONSENT = date(2021, 1, 10)


def failed(answers: dict[str, Any], born: date = BORN, consent: date = CONSENT) -> list[str]:
    facts = derive_screening_facts(born, consent, {**ELIGIBLE_SCREENING_ANSWERS, **answers})
    return [f.criterion.id for f in evaluate_eligibility(ELIGIBILITY_CRITERIA, facts)]


def test_the_reference_child_is_eligible() -> None:
    assert failed({}) == []


def test_every_registry_criterion_is_present() -> None:
    ids = [c.id for c in ELIGIBILITY_CRITERIA]
    assert ids == ["I1", "I2", "I3", "I4", "I5", "E1", "E2", "E3", "E4", "E5", "E6a", "E6b",
                   "E7", "E8"]


def test_i1_age_under_18_at_consent() -> None:
    assert failed({}, born=date(2003, 1, 11)) == []  # 17 the day before the birthday
    assert failed({}, born=date(2003, 1, 10)) == ["I1"]  # 18 on the day of consent


def test_age_on_a_29_february_birthday() -> None:
    assert age_in_years(date(2004, 2, 29), date(2022, 2, 28)) == 17
    assert age_in_years(date(2004, 2, 29), date(2022, 3, 1)) == 18
    assert failed({}, born=date(2004, 2, 29), consent=date(2022, 2, 28)) == []
    assert failed({}, born=date(2004, 2, 29), consent=date(2022, 3, 1)) == ["I1"]


@pytest.mark.parametrize(
    ("criterion", "fact", "passing", "failing"),
    [
        ("I2", "meets_classification_criteria", True, False),
        ("I3", "hiv_negative", True, False),
        ("I4", "hbv_negative", True, False),
        ("I5", "hcv_negative", True, False),
        ("E1", "nyha_class", 2, 3),
        ("E3", "creatinine_clearance_ml_min", 31.0, 30.0),
        ("E4", "severe_infection", False, True),
        ("E5", "malignancy", False, True),
        ("E6a", "recent_steroid_pulse_or_iv", False, True),
        ("E6b", "biologic_agent_used", False, True),
        ("E7", "compliance_interfering_condition", False, True),
        ("E8", "unable_to_comply_il2", False, True),
    ],
)
def test_each_criterion_at_its_boundary(criterion: str, fact: str, passing: object,
                                        failing: object) -> None:
    assert failed({fact: passing}) == []
    assert failed({fact: failing}) == [criterion]


def test_e2_transaminase_above_twice_the_upper_limit() -> None:
    # ALT 80 / ULN 40 = exactly 2 x ULN: not above, eligible; 120 / 40 = 3 x ULN: excluded
    assert failed({"alt_u_l": 80.0, "alt_uln_u_l": 40.0}) == []
    assert failed({"alt_u_l": 120.0, "alt_uln_u_l": 40.0}) == ["E2"]
    # The worse of ALT and AST counts.
    assert failed({"ast_u_l": 100.0, "ast_uln_u_l": 40.0}) == ["E2"]


def test_a_missing_fact_fails_its_criterion_and_says_so() -> None:
    answers = dict(ELIGIBLE_SCREENING_ANSWERS)
    del answers["hiv_negative"]
    facts = derive_screening_facts(BORN, CONSENT, answers)
    (failure,) = evaluate_eligibility(ELIGIBILITY_CRITERIA, facts)
    assert failure.criterion.id == "I3"
    assert "not provided" in failure.reason


def test_several_failures_are_all_named_in_protocol_order() -> None:
    assert failed({"hcv_negative": False, "malignancy": True}, born=date(2002, 1, 1)) == [
        "I1", "I5", "E5"]


def test_consent_before_birth_is_refused() -> None:
    with pytest.raises(RuleError) as refused:
        derive_screening_facts(date(2021, 1, 1), date(2020, 1, 1), {})
    assert refused.value.field == "consent_date"


def test_criteria_round_trip_through_their_stored_form() -> None:
    for criterion in ELIGIBILITY_CRITERIA:
        assert Criterion.from_dict(criterion.to_dict()) == criterion
    with pytest.raises(RuleError):
        Criterion.from_dict({**ELIGIBILITY_CRITERIA[0].to_dict(), "op": "drop table"})
