"""Random histories: every NCT04397107 outcome table, recomputed from the CSV export as of a
random recorded time by plain code written here (not the engine), equals ``outcome_tables``.

The histories are small (four children, a year of visits entered over a few weeks, with
corrections, removals, tapers and stops) and the recorded times random; the recomputation
reads only the export's files (DM, CM, VS, LB, QS, AE) and the registry's endpoint parameters.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from application.exports import write_csv_dir
from application.runtime import Runtime
from domain.clock import SimulatedClock
from domain.envelope import Reason
from domain.errors import DomainError
from domain.service import StudyApplication
from domain.studies import nct04397107
from infra.settings import Settings
from tests.support import COORDINATOR, DATA_MANAGER, envelope

ENROLLED_ON = date(2020, 9, 1)
START = datetime(2021, 10, 1, 8, 0, tzinfo=UTC)  # entry begins after the year of visits
CHILDREN = {"001": ("SLE", "IL2"), "002": ("PSS", "STD"), "003": ("SLE", "STD"),
            "004": ("JIA", "IL2")}
VISIT_DAYS = {"BASELINE": 0, "M1": 30, "M3": 91, "M6": 182, "M12": 350}
LAB_UNITS = {"C3": "g/L", "ANTIDSDNA": "IU/mL", "TREG": "% of CD4+", "CD4": "cells/uL",
             "IL6": "pg/mL"}
AES = [("Injection site erythema", "injection_site_reaction", "probable", False),
       ("Upper respiratory tract infection", "infection", "unlikely", False),
       ("Pneumonia", "infection", "possible", True), ("Pyrexia", "fever", "not_related", False)]
RELATED = {"POSSIBLY RELATED", "PROBABLY RELATED", "RELATED"}
ENDPOINTS = {e.id: e for e in nct04397107.ENDPOINTS}
_studies = itertools.count(1)

steps = st.lists(st.tuples(
    st.integers(0, 3 * 24 * 60),  # minutes the clock moves first
    st.sampled_from(["vitals", "vitals", "lab", "lab", "lab", "score", "therapy", "weekly",
                     "taper", "stop", "ae", "correct", "remove"]),
    st.sampled_from(sorted(CHILDREN)), st.sampled_from(["R1", "R2", "R3", "R4", "R5"]),
    st.sampled_from(sorted(VISIT_DAYS)), st.integers(1, 30),
), min_size=5, max_size=45)


@pytest.fixture(scope="module")
def deployment(server_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Settings, str]]:
    from infra.postgres import temporary_database

    with temporary_database(server_url, "tl_test") as url:
        yield Settings(database_url=url, home=tmp_path_factory.mktemp("o")), url


def _play(app: StudyApplication, clock: SimulatedClock, step: tuple[Any, ...]) -> None:
    advance, kind, code, record, visit, number = step
    clock.advance(timedelta(minutes=advance))
    observed = datetime.combine(ENROLLED_ON + timedelta(days=VISIT_DAYS[visit]),
                                time(8, number), UTC)
    disease = CHILDREN[code][0]
    fix = envelope(DATA_MANAGER, Reason("data_entry_error", "checked against source"))
    test = sorted(LAB_UNITS)[number % len(LAB_UNITS)]
    term, category, relationship, serious = AES[number % len(AES)]

    def score(s: Any, t: datetime) -> None:
        if disease == "PSS":
            s.record_essdai(record, observed, {"glandular": number % 3,
                                                "articular": number % 4}, envelope(), t, visit)
        else:
            s.record_sledai(record, observed, {"arthritis": number % 2 == 0,
                                                "rash": number % 3 == 0}, envelope(), t, visit)

    def correct(s: Any, t: datetime) -> None:
        kind = s.records[record].kind
        field, value = {"labs": ("value", number * 3.5), "vitals": ("HEIGHT", 100 + 3 * number),
                        "therapies": ("dose_mg" if "dose_mg" in s.records[record].fields
                                      else "dose_mg_per_day", number * 1.5)}[kind]
        s.correct(record, field, value, fix, t)

    def taper(s: Any, t: datetime) -> None:
        if "dose_mg" in s.records[record].fields:
            s.change_therapy(record, observed, None, envelope(), t, dose_mg=number / 2)
        else:
            s.change_therapy(record, observed, number * 0.5, envelope(), t)

    actions = {
        "vitals": lambda s, t: s.record_vital_signs(
            record, observed, {"HEIGHT": (110 + number, "cm"), "WEIGHT": (18 + number, "kg")},
            envelope(), t, visit),
        "lab": lambda s, t: s.record_lab_result(
            record, observed, test, number * (100 if test == "CD4" else 1.0), LAB_UNITS[test],
            envelope(), t, visit=visit),
        "score": score,
        "therapy": lambda s, t: s.start_therapy(
            record, observed, "prednisone", "glucocorticoid", number * 2.0, "PO", envelope(), t),
        "weekly": lambda s, t: s.start_therapy(
            record, observed, "methotrexate", "immunosuppressant", None, "PO", envelope(), t,
            dose_mg=number / 2, frequency="QW"),
        "taper": taper,
        "stop": lambda s, t: s.stop_therapy(record, observed, envelope(), t),
        "ae": lambda s, t: s.report_adverse_event(record, observed, {
            "term": term, "category": category, "grade": 3 if serious else 1,
            "serious": serious, "seriousness_criteria": ["hospitalisation"] if serious else [],
            "relationship": relationship, "action_taken": "none", "outcome": "recovering"},
            envelope(), t),
        "correct": correct,
        "remove": lambda s, t: s.remove(record, fix, t),
    }
    with contextlib.suppress(DomainError, KeyError):  # a refusal stores nothing
        app.on_subject(code, actions[kind])


@pytest.mark.slow(seconds=120)
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate, Phase.target],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=steps, fractions=st.lists(st.floats(0, 1), min_size=3, max_size=3))
# Always tried: two children measured, dosed (daily and weekly, a taper) and tested at
# baseline and month 12 (Treg as % of CD4+ beside the CD4+ count), with a reaction.
@example(history=[
    (60, kind, code, f"R{n}", visit, number)
    for n, (kind, code, visit, number) in enumerate([
        ("vitals", "001", "BASELINE", 5), ("vitals", "001", "M12", 9),
        ("therapy", "001", "BASELINE", 20), ("weekly", "004", "BASELINE", 20),
        ("vitals", "004", "BASELINE", 7), ("vitals", "004", "M12", 8),
        ("lab", "001", "BASELINE", 4), ("lab", "001", "BASELINE", 1),
        ("lab", "001", "M12", 4), ("lab", "001", "M12", 1),
        ("vitals", "003", "BASELINE", 3), ("vitals", "003", "M12", 3),
        ("ae", "004", "M1", 0), ("score", "002", "BASELINE", 2), ("score", "002", "M12", 5),
    ], 1)] + [(60, "taper", "001", "R3", "M6", 8)], fractions=[0.5, 0.9, 0.6])
def test_tables_from_the_csv_export_equal_the_engines(
        deployment: tuple[Settings, str], history: list[tuple[Any, ...]],
        fractions: list[float], tmp_path_factory: pytest.TempPathFactory) -> None:
    runtime = Runtime(*deployment)
    study_id = f"OUT-{next(_studies)}"
    clock = SimulatedClock(START)
    app = runtime.study(study_id, clock=clock)
    try:
        app.register_study({**nct04397107.definition(), "study_id": study_id},
                           envelope(COORDINATOR))
        for code, (disease, arm) in CHILDREN.items():
            app.enroll_subject(code, "JLU1", date(2010, 3, 1), "F", disease, ENROLLED_ON,
                               nct04397107.ELIGIBLE_SCREENING_ANSWERS, arm, ENROLLED_ON,
                               envelope(COORDINATOR))
        for step in history:
            _play(app, clock, step)
        span = clock.now() - START
        t1, t2 = (START + span * f for f in fractions[:2])
        # A clinical time anywhere in the year of visits, for the tables of what held then.
        valid = datetime.combine(ENROLLED_ON, time(8), UTC) + timedelta(days=400) * fractions[2]
        seen: dict[Any, Any] = {}
        for when, valid_at in ((t1, None), (t2, None), (None, None), (t2, valid)):
            engine = runtime.outcomes(study_id, when, valid_at)["endpoints"]  # projects first
            seen[when, valid_at] = engine
            if valid_at is not None:
                event(f"tables at a valid time differ: {engine != seen[when, None]}")
            directory = tmp_path_factory.mktemp("csv")
            write_csv_dir(runtime, study_id, directory, when)
            expected = recompute(directory, valid_at)
            event(f"cells with subjects at month 12: "
                  f"{sum(1 for c, v in expected.items() if '/M12/' in c and v.get('n'))}")
            assert {k: v["arms"] for k, v in engine.items()} == expected.pop("arms")
            cells = {row["cell"]: row for e in engine.values()
                     for row in [*e["rows"], *e["comparisons"]]}
            assert sorted(cells) == sorted(expected)
            for cell, figures in expected.items():
                for name, value in figures.items():
                    assert cells[cell][name] == _near(value), (cell, name)
            if valid_at is None:
                _check_analysis_datasets(directory, cells)
    finally:
        app.close()
        runtime.close()


def _near(value: Any) -> Any:
    return pytest.approx(value, abs=2e-4) if isinstance(value, float) else value


# --- the recomputation: plain code over the export's files ------------------------------------

def _read(directory: Path, domain: str) -> list[dict[str, str]]:
    with (directory / f"{domain}.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _summary(values: list[float]) -> dict[str, Any]:
    data = sorted(values)
    if not data:
        return {"n": 0, "mean": None, "sd": None, "median": None, "q1": None, "q3": None}

    def quantile(p: float) -> float:  # linear interpolation between order statistics
        position = p * (len(data) - 1)
        low = math.floor(position)
        high = min(low + 1, len(data) - 1)
        return data[low] + (data[high] - data[low]) * (position - low)

    return {"n": len(data), "mean": sum(data) / len(data),
            "sd": statistics.stdev(data) if len(data) > 1 else None,
            "median": quantile(0.5), "q1": quantile(0.25), "q3": quantile(0.75)}


def _hodges_lehmann(test: list[float], reference: list[float]) -> dict[str, Any]:
    if not test or not reference:
        return {"estimate": None, "ci_low": None, "ci_high": None}
    differences = sorted(a - b for a in test for b in reference)
    m, n = len(test), len(reference)
    c = math.floor(m * n / 2 - norm.ppf(0.975) * math.sqrt(m * n * (m + n + 1) / 12))
    ci = (differences[c - 1], differences[m * n - c]) if c >= 1 else (None, None)
    return {"estimate": statistics.median(differences), "ci_low": ci[0], "ci_high": ci[1]}


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _newcombe(k1: int, n1: int, k2: int, n2: int) -> dict[str, Any]:
    if not n1 or not n2:
        return {"estimate": None, "ci_low": None, "ci_high": None}
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = _wilson(k1, n1), _wilson(k2, n2)
    return {"estimate": p1 - p2,
            "ci_low": p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            "ci_high": p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)}


def _count(subjects: set[str], denominator: int, **extra: Any) -> dict[str, Any]:
    return {"subjects": len(subjects), "denominator": denominator,
            "percent": 100 * len(subjects) / denominator if denominator else None, **extra}


class Export:
    """The export's rows by subject, read once; with ``valid``, only what held at that
    clinical time: rows dated after it left out, a course's taper steps and stop after it
    not yet known."""

    def __init__(self, directory: Path, valid: datetime | None = None) -> None:
        self.dm = {r["USUBJID"]: r for r in _read(directory, "DM")
                   if r["ARMCD"] and r["RFSTDTC"]}
        self.arms: dict[str, list[str]] = defaultdict(list)
        for subject, row in sorted(self.dm.items()):
            self.arms[row["ARMCD"]].append(subject)
        self.rows: dict[str, dict[str, list[dict[str, str]]]] = {}
        self.visits: dict[str, set[str]] = defaultdict(set)
        for domain in ("CM", "VS", "LB", "QS", "AE", "EX"):
            by_subject: dict[str, list[dict[str, str]]] = defaultdict(list)
            rows = _read(directory, domain)
            if valid is not None:
                rows = _held(domain, rows, valid)
            for row in rows:
                by_subject[row["USUBJID"]].append(row)
                if row.get("VISIT"):
                    self.visits[row["USUBJID"]].add(row["VISIT"])
            self.rows[domain] = by_subject

    def start(self, subject: str) -> date:
        return date.fromisoformat(self.dm[subject]["RFSTDTC"])

    def latest(self, subject: str, domain: str, visit: str, code: str,
               dtc: str, test: str = "TESTCD") -> dict[str, str] | None:
        """The visit's last row of ``code`` in clinical order (time, then record id)."""
        found = [r for r in self.rows[domain][subject]
                 if r["VISIT"] == visit and r[f"{domain}{test}"] == code]
        return max(found, key=lambda r: (r[dtc], r[f"{domain}SPID"])) if found else None


def _held(domain: str, rows: list[dict[str, str]], valid: datetime) -> list[dict[str, str]]:
    """The rows of what held at ``valid``."""
    date_of = {"CM": "CMSTDTC", "VS": "VSDTC", "LB": "LBDTC", "QS": "QSDTC", "AE": "AESTDTC",
               "EX": "EXSTDTC"}[domain]
    kept = [dict(r) for r in rows if _when(r[date_of]) <= valid]
    if domain == "CM":  # the course's stop, from its last row, unless it came later
        stops = {(r["USUBJID"], r["CMSPID"]): r["CMENDTC"] for r in rows}
        last = {(r["USUBJID"], r["CMSPID"]): r for r in kept}
        for key, row in last.items():
            row["CMENDTC"] = stops[key] if stops[key] and _when(stops[key]) <= valid else ""
    return kept


def recompute(directory: Path, valid: datetime | None = None) -> dict[str, Any]:
    """Every cell of the registry's tables (and each endpoint's arm sizes) from the files
    (of what held at clinical time ``valid``, when given)."""
    export = Export(directory, valid)
    cells: dict[str, Any] = {"arms": {e: {a: len(s) for a, s in sorted(export.arms.items())}
                                      for e in ENDPOINTS}}
    _doses(export, cells)
    visits = ["BASELINE", *nct04397107.FOLLOW_UP]
    for code in ("C3", "C4", "ANTIDSDNA"):
        _by_visit(export, cells, "complement-dsdna", code, visits,
                  lambda s, v, code=code: _lab(export, s, v, code))
    for code, unit in ENDPOINTS["immune-response"].parameters["tests"].items():
        _immune(export, cells, code, unit, visits)
    for endpoint, instrument in (("sledai", "SLEDAI"), ("essdai", "ESSDAI")):
        _scores(export, cells, endpoint, instrument, visits)
    _adverse(export, cells)
    return cells


def _doses(export: Export, cells: dict[str, Any]) -> None:
    """Mean dose per m² over each window of study days, per drug; glucocorticoids as
    prednisone (the only one given here, factor 1)."""
    windows = {"BASELINE": (0, 0), "M12": (338, 365)}
    subjects = [s for members in export.arms.values() for s in members]
    drugs = sorted({r["CMTRT"] for s in subjects for r in export.rows["CM"][s]
                    if r["CMCAT"] != "GLUCOCORTICOID"})
    weekly = {r["CMTRT"] for s in subjects for r in export.rows["CM"][s]
              if r["CMCAT"] != "GLUCOCORTICOID" and r["CMDOSFRQ"] in ("QW", "Q2W", "QM")}

    def name(row: dict[str, str]) -> str:
        return "glucocorticoid" if row["CMCAT"] == "GLUCOCORTICOID" else row["CMTRT"]

    def per_day(subject: str, day: date) -> dict[str, float] | None:
        end = datetime.combine(day, time(23, 59, 59), UTC)
        areas = sorted((r["VSDTC"], r["VSSPID"], float(r["VSORRES"]))
                       for r in export.rows["VS"][subject]
                       if r["VSTESTCD"] == "BSA" and _when(r["VSDTC"]) <= end)
        if not areas:
            return None
        area = areas[-1][2]
        courses: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in export.rows["CM"][subject]:
            courses[row["CMSPID"]].append(row)
        out = {"glucocorticoid": 0.0}
        for steps in courses.values():
            drug = name(steps[0])
            out.setdefault(drug, 0.0)
            started = [r for r in steps if _when(r["CMSTDTC"]) <= end]
            stop = steps[-1]["CMENDTC"]
            if not started or (stop and _when(stop) <= end):
                continue
            step = started[-1]
            if step["CMDOSTOT"]:
                daily = float(step["CMDOSTOT"])
            else:  # a dose per administration: per day at its frequency, as rounded
                daily = round(float(step["CMDOSE"]) / {"QW": 7, "QD": 1}[step["CMDOSFRQ"]], 2)
            out[drug] += daily / area * (7 if drug in weekly else 1)
        return out

    def mean_dose(subject: str, window: tuple[int, int]) -> dict[str, float]:
        days = [d for offset in range(window[0], window[1] + 1)
                if (d := per_day(subject, export.start(subject) + timedelta(days=offset)))]
        return {n: sum(d[n] for d in days) / len(days) for n in (days[0] if days else {})}

    for drug in ("glucocorticoid", *drugs):
        values: dict[str, dict[str, list[float]]] = {}
        for arm, members in export.arms.items():
            points = values.setdefault(arm, defaultdict(list))
            for subject in members:
                if drug != "glucocorticoid" and not any(
                        r["CMTRT"] == drug for r in export.rows["CM"][subject]):
                    continue
                found = {}
                for code, window in windows.items():
                    if code == "M12" and "M12" not in export.visits[subject]:
                        continue
                    means = mean_dose(subject, window)
                    if drug in means:
                        found[code] = means[drug]
                        points[code].append(means[drug])
                if len(found) == 2:
                    points["M12-BASELINE"].append(found["M12"] - found["BASELINE"])
        for code in (*windows, "M12-BASELINE"):
            for arm in export.arms:
                cells[f"dose/{drug}/{code}/{arm}"] = _summary(values[arm][code])
        cells[f"dose/{drug}/M12-BASELINE/IL2-STD"] = _hodges_lehmann(
            values.get("IL2", {}).get("M12-BASELINE", []),
            values.get("STD", {}).get("M12-BASELINE", []))


def _lab(export: Export, subject: str, visit: str, code: str) -> float | None:
    row = export.latest(subject, "LB", visit, code, "LBDTC")
    return None if row is None else float(row["LBORRES"])


def _by_visit(export: Export, cells: dict[str, Any], endpoint: str, parameter: str,
              visits: list[str], value: Any) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Rows at each visit, the change from the first, compared; the (baseline, visit) pairs."""
    pairs: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for visit in visits:
        changes: dict[str, list[float]] = {}
        for arm, members in export.arms.items():
            found = {s: v for s in members if (v := value(s, visit)) is not None}
            cells[f"{endpoint}/{parameter}/{visit}/{arm}"] = _summary(list(found.values()))
            if visit == visits[0]:
                continue
            base = {s: v for s in members if (v := value(s, visits[0])) is not None}
            both = [(base[s], v) for s, v in found.items() if s in base]
            pairs.setdefault(visit, {})[arm] = both
            changes[arm] = [after - before for before, after in both]
            cells[f"{endpoint}/{parameter}/{visit}-{visits[0]}/{arm}"] = _summary(changes[arm])
        if visit != visits[0] and ENDPOINTS[endpoint].comparison.method == "hodges_lehmann":
            cells[f"{endpoint}/{parameter}/{visit}-{visits[0]}/IL2-STD"] = _hodges_lehmann(
                changes.get("IL2", []), changes.get("STD", []))
    return pairs


def _immune(export: Export, cells: dict[str, Any], code: str, unit: str,
            visits: list[str]) -> None:
    """Absolute counts (Treg: % of CD4+ x CD4+ cells/uL / 100) and subjects changed by more
    than 20 % of baseline."""

    def absolute(subject: str, visit: str, test: str = code) -> float | None:
        row = export.latest(subject, "LB", visit, test, "LBDTC")
        if row is None:
            return None
        if row["LBORRESU"] == unit:
            return float(row["LBORRES"])
        if test == "TREG" and row["LBORRESU"].startswith("%"):
            parent = absolute(subject, visit, "CD4")
            return None if parent is None else float(row["LBORRES"]) * parent / 100
        return None

    pairs = _by_visit(export, cells, "immune-response", code, visits, absolute)
    for visit, by_arm in pairs.items():
        counted = {}
        for arm, both in by_arm.items():
            changed = [(b, a) for b, a in both
                       if abs(a - b) > 0.2 * abs(b) or (b == 0 and a != 0)]
            cells[f"immune-response/{code} changed/{visit}-BASELINE/{arm}"] = {
                "subjects": len(changed), "denominator": len(both),
                "percent": 100 * len(changed) / len(both) if both else None,
                "increased": sum(a > b for b, a in changed),
                "decreased": sum(a < b for b, a in changed)}
            counted[arm] = (len(changed), len(both))
        cells[f"immune-response/{code} changed/{visit}-BASELINE/IL2-STD"] = _newcombe(
            *counted.get("IL2", (0, 0)), *counted.get("STD", (0, 0)))


def _scores(export: Export, cells: dict[str, Any], endpoint: str, instrument: str,
            visits: list[str]) -> None:
    def total(subject: str, visit: str) -> float | None:
        row = export.latest(subject, "QS", visit, f"{instrument}TOT", "QSDTC")
        return None if row is None else float(row["QSSTRESN"])

    _by_visit(export, cells, endpoint, f"{instrument} total", visits, total)
    levels = ENDPOINTS[endpoint].parameters.get("levels") or []
    for visit in visits:
        for arm, members in export.arms.items():
            totals = {s: v for s in members if (v := total(s, visit)) is not None}
            for level, low, high in levels:
                within = {s for s, v in totals.items()
                          if (low is None or v >= low) and (high is None or v < high)}
                cells[f"{endpoint}/{instrument} {level}/{visit}/{arm}"] = _count(
                    within, len(totals))


def _adverse(export: Export, cells: dict[str, Any]) -> None:
    """AEs with onset on study days 0-365: related (reactions) and all, by category."""
    categories = ENDPOINTS["adverse-drug-reactions"].parameters["categories"]
    for category in ("any", *categories):
        for subset in ("reactions", "all"):
            counted = {}
            for arm, members in export.arms.items():
                events = [(s, r) for s in members for r in export.rows["AE"][s]
                          if 0 <= (_when(r["AESTDTC"]).date() - export.start(s)).days <= 365
                          and category in ("any", r["AECAT"].lower())
                          and (subset == "all" or r["AEREL"] in RELATED)]
                subjects = {s for s, _ in events}
                cells[f"adverse-drug-reactions/{subset}:{category}/Y1/{arm}"] = _count(
                    subjects, len(members), events=len(events),
                    serious_events=sum(r["AESER"] == "Y" for _, r in events))
                counted[arm] = (len(subjects), len(members))
            if category == "any":
                cells[f"adverse-drug-reactions/{subset}:any/Y1/IL2-STD"] = _newcombe(
                    *counted.get("IL2", (0, 0)), *counted.get("STD", (0, 0)))


def _check_analysis_datasets(directory: Path, cells: dict[str, dict[str, Any]]) -> None:
    """ADSL: every subject, with the BSA in force at the end of the enrolment day as its
    baseline; ADLIST: each cell's rows name exactly the subjects the cell counts."""
    export = Export(directory)
    adsl = {r["USUBJID"]: r for r in _read(directory, "ADSL")}
    assert sorted(adsl) == sorted(r["USUBJID"] for r in _read(directory, "DM"))
    for subject, row in adsl.items():
        end = datetime.combine(export.start(subject), time(23, 59, 59), UTC)
        areas = sorted((r["VSDTC"], r["VSSPID"], r["VSORRES"])
                       for r in export.rows["VS"][subject]
                       if r["VSTESTCD"] == "BSA" and _when(r["VSDTC"]) <= end)
        assert row["BSABL"] == (areas[-1][2] if areas else "")
        assert row["ENRLFL"] == "Y" and row["ARMCD"] == CHILDREN[row["SUBJID"]][1]
    listed: dict[str, set[str]] = defaultdict(set)
    for row in _read(directory, "ADLIST"):
        listed[row["CELL"]].add(row["USUBJID"])
    for cell, row in cells.items():
        counted = row.get("n", row.get("subjects"))
        if counted is not None:
            assert len(listed.get(cell, set())) == counted, cell
