"""NCT04397107's outcome tables, by arm, from casebooks as of a recorded time.

The same function serves the SQL read side and the oracle: they differ only in where the
casebooks come from. Definitions (method version ``outcomes/1``):

- Baseline is the enrollment date; one year is enrollment + 365 days, counted for a subject
  only once a record of the M12 visit exists.
- Average daily steroid dose: the summed prednisone-equivalent daily doses of all
  glucocorticoid courses in force (valid time) — at baseline, those in force at the end of
  the enrollment day (no therapy is recorded before consent); at one year, their mean over
  the 28 days ending on the time point.
- Immunosuppressant dose per m²: likewise, summed mg/day of immunosuppressants in force,
  divided by the body-surface area in force on each day.
- Labs (C3, C4, anti-dsDNA, Treg, cytokines): the result recorded for each visit, in the
  test's first catalogued unit (g/L for complement).
- SELENA-SLEDAI: totals per visit and the change M12 - baseline (SLE subjects);
  ESSDAI: activity levels per visit (pSS subjects).
- Adverse events by category and arm: subjects with at least one, and events.
Statistics: n, mean, SD (n - 1), median, Q1 and Q3 (inclusive quantiles), 4 decimals.

The tables read little of a casebook: its arm and enrollment, the records of a few kinds, the
latest result of each lab test at each visit, and which visits have records. That much is
its *outcome facts* (:func:`outcome_facts`); the read side keeps them as of every recorded
time, so that the tables as of T read a few rows per subject, not every lab result.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from domain.records import therapy_daily_dose
from domain.rules.steroids import prednisone_equivalent
from projections.casebook import in_force

METHOD = "outcomes/1"
WINDOW_DAYS = 28
LABS = ("C3", "C4", "ANTIDSDNA", "TREG", "IL6", "IL10", "IL17A", "IFNG", "TNFA")
VISITS = ("BASELINE", "M1", "M3", "M6", "M12")
TO_FIRST_UNIT = {("C3", "mg/dL"): 0.01, ("C4", "mg/dL"): 0.01}


def stats(values: Iterable[float]) -> dict[str, Any]:
    """n, mean, SD, median, Q1, Q3 (None where undefined), rounded to 4 decimals."""
    data = sorted(float(v) for v in values)
    n = len(data)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None, "q1": None, "q3": None}
    q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive") if n > 1 else (data[0],) * 3
    return {
        "n": n,
        "mean": round(statistics.fmean(data), 4),
        "sd": round(statistics.stdev(data), 4) if n > 1 else None,
        "median": round(statistics.median(data), 4),
        "q1": round(q1, 4),
        "q3": round(q3, 4),
    }


DOSE_FIELDS = ("dose_mg", "dose_mg_per_day", "frequency")  # what a course's daily dose reads


def _at(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), UTC)


def _running(record: dict[str, Any], when: datetime) -> bool:
    if datetime.fromisoformat(record["observed_at"]) > when:
        return False
    stopped = in_force(record["timeline"], "stopped_at", when)
    return not stopped or datetime.fromisoformat(stopped) > when


def _bsa(book: dict[str, Any], when: datetime) -> float | None:
    found = [r for r in book["records"].get("vitals", [])
             if "bsa" in r["derived"] and datetime.fromisoformat(r["observed_at"]) <= when]
    return max(found, key=lambda r: r["observed_at"])["derived"]["bsa"]["value"] if found else None


def _daily_doses(book: dict[str, Any], day: date) -> tuple[float, float | None]:
    """(prednisone-equivalent mg/day, immunosuppressant mg/m²/day) in force on ``day``."""
    when = _at(day)
    steroid = 0.0
    immuno = 0.0
    for record in book["records"].get("therapies", []):
        if not _running(record, when):
            continue
        # A weekly dose is not a daily one: the dose in force at its frequency, per day.
        dose = therapy_daily_dose({name: in_force(record["timeline"], name, when)
                                   for name in DOSE_FIELDS}) or 0.0
        if record["fields"]["category"] == "glucocorticoid":
            steroid += prednisone_equivalent(record["fields"]["drug"], dose).value
        else:
            immuno += dose
    bsa = _bsa(book, when)
    return steroid, (immuno / bsa if bsa else None)


def _window_means(book: dict[str, Any], end: date) -> tuple[float, float | None]:
    days = [end - timedelta(days=i) for i in range(WINDOW_DAYS)]
    doses = [_daily_doses(book, day) for day in days]
    per_m2 = [d for _, d in doses if d is not None]
    return (statistics.fmean(s for s, _ in doses),
            statistics.fmean(per_m2) if per_m2 else None)


def _visit_records(book: dict[str, Any], kind: str, visit: str) -> list[dict[str, Any]]:
    return sorted((r for r in book["records"].get(kind, []) if r["visit"] == visit),
                  key=lambda r: r["observed_at"])


# The record kinds the tables read whole; of the labs they read the latest of each visit and
# test, and of every other kind only which visits have records.
RECORD_KINDS = ("therapies", "vitals", "assessments", "adverse-events")


def slim_lab(view: dict[str, Any]) -> dict[str, Any]:
    """What the tables read of a lab result (its view as the casebook shows it)."""
    fields = view["fields"]
    return {"record_id": view["record_id"], "observed_at": view["observed_at"],
            "visit": view["visit"], "fields": {"code": fields.get("code"),
                                               "value": fields.get("value"),
                                               "unit": fields.get("unit")}}


def by_clinical_time(views: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Record views in the casebook's order: observed time, then record id."""
    return sorted(views, key=lambda view: (view["observed_at"], view["record_id"]))


def facts(header: dict[str, Any], visits: Iterable[str],
          records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Outcome facts from their parts: ``header`` with the subject, arm and enrollment date,
    the visits that have records, and the records of :data:`RECORD_KINDS` and slim latest
    lab results, by kind."""
    return {"subject": header["subject"], "arm": header["arm"],
            "enrolled_on": header["enrolled_on"], "visits": sorted(visits),
            "records": {kind: by_clinical_time(views) for kind, views in sorted(records.items())
                        if views}}


def outcome_facts(book: dict[str, Any]) -> dict[str, Any]:
    """What the outcome tables read of a casebook (the tables of the facts are the tables of
    the casebook)."""
    records: dict[str, list[dict[str, Any]]] = {
        kind: list(views) for kind, views in book["records"].items() if kind in RECORD_KINDS}
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for view in book["records"].get("labs", []):  # in clinical-time order: the last wins
        latest[(view["visit"], repr(view["fields"].get("code")))] = slim_lab(view)
    records["labs"] = list(latest.values())
    visits = {view["visit"] for views in book["records"].values() for view in views
              if view.get("visit") is not None}
    return facts(book, visits, records)


def _has_visit(book: dict[str, Any], visit: str) -> bool:
    return visit in book["visits"]


def outcome_tables(casebooks: list[dict[str, Any]], study_id: str,
                   as_of: datetime | None) -> dict[str, Any]:
    """The outcome tables of the given casebooks, or of their outcome facts."""
    casebooks = [book if "visits" in book else outcome_facts(book) for book in casebooks]
    enrolled = [b for b in casebooks if b["arm"] is not None and b["enrolled_on"]]
    arms = sorted({b["arm"] for b in enrolled})
    by_arm = {arm: [b for b in enrolled if b["arm"] == arm] for arm in arms}

    primary: dict[str, Any] = {"steroid_prednisone_equivalent_mg_per_day": {},
                               "immunosuppressant_mg_per_m2_per_day": {}}
    for arm, books in by_arm.items():
        points: dict[str, dict[str, list[float]]] = {
            name: {"baseline": [], "one_year": [], "change": []} for name in primary}
        for book in books:
            start = date.fromisoformat(book["enrolled_on"])
            base = _daily_doses(book, start)
            year = _window_means(book, start + timedelta(days=365)) if _has_visit(
                book, "M12") else None
            for i, name in enumerate(primary):
                if base[i] is not None:
                    points[name]["baseline"].append(base[i])  # type: ignore[arg-type]
                if year is not None and year[i] is not None:
                    points[name]["one_year"].append(year[i])  # type: ignore[arg-type]
                    if base[i] is not None:
                        points[name]["change"].append(year[i] - base[i])  # type: ignore[operator]
        for name in primary:
            primary[name][arm] = {k: stats(v) for k, v in points[name].items()}

    labs: dict[str, Any] = {}
    for code in LABS:
        labs[code] = {visit: {arm: stats(
            value for b in books if (value := _latest_lab(b, visit, code)) is not None)
            for arm, books in by_arm.items()} for visit in VISITS}
    labs = {code: table for code, table in labs.items()
            if any(s["n"] for v in table.values() for s in v.values())}

    sledai_by_visit: dict[str, Any] = {}
    essdai_levels: dict[str, Any] = {}
    for visit in VISITS:
        sledai_by_visit[visit] = {arm: stats(
            t for b in books if (t := _score(b, visit, "SLEDAI")) is not None)
            for arm, books in by_arm.items()}
        essdai_levels[visit] = {arm: _levels(books, visit) for arm, books in by_arm.items()}
    sledai_change = {arm: stats(
        last - first for b in books
        if (first := _score(b, "BASELINE", "SLEDAI")) is not None
        and (last := _score(b, "M12", "SLEDAI")) is not None) for arm, books in by_arm.items()}

    return {
        "study_id": study_id,
        "as_of": as_of.isoformat() if as_of else None,
        "method": METHOD,
        "enrolled": {arm: len(books) for arm, books in by_arm.items()},
        "primary": primary,
        "secondary": {
            "labs": labs,
            "sledai_total": {"by_visit": sledai_by_visit, "change_m12_minus_baseline":
                             sledai_change},
            "essdai_levels": essdai_levels,
        },
        "adverse_events": _adverse_events(by_arm),
    }


def _latest_lab(book: dict[str, Any], visit: str, code: str) -> float | None:
    found = [r for r in _visit_records(book, "labs", visit) if r["fields"]["code"] == code]
    if not found:
        return None
    fields = found[-1]["fields"]
    return float(fields["value"]) * TO_FIRST_UNIT.get((code, fields["unit"]), 1.0)


def _score(book: dict[str, Any], visit: str, instrument: str) -> float | None:
    found = [r for r in _visit_records(book, "assessments", visit)
             if r["fields"]["instrument"] == instrument]
    return float(found[-1]["derived"]["total"]["value"]) if found else None


def _levels(books: list[dict[str, Any]], visit: str) -> dict[str, int]:
    counts = {"low": 0, "moderate": 0, "high": 0}
    for book in books:
        found = [r for r in _visit_records(book, "assessments", visit)
                 if r["fields"]["instrument"] == "ESSDAI"]
        if found:
            counts[found[-1]["derived"]["activity"]] += 1
    return counts


def _adverse_events(by_arm: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    categories = sorted({r["fields"]["category"] for books in by_arm.values() for b in books
                         for r in b["records"].get("adverse-events", [])} | {"any"})
    for category in categories:
        table[category] = {}
        for arm, books in by_arm.items():
            events = [r for b in books for r in b["records"].get("adverse-events", [])
                      if category in ("any", r["fields"]["category"])]
            subjects = sum(1 for b in books if any(
                category in ("any", r["fields"]["category"])
                for r in b["records"].get("adverse-events", [])))
            table[category][arm] = {
                "subjects": subjects,
                "percent": round(100 * subjects / len(books), 4) if books else None,
                "events": len(events),
                "serious_events": sum(1 for r in events if r["fields"]["serious"]),
            }
    return table


def to_json(tables: dict[str, Any]) -> str:
    """Stable JSON: sorted keys, fixed precision (already rounded), one trailing newline."""
    return json.dumps(tables, sort_keys=True, indent=2) + "\n"
