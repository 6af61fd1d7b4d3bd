"""Dose per m² of body-surface area, dose frequencies and the daily dose they make."""

from __future__ import annotations

from collections.abc import Mapping

from domain.rules.derivation import Derived, RuleError, require_number

METHOD = "dose.per_m2/1"
DAILY_METHOD = "dose.daily/1"

# CDISC controlled terminology for --DOSFRQ (codelist FREQ), the codes a casebook uses, with
# how many administrations each makes per day on average. ONCE and PRN (as needed) have no
# regular rate: no daily dose can be derived from them.
FREQUENCIES: Mapping[str, float | None] = {
    "QD": 1.0,
    "BID": 2.0,
    "TID": 3.0,
    "QID": 4.0,
    "QW": 1 / 7,
    "Q2W": 1 / 14,
    "QM": 12 / 365.25,
    "ONCE": None,
    "PRN": None,
}
FREQUENCY_CODES = tuple(FREQUENCIES)
# Frequencies of at least one administration every day: a dose given "per day" may be split
# along one of these, never along a weekly one.
DAILY_FREQUENCIES = ("QD", "BID", "TID", "QID")


def dose_per_m2(dose: float, bsa_m2: float, unit: str = "IU") -> Derived:
    """``dose`` / ``bsa_m2`` in ``<unit>/m2``, rounded to 1 decimal."""
    amount = require_number("dose", dose)
    bsa = require_number("bsa_m2", bsa_m2, positive=True)
    return Derived(round(amount / bsa, 1), f"{unit}/m2", METHOD,
                   {"dose": amount, "bsa_m2": bsa, "unit": unit})


def require_frequency(field: str, value: object) -> str:
    """``value`` if it is a known dose frequency code; otherwise refuse, listing them."""
    if not isinstance(value, str) or value not in FREQUENCIES:
        raise RuleError(field, f"must be one of {', '.join(FREQUENCIES)}")
    return value


def daily_dose(dose_mg: float, frequency: str) -> Derived | None:
    """The average daily dose in mg/day of ``dose_mg`` given at ``frequency`` (a weekly
    15 mg is 2.14 mg/day, not 15), rounded to 2 decimals; None for ONCE and PRN."""
    amount = require_number("dose_mg", dose_mg)
    rate = FREQUENCIES[require_frequency("frequency", frequency)]
    if rate is None:
        return None
    return Derived(round(amount * rate, 2), "mg/day", DAILY_METHOD,
                   {"dose_mg": amount, "frequency": frequency,
                    "administrations_per_day": round(rate, 6)})
