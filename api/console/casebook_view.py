"""The casebook screen's arrangement of what the API reads: the subject's change instants
for the time slider, and each value's history beside it.

Nothing here decides anything about the data: the casebook and the audit rows come from the
same route functions the HTTP API answers with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo

import orjson

from domain.clock import in_offset
from domain.errors import InvalidInput


@dataclass(frozen=True)
class Moment:
    """Where the slider stands: the recorded instants it moves over, the chosen one (None:
    now), and its index on the slider."""

    instants: list[datetime]
    as_of: datetime | None
    step: int


def moment(instants: list[datetime], step: int | None, typed: datetime | None) -> Moment:
    """The time to show: a typed date-time wins, then the slider's step; the newest step (or
    neither) means now. The slider then stands at the last instant at or before the time."""
    last = len(instants) - 1
    if typed is not None:
        at = [i for i, t in enumerate(instants) if t <= typed]
        return Moment(instants, typed, at[-1] if at else 0)
    if step is None or step >= last or step < 0:
        return Moment(instants, None, max(last, 0))
    return Moment(instants, instants[step], step)


def queries_on(book: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The casebook's queries by the (record, field) they are raised on."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for query_id, query in sorted(book["queries"].items()):
        out.setdefault((query["record_id"], query["field"]), []).append(
            {"query_id": query_id, **query})
    return out


@dataclass(frozen=True, slots=True)
class SiteTime:
    """A time as the console shows every time (``times.html``): the time as stored, in UTC,
    and on the site's clock (blank when the site's clock is not known)."""

    stamp: str
    utc: str
    local: str


def site_clock(value: str | datetime | None, zone: str | None,
               offset: str | None = None) -> SiteTime:
    """``value`` in UTC and on the site's clock: its time zone, else the offset it was
    entered with (see ``site_time``)."""
    return SiteTime(str(value), utc_text(value), site_time(value, zone, offset))


@dataclass(frozen=True, slots=True)
class FieldRow:
    """One value of a record as its row shows it: the value's text, its last reason when it
    changed, the queries on it, and its change marker (summary, the time of the last change
    when it changed, and the history's address)."""

    name: str
    value: str
    changed: bool
    reason: str
    queries: list[str]
    summary: str
    changed_at: SiteTime | None
    history_url: str


@dataclass(frozen=True, slots=True)
class DerivedRow:
    """A derived value of a record: its value and unit, and (when it has one) its method and
    inputs, or only its value."""

    name: str
    value: str
    unit: str
    method: str | None  # None: a plain value, without method or inputs
    inputs: str


@dataclass(frozen=True, slots=True)
class RecordRows:
    """A record's rows on the casebook screen."""

    record_id: str
    observed_at: SiteTime
    visit: str
    fields: list[FieldRow]
    derived: list[DerivedRow]


@dataclass(frozen=True, slots=True)
class RemovedRow:
    """A removed record's row: the values it held, who removed it (name and role), when, and
    why."""

    record_id: str
    kind: str
    values: str
    removed_by: str
    removed_at: SiteTime
    reason: str


def record_rows(book: dict[str, Any], changes: dict[tuple[str, str], dict[str, Any]],
                history: str, as_of: datetime | None,
                zone: str | None) -> dict[str, list[RecordRows]]:
    """Each kind's records with every value as its row shows it, times on the site's clock
    of ``zone`` too. Worked out here rather than in the template: a long casebook has
    thousands of values, and per value a template's filters (the history address above
    all) cost most of the page's time."""
    moment = "" if as_of is None else "&as_of=" + quote_plus(as_of.isoformat(), safe="")
    queries = queries_on(book)
    out: dict[str, list[RecordRows]] = {}
    for kind, views in book["records"].items():
        out[kind] = [RecordRows(
            r["record_id"], site_clock(r["observed_at"], zone, r.get("observed_offset")),
            r.get("visit") or "",
            [_field_row(r["record_id"], name, value, changes.get((r["record_id"], name)),
                        queries.get((r["record_id"], name), ()), history, moment, zone)
             for name, value in r["fields"].items()],
            [_derived_row(name, d) for name, d in r["derived"].items()]) for r in views]
    return out


def _field_row(record_id: str, name: str, value: Any, change: dict[str, Any] | None,
               queries: Any, history: str, moment: str, zone: str | None) -> FieldRow:
    url = (f"{history}?record={quote_plus(record_id, safe='')}"
           f"&field={quote_plus(name, safe='')}{moment}")
    marks = [f"{q['query_id']} {q['status']}" for q in queries]
    if change is None or change["count"] <= 1:
        return FieldRow(name, shown(value), False, "", marks, "entered", None, url)
    reason = (f"{change['reason_code']} — {change['reason_text']}"
              if change["reason_code"] else "")
    return FieldRow(name, shown(value), True, reason, marks,
                    f"changed ({change['count']}), last by {change['printed_name']}",
                    site_clock(change["recorded_at"], zone), url)


def _derived_row(name: str, derived: Any) -> DerivedRow:
    if isinstance(derived, dict):
        return DerivedRow(name, shown(derived.get("value")), derived.get("unit") or "",
                          derived.get("method") or "", orjson.dumps(derived.get("inputs"))
                          .decode())
    return DerivedRow(name, shown(derived), "", None, "")


def removed_rows(removed: list[dict[str, Any]], zone: str | None) -> list[RemovedRow]:
    """The removed records' rows (see ``projections.subject_changes.removed_records``), the
    values each held in the order of their names, its removal's time on the site's clock of
    ``zone`` too."""
    return [RemovedRow(
        r["record_id"], str(r["kind"]),
        "; ".join(f"{name} {shown(value)}" for name, value in sorted(r["fields"].items())),
        f"{r['printed_name']} ({r['role']})", site_clock(r["removed_at"], zone),
        (r["reason_code"] or "") + (f": {r['reason_text']}" if r["reason_text"] else ""))
        for r in removed]


def kind_of(book: dict[str, Any], record_id: str) -> str | None:
    """The kind (``labs``, ``vitals``…) of a record of the casebook, None if it has none."""
    for kind, views in book["records"].items():
        if any(v["record_id"] == record_id for v in views):
            return str(kind)
    return None


def shown(value: Any) -> str:
    """A recorded value as a person reads it: text as it is, nothing as a dash, numbers,
    lists and the rest as JSON."""
    if value is None:
        return "—"
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def figure(value: Any) -> str:
    """A figure of the outcome tables: two decimals for a fraction, a dash for none."""
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def changed_fields(before: dict[str, Any] | None,
                   after: dict[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """What differs between two renderings of a record or subject header: (name, before,
    after) for each top-level entry, and for each field of a record's ``fields``."""
    old, new = before or {}, after or {}
    out: list[tuple[str, Any, Any]] = []
    for name in sorted(set(old) | set(new)):
        if name in ("fields", "derived") and isinstance(old.get(name, {}), dict) \
                and isinstance(new.get(name, {}), dict):
            inner_old, inner_new = old.get(name) or {}, new.get(name) or {}
            out += [(f"{name}.{k}", inner_old.get(k), inner_new.get(k))
                    for k in sorted(set(inner_old) | set(inner_new))
                    if inner_old.get(k) != inner_new.get(k)]
        elif name not in ("changes", "timeline") and old.get(name) != new.get(name):
            out.append((name, old.get(name), new.get(name)))
    return out


def age(since: str, at: datetime) -> str:
    """How long before ``at`` the time ``since`` was, in the largest whole unit (days, hours,
    minutes)."""
    seconds = max(0, int((at - datetime.fromisoformat(since)).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return "under a minute"


def utc_text(value: str | datetime | None) -> str:
    """A time as the console shows every time: UTC with its offset written out."""
    if value is None:
        return ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.astimezone(UTC).isoformat(sep=" ", timespec="seconds")


def site_time(value: str | datetime | None, zone: str | None, offset: str | None = None) -> str:
    """A time as the site's clock showed it, with its offset: in the site's time zone (IANA
    name, from the study's definition), else at the offset it was entered with; blank when
    neither is known (the UTC time beside it says it all)."""
    if value is None or not (zone or offset):
        return ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    local = when.astimezone(ZoneInfo(zone)) if zone else in_offset(when, offset)
    return local.isoformat(sep=" ", timespec="seconds") + (f" {zone}" if zone else "")


def site_zones(definition: dict[str, Any]) -> dict[str, str]:
    """Each site's time zone, where the study's definition names one."""
    return {str(s["code"]): str(s["time_zone"]) for s in definition.get("sites", [])
            if s.get("time_zone")}


def input_text(value: datetime | None) -> str:
    """A time as a ``datetime-local`` field holds it (UTC, seconds)."""
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def typed_time(text: str | None, name: str) -> datetime | None:
    """A time typed in a form: ISO 8601, with its offset or in UTC (as the field's label
    says); None when blank."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(name, "is not a date and time (YYYY-MM-DDTHH:MM:SS, UTC)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
