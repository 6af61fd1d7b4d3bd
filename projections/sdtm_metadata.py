"""The SDTM domains of a study with their metadata — dataset labels, variable labels, types
and keys — and each row's values typed accordingly, for the renderings that carry types
(Dataset-JSON, SAS XPORT). The rows are those of the CSV export
(:func:`projections.csv_export.domain_rows`).

A study loaded from SDTM keeps the types it declared (``num`` or ``char``); its variables are
labelled with the SDTM label where one is known here, else with their name.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from domain.study import StudyDefinition
from projections.csv_export import domain_rows, number_text

DataType = Literal["string", "integer", "double"]
Value = str | int | float | None

DATASET_LABELS = {
    "DM": "Demographics", "DS": "Disposition", "AE": "Adverse Events", "EX": "Exposure",
    "CM": "Concomitant/Prior Medications", "LB": "Laboratory Test Results",
    "VS": "Vital Signs", "QS": "Questionnaires", "DV": "Protocol Deviations",
    "SV": "Subject Visits", "SE": "Subject Elements", "MH": "Medical History",
}
# Labels of whole variable names, then of the part after a domain's two-letter prefix.
LABELS = {
    "STUDYID": "Study Identifier", "DOMAIN": "Domain Abbreviation", "RDOMAIN":
    "Related Domain Abbreviation", "USUBJID": "Unique Subject Identifier",
    "SUBJID": "Subject Identifier for the Study", "RFSTDTC": "Subject Reference Start Date/Time",
    "RFENDTC": "Subject Reference End Date/Time", "RFICDTC": "Date/Time of Informed Consent",
    "SITEID": "Study Site Identifier", "BRTHDTC": "Date/Time of Birth", "AGE": "Age",
    "AGEU": "Age Units", "SEX": "Sex", "RACE": "Race", "ETHNIC": "Ethnicity",
    "ARMCD": "Planned Arm Code", "ARM": "Description of Planned Arm",
    "ACTARMCD": "Actual Arm Code", "ACTARM": "Description of Actual Arm",
    "COUNTRY": "Country", "DMDTC": "Date/Time of Collection", "DMDY": "Study Day of Collection",
    "DISEASE": "Disease", "STATUS": "Subject Status", "LOCKED": "Casebook Locked",
    "VISITNUM": "Visit Number", "VISIT": "Visit Name", "VISITDY": "Planned Study Day of Visit",
    "EPOCH": "Epoch", "IDVAR": "Identifying Variable",
    "IDVARVAL": "Identifying Variable Value", "QNAM": "Qualifier Variable Name",
    "QLABEL": "Qualifier Variable Label", "QVAL": "Data Value", "QORIG": "Origin",
    "QEVAL": "Evaluator", "AESDTH": "Results in Death", "AESLIFE": "Is Life Threatening",
    "AESHOSP": "Requires or Prolongs Hospitalization",
    "AESDISAB": "Persist or Signif Disability/Incapacity",
    "AESCONG": "Congenital Anomaly or Birth Defect",
    "AESMIE": "Other Medically Important Serious Event",
}
SUFFIX_LABELS = {
    "SEQ": "Sequence Number", "SPID": "Sponsor-Defined Identifier",
    "REFID": "Reference ID", "TERM": "Reported Term", "DECOD": "Standardized Term",
    "LLT": "Lowest Level Term", "CAT": "Category", "SCAT": "Subcategory", "SER": "Serious Event",
    "REL": "Causality", "ACN": "Action Taken with Study Treatment", "OUT": "Outcome",
    "TOXGR": "Standard Toxicity Grade", "SEV": "Severity/Intensity", "TRT": "Name of Treatment",
    "DOSE": "Dose", "DOSU": "Dose Units", "DOSFRQ": "Dosing Frequency per Interval",
    "DOSTOT": "Total Daily Dose", "ROUTE": "Route of Administration",
    "TESTCD": "Short Name of Test", "TEST": "Name of Test",
    "ORRES": "Result or Finding in Original Units", "ORRESU": "Original Units",
    "ORNRLO": "Normal Range Lower Limit-Orig Unit", "ORNRHI": "Normal Range Upper Limit-Orig Unit",
    "STRESC": "Character Result/Finding in Std Format",
    "STRESN": "Numeric Result/Finding in Standard Units", "STRESU": "Standard Units",
    "NRIND": "Reference Range Indicator", "DRVFL": "Derived Flag", "DTC": "Date/Time",
    "STDTC": "Start Date/Time", "ENDTC": "End Date/Time", "DY": "Study Day",
    "STDY": "Study Day of Start", "ENDY": "Study Day of End", "BLFL": "Baseline Flag",
    "STAT": "Completion Status", "REASND": "Reason Not Done", "SPEC": "Specimen Type",
    "TPT": "Planned Time Point Name", "POS": "Position of Subject",
}
# Native domains' variables that are numbers (the others are text, as SDTM has them).
INTEGERS = frozenset({"AGE", "VISITNUM"})
DOUBLES = frozenset({"EXDOSE", "CMDOSE", "CMDOSTOT", "QSSTRESN"})


@dataclass(frozen=True)
class Column:
    """One variable of a domain."""

    name: str
    label: str
    data_type: DataType
    key_sequence: int | None


@dataclass(frozen=True)
class Domain:
    """A domain's metadata and its rows (values in column order, typed)."""

    name: str
    label: str
    columns: list[Column]
    rows: Iterator[list[Value]]


def label(name: str) -> str:
    """The SDTM label of variable ``name`` (its name when none is known here)."""
    if name in LABELS:
        return LABELS[name]
    return SUFFIX_LABELS.get(name[2:], name)


def dataset_label(domain: str) -> str:
    """The SDTM label of a domain."""
    if domain.startswith("SUPP"):
        return f"Supplemental Qualifiers for {domain[4:]}"
    return DATASET_LABELS.get(domain, domain)


def domains(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
            as_of: datetime | None) -> Iterator[Domain]:
    """Every SDTM domain of the study as of ``as_of`` with its metadata. Call inside
    :func:`projections.streaming.consistent_read`; read each domain's rows before the next."""
    declared: dict[str, dict[str, str]] = definition.sdtm.get("variables", {})
    for name, names, rows in domain_rows(conn, schema, definition, as_of):
        types = {v: _declared_type(t) for v, t in declared.get(name, {}).items()}
        keys = _keys(name, names)
        columns = [Column(v, label(v), types.get(v) or _native_type(v),
                          keys.index(v) + 1 if v in keys else None) for v in names]
        yield Domain(name, dataset_label(name), columns, _typed(columns, rows))


def _declared_type(declared: str) -> DataType:
    return "double" if declared == "num" else "string"


def _native_type(name: str) -> DataType:
    if name in INTEGERS or name.endswith("SEQ"):
        return "integer"
    return "double" if name in DOUBLES else "string"


def _keys(domain: str, names: tuple[str, ...]) -> list[str]:
    if domain.startswith("SUPP"):
        wanted = ["STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM"]
    else:
        wanted = ["STUDYID", "USUBJID", f"{domain}SEQ"]
    return [v for v in wanted if v in names]


def _typed(columns: list[Column], rows: Iterator[dict[str, Any]]) -> Iterator[list[Value]]:
    for row in rows:
        yield [typed(row.get(c.name), c.data_type) for c in columns]


def typed(value: Any, data_type: DataType) -> Value:
    """``value`` as a value of ``data_type``: a missing number is None, missing text ``""``;
    a number as text is written as people write it (``750000``, not ``750000.0``)."""
    if data_type == "string":
        if value is None:
            return ""
        if isinstance(value, bool):
            return "Y" if value else "N"
        if isinstance(value, float):
            return number_text(value)
        return str(value)
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value) if data_type == "integer" else float(value)
