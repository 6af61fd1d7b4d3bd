"""Catalogues of lab tests and vital signs, with the units each accepts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from domain.rules.derivation import RuleError, require_number


@dataclass(frozen=True)
class LabTest:
    """A lab test and the units its results may be reported in."""

    code: str
    name: str
    units: tuple[str, ...]
    category: str


@dataclass(frozen=True)
class VitalSign:
    """A vital sign, its unit and the plausible range of a measurement."""

    code: str
    name: str
    unit: str
    low: float
    high: float


def _labs(*tests: LabTest) -> dict[str, LabTest]:
    return {t.code: t for t in tests}


LAB_TESTS: Mapping[str, LabTest] = _labs(
    LabTest("C3", "Complement C3", ("g/L", "mg/dL"), "complement"),
    LabTest("C4", "Complement C4", ("g/L", "mg/dL"), "complement"),
    LabTest("ANTIDSDNA", "Anti-dsDNA antibodies", ("IU/mL",), "autoantibody"),
    LabTest("TREG", "Treg CD4+CD25+FOXP3+", ("% of CD4+",), "immune_cells"),
    LabTest("CD4", "CD4+ T cells", ("cells/uL",), "immune_cells"),
    LabTest("CD8", "CD8+ T cells", ("cells/uL",), "immune_cells"),
    LabTest("NK", "NK cells", ("cells/uL",), "immune_cells"),
    LabTest("IL6", "Interleukin-6", ("pg/mL",), "cytokine"),
    LabTest("IL10", "Interleukin-10", ("pg/mL",), "cytokine"),
    LabTest("IL17A", "Interleukin-17A", ("pg/mL",), "cytokine"),
    LabTest("IFNG", "Interferon gamma", ("pg/mL",), "cytokine"),
    LabTest("TNFA", "Tumour necrosis factor alpha", ("pg/mL",), "cytokine"),
    LabTest("ALT", "Alanine aminotransferase", ("U/L",), "chemistry"),
    LabTest("AST", "Aspartate aminotransferase", ("U/L",), "chemistry"),
    LabTest("CREAT", "Creatinine", ("umol/L", "mg/dL"), "chemistry"),
    LabTest("CRCL", "Creatinine clearance", ("mL/min",), "chemistry"),
    LabTest("HGB", "Haemoglobin", ("g/L",), "haematology"),
    LabTest("PLT", "Platelets", ("10^9/L",), "haematology"),
    LabTest("WBC", "White blood cells", ("10^9/L",), "haematology"),
    LabTest("ESR", "Erythrocyte sedimentation rate", ("mm/h",), "inflammation"),
    LabTest("CRP", "C-reactive protein", ("mg/L",), "inflammation"),
    LabTest("IGG", "Immunoglobulin G", ("g/L",), "inflammation"),
)

VITAL_SIGNS: Mapping[str, VitalSign] = {
    v.code: v
    for v in (
        VitalSign("HEIGHT", "Height", "cm", 30, 250),
        VitalSign("WEIGHT", "Weight", "kg", 0.5, 250),
        VitalSign("TEMP", "Temperature", "C", 30, 45),
        VitalSign("HR", "Heart rate", "beats/min", 20, 250),
        VitalSign("SYSBP", "Systolic blood pressure", "mmHg", 40, 250),
        VitalSign("DIABP", "Diastolic blood pressure", "mmHg", 20, 150),
        VitalSign("RESP", "Respiratory rate", "breaths/min", 5, 80),
    )
}


def check_lab_unit(code: str, unit: str) -> LabTest:
    """The catalogued test ``code``, if ``unit`` is one of its units."""
    test = LAB_TESTS.get(code)
    if test is None:
        raise RuleError("code", f"unknown lab test {code!r}")
    if unit not in test.units:
        raise RuleError("unit", f"unknown unit {unit!r} for {code}; expected "
                        + " or ".join(test.units))
    return test


def check_vital_sign(code: str, value: float, unit: str) -> VitalSign:
    """The catalogued vital sign ``code``, if ``value`` in ``unit`` is plausible."""
    sign = VITAL_SIGNS.get(code)
    if sign is None:
        raise RuleError("code", f"unknown vital sign {code!r}")
    if unit != sign.unit:
        raise RuleError("unit", f"unknown unit {unit!r} for {code}; expected {sign.unit}")
    require_number("value", value, low=sign.low, high=sign.high)
    return sign
