"""One engine for every study's outcome tables: the study's declared endpoints
(``domain.endpoints``) computed from its subjects' outcome facts (or casebooks) as of a
recorded time.

Every figure is a *cell* with an id (``endpoint/parameter/timepoint/arm``, or
``…/test-reference`` for a comparison); the engine also knows which subjects and records each
cell was computed from, which :func:`cell_contributions` returns (the drill-down).

The engine works in two steps. A subject's *summary* (:func:`subject_summary`) holds what it
contributes to every endpoint: its arm in the endpoint's population and the values computed
from its own facts alone (doses per m² over each window, the latest result of each test at
each visit, its adverse events' categories). The tables combine the summaries of the
subjects (:func:`tables_of_summaries`): everything that depends on more than one subject
(which drugs and which weekly ones, the statistics, the comparisons). A summary is JSON-native,
so the read side keeps each subject's summary as of every recorded time and the tables as of T
combine one row per subject.
"""

from __future__ import annotations

import gc
import hashlib
import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Any

import orjson

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

# The summaries' form: bump when what a summary holds, or how it is computed, changes (the
# read side then computes the tables from the facts until its summaries are rebuilt).
SUMMARY_VERSION = 1

Book = dict[str, Any]
_LATEST = "_latest"  # a book's key of its latest records by visit and field, while computing
Contributions = dict[str, set[str]]  # subject -> record ids
Summary = dict[str, Any]  # one subject's contributions to every endpoint (JSON-native)
# An item in a summary: [value, *record ids] (no record ids where the summary omits them).
ItemData = list[Any]
Member = tuple[str, Any]  # a subject's code and what it contributes to one endpoint
Groups = Mapping[str, list[Member]]  # an endpoint's members by arm
# A subject's adverse event in a count: subject, record id, serious (None: not counted).
Counted = tuple[str, str, bool | None]


@dataclass(slots=True)
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
    # Whether each summary's and shift's contributions are wanted (the drill-down's), or
    # only the figures: gathering them is a quarter of combining a thousand subjects.
    traced: bool = True
    # Whether the rows' figures are wanted, or only the cells' contributions (the drill-down,
    # the analysis datasets): the comparisons' statistics import scipy and statsmodels,
    # about 95 MB in a bundle's process that writes the listings only.
    figured: bool = True

    def _rows(self, endpoint: Endpoint) -> dict[str, Any]:
        rows: dict[str, Any] = self.endpoints[endpoint.id]
        return rows

    def summary(self, endpoint: Endpoint, parameter: str, timepoint: str, arm: str,
                unit: str, items: Sequence[Item]) -> None:
        """A summary row of ``items``."""
        cell = f"{endpoint.id}/{parameter}/{timepoint}/{arm}"
        if self.figured:
            self._rows(endpoint)["rows"].append({
                "cell": cell, "parameter": parameter, "timepoint": timepoint, "arm": arm,
                "unit": unit, **summary(item.value for item in items)})
        if self.traced:
            self.cells[cell] = _contributions(items)

    def count(self, endpoint: Endpoint, parameter: str, timepoint: str, arm: str,
              subjects: Contributions, denominator: int, **extra: Any) -> None:
        """A count row: subjects (of ``denominator``) and their records (``extra``: more
        counts, e.g. events)."""
        cell = f"{endpoint.id}/{parameter}/{timepoint}/{arm}"
        if self.figured:
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
        self._comparison(endpoint, parameter, timepoint, partial(
            hodges_lehmann, [i.value for i in test], [i.value for i in reference],
            comparison.level), _contributions([*test, *reference]) if self.traced else {})

    def proportion(self, endpoint: Endpoint, parameter: str, timepoint: str,
                   by_arm: Mapping[str, tuple[Contributions, int]]) -> None:
        """The declared difference-in-proportions comparison (subjects, denominator)."""
        comparison = endpoint.comparison
        if comparison is None or comparison.method != "newcombe":
            return
        test, test_n = by_arm.get(comparison.test, ({}, 0))
        reference, reference_n = by_arm.get(comparison.reference, ({}, 0))
        self._comparison(endpoint, parameter, timepoint, partial(
            newcombe, len(test), test_n, len(reference), reference_n, comparison.level),
            {**test, **reference})

    def _comparison(self, endpoint: Endpoint, parameter: str, timepoint: str,
                    result: Callable[[], dict[str, Any]], contributions: Contributions) -> None:
        assert endpoint.comparison is not None
        arms = f"{endpoint.comparison.test}-{endpoint.comparison.reference}"
        cell = f"{endpoint.id}/{parameter}/{timepoint}/{arms}"
        if self.figured:
            self._rows(endpoint)["comparisons"].append({
                "cell": cell, "parameter": parameter, "timepoint": timepoint, "arms": arms,
                **result()})
        self.cells[cell] = contributions


def _contributions(items: Iterable[Item]) -> Contributions:
    out: Contributions = {}
    for item in items:
        out.setdefault(item.subject, set()).update(item.records)
    return out


def _item(subject: str, data: ItemData) -> Item:
    return Item(subject, data[0], set(data[1:]))


def _data(item: Item, records: bool) -> ItemData:
    return [item.value, *sorted(item.records)] if records else [item.value]


def population_arm(book: Book, population: str) -> str | None:
    """The subject's arm in an endpoint's population (None: outside it): enrolled, by
    assigned arm; or treated (safety), by the arm actually received (the assigned one where
    none is recorded apart)."""
    if not book["enrolled_on"]:
        return None
    arm = book["arm"]
    if population == "safety":
        arm = book.get("actual_arm") or arm
    if arm is None or arm in UNTREATED_ARMS:
        return None
    return str(arm)


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


def _dose_summary(book: Book, endpoint: Endpoint, records: bool) -> dict[str, Any]:
    """The subject's drugs (``takes``; ``weekly``: those given at a weekly frequency) and
    each drug's mean dose per m² over each window that counts (the earlier one always, a
    later one once the subject reached its visit): ``d`` as a daily drug, ``w`` as a weekly
    one. Which drugs count as weekly depends on every subject's courses: the tables choose."""
    weekly_codes = set(endpoint.parameters.get("weekly_frequencies", ()))
    therapies = _records(book, "therapies")
    takes = {_parameter(r) for r in therapies} - {GLUCOCORTICOID}
    weekly = {_parameter(r) for r in therapies
              if r["fields"].get("frequency") in weekly_codes} - {GLUCOCORTICOID}
    earlier = endpoint.parameters.get("change", [None, None])[1]
    counted = [t for t in endpoint.timepoints if t.code == earlier or t.code in book["visits"]]
    # Each drug's dose accumulates apart, so one reading per assumption serves every drug.
    assumptions = {"d": set(), **({"w": takes} if takes else {})}
    out: dict[str, Any] = {"takes": sorted(takes), "weekly": sorted(weekly)}
    for name, assumed in assumptions.items():
        out[name] = {t.code: {drug: _data(item, records)
                              for drug, item in _dose_items(book, t, assumed).items()}
                     for t in counted}
    return out


def dose_per_m2(endpoint: Endpoint, groups: Groups, out: Tables) -> None:
    """Average dose per m² per drug (glucocorticoids as prednisone equivalents) over each
    window; the change between the two declared timepoints, compared between arms."""
    members = [given for group in groups.values() for _, given in group]
    drugs = sorted({name for given in members for name in given["takes"]})
    weekly = {name for given in members for name in given["weekly"]}
    later, earlier = endpoint.parameters.get("change", [None, None])
    for name in (GLUCOCORTICOID, *drugs):
        unit = ("prednisone-eq mg/m2/day" if name == GLUCOCORTICOID
                else f"mg/m2/{'week' if name in weekly else 'day'}")
        values: dict[str, dict[str, list[Item]]] = {}
        for arm, group in groups.items():
            by_point = values.setdefault(arm, {})
            for subject, given in group:
                if name != GLUCOCORTICOID and name not in given["takes"]:
                    continue
                points: dict[str, Item] = {}
                for code, doses in given["w" if name in weekly else "d"].items():
                    if name in doses:
                        points[code] = _item(subject, doses[name])
                        by_point.setdefault(code, []).append(points[code])
                if later in points and earlier in points:
                    by_point.setdefault("change", []).append(Item(
                        subject, points[later].value - points[earlier].value,
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


def _by_visit(book: Book, endpoint: Endpoint, records: bool,
              value: Callable[[Book, str], Item | None]) -> dict[str, ItemData]:
    """The subject's value at each visit that has one."""
    found = {}
    for visit in _visit_codes(endpoint):
        item = value(book, visit)
        if item is not None:
            found[visit] = _data(item, records)
    return found


def _valued(group: list[Member], key: str | None) -> list[tuple[str, dict[str, ItemData]]]:
    """The members with a value at some visit (of test ``key``; None: one value per visit),
    and their values by visit."""
    found = []
    for subject, given in group:
        by_visit = given if key is None else given.get(key)
        if by_visit:
            found.append((subject, by_visit))
    return found


def _at(valued: list[tuple[str, dict[str, ItemData]]], visit: str) -> list[Item]:
    """The items of the members that have one at ``visit``."""
    return [Item(subject, data[0], set(data[1:])) for subject, by_visit in valued
            if (data := by_visit.get(visit)) is not None]


def _by_visit_and_change(endpoint: Endpoint, groups: Groups, out: Tables, parameter: str,
                         unit: str, key: str | None) -> dict[str, Any]:
    """Rows of a value at each visit (the members' items of test ``key``) and its change
    from the first visit, with the shift comparison of each change; returns each arm's
    (baseline, visit) items per subject."""
    visits = _visit_codes(endpoint)
    base = visits[0]
    valued = {arm: _valued(group, key) for arm, group in groups.items()}
    pairs: dict[str, dict[str, list[tuple[Item, Item]]]] = {}
    baselines: dict[str, dict[str, Item]] = {}  # each arm's, computed once for every visit
    for visit in visits:
        changes: dict[str, list[Item]] = {}
        for arm in groups:
            items = _at(valued[arm], visit)
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


def _lab_summary(book: Book, endpoint: Endpoint, records: bool) -> dict[str, Any]:
    """Each declared test's value at each visit (converted to its unit)."""
    conversions = endpoint.parameters.get("conversions", {})
    found = {code: _by_visit(book, endpoint, records, partial(
        _lab_value, code=code, convert=conversions.get(code)))
        for code in endpoint.parameters["tests"]}
    return {code: by_visit for code, by_visit in found.items() if by_visit}


def lab_change(endpoint: Endpoint, groups: Groups, out: Tables) -> None:
    """Each declared test's value at each visit, and its change from baseline."""
    for code, unit in endpoint.parameters["tests"].items():
        _by_visit_and_change(endpoint, groups, out, code, unit, code)


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


def _immune_summary(book: Book, endpoint: Endpoint, records: bool) -> dict[str, Any]:
    """Each declared count's absolute value at each visit."""
    percent_of = endpoint.parameters.get("percent_of", {})
    found = {code: _by_visit(book, endpoint, records, partial(
        _absolute, code=code, unit=unit, percent_of=percent_of))
        for code, unit in endpoint.parameters["tests"].items()}
    return {code: by_visit for code, by_visit in found.items() if by_visit}


def immune_response(endpoint: Endpoint, groups: Groups, out: Tables) -> None:
    """Absolute counts at each visit and their change; subjects changed beyond the threshold
    at each visit, up and down, compared between arms as proportions."""
    threshold = float(endpoint.parameters.get("threshold_fraction", 0.2))
    for code, unit in endpoint.parameters["tests"].items():
        pairs = _by_visit_and_change(endpoint, groups, out, code, unit, code)
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


def _score_summary(book: Book, endpoint: Endpoint, records: bool) -> dict[str, Any]:
    """The instrument's total of each visit's latest assessment."""
    instrument = endpoint.parameters["instrument"]

    def total(book: Book, visit: str) -> Item | None:
        record = _visit_latest(book, "assessments", visit, "instrument", instrument)
        if record is None:
            return None
        return Item(book["subject"], float(record["derived"]["total"]["value"]),
                    {record["record_id"]})

    return _by_visit(book, endpoint, records, total)


def score_change(endpoint: Endpoint, groups: Groups, out: Tables) -> None:
    """An instrument's total at each visit and its change; subjects per activity level."""
    instrument = endpoint.parameters["instrument"]
    _by_visit_and_change(endpoint, groups, out, f"{instrument} total", "points", None)
    levels = endpoint.parameters.get("levels") or []
    valued = {arm: _valued(group, None) for arm, group in groups.items()}
    for visit in _visit_codes(endpoint):
        for arm in groups:
            assessed = _at(valued[arm], visit)
            for name, low, high in levels:
                within = [i for i in assessed if (low is None or i.value >= low)
                          and (high is None or i.value < high)]
                out.count(endpoint, f"{instrument} {name}", visit, arm,
                          _contributions(within), len(assessed))


# --- adverse events -----------------------------------------------------------------------

def _event_counts(out: Tables, endpoint: Endpoint, parameter: str, timepoint: str, arm: str,
                  events: Sequence[Counted], denominator: int,
                  serious: bool = False) -> tuple[Contributions, int]:
    subjects: Contributions = {}
    for subject, record_id, _ in events:
        subjects.setdefault(subject, set()).add(record_id)
    extra: dict[str, Any] = {"events": len(events)}
    if serious:
        extra["serious_events"] = sum(1 for *_, flag in events if flag)
    out.count(endpoint, parameter, timepoint, arm, subjects, denominator, **extra)
    return subjects, denominator


def _reactions_summary(book: Book, endpoint: Endpoint, records: bool) -> dict[str, Any]:
    """The subject's AEs in each window: record id, category, relationship, serious."""
    return {t.code: [[r["record_id"], r["fields"]["category"], r["fields"]["relationship"],
                      bool(r["fields"]["serious"])]
                     for r in _records(book, "adverse-events") if _in_window(book, r, t)]
            for t in endpoint.timepoints}


def adverse_reactions(endpoint: Endpoint, groups: Groups, out: Tables) -> None:
    """AEs in the window by category: reactions (related) and all, subjects and events."""
    related = set(endpoint.parameters["related"])
    categories = endpoint.parameters["categories"]
    for timepoint in endpoint.timepoints:
        events = {arm: [(s, ae) for s, given in group for ae in given[timepoint.code]]
                  for arm, group in groups.items()}
        for category in ("any", *categories):
            for subset in ("reactions", "all"):
                counted: dict[str, tuple[Contributions, int]] = {}
                for arm, group in groups.items():
                    chosen = [(s, ae[0], ae[3]) for s, ae in events[arm]
                              if category in ("any", ae[1])
                              and (subset == "all" or ae[2] in related)]
                    counted[arm] = _event_counts(out, endpoint, f"{subset}:{category}",
                                                 timepoint.code, arm, chosen, len(group),
                                                 serious=True)
                if category == "any":
                    out.proportion(endpoint, f"{subset}:{category}", timepoint.code, counted)


def _sdtm_ae_summary(book: Book, endpoint: Endpoint, records: bool) -> list[str]:
    """The record ids of the subject's SDTM AE rows."""
    return [r["record_id"] for r in _records(book, "AE")]


def sdtm_ae_incidence(endpoint: Endpoint, groups: Groups, out: Tables) -> None:
    """Subjects with at least one SDTM AE row, and rows, by arm."""
    for timepoint in endpoint.timepoints:
        for arm, group in groups.items():
            _event_counts(out, endpoint, "any", timepoint.code, arm,
                          [(s, rid, None) for s, given in group for rid in given],
                          len(group))


def _flagged(book: Book, flag: Mapping[str, str]) -> set[str]:
    """Record ids of the AE rows a supplemental qualifier flags (``AE-<seq>``)."""
    return {f"AE-{r['fields'].get('IDVARVAL')}" for r in _records(book, flag["domain"])
            if r["fields"].get("QNAM") == flag["qnam"]
            and r["fields"].get("QVAL") == flag["value"]}


def _sdtm_soc_summary(book: Book, endpoint: Endpoint, records: bool) -> list[list[Any]]:
    """The subject's flagged AE rows: record id, body system, severity."""
    flagged = _flagged(book, endpoint.parameters["flag"])
    return [[r["record_id"], r["fields"].get("AEBODSYS"), r["fields"].get("AESEV")]
            for r in _records(book, "AE") if r["record_id"] in flagged]


def sdtm_ae_by_soc_severity(endpoint: Endpoint, groups: Groups, out: Tables) -> None:
    """Treatment-emergent AE rows by body system, in all and by severity."""
    events = {arm: [(s, ae) for s, given in group for ae in given]
              for arm, group in groups.items()}
    keys = sorted({(str(ae[1] or ""), str(ae[2] or "")) for found in events.values()
                   for _, ae in found})
    socs = sorted({soc for soc, _ in keys})
    for timepoint in endpoint.timepoints:
        for soc, severity in [("ANY", "ANY"), *[(s, "ANY") for s in socs], *keys]:
            for arm, group in groups.items():
                chosen = [(s, ae[0], None) for s, ae in events[arm]
                          if soc in ("ANY", ae[1]) and severity in ("ANY", ae[2])]
                _event_counts(out, endpoint, f"{soc}|{severity}", timepoint.code, arm, chosen,
                              len(group))


def _sdtm_disposition_summary(book: Book, endpoint: Endpoint,
                              records: bool) -> list[list[Any]]:
    """The subject's disposition events of the declared category: record id, DSDECOD."""
    category = endpoint.parameters["category"]
    return [[r["record_id"], r["fields"].get("DSDECOD")] for r in _records(book, "DS")
            if r["fields"].get("DSCAT") == category]


def sdtm_disposition(endpoint: Endpoint, groups: Groups, out: Tables) -> None:
    """Subjects by disposition event (DSDECOD of the declared DSCAT), by arm."""
    events = {arm: [(s, ae) for s, given in group for ae in given]
              for arm, group in groups.items()}
    decods = sorted({str(ds[1]) for found in events.values() for _, ds in found})
    for timepoint in endpoint.timepoints:
        for decod in decods:
            for arm, group in groups.items():
                _event_counts(out, endpoint, decod, timepoint.code, arm,
                              [(s, ds[0], None) for s, ds in events[arm]
                               if str(ds[1]) == decod], len(group))


# Each measure: what one subject contributes (from its facts; ``records``: with the record
# ids of each item), and the rows and comparisons of the members' contributions.
SUMMARIES: Mapping[str, Callable[[Book, Endpoint, bool], Any]] = {
    "dose_per_m2": _dose_summary,
    "lab_change": _lab_summary,
    "immune_response": _immune_summary,
    "score_change": _score_summary,
    "adverse_reactions": _reactions_summary,
    "sdtm_ae_incidence": _sdtm_ae_summary,
    "sdtm_ae_by_soc_severity": _sdtm_soc_summary,
    "sdtm_disposition": _sdtm_disposition_summary,
}
MEASURES: Mapping[str, Callable[[Endpoint, Groups, Tables], None]] = {
    "dose_per_m2": dose_per_m2,
    "lab_change": lab_change,
    "immune_response": immune_response,
    "score_change": score_change,
    "adverse_reactions": adverse_reactions,
    "sdtm_ae_incidence": sdtm_ae_incidence,
    "sdtm_ae_by_soc_severity": sdtm_ae_by_soc_severity,
    "sdtm_disposition": sdtm_disposition,
}


def summary_format(endpoints: Sequence[Endpoint]) -> str:
    """What summaries computed for ``endpoints`` by this engine are marked with: summaries
    of other endpoints, or of another engine's, do not combine into these tables."""
    declared = orjson.dumps([e.to_dict() for e in endpoints], option=orjson.OPT_SORT_KEYS)
    return f"{METHOD}/{SUMMARY_VERSION}/{hashlib.sha256(declared).hexdigest()[:16]}"


def subject_summary(book: Book, endpoints: Sequence[Endpoint], records: bool = True) -> Summary:
    """What the subject of ``book`` (a casebook or its outcome facts) contributes to the
    tables of ``endpoints``: per endpoint of whose population it is, its arm and values
    (``records``: with the record ids each value was computed from, which the tables do not
    need but the drill-down does)."""
    # A copy: the engine keeps its look-up indexes in it (_LATEST), not in the caller's.
    book = dict(book) if "visits" in book else outcome_facts(book)
    contributions: dict[str, Any] = {}
    for endpoint in endpoints:
        arm = population_arm(book, endpoint.population)
        if arm is not None:
            contributions[endpoint.id] = [arm, SUMMARIES[endpoint.measure](book, endpoint,
                                                                          records)]
    return {"subject": book["subject"], "endpoints": contributions}


@contextmanager
def uncollected() -> Iterator[None]:
    """The cycle collector paused: reading and combining a thousand subjects' summaries
    makes hundreds of thousands of objects (none in a cycle), and the collector's passes over
    them and over everything else the process holds took a quarter of the time or more."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _combine(summaries: Iterable[Summary], endpoints: Sequence[Endpoint],
             traced: bool, figured: bool = True) -> Tables:
    out = Tables(traced=traced, figured=figured)
    summaries = list(summaries)
    with uncollected():
        for endpoint in endpoints:
            members: dict[str, list[Member]] = {}
            for given in summaries:
                found = given["endpoints"].get(endpoint.id)
                if found is not None:
                    members.setdefault(found[0], []).append((given["subject"], found[1]))
            groups = {arm: members[arm] for arm in sorted(members)}
            out.endpoints[endpoint.id] = {
                **{k: v for k, v in endpoint.to_dict().items()
                   if k not in ("id", "parameters")},
                "arms": {arm: len(group) for arm, group in groups.items()},
                "rows": [], "comparisons": []}
            MEASURES[endpoint.measure](endpoint, groups, out)
    return out


def _compute(casebooks: Sequence[Book], endpoints: Sequence[Endpoint],
             traced: bool = True, figured: bool = True) -> Tables:
    return _combine((subject_summary(book, endpoints, traced) for book in casebooks),
                    endpoints, traced, figured)


def _tables(study_id: str, as_of: datetime | None, valid_at: datetime | None,
            endpoints: dict[str, Any]) -> dict[str, Any]:
    return {"study_id": study_id, "as_of": as_of.isoformat() if as_of else None,
            "valid_at": valid_at.isoformat() if valid_at else None,
            "method": METHOD, "endpoints": endpoints}


def outcome_tables(casebooks: Sequence[Book], study_id: str, endpoints: Sequence[Endpoint],
                   as_of: datetime | None, valid_at: datetime | None = None) -> dict[str, Any]:
    """The tables of ``endpoints`` from the given casebooks, or their outcome facts (those
    of a clinical time ``valid_at``, when the tables are of one)."""
    return _tables(study_id, as_of, valid_at,
                   _compute(casebooks, endpoints, traced=False).endpoints)


def tables_of_summaries(summaries: Iterable[Summary], study_id: str,
                        endpoints: Sequence[Endpoint], as_of: datetime | None
                        ) -> dict[str, Any]:
    """The tables of ``endpoints`` combined from the subjects' summaries (with or without
    record ids): the same as :func:`outcome_tables` of the books they were computed from."""
    return _tables(study_id, as_of, None, _combine(summaries, endpoints, False).endpoints)


def cell_contributions(casebooks: Sequence[Book], endpoints: Sequence[Endpoint],
                       cell: str) -> Contributions | None:
    """The subjects and records behind ``cell`` (None: no such cell)."""
    return _compute(casebooks, endpoints, figured=False).cells.get(cell)


def all_contributions(casebooks: Sequence[Book], endpoints: Sequence[Endpoint]
                      ) -> dict[str, Contributions]:
    """Every cell's subjects and records (the listings behind the tables)."""
    return _compute(casebooks, endpoints, figured=False).cells


def contributions_of_summaries(summaries: Iterable[Summary], endpoints: Sequence[Endpoint]
                               ) -> dict[str, Contributions]:
    """:func:`all_contributions` from the subjects' summaries with their record ids (so that
    a caller can read the books one at a time)."""
    return _combine(summaries, endpoints, traced=True, figured=False).cells


def to_json(tables: dict[str, Any]) -> str:
    """Stable JSON: sorted keys, fixed precision (already rounded), one trailing newline."""
    return json.dumps(tables, sort_keys=True, indent=2) + "\n"
