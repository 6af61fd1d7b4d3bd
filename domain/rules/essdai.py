"""ESSDAI: 12 weighted domains scored by activity level, total 0-123."""

from __future__ import annotations

from collections.abc import Mapping

from domain.rules.derivation import Derived, RuleError

METHOD = "essdai/1"

ESSDAI_WEIGHTS: Mapping[str, int] = {
    "constitutional": 3, "lymphadenopathy": 4, "glandular": 2, "articular": 2,
    "cutaneous": 3, "pulmonary": 5, "renal": 5, "muscular": 6, "pns": 5, "cns": 5,
    "haematological": 2, "biological": 1,
}

# Levels each domain allows, as in the instrument: three domains stop at moderate and the
# CNS domain has no "low" level — hence a maximum of 123, not 129.
ALLOWED_LEVELS: Mapping[str, frozenset[int]] = {
    name: frozenset({0, 1, 2, 3}) for name in ESSDAI_WEIGHTS
} | {
    "constitutional": frozenset({0, 1, 2}),
    "glandular": frozenset({0, 1, 2}),
    "biological": frozenset({0, 1, 2}),
    "cns": frozenset({0, 2, 3}),
}


def essdai_total(domains: Mapping[str, int]) -> Derived:
    """Sum of weight x activity level over the domains; missing domains score 0."""
    total = 0
    for name, level in domains.items():
        if name not in ESSDAI_WEIGHTS:
            raise RuleError(f"domains.{name}", "not an ESSDAI domain")
        if isinstance(level, bool) or not isinstance(level, int) or (
                level not in ALLOWED_LEVELS[name]):
            allowed = ", ".join(map(str, sorted(ALLOWED_LEVELS[name])))
            raise RuleError(f"domains.{name}", f"activity level must be one of {allowed}")
        total += ESSDAI_WEIGHTS[name] * level
    inputs = {name: int(domains.get(name, 0)) for name in ESSDAI_WEIGHTS}
    return Derived(float(total), "score", METHOD, dict(inputs))


def essdai_level(total: float) -> str:
    """Disease activity: low (< 5), moderate (5-13), high (>= 14)."""
    if total < 5:
        return "low"
    if total < 14:
        return "moderate"
    return "high"
