"""SDTM data as casebook records: which rows become which records, their ids, their valid time.

An imported record keeps its row's variables as given (its ``fields``), under the SDTM domain
as its kind (``LB``, ``VS``, ``AE``...), so nothing is renamed or lost. What the study's
definition declares about its SDTM data (each domain's variables and the study's own
vocabularies, e.g. lab test codes and their units) is what an imported record is checked
against, not NCT04397107's catalogues.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from domain.endpoints import Endpoint, Timepoint
from domain.errors import InvalidInput, Problem

# Record-level domains and the variable naming what each row is about (its topic).
TOPICS: Mapping[str, str] = {
    "AE": "AETERM", "CM": "CMTRT", "EX": "EXTRT", "LB": "LBTESTCD", "VS": "VSTESTCD",
    "DS": "DSDECOD", "SV": "VISITNUM", "SE": "ETCD", "SUPPAE": "QNAM", "SUPPDM": "QNAM",
    "SUPPDS": "QNAM",
}
# What each domain is called (the ODM exports name an imported record's form with it).
DOMAIN_NAMES: Mapping[str, str] = {
    "AE": "Adverse Events", "CM": "Concomitant Medications", "EX": "Exposure",
    "LB": "Laboratory Test Results", "VS": "Vital Signs", "DS": "Disposition",
    "SV": "Subject Visits", "SE": "Subject Elements",
    "SUPPAE": "Supplemental Qualifiers for AE",
    "SUPPDM": "Supplemental Qualifiers for DM", "SUPPDS": "Supplemental Qualifiers for DS",
}
assert set(DOMAIN_NAMES) == set(TOPICS), "every loaded domain needs a name"
# The --DTC variable giving each domain's valid time (SUPPxx rows have none: see valid_time).
VALID_TIME: Mapping[str, str] = {
    "AE": "AESTDTC", "CM": "CMSTDTC", "EX": "EXSTDTC", "LB": "LBDTC", "VS": "VSDTC",
    "DS": "DSSTDTC", "SV": "SVSTDTC", "SE": "SESTDTC",
}
# Per domain, the coded variables whose values must come from the study's vocabulary, and the
# (test code, unit) pairs checked against the study's list of tests.
CODED: Mapping[str, tuple[str, ...]] = {"AE": ("AESEV", "AESER", "AEREL", "AEOUT"),
                                        "DS": ("DSDECOD", "DSCAT")}
TESTS: Mapping[str, tuple[str, str]] = {"LB": ("LBTESTCD", "LBSTRESU"),
                                        "VS": ("VSTESTCD", "VSSTRESU")}
# Keys of a row, held by the subject and the record id rather than in the record's fields.
KEYS = frozenset({"STUDYID", "DOMAIN", "RDOMAIN", "USUBJID"})

_DTC = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2}))?)?)?)?)?$")

Value = str | float | int | None


def is_sdtm_kind(kind: str) -> bool:
    """True for the kinds of imported SDTM records."""
    return kind in TOPICS


def record_id(domain: str, fields: Mapping[str, Value]) -> str:
    """The record id of a row: its domain and sequence number (``LB-12``).

    SV rows are keyed by VISITNUM and SUPPxx rows by the parent row and qualifier name. The
    id is stable across runs, which is what makes a re-import find what it stored before;
    a second row with the same key gets ``#2`` (and so on) from the importer.
    """
    if domain == "SV":
        return f"SV-{_key_text(fields.get('VISITNUM'))}"
    if domain.startswith("SUPP"):
        return (f"{domain}-{_key_text(fields.get('IDVAR'))}-{_key_text(fields.get('IDVARVAL'))}"
                f"-{_key_text(fields.get('QNAM'))}")
    return f"{domain}-{_key_text(fields.get(f'{domain}SEQ'))}"


def _key_text(value: Value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value).strip()


@functools.lru_cache(maxsize=4096)
def parse_dtc(text: str) -> datetime | None:
    """The valid time of an ISO 8601 --DTC value, or None when it is empty or not ISO 8601.

    The rule for partial values: the first instant of the period they name ("2013" is
    2013-01-01T00:00, "2013-05" is 2013-05-01T00:00, a date is its midnight). SDTM times have
    no offset; they are taken as UTC, as the CSV export writes them. The string as given
    stays in the record's fields, so the partial date is kept exactly.

    Cached: the rows of one visit share their --DTC (an import parses a hundred thousand,
    a few thousand of them distinct), and a datetime is immutable.
    """
    match = _DTC.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) if g else None for g in match.groups())
    assert year is not None
    try:
        return datetime(year, month or 1, day or 1, hour or 0, minute or 0, second or 0,
                        tzinfo=UTC)
    except ValueError:
        return None


def dtc_date(text: str) -> date | None:
    """The date of a --DTC value (first day of a partial one), or None."""
    when = parse_dtc(text)
    return None if when is None else when.date()


def valid_time(domain: str, fields: Mapping[str, Value], fallback: datetime) -> datetime:
    """A record's valid time: its --DTC by :func:`parse_dtc`, else ``fallback``.

    ``fallback`` is the subject's reference start (or the DM collection date): a row with
    an empty or unusable --DTC, and every SUPPxx row, still gets a usable valid time.
    """
    variable = VALID_TIME.get(domain)
    value = fields.get(variable) if variable else None
    parsed = parse_dtc(value) if isinstance(value, str) else None
    return parsed or fallback


class CheckedRow(NamedTuple):
    """An SDTM row's fields as :func:`check_row` accepted them, and the declaration they were
    checked against. :meth:`domain.subject.Subject.import_record` takes one, so a row checked
    up front (an import checks every row before it stores any) is not checked twice."""

    kind: str
    fields: dict[str, Any]  # a copy of the row's fields, owned by this row
    declaration: Mapping[str, Any] | None


def check_row(kind: str, fields: Mapping[str, Any],
              sdtm: Mapping[str, Any] | None) -> CheckedRow:
    """Check a row to import as a record of ``kind`` (see :func:`validate_row`)."""
    if not is_sdtm_kind(kind):
        raise InvalidInput("kind", f"{kind!r} is no SDTM domain the import loads")
    clean, _ = validate_row(kind, fields, sdtm)
    return CheckedRow(kind, clean, sdtm)


def validate_row(kind: str, fields: Mapping[str, Any],
                 sdtm: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check an imported record's fields; return them (and no derived values).

    Always: the topic variable is present, and every value is text, a finite number or
    missing. With the study's SDTM declaration (``sdtm``, from its definition): only the
    domain's declared variables, coded values from the study's vocabulary, and each test
    code with one of the units the study gives it.
    """
    problems: list[Problem] = []
    topic = TOPICS[kind]
    if fields.get(topic) in (None, ""):
        problems.append(Problem(topic, "is required"))
    for name, value in fields.items():
        kind_of = type(value)
        if kind_of is str or value is None:
            continue
        if kind_of is not int and kind_of is not float:
            problems.append(Problem(name, "must be text, a number or missing"))
        elif not math.isfinite(value):
            problems.append(Problem(name, "must be finite"))
    if sdtm:
        problems.extend(_against_definition(kind, fields, sdtm))
    if problems:
        raise InvalidInput(problems=problems)
    return dict(fields), {}


def _against_definition(kind: str, fields: Mapping[str, Any],
                        sdtm: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    declared = sdtm.get("variables", {}).get(kind)
    if declared is not None and not fields.keys() <= declared.keys():
        problems.extend(Problem(name, f"is no variable of {kind} in this study")
                        for name in fields if name not in declared)
    vocabulary = sdtm.get("vocabulary", {})
    for name in CODED.get(kind, ()):
        allowed = vocabulary.get(name)
        value = fields.get(name)
        if allowed is not None and value not in (None, "") and value not in allowed:
            problems.append(Problem(name, f"{value!r} is not in the study's codelist"))
    if kind in TESTS:
        code_var, unit_var = TESTS[kind]
        tests = vocabulary.get(code_var, {})
        code, unit = fields.get(code_var), fields.get(unit_var) or ""
        if code not in tests:
            problems.append(Problem(code_var, f"unknown test {code!r} in this study"))
        elif unit not in tests[code]["units"]:
            problems.append(Problem(unit_var, f"unit {unit!r} is not one of the study's "
                                              f"units for {code}"))
    return problems


# What any SDTM data set with AE and DS supports, by the arm each subject actually received
# (safety) or was assigned to (disposition): the endpoints an imported study declares.
WHOLE_STUDY = (Timepoint("STUDY", window=(-100_000, 100_000)),)  # every row, whatever its day
SDTM_ENDPOINTS: Mapping[str, tuple[Endpoint, ...]] = {
    "AE": (
        Endpoint(
            id="ae-incidence", type="safety", title="Adverse events by arm",
            measure="sdtm_ae_incidence", population="safety", timepoints=WHOLE_STUDY,
            unit="subjects (% of the arm) and events",
            derivation="AE rows of subjects treated (ACTARMCD not a screen failure or not "
                       "assigned/treated), by ACTARMCD: subjects with at least one row, and "
                       "rows.",
            statistic="subjects, percent, events"),
        Endpoint(
            id="teae-soc-severity", type="safety",
            title="Treatment-emergent adverse events by body system and severity",
            measure="sdtm_ae_by_soc_severity", population="safety", timepoints=WHOLE_STUDY,
            unit="subjects (% of the arm) and events",
            derivation="AE rows flagged treatment-emergent (SUPPAE QNAM AETRTEM = Y), by "
                       "AEBODSYS and AESEV: subjects with at least one, and rows.",
            statistic="subjects, percent, events",
            parameters={"flag": {"domain": "SUPPAE", "qnam": "AETRTEM", "value": "Y"}}),
    ),
    "DS": (
        Endpoint(
            id="disposition", type="safety", title="Disposition by arm",
            measure="sdtm_disposition", population="enrolled", timepoints=WHOLE_STUDY,
            unit="subjects (% of the arm)",
            derivation="DS rows with DSCAT DISPOSITION EVENT, by DSDECOD and planned arm "
                       "(ARMCD) of subjects with a reference start date.",
            statistic="subjects, percent, events",
            parameters={"category": "DISPOSITION EVENT"}),
    ),
}


def sdtm_endpoints(domains: set[str]) -> tuple[Endpoint, ...]:
    """The endpoints the loaded ``domains`` support (see :data:`SDTM_ENDPOINTS`)."""
    return tuple(e for domain, endpoints in SDTM_ENDPOINTS.items() if domain in domains
                 for e in endpoints)
