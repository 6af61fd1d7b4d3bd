"""Prednisone-equivalent doses of systemic glucocorticoids.

Equivalent oral doses: prednisone 5 mg = prednisolone 5 = methylprednisolone 4 =
triamcinolone 4 = hydrocortisone 20 = cortisone 25 = dexamethasone 0.75 = betamethasone 0.6 =
deflazacort 6.
"""

from __future__ import annotations

from collections.abc import Mapping

from domain.rules.derivation import Derived, RuleError, require_number

METHOD = "steroid.prednisone_equivalent/1"
DOSE_METHOD = "steroid.prednisone_equivalent_dose/1"

# mg of prednisone per mg of the drug, from the equivalences above.
PREDNISONE_EQUIVALENT_FACTORS: Mapping[str, float] = {
    "prednisone": 5 / 5,
    "prednisolone": 5 / 5,
    "methylprednisolone": 5 / 4,
    "triamcinolone": 5 / 4,
    "hydrocortisone": 5 / 20,
    "cortisone": 5 / 25,
    "dexamethasone": 5 / 0.75,
    "betamethasone": 5 / 0.6,
    "deflazacort": 5 / 6,
}


def is_glucocorticoid(drug: str) -> bool:
    """True for a drug with a known prednisone equivalent."""
    return drug.strip().lower() in PREDNISONE_EQUIVALENT_FACTORS


def prednisone_equivalent(drug: str, dose_mg_per_day: float) -> Derived:
    """The daily dose of ``drug`` as mg/day of prednisone, rounded to 2 decimals."""
    name, factor = _factor(drug)
    dose = require_number("dose_mg_per_day", dose_mg_per_day)
    return Derived(round(dose * factor, 2), "mg/day", METHOD,
                   {"drug": name, "dose_mg_per_day": dose, "factor": factor})


def prednisone_equivalent_dose(drug: str, dose_mg: float) -> Derived:
    """One administration of ``drug`` (a single pulse, a dose as needed) as mg of
    prednisone, rounded to 2 decimals: what has no daily rate has no daily equivalent."""
    name, factor = _factor(drug)
    dose = require_number("dose_mg", dose_mg)
    return Derived(round(dose * factor, 2), "mg", DOSE_METHOD,
                   {"drug": name, "dose_mg": dose, "factor": factor})


def _factor(drug: str) -> tuple[str, float]:
    name = drug.strip().lower()
    factor = PREDNISONE_EQUIVALENT_FACTORS.get(name)
    if factor is None:
        raise RuleError("drug", f"no prednisone equivalent known for {drug!r}")
    return name, factor
