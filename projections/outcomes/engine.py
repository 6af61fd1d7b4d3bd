"""One engine for every study's outcome tables: the study's declared endpoints
(``domain.endpoints``) computed from its subjects' outcome facts (or casebooks) as of a
recorded time.

Every figure is a *cell* with an id (``endpoint/parameter/timepoint/arm``, or
``…/test-reference`` for a comparison); the engine also knows which subjects and records each
cell was computed from, which :func:`cell_contributions` returns (the drill-down).
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from domain.endpoints import Endpoint, Timepoint
from domain.records import therapy_daily_dose
from domain.rules.steroids import prednisone_equivalent
from projections.casebook import in_force
from projections.outcomes.facts import outcome_facts
from projections.outcomes.statistics import hodges_lehmann, newcombe, summary

METHOD = "outcomes/2"
# Arms of subjects never treated (SDTM conventions): outside the safety population.
UNTREATED_ARMS = frozenset({"Scrnfail", "NOTASSGN", "NOTTRT"})
DOSE_FIELDS = ("dose_mg", "dose_mg_per_day", "frequency")  # what a course's daily dose reads
GLUCOCORTICOID = "glucocorticoid"

Book = dict[str, Any]
_LATEST = "_latest"  # a book's key of its latest records by visit and field, while computing
Contributions = dict[str, set[str]]  # subject -> record ids


@dataclass
class Item:
    """One subject's value in a cell, and the records it was computed from."""

    subject: str
    value: float
    records: set[str]


@dataclass
class Tables:
    """The endpoints' rows and comparisons being built, and each cell's contributions."""

    endpoints: dict[str, Any] = field(default_factory=dict)
    cells: dict[str, Contributions] = field(default_factory=dict)

    def _rows(self, endpoint: Endpoint) -> dict[str, Any]:
        rows: dict[str, Any] = self.endpoints[endpoint.id]
        return rows

    def summary(self, endpoint: Endpoint, parameter: str, timepoint: str, arm: str,
                unit: str, items: Sequence[Item]) -> None:
        """A summary row of ``items``."""
        cell = f"{endpoint.id}/{parameter}/{timepoint}/{arm}"
        self._rows(endpoint)["rows"].append({
            "cell": cell, "parameter": parameter, "timepoint": timepoint, "arm": arm,
            "unit": unit, **summary(item.value for item in items)})
        self.cells[cell] = _contributions(items)

    def count(self, endpoint: Endpoint, parameter: str, timepoint: str, arm: str,
              subjects: Contributions, denominator: int, **extra: Any) -> None:
        """A count row: subjects (of ``denominator``) and their records (``extra``: more
        counts, e.g. events)."""
        cell = f"{endpoint.id}/{parameter}/{timepoint}/{arm}"
        self._rows(endpoint)["rows"].append({
            "cell": cell, "parameter": parameter, "timepoint": timepoint, "arm": arm,
            "subjects": len(subjects), "denominator": denominator,
            "percent": round(100 * len(subjects) / denominator, 4) if denominator else None,
            **extra})
        self.cells[cell] = subjects

    def shift(self, endpoint: Endpoint, parameter: str, timepoint: str,
              by_arm: Mapping[str, Sequence[Item]]) -> None:
        """The declared location-shift comparison of the arms' items."""
        comparison = endpoint.comparison
        if comparison is None or comparison.method != "hodges_lehmann":
            return
        test = by_arm.get(comparison.test, [])
        reference = by_arm.get(comparison.reference, [])
        self._comparison(endpoint, parameter, timepoint, hodges_lehmann(
            [i.value for i in test], [i.value for i in reference], comparison.level),
            _contributions([*test, *reference]))

    def proportion(self, endpoint: Endpoint, parameter: str, timepoint: str,
                   by_arm: Mapping[str, tuple[Contributions, int]]) -> None:
        """The declared difference-in-proportions comparison (subjects, denominator)."""
        comparison = endpoint.comparison
        if comparison is None or comparison.method != "newcombe":
            return
        test, test_n = by_arm.get(comparison.test, ({}, 0))
        reference, reference_n = by_arm.get(comparison.reference, ({}, 0))
        self._comparison(endpoint, parameter, timepoint, newcombe(
            len(test), test_n, len(reference), reference_n, comparison.level),
            {**test, **reference})

    def _comparison(self, endpoint: Endpoint, parameter: str, timepoint: str,
                    result: dict[str, Any], contributions: Contributions) -> None:
        assert endpoint.comparison is not None
        arms = f"{endpoint.comparison.test}-{endpoint.comparison.reference}"
        cell = f"{endpoint.id}/{parameter}/{timepoint}/{arms}"
        self._rows(endpoint)["comparisons"].append({
            "cell": cell, "parameter": parameter, "timepoint": timepoint, "arms": arms,
            **result})
        self.cells[cell] = contributions


def _contributions(items: Iterable[Item]) -> Contributions:
    out: Contributions = {}
    for item in items:
        out.setdefault(item.subject, set()).update(item.records)
    return out


def population(books: Sequence[Book], endpoint: Endpoint) -> dict[str, list[Book]]:
    """The endpoint's subjects by arm: enrolled, by assigned arm; or treated (safety), by
    the arm actually received (the assigned one where none is recorded apart)."""
    groups: dict[str, list[Book]] = {}
    for book in books:
        if not book["enrolled_on"]:
            continue
        arm = book["arm"]
        if endpoint.population == "safety":
            arm = book.get("actual_arm") or arm
        if arm is None or arm in UNTREATED_ARMS:
            continue
        groups.setdefault(arm, []).append(book)
    return {arm: groups[arm] for arm in sorted(groups)}


def _records(book: Book, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = book["records"].get(kind, [])
    return found


def _day(book: Book, when: str) -> int:
    return (datetime.fromisoformat(when).date() - date.fromisoformat(book["enrolled_on"])).days


def _in_window(book: Book, record: dict[str, Any], timepoint: Timepoint) -> bool:
    assert timepoint.window is not None
    first, last = timepoint.window
    return first <= _day(book, record["observed_at"]) <= last


def _visit_latest(book: Book, kind: str, visit: str, name: str,
                  value: Any) -> dict[str, Any] | None:
    """The latest record of ``kind`` at ``visit`` whose field ``name`` is ``value``."""
    # Asked per subject, visit and test: each kind's latest records are found once.
    index: dict[tuple[str, str], dict[tuple[Any, Any], dict[str, Any]]] = book.setdefault(
        _LATEST, {})
    if (kind, name) not in index:
        # Records are in clinical-time order: the last of a visit and value is the latest.
        index[kind, name] = {(r["visit"], r["fields"].get(name)): r
                             for r in _records(book, kind)}
    return index[kind, name].get((visit, value))


# --- doses per m² -------------------------------------------------------------------------

def _end_of(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), UTC)


def _running(record: dict[str, Any], when: datetime) -> bool:
    if datetime.fromisoformat(record["observed_at"]) > when:
        return False
    stopped = in_force(record["timeline"], "stopped_at", when)
    return not stopped or datetime.fromisoformat(stopped) > when


def _bsa(book: Book, when: datetime) -> tuple[float, str] | None:
    found = [r for r in _records(book, "vitals")
             if "bsa" in r["derived"] and datetime.fromisoformat(r["observed_at"]) <= when]
    if not found:
        return None
    latest = found[-1]
    return float(latest["derived"]["bsa"]["value"]), latest["record_id"]


def bsa_in_force(book: Book, day: date) -> tuple[float, str] | None:
    """The BSA in force at the end of ``day`` (latest vitals by then) and its record's id."""
    return _bsa(book, _end_of(day))


def _parameter(record: dict[str, Any]) -> str:
    fields = record["fields"]
    return GLUCOCORTICOID if fields["category"] == GLUCOCORTICOID else str(fields["drug"])


def _doses_on(book: Book, day: date, weekly: set[str]) -> dict[str, Item] | None:
    """Each parameter's dose per m² in force on ``day`` (None: no BSA in force)."""
    when = _end_of(day)
    bsa = _bsa(book, when)
    if bsa is None:
        return None
    area, vitals_id = bsa
    doses: dict[str, Item] = {}
    for record in _records(book, "therapies"):
        name = _parameter(record)
        item = doses.setdefault(name, Item(book["subject"], 0.0, {vitals_id}))
        if not _running(record, when):
            continue
        # A weekly dose is not a daily one: the dose in force at its frequency, per day.
        daily = therapy_daily_dose({n: in_force(record["timeline"], n, when)
                                    for n in DOSE_FIELDS}) or 0.0
        if name == GLUCOCORTICOID:
            daily = prednisone_equivalent(record["fields"]["drug"], daily).value
        item.value += daily / area * (7 if name in weekly else 1)
        item.records.add(record["record_id"])
    doses.setdefault(GLUCOCORTICOID, Item(book["subject"], 0.0, {vitals_id}))
    return doses


def _dose_changes(book: Book) -> list[datetime]:
    """Every time at which a dose per m² may change: vitals, therapies, their timelines'
    steps and stops. Between two of them, a day's doses are those of the day before."""
    times = [r["observed_at"] for r in _records(book, "vitals") if "bsa" in r["derived"]]
    for record in _records(book, "therapies"):
        times.append(record["observed_at"])
        for entry in record["timeline"]:
            times.append(entry["observed_at"])
            if entry["fields"].get("stopped_at"):
                times.append(entry["fields"]["stopped_at"])
    return sorted(datetime.fromisoformat(t) for t in times)


def _dose_items(book: Book, timepoint: Timepoint, weekly: set[str]) -> dict[str, Item]:
    """Each parameter's mean dose per m² over the timepoint's window (days with a BSA)."""
    assert timepoint.window is not None
    start = date.fromisoformat(book["enrolled_on"])
    first, last = timepoint.window
    changes = _dose_changes(book)
    # A day's doses depend only on which changes came before its end (or at it): days alike
    # share one computation (the same items, read only).
    computed: dict[tuple[int, int], dict[str, Item] | None] = {}
    days = []
    for offset in range(first, last + 1):
        day = start + timedelta(days=offset)
        end = _end_of(day)
        seen = (bisect_left(changes, end), bisect_right(changes, end))
        if seen not in computed:
            computed[seen] = _doses_on(book, day, weekly)
        doses = computed[seen]
        if doses is not None:
            days.append(doses)
    out: dict[str, Item] = {}
    for name in {n for d in days for n in d}:
        present = [d[name] for d in days if name in d]
        out[name] = Item(book["subject"], sum(i.value for i in present) / len(days),
                         set().union(*(i.records for i in present)))
    return out


def dose_per_m2(endpoint: Endpoint, groups: Mapping[str, list[Book]], out: Tables) -> None:
    """Average dose per m² per drug (glucocorticoids as prednisone equivalents) over each
    window; the change between the two declared timepoints, compared between arms."""
    weekly_codes = set(endpoint.parameters.get("weekly_frequencies", ()))
    therapies = [r for books in groups.values() for b in books for r in _records(b, "therapies")]
    drugs = sorted({_parameter(r) for r in therapies} - {GLUCOCORTICOID})
    weekly = {_parameter(r) for r in therapies if r["fields"].get("frequency") in weekly_codes}
    weekly.discard(GLUCOCORTICOID)
    later, earlier = endpoint.parameters.get("change", [None, None])
    windows: dict[tuple[str, str], dict[str, Item]] = {}  # every drug's, computed once

    def window(book: Book, timepoint: Timepoint) -> dict[str, Item]:
        key = (book["subject"], timepoint.code)
        if key not in windows:
            windows[key] = _dose_items(book, timepoint, weekly)
        return windows[key]

    for name in (GLUCOCORTICOID, *drugs):
        unit = ("prednisone-eq mg/m2/day" if name == GLUCOCORTICOID
                else f"mg/m2/{'week' if name in weekly else 'day'}")
        values: dict[str, dict[str, list[Item]]] = {}
        for arm, books in groups.items():
            by_point = values.setdefault(arm, {})
            for book in books:
                takes = name == GLUCOCORTICOID or any(
                    _parameter(r) == name for r in _records(book, "therapies"))
                if not takes:
                    continue
                points: dict[str, Item] = {}
                for timepoint in endpoint.timepoints:
                    # A later window counts once the subject reached its visit.
                    if timepoint.code != earlier and timepoint.code not in book["visits"]:
                        continue
                    item = window(book, timepoint).get(name)
                    if item is not None:
                        points[timepoint.code] = item
                        by_point.setdefault(timepoint.code, []).append(item)
                if later in points and earlier in points:
                    by_point.setdefault("change", []).append(Item(
                        book["subject"], points[later].value - points[earlier].value,
                        points[later].records | points[earlier].records))
        codes = [t.code for t in endpoint.timepoints]
        for code in codes:
            for arm in groups:
                out.summary(endpoint, name, code, arm, unit, values[arm].get(code, []))
        if later and earlier:
            change = f"{later}-{earlier}"
            for arm in groups:
                out.summary(endpoint, name, change, arm, unit, values[arm].get("change", []))
            out.shift(endpoint, name, change, {a: v.get("change", []) for a, v in values.items()})


# --- labs, immune cells and cytokines, scores -----------------------------------------------

def _visit_codes(endpoint: Endpoint) -> list[str]:
    return [t.visit for t in endpoint.timepoints if t.visit is not None]


def _by_visit_and_change(endpoint: Endpoint, groups: Mapping[str, list[Book]], out: Tables,
                         parameter: str, unit: str,
                         value: Callable[[Book, str], Item | None]) -> dict[str, Any]:
    """Rows of a value at each visit and its change from the first visit, with the shift
    comparison of each change; returns each arm's (baseline, visit) items per subject."""
    visits = _visit_codes(endpoint)
    base = visits[0]
    pairs: dict[str, dict[str, list[tuple[Item, Item]]]] = {}
    baselines: dict[str, dict[str, Item]] = {}  # each arm's, computed once for every visit
    for visit in visits:
        changes: dict[str, list[Item]] = {}
        for arm, books in groups.items():
            items = [i for b in books if (i := value(b, visit)) is not None]
            out.summary(endpoint, parameter, visit, arm, unit, items)
            if visit == base:
                baselines[arm] = {i.subject: i for i in items}
                continue
            baseline = baselines[arm]
            both = [(baseline[i.subject], i) for i in items if i.subject in baseline]
            pairs.setdefault(visit, {})[arm] = both
            changes[arm] = [Item(i.subject, i.value - b.value, b.records | i.records)
                            for b, i in both]
        if visit == base:
            continue
        for arm in groups:
            out.summary(endpoint, parameter, f"{visit}-{base}", arm, unit, changes[arm])
        out.shift(endpoint, parameter, f"{visit}-{base}", changes)
    return pairs


def _lab_value(book: Book, visit: str, code: str,
               convert: Mapping[str, float] | None) -> Item | None:
    record = _visit_latest(book, "labs", visit, "code", code)
    if record is None:
        return None
    fields = record["fields"]
    factor = 1.0 if convert is None else convert.get(fields["unit"], 1.0)
    return Item(book["subject"], float(fields["value"]) * factor, {record["record_id"]})


def lab_change(endpoint: Endpoint, groups: Mapping[str, list[Book]], out: Tables) -> None:
    """Each declared test's value at each visit, and its change from baseline."""
    conversions = endpoint.parameters.get("conversions", {})
    for code, unit in endpoint.parameters["tests"].items():
        def value(book: Book, visit: str, code: str = code) -> Item | None:
            return _lab_value(book, visit, code, conversions.get(code))

        _by_visit_and_change(endpoint, groups, out, code, unit, value)


def _absolute(book: Book, visit: str, code: str, unit: str,
              percent_of: Mapping[str, str]) -> Item | None:
    """An absolute count as measured, or as % of its parent x the parent's count."""
    record = _visit_latest(book, "labs", visit, "code", code)
    if record is None:
        return None
    fields = record["fields"]
    if fields["unit"] == unit:
        return Item(book["subject"], float(fields["value"]), {record["record_id"]})
    parent = percent_of.get(code)
    if parent is None or not str(fields["unit"]).startswith("%"):
        return None
    base = _absolute(book, visit, parent, unit, percent_of)
    if base is None:
        return None
    return Item(book["subject"], float(fields["value"]) * base.value / 100,
                {record["record_id"], *base.records})


def immune_response(endpoint: Endpoint, groups: Mapping[str, list[Book]],
                    out: Tables) -> None:
    """Absolute counts at each visit and their change; subjects changed beyond the threshold
    at each visit, up and down, compared between arms as proportions."""
    threshold = float(endpoint.parameters.get("threshold_fraction", 0.2))
    percent_of = endpoint.parameters.get("percent_of", {})
    for code, unit in endpoint.parameters["tests"].items():
        def value(book: Book, visit: str, code: str = code, unit: str = unit) -> Item | None:
            return _absolute(book, visit, code, unit, percent_of)

        pairs = _by_visit_and_change(endpoint, groups, out, code, unit, value)
        base = _visit_codes(endpoint)[0]
        for visit, by_arm in pairs.items():
            counted: dict[str, tuple[Contributions, int]] = {}
            for arm, both in by_arm.items():
                changed: Contributions = {}
                up = down = 0
                for before, after in both:
                    if abs(after.value - before.value) > threshold * abs(before.value) or (
                            before.value == 0 and after.value != 0):
                        changed[after.subject] = before.records | after.records
                        up += after.value > before.value
                        down += after.value < before.value
                out.count(endpoint, f"{code} changed", f"{visit}-{base}", arm, changed,
                          len(both), increased=up, decreased=down)
                counted[arm] = (changed, len(both))
            out.proportion(endpoint, f"{code} changed", f"{visit}-{base}", counted)


def score_change(endpoint: Endpoint, groups: Mapping[str, list[Book]], out: Tables) -> None:
    """An instrument's total at each visit and its change; subjects per activity level."""
    instrument = endpoint.parameters["instrument"]

    def total(book: Book, visit: str) -> Item | None:
        record = _visit_latest(book, "assessments", visit, "instrument", instrument)
        if record is None:
            return None
        return Item(book["subject"], float(record["derived"]["total"]["value"]),
                    {record["record_id"]})

    _by_visit_and_change(endpoint, groups, out, f"{instrument} total", "points", total)
    levels = endpoint.parameters.get("levels") or []
    for visit in _visit_codes(endpoint):
        for arm, books in groups.items():
            assessed = [i for b in books if (i := total(b, visit)) is not None]
            for name, low, high in levels:
                within = [i for i in assessed if (low is None or i.value >= low)
                          and (high is None or i.value < high)]
                out.count(endpoint, f"{instrument} {name}", visit, arm,
                          _contributions(within), len(assessed))


# --- adverse events -----------------------------------------------------------------------

def _event_counts(out: Tables, endpoint: Endpoint, parameter: str, timepoint: str, arm: str,
                  events: Sequence[tuple[str, dict[str, Any]]], denominator: int,
                  serious: Callable[[dict[str, Any]], bool] | None = None
                  ) -> tuple[Contributions, int]:
    subjects: Contributions = {}
    for subject, record in events:
        subjects.setdefault(subject, set()).add(record["record_id"])
    extra: dict[str, Any] = {"events": len(events)}
    if serious is not None:
        extra["serious_events"] = sum(1 for _, r in events if serious(r))
    out.count(endpoint, parameter, timepoint, arm, subjects, denominator, **extra)
    return subjects, denominator


def adverse_reactions(endpoint: Endpoint, groups: Mapping[str, list[Book]],
                      out: Tables) -> None:
    """AEs in the window by category: reactions (related) and all, subjects and events."""
    related = set(endpoint.parameters["related"])
    categories = endpoint.parameters["categories"]
    for timepoint in endpoint.timepoints:
        events = {arm: [(b["subject"], r) for b in books for r in _records(b, "adverse-events")
                        if _in_window(b, r, timepoint)] for arm, books in groups.items()}
        for category in ("any", *categories):
            for subset in ("reactions", "all"):
                counted: dict[str, tuple[Contributions, int]] = {}
                for arm, books in groups.items():
                    chosen = [(s, r) for s, r in events[arm]
                              if category in ("any", r["fields"]["category"])
                              and (subset == "all" or r["fields"]["relationship"] in related)]
                    counted[arm] = _event_counts(out, endpoint, f"{subset}:{category}",
                                                 timepoint.code, arm, chosen, len(books),
                                                 lambda r: bool(r["fields"]["serious"]))
                if category == "any":
                    out.proportion(endpoint, f"{subset}:{category}", timepoint.code, counted)


def sdtm_ae_incidence(endpoint: Endpoint, groups: Mapping[str, list[Book]],
                      out: Tables) -> None:
    """Subjects with at least one SDTM AE row, and rows, by arm."""
    for timepoint in endpoint.timepoints:
        for arm, books in groups.items():
            _event_counts(out, endpoint, "any", timepoint.code, arm,
                          [(b["subject"], r) for b in books for r in _records(b, "AE")],
                          len(books))


def _flagged(book: Book, flag: Mapping[str, str]) -> set[str]:
    """Record ids of the AE rows a supplemental qualifier flags (``AE-<seq>``)."""
    return {f"AE-{r['fields'].get('IDVARVAL')}" for r in _records(book, flag["domain"])
            if r["fields"].get("QNAM") == flag["qnam"]
            and r["fields"].get("QVAL") == flag["value"]}


def sdtm_ae_by_soc_severity(endpoint: Endpoint, groups: Mapping[str, list[Book]],
                            out: Tables) -> None:
    """Treatment-emergent AE rows by body system, in all and by severity."""
    flag = endpoint.parameters["flag"]
    events = {arm: [(b["subject"], r) for b in books
                    for flagged in (_flagged(b, flag),)
                    for r in _records(b, "AE") if r["record_id"] in flagged]
              for arm, books in groups.items()}
    keys = sorted({(str(r["fields"].get("AEBODSYS") or ""), str(r["fields"].get("AESEV") or ""))
                   for found in events.values() for _, r in found})
    socs = sorted({soc for soc, _ in keys})
    for timepoint in endpoint.timepoints:
        for soc, severity in [("ANY", "ANY"), *[(s, "ANY") for s in socs], *keys]:
            for arm, books in groups.items():
                chosen = [(s, r) for s, r in events[arm]
                          if soc in ("ANY", r["fields"].get("AEBODSYS"))
                          and severity in ("ANY", r["fields"].get("AESEV"))]
                _event_counts(out, endpoint, f"{soc}|{severity}", timepoint.code, arm, chosen,
                              len(books))


def sdtm_disposition(endpoint: Endpoint, groups: Mapping[str, list[Book]],
                     out: Tables) -> None:
    """Subjects by disposition event (DSDECOD of the declared DSCAT), by arm."""
    category = endpoint.parameters["category"]
    events = {arm: [(b["subject"], r) for b in books for r in _records(b, "DS")
                    if r["fields"].get("DSCAT") == category] for arm, books in groups.items()}
    decods = sorted({str(r["fields"].get("DSDECOD")) for found in events.values()
                     for _, r in found})
    for timepoint in endpoint.timepoints:
        for decod in decods:
            for arm, books in groups.items():
                _event_counts(out, endpoint, decod, timepoint.code, arm,
                              [(s, r) for s, r in events[arm]
                               if str(r["fields"].get("DSDECOD")) == decod], len(books))


MEASURES: Mapping[str, Callable[[Endpoint, Mapping[str, list[Book]], Tables], None]] = {
    "dose_per_m2": dose_per_m2,
    "lab_change": lab_change,
    "immune_response": immune_response,
    "score_change": score_change,
    "adverse_reactions": adverse_reactions,
    "sdtm_ae_incidence": sdtm_ae_incidence,
    "sdtm_ae_by_soc_severity": sdtm_ae_by_soc_severity,
    "sdtm_disposition": sdtm_disposition,
}


def _compute(casebooks: Sequence[Book], endpoints: Sequence[Endpoint]) -> Tables:
    # Copies: the engine keeps its look-up indexes in them (_LATEST), not in the caller's.
    books = [dict(book) if "visits" in book else outcome_facts(book) for book in casebooks]
    out = Tables()
    for endpoint in endpoints:
        groups = population(books, endpoint)
        out.endpoints[endpoint.id] = {
            **{k: v for k, v in endpoint.to_dict().items() if k not in ("id", "parameters")},
            "arms": {arm: len(members) for arm, members in groups.items()},
            "rows": [], "comparisons": []}
        MEASURES[endpoint.measure](endpoint, groups, out)
    return out


def outcome_tables(casebooks: Sequence[Book], study_id: str, endpoints: Sequence[Endpoint],
                   as_of: datetime | None, valid_at: datetime | None = None) -> dict[str, Any]:
    """The tables of ``endpoints`` from the given casebooks, or their outcome facts (those
    of a clinical time ``valid_at``, when the tables are of one)."""
    return {"study_id": study_id, "as_of": as_of.isoformat() if as_of else None,
            "valid_at": valid_at.isoformat() if valid_at else None,
            "method": METHOD, "endpoints": _compute(casebooks, endpoints).endpoints}


def cell_contributions(casebooks: Sequence[Book], endpoints: Sequence[Endpoint],
                       cell: str) -> Contributions | None:
    """The subjects and records behind ``cell`` (None: no such cell)."""
    return _compute(casebooks, endpoints).cells.get(cell)


def all_contributions(casebooks: Sequence[Book], endpoints: Sequence[Endpoint]
                      ) -> dict[str, Contributions]:
    """Every cell's subjects and records (the listings behind the tables)."""
    return _compute(casebooks, endpoints).cells


def to_json(tables: dict[str, Any]) -> str:
    """Stable JSON: sorted keys, fixed precision (already rounded), one trailing newline."""
    return json.dumps(tables, sort_keys=True, indent=2) + "\n"
