"""Eligibility as data: each criterion tests one screening fact.

An inclusion criterion is met when its test holds; an exclusion criterion applies (and
excludes) when its test holds. A missing fact fails its criterion: nothing is assumed.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from domain.rules.derivation import RuleError

Fact = float | int | str | bool
Op = Literal["lt", "le", "gt", "ge", "eq", "ne", "is_true", "is_false"]

_OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne,
    "is_true": lambda fact, _: fact is True,
    "is_false": lambda fact, _: fact is False,
}


@dataclass(frozen=True)
class Criterion:
    """One inclusion or exclusion criterion, as protocol text plus a test on one fact."""

    id: str
    kind: Literal["inclusion", "exclusion"]
    text: str
    fact: str
    op: Op
    value: float | str | bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form."""
        return {"id": self.id, "kind": self.kind, "text": self.text, "fact": self.fact,
                "op": self.op, "value": self.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Criterion:
        """Inverse of :meth:`to_dict`; refuses unknown kinds and operators."""
        if data.get("kind") not in ("inclusion", "exclusion"):
            raise RuleError("eligibility.kind", "must be inclusion or exclusion")
        if data.get("op") not in _OPS:
            raise RuleError("eligibility.op", f"must be one of {', '.join(_OPS)}")
        return cls(str(data["id"]), data["kind"], str(data["text"]), str(data["fact"]),
                   data["op"], data.get("value"))

    def holds(self, fact: Fact) -> bool:
        """Whether this criterion's test holds for ``fact``."""
        try:
            return bool(_OPS[self.op](fact, self.value))
        except TypeError:
            return False


@dataclass(frozen=True)
class CriterionFailure:
    """A criterion the subject fails, and why."""

    criterion: Criterion
    reason: str


def age_in_years(born: date, on: date) -> int:
    """Completed years from ``born`` to ``on`` (a 29 February birthday turns on 1 March)."""
    years = on.year - born.year
    if (on.month, on.day) < (born.month, born.day):
        years -= 1
    return years


def derive_screening_facts(date_of_birth: date, consent_date: date,
                           answers: Mapping[str, Fact]) -> dict[str, Fact]:
    """The answers plus derived facts: age at consent, transaminase as a multiple of ULN."""
    if consent_date < date_of_birth:
        raise RuleError("consent_date", "is before the date of birth")
    facts: dict[str, Fact] = dict(answers)
    facts["age_years"] = age_in_years(date_of_birth, consent_date)
    ratios = []
    for test in ("alt", "ast"):
        value, uln = answers.get(f"{test}_u_l"), answers.get(f"{test}_uln_u_l")
        if isinstance(value, int | float) and isinstance(uln, int | float) and uln > 0:
            ratios.append(float(value) / float(uln))
    if ratios:
        facts["transaminase_x_uln"] = round(max(ratios), 3)
    return facts


def evaluate_eligibility(criteria: Sequence[Criterion],
                         facts: Mapping[str, Fact]) -> list[CriterionFailure]:
    """The criteria the subject fails, in protocol order (empty: eligible)."""
    failures = []
    for criterion in criteria:
        if criterion.fact not in facts:
            failures.append(CriterionFailure(criterion, f"fact {criterion.fact} not provided"))
            continue
        fact = facts[criterion.fact]
        holds = criterion.holds(fact)
        if criterion.kind == "inclusion" and not holds:
            failures.append(CriterionFailure(criterion, f"not met ({criterion.fact} = {fact})"))
        elif criterion.kind == "exclusion" and holds:
            failures.append(CriterionFailure(criterion, f"applies ({criterion.fact} = {fact})"))
    return failures
