"""Dose per m² of body-surface area."""

from __future__ import annotations

from domain.rules.derivation import Derived, require_number

METHOD = "dose.per_m2/1"


def dose_per_m2(dose: float, bsa_m2: float, unit: str = "IU") -> Derived:
    """``dose`` / ``bsa_m2`` in ``<unit>/m2``, rounded to 1 decimal."""
    amount = require_number("dose", dose)
    bsa = require_number("bsa_m2", bsa_m2, positive=True)
    return Derived(round(amount / bsa, 1), f"{unit}/m2", METHOD,
                   {"dose": amount, "bsa_m2": bsa, "unit": unit})
