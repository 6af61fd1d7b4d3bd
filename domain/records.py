"""The record kinds of a casebook and what makes each valid.

A record's ``fields`` are what was entered; its ``derived`` values are computed from them
(with method and inputs) and recomputed whenever a field is corrected, or an input read from
another record (the body-surface area in force) changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from domain.errors import InvalidInput, Problem
from domain.rules import bsa, ctcae, dosing, essdai, sledai, steroids, units
from domain.rules.derivation import Derived, RuleError
from domain.sdtm import is_sdtm_kind, validate_row

KINDS = ("vitals", "doses", "therapies", "labs", "assessments", "adverse-events")

THERAPY_CATEGORIES = ("glucocorticoid", "immunosuppressant")
INSTRUMENTS = ("SLEDAI", "ESSDAI")
DOSE_UNITS = ("IU",)  # the investigational product is dosed in international units


@dataclass
class Record:
    """One record of a subject's casebook, as it stands now."""

    record_id: str
    kind: str
    observed_at: datetime
    visit: str | None
    fields: dict[str, Any]
    derived: dict[str, Any]
    entered_at: datetime
    removed: bool = False
    # The UTC offset observed_at was entered with (``+08:00``); None for older entries.
    observed_offset: str | None = None
    revisions: int = 0
    # Valid-time history: what the fields were from each clinical time on. The first entry is
    # the first entry; each dated clinical change (taper step, AE update) adds one; a
    # correction rewrites the value where it had been entered.
    timeline: list[dict[str, Any]] = field(default_factory=list)
    # What the soft checks (domain.checks) found on the record as it stands: kept, not refused.
    flags: list[dict[str, Any]] = field(default_factory=list)

    def copy(self) -> Record:
        """A copy sharing nothing mutable with this record."""
        return replace(self, fields=copy_json(self.fields), derived=copy_json(self.derived),
                       timeline=copy_json(self.timeline), flags=copy_json(self.flags))

    def in_force(self, name: str, when: datetime) -> Any:
        """The value of field ``name`` in force at clinical time ``when`` (None before)."""
        value = None
        for entry in self.timeline:
            if datetime.fromisoformat(entry["observed_at"]) > when:
                break
            if name in entry["fields"]:
                value = entry["fields"][name]
        return value


@dataclass(frozen=True)
class Context:
    """What a validator may need beyond the fields: the body-surface area in force."""

    bsa_m2: float | None
    # A study's SDTM declaration (variables, vocabularies) for imported records; None checks
    # only their structure (as when the read side re-derives a record).
    sdtm: Mapping[str, Any] | None = None
    # A first entry (True) is refused what it cannot derive (a dose with no BSA in force); a
    # record re-derived later (False) derives what it can from what is in force now.
    entry: bool = True


Validated = tuple[dict[str, Any], dict[str, Any]]


def _rule(fn: Callable[..., Any], *args: Any, prefix: str = "") -> Any:
    try:
        return fn(*args)
    except RuleError as e:
        raise InvalidInput(f"{prefix}{e.field}", e.message) from e


def _number(fields: Mapping[str, Any], name: str, *, minimum: float | None = 0.0) -> float:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(name, "must be a number")
    if not math.isfinite(value):
        raise InvalidInput(name, "must be finite")
    if minimum is not None and value < minimum:
        raise InvalidInput(name, f"must not be below {minimum:g}")
    return float(value)


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(name, "is required")
    return value.strip()


def _only(fields: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise InvalidInput(problems=[Problem(k, "unknown field") for k in unknown])


def validate_vitals(fields: Mapping[str, Any], context: Context) -> Validated:
    """Vital signs: one value per catalogued code, in the catalogue's unit; BSA derived."""
    if not fields:
        raise InvalidInput("measurements", "at least one measurement is required")
    clean: dict[str, Any] = {}
    problems: list[Problem] = []
    for code, value in fields.items():
        sign = units.VITAL_SIGNS.get(code)
        if sign is None:
            problems.append(Problem(code, "unknown vital sign"))
            continue
        try:
            _number(fields, code)
            _rule(units.check_vital_sign, code, value, sign.unit, prefix=f"{code}.")
        except InvalidInput as e:
            problems.extend(e.problems)
            continue
        clean[code] = float(value)
    if problems:
        raise InvalidInput(problems=problems)
    derived: dict[str, Any] = {}
    if "HEIGHT" in clean and "WEIGHT" in clean:
        derived["bsa"] = _rule(bsa.mosteller_bsa, clean["HEIGHT"], clean["WEIGHT"]).to_dict()
    return clean, derived


def vitals_from_measurements(measurements: Mapping[str, tuple[float, str]]) -> dict[str, Any]:
    """Check each measurement's unit against the catalogue and keep the values."""
    problems: list[Problem] = []
    fields: dict[str, Any] = {}
    for code, (value, unit) in measurements.items():
        sign = units.VITAL_SIGNS.get(code)
        if sign is None:
            problems.append(Problem(f"{code}", "unknown vital sign"))
        elif unit != sign.unit:
            problems.append(Problem(f"{code}.unit", f"unknown unit {unit!r}; expected {sign.unit}"))
        else:
            fields[code] = value
    if problems:
        raise InvalidInput(problems=problems)
    return fields


def validate_dose(fields: Mapping[str, Any], context: Context) -> Validated:
    """An investigational-product dose: amount in IU, with IU/m² from the BSA in force, and
    the frequency of the regimen it belongs to (absent on doses entered before it existed)."""
    _only(fields, {"drug", "dose", "unit", "route", "frequency"})
    drug = _text(fields, "drug")
    dose = _number(fields, "dose")
    unit = _text(fields, "unit")
    if unit not in DOSE_UNITS:
        raise InvalidInput("unit", f"unknown unit {unit!r}; doses are given in "
                                   f"{', '.join(DOSE_UNITS)}")
    route = _text(fields, "route")
    clean = {"drug": drug, "dose": dose, "unit": unit, "route": route}
    if "frequency" in fields:
        clean["frequency"] = _frequency(fields)
    if context.bsa_m2 is None:
        if context.entry:
            raise InvalidInput(
                "dose", "no body-surface area in force: record height and weight before dosing"
            )
        # Its height and weight were removed since: no dose per m² rather than a stale one.
        return clean, {}
    per_m2 = _rule(dosing.dose_per_m2, dose, context.bsa_m2, unit)
    return clean, {"dose_per_m2": per_m2.to_dict()}


def _frequency(fields: Mapping[str, Any]) -> str | None:
    value = fields.get("frequency")
    return None if value is None else _rule(dosing.require_frequency, "frequency", value)


def validate_therapy(fields: Mapping[str, Any], context: Context) -> Validated:
    """A course of steroid or immunosuppressant therapy.

    Its dose is either ``dose_mg`` per administration with its ``frequency`` (methotrexate
    15 mg QW), or — as every course was entered before frequencies — ``dose_mg_per_day``, a
    daily total that a frequency, if given, can only split (QD, BID, TID, QID). Derived: the
    average daily dose, the prednisone equivalent of a glucocorticoid (per day; per dose for
    ONCE and PRN, which have no daily rate), and mg/m² from the BSA in force.
    """
    _only(fields, {"drug", "category", "dose_mg", "dose_mg_per_day", "frequency", "route",
                   "stopped_at"})
    drug = _text(fields, "drug")
    category = _text(fields, "category")
    if category not in THERAPY_CATEGORIES:
        raise InvalidInput("category", f"must be one of {', '.join(THERAPY_CATEGORIES)}")
    route = _text(fields, "route")
    frequency = _frequency(fields)
    derived: dict[str, Any] = {}
    clean: dict[str, Any] = {"drug": drug, "category": category}
    daily: Derived | None = None
    if fields.get("dose_mg") is not None:
        if fields.get("dose_mg_per_day") is not None:
            raise InvalidInput("dose_mg_per_day", "give dose_mg (per administration, with "
                                                  "its frequency) or dose_mg_per_day, not both")
        if frequency is None:
            raise InvalidInput("frequency", "is required with dose_mg (per administration)")
        dose = _number(fields, "dose_mg")
        clean |= {"dose_mg": dose, "frequency": frequency}
        daily = _rule(dosing.daily_dose, dose, frequency)
        if daily is not None:
            derived["daily_dose"] = daily.to_dict()
    else:
        if fields.get("dose_mg_per_day") is None:
            raise InvalidInput("dose_mg", "give dose_mg with its frequency, or dose_mg_per_day")
        dose = _number(fields, "dose_mg_per_day")
        if frequency is not None and frequency not in dosing.DAILY_FREQUENCIES:
            raise InvalidInput("frequency", "a dose per day is given "
                               f"{', '.join(dosing.DAILY_FREQUENCIES)}; for another frequency "
                               "give dose_mg per administration")
        clean["dose_mg_per_day"] = dose
        if "frequency" in fields:
            clean["frequency"] = frequency
    clean |= {"route": route, "stopped_at": fields.get("stopped_at")}
    if category == "glucocorticoid":
        if not steroids.is_glucocorticoid(drug):
            raise InvalidInput("drug", f"{drug!r} is not a known glucocorticoid")
        per_day = clean.get("dose_mg_per_day") if daily is None else daily.value
        if per_day is not None:
            derived["prednisone_equivalent"] = _rule(
                steroids.prednisone_equivalent, drug, per_day).to_dict()
        else:
            derived["prednisone_equivalent_dose"] = _rule(
                steroids.prednisone_equivalent_dose, drug, dose).to_dict()
    elif context.bsa_m2 is not None:
        derived["dose_per_m2"] = _rule(dosing.dose_per_m2, dose, context.bsa_m2, "mg").to_dict()
    return clean, derived


def therapy_daily_dose(fields: Mapping[str, Any]) -> float | None:
    """A course's daily dose in mg/day from its fields (as in force at some time), or None
    when it has no daily rate (ONCE, PRN) or no dose."""
    per_day = fields.get("dose_mg_per_day")
    if isinstance(per_day, int | float):
        return float(per_day)
    dose, frequency = fields.get("dose_mg"), fields.get("frequency")
    if not isinstance(dose, int | float) or not isinstance(frequency, str) or (
            frequency not in dosing.FREQUENCIES):
        return None
    daily = dosing.daily_dose(dose, frequency)
    return None if daily is None else daily.value


def validate_lab(fields: Mapping[str, Any], context: Context) -> Validated:
    """A lab result: catalogued test, allowed unit, value, reference range; flag derived."""
    _only(fields, {"code", "value", "unit", "reference_low", "reference_high"})
    code = _text(fields, "code")
    unit = _text(fields, "unit")
    _rule(units.check_lab_unit, code, unit)
    value = _number(fields, "value")
    low = fields.get("reference_low")
    high = fields.get("reference_high")
    clean: dict[str, Any] = {"code": code, "value": value, "unit": unit,
                             "reference_low": None, "reference_high": None}
    if low is not None:
        clean["reference_low"] = _number(fields, "reference_low")
    if high is not None:
        clean["reference_high"] = _number(fields, "reference_high")
    if low is not None and high is not None and clean["reference_low"] > clean["reference_high"]:
        raise InvalidInput("reference_low", "is above reference_high")
    flag = "N"
    if clean["reference_low"] is not None and value < clean["reference_low"]:
        flag = "L"
    elif clean["reference_high"] is not None and value > clean["reference_high"]:
        flag = "H"
    return clean, {"flag": flag}


def validate_assessment(fields: Mapping[str, Any], context: Context) -> Validated:
    """A disease-activity assessment (SELENA-SLEDAI or ESSDAI); total and level derived."""
    _only(fields, {"instrument", "items"})
    instrument = _text(fields, "instrument")
    items = fields.get("items")
    if not isinstance(items, Mapping):
        raise InvalidInput("items", "must be an object of item -> score")
    if instrument == "SLEDAI":
        total = _rule(sledai.sledai_total, items)
        derived = {"total": total.to_dict(), "activity": sledai.sledai_activity(total.value)}
    elif instrument == "ESSDAI":
        total = _rule(essdai.essdai_total, items)
        derived = {"total": total.to_dict(), "activity": essdai.essdai_level(total.value)}
    else:
        raise InvalidInput("instrument", f"must be one of {', '.join(INSTRUMENTS)}")
    return {"instrument": instrument, "items": dict(items)}, derived


AE_FIELDS = {
    "term", "category", "grade", "serious", "seriousness_criteria", "relationship",
    "action_taken", "outcome", "meddra_pt", "meddra_llt", "ended_at",
}


def validate_adverse_event(fields: Mapping[str, Any], context: Context) -> Validated:
    """An adverse event: CTCAE v5 grade, seriousness with criteria, relationship, outcome."""
    _only(fields, AE_FIELDS)
    term = _text(fields, "term")
    category = _rule(ctcae.require_choice, "category", fields.get("category"), ctcae.AE_CATEGORIES)
    grade = fields.get("grade")
    if isinstance(grade, bool) or not isinstance(grade, int):
        raise InvalidInput("grade", "must be an integer CTCAE grade 1-5")
    _rule(ctcae.validate_grade, grade)
    serious = fields.get("serious")
    if not isinstance(serious, bool):
        raise InvalidInput("serious", "must be true or false")
    criteria = list(fields.get("seriousness_criteria") or [])
    for i, criterion in enumerate(criteria):
        _rule(ctcae.require_choice, f"seriousness_criteria.{i}", criterion,
              ctcae.SERIOUSNESS_CRITERIA)
    if serious and not criteria:
        raise InvalidInput("seriousness_criteria", "a serious event needs at least one criterion")
    if not serious and criteria:
        raise InvalidInput("seriousness_criteria", "only a serious event has criteria")
    relationship = _rule(ctcae.require_choice, "relationship", fields.get("relationship"),
                         ctcae.RELATIONSHIPS)
    action = _rule(ctcae.require_choice, "action_taken", fields.get("action_taken"),
                   ctcae.ACTIONS_TAKEN)
    outcome = _rule(ctcae.require_choice, "outcome", fields.get("outcome"), ctcae.OUTCOMES)
    _rule(ctcae.check_grade_outcome, grade, outcome)
    clean = {
        "term": term, "category": category, "grade": grade, "serious": serious,
        "seriousness_criteria": criteria, "relationship": relationship,
        "action_taken": action, "outcome": outcome,
        "meddra_pt": fields.get("meddra_pt"), "meddra_llt": fields.get("meddra_llt"),
        "ended_at": fields.get("ended_at"),
    }
    return clean, {"grade_name": ctcae.GRADE_NAMES[grade]}


VALIDATORS: dict[str, Callable[[Mapping[str, Any], Context], Validated]] = {
    "vitals": validate_vitals,
    "doses": validate_dose,
    "therapies": validate_therapy,
    "labs": validate_lab,
    "assessments": validate_assessment,
    "adverse-events": validate_adverse_event,
}


def validate(kind: str, fields: Mapping[str, Any], context: Context) -> Validated:
    """Validate a record of ``kind``; return its clean fields and derived values."""
    if is_sdtm_kind(kind):
        return validate_row(kind, fields, context.sdtm)
    validator = VALIDATORS.get(kind)
    if validator is None:
        raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
    return validator(fields, context)


# Kinds whose derived values read the body-surface area in force, besides their own fields.
BSA_DEPENDENT_KINDS = frozenset({"doses", "therapies"})


def rederive(kind: str, fields: Mapping[str, Any], bsa_m2: float | None) -> dict[str, Any]:
    """The derived values of a record already entered, from its fields and the BSA in force
    at its time now: what a change elsewhere (a corrected height, a removed weight) makes."""
    return validate(kind, fields, Context(bsa_m2, entry=False))[1]


# The immutable JSON values, which a copy shares: no call for each of them.
_SHARED = frozenset({str, int, float, bool, type(None)})


def copy_json(value: Any) -> Any:
    """A copy of a JSON-native value (what fields and derived values are made of).

    Several times faster than ``copy.deepcopy``, which matters when a rebuild folds millions
    of events (and a command copies its subject's maps at every write).
    """
    if isinstance(value, dict):
        if not value:
            return {}
        return {k: v if type(v) in _SHARED else copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [v if type(v) in _SHARED else copy_json(v) for v in value]
    return value
