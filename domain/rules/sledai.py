"""SELENA-SLEDAI: 24 weighted descriptors, total 0-105."""

from __future__ import annotations

from collections.abc import Mapping

from domain.rules.derivation import Derived, RuleError

METHOD = "sledai.selena/1"

SLEDAI_DESCRIPTORS: Mapping[str, int] = {
    **dict.fromkeys(
        ("seizure", "psychosis", "organic_brain_syndrome", "visual_disturbance",
         "cranial_nerve_disorder", "lupus_headache", "cva", "vasculitis"), 8),
    **dict.fromkeys(
        ("arthritis", "myositis", "urinary_casts", "haematuria", "proteinuria", "pyuria"), 4),
    **dict.fromkeys(
        ("rash", "alopecia", "mucosal_ulcers", "pleurisy", "pericarditis", "low_complement",
         "increased_dna_binding"), 2),
    **dict.fromkeys(("fever", "thrombocytopenia", "leukopenia"), 1),
}


def sledai_total(items: Mapping[str, bool]) -> Derived:
    """Sum of the weights of the descriptors present; absent items count as not present."""
    total = 0
    for name, present in items.items():
        if name not in SLEDAI_DESCRIPTORS:
            raise RuleError(f"items.{name}", "not a SELENA-SLEDAI descriptor")
        if not isinstance(present, bool):
            raise RuleError(f"items.{name}", "must be true or false")
        if present:
            total += SLEDAI_DESCRIPTORS[name]
    inputs = {name: bool(items.get(name, False)) for name in SLEDAI_DESCRIPTORS}
    return Derived(float(total), "score", METHOD, dict(inputs))


def sledai_activity(total: float) -> str:
    """Activity band of a SLEDAI total."""
    if total <= 0:
        return "none"
    if total <= 5:
        return "mild"
    if total <= 10:
        return "moderate"
    if total <= 19:
        return "high"
    return "very_high"
