"""Adverse-event vocabularies (CTCAE v5 grades, seriousness, relationship, action, outcome)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from domain.rules.derivation import RuleError

GRADE_NAMES: Mapping[int, str] = {
    1: "mild", 2: "moderate", 3: "severe", 4: "life-threatening", 5: "death",
}
SERIOUSNESS_CRITERIA = ("death", "life_threatening", "hospitalisation", "disability",
                        "congenital_anomaly", "medically_important")
RELATIONSHIPS = ("not_related", "unlikely", "possible", "probable", "definite")
ACTIONS_TAKEN = ("none", "dose_reduced", "drug_interrupted", "drug_withdrawn", "not_applicable")
OUTCOMES = ("recovered", "recovering", "not_recovered", "recovered_with_sequelae", "fatal",
            "unknown")
AE_CATEGORIES = ("injection_site_reaction", "influenza_like_symptoms", "infection", "fever",
                 "tumour", "cardiovascular_event", "drug_induced_liver_damage",
                 "drug_induced_kidney_damage", "other")


def validate_grade(grade: int) -> int:
    """A CTCAE grade: an integer 1-5."""
    if isinstance(grade, bool) or not isinstance(grade, int) or not 1 <= grade <= 5:
        raise RuleError("grade", "must be a CTCAE grade, an integer from 1 to 5")
    return grade


def require_choice(field: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise refuse, listing them."""
    if not isinstance(value, str) or value not in choices:
        raise RuleError(field, f"must be one of {', '.join(choices)}")
    return value


def check_grade_outcome(grade: int, outcome: str) -> None:
    """Grade 5 is death: its outcome must be fatal, and only grade 5 may be fatal."""
    if (grade == 5) != (outcome == "fatal"):
        raise RuleError("outcome", "grade 5 (death) and outcome 'fatal' go together")
