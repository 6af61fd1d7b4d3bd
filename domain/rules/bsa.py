"""Body-surface area by Mosteller: sqrt(height cm x weight kg / 3600), in m²."""

from __future__ import annotations

import math

from domain.rules.derivation import Derived, require_number

METHOD = "bsa.mosteller/1"


def mosteller_bsa(height_cm: float, weight_kg: float) -> Derived:
    """BSA in m², rounded to 3 decimals; refuses implausible heights and weights."""
    height = require_number("height_cm", height_cm, positive=True, low=30, high=250)
    weight = require_number("weight_kg", weight_kg, positive=True, low=0.5, high=250)
    value = round(math.sqrt(height * weight / 3600), 3)
    return Derived(value, "m2", METHOD, {"height_cm": height, "weight_kg": weight})
