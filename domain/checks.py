"""Soft checks: what is plausible but suspicious, kept and flagged rather than refused.

Checks are of two kinds, as in an EDC system. A hard check refuses what cannot be (a wrong
type, a unit not allowed, a future date, a value outside the catalogue's physical limits):
that is :mod:`domain.records`. A soft check flags what may well be true but deserves a
second look (a value outside the range the study defines, a dose off the protocol's, a visit
outside its window, an assessment that contradicts a lab result): the value is stored as
entered, the record carries the findings, and a data query is raised for each, so the first
entry and the reason it was changed are both kept. A finding that is also a departure from
the protocol names its deviation category, and is recorded as a protocol deviation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from domain.records import Record
from domain.study import StudyDefinition

# What a protocol deviation may be (ICH E3 / SDTM DVCAT-like categories).
DEVIATION_CATEGORIES = ("visit_out_of_window", "missed_visit", "dose_deviation", "eligibility",
                        "prohibited_medication", "procedure", "informed_consent", "other")
SEVERITIES = ("minor", "major")
# A dose within this fraction of the protocol's dose per m² is the protocol's dose.
DOSE_TOLERANCE = 0.10
# A departure larger than this many times its allowance (dose tolerance, visit window) is major.
MAJOR_FACTOR = 2.5
# How far from an assessment a C3 result still describes the same moment of the disease.
COMPLEMENT_DAYS = 14
SLEDAI_COMPLEMENT_ITEM = "items.low_complement"


@dataclass(frozen=True)
class Finding:
    """One soft-check finding on one field of a record."""

    check: str  # range, protocol_dose, visit_window, sledai_complement
    field: str
    message: str
    deviation: str | None = None  # the deviation category, when it departs from the protocol
    severity: str = "minor"

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form (how findings are stored in events)."""
        return {"check": self.check, "field": self.field, "message": self.message,
                "deviation": self.deviation, "severity": self.severity}


def soft_findings(protocol: StudyDefinition | None, enrolled_on: date | None, record: Record,
                  records: Iterable[Record]) -> list[Finding]:
    """Every soft finding on ``record`` as it stands, in a stable order.

    ``records`` are the subject's records (for checks across records); without a
    ``protocol`` only the checks that need none run.
    """
    findings: list[Finding] = []
    if protocol is not None:
        findings += _out_of_range(protocol, record)
        findings += _off_protocol_dose(protocol, record)
        findings += _out_of_window(protocol, enrolled_on, record)
    findings += _complement_contradiction(record, records)
    return findings


def _outside(value: float, bounds: Mapping[str, Any]) -> bool:
    return bool(value < bounds["low"] or value > bounds["high"])


def _range_text(bounds: Mapping[str, Any], unit: str | None) -> str:
    return f"{bounds['low']:g}-{bounds['high']:g}{' ' + unit if unit else ''}"


def _out_of_range(protocol: StudyDefinition, record: Record) -> list[Finding]:
    if record.kind == "vitals":
        ranges = protocol.ranges.get("vitals", {})
        return [Finding("range", code, f"{value:g} is outside the study's range "
                                       f"{_range_text(ranges[code], ranges[code]['unit'])}")
                for code, value in sorted(record.fields.items())
                if code in ranges and _outside(value, ranges[code])]
    if record.kind == "labs":
        bounds = protocol.ranges.get("labs", {}).get(record.fields["code"])
        value, unit = record.fields["value"], record.fields["unit"]
        # A range is given in one unit: a result in another is not compared with it.
        if bounds is not None and bounds["unit"] in (None, unit) and _outside(value, bounds):
            return [Finding("range", "value", f"{record.fields['code']} {value:g} {unit} is "
                                              "outside the study's range "
                                              f"{_range_text(bounds, unit)}")]
    return []


def _off_protocol_dose(protocol: StudyDefinition, record: Record) -> list[Finding]:
    if record.kind != "doses" or "dose_per_m2" not in record.derived:
        return []
    target = protocol.products.get(record.fields["drug"], {}).get("dose_per_m2")
    if not isinstance(target, int | float) or target <= 0:
        return []
    actual = float(record.derived["dose_per_m2"]["value"])
    off = abs(actual - target) / target
    if off <= DOSE_TOLERANCE:
        return []
    return [Finding("protocol_dose", "dose",
                    f"{actual:,.0f} {record.derived['dose_per_m2']['unit']} is {off:.0%} from "
                    f"the protocol's {target:,.0f} (±{DOSE_TOLERANCE:.0%})", "dose_deviation",
                    "major" if off > MAJOR_FACTOR * DOSE_TOLERANCE else "minor")]


def _out_of_window(protocol: StudyDefinition, enrolled_on: date | None,
                   record: Record) -> list[Finding]:
    visit = next((v for v in protocol.visits if v.code == record.visit), None)
    if visit is None or enrolled_on is None:
        return []
    target = enrolled_on + timedelta(days=visit.day)
    off = (record.observed_at.date() - target).days
    if abs(off) <= visit.window_days:
        return []
    late = f"{off} days late" if off > 0 else f"{-off} days early"
    return [Finding("visit_window", "visit",
                    f"visit {visit.code} on {record.observed_at.date()} is {late} (target "
                    f"{target}, window ±{visit.window_days} days)", "visit_out_of_window",
                    "major" if abs(off) > MAJOR_FACTOR * max(visit.window_days, 1) else "minor")]


def _complement_contradiction(record: Record, records: Iterable[Record]) -> list[Finding]:
    """SLEDAI says complement is not low, beside a C3 below its lab's lower limit."""
    if (record.kind != "assessments" or record.fields.get("instrument") != "SLEDAI"
            or record.fields["items"].get("low_complement", False)):
        return []
    near = timedelta(days=COMPLEMENT_DAYS)
    for lab in records:
        if (lab.kind == "labs" and not lab.removed and lab.fields.get("code") == "C3"
                and lab.fields.get("reference_low") is not None
                and abs(lab.observed_at - record.observed_at) <= near
                and lab.fields["value"] < lab.fields["reference_low"]):
            return [Finding("sledai_complement", SLEDAI_COMPLEMENT_ITEM,
                            f"low complement is scored absent, but C3 {lab.fields['value']:g} "
                            f"{lab.fields['unit']} ({lab.record_id}, "
                            f"{lab.observed_at.date()}) is below the lab's lower limit "
                            f"{lab.fields['reference_low']:g}")]
    return []
