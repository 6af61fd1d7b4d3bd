"""A subject's casebook as a document: sections of facts and tables, all text.

The HTML and the PDF are drawn from the same document, so they cannot disagree. It is built
from the read tables as the system showed them at a recorded time: the subject's header and
records in force then (``casebook_versions``) and every audit row recorded by then
(``audit_trail``). Records of one kind share one table (a row per record, a column per
field), and the changes made to them after their first entry are listed beneath it (old and
new value, who, role, when, why); signatures with their manifestation (printed name, UTC time,
meaning) and whether a later change invalidated them; queries with their answers.

Recorded times are the server's, in UTC. A clinical time is shown in UTC and, when the record
keeps the offset it was entered with (``observed_offset``, records entered since it was
kept), in that local time too: the study definition names no site time zones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from domain.clock import in_offset
from domain.rules.units import VITAL_SIGNS
from domain.study import StudyDefinition
from projections.history_view import AUDIT, AUDIT_COLUMNS, VERSIONS, casebook_history
from projections.streaming import in_force

# Audit rows of the monitoring workflow: shown in their own sections, not as value history.
WORKFLOW_FIELDS = ("signature", "query", "sdv", "deviation")
KIND_TITLES = {"vitals": "Vital signs", "doses": "Doses", "therapies": "Therapies",
               "labs": "Lab results", "assessments": "Assessments",
               "adverse-events": "Adverse events"}
INVALIDATED = "INVALIDATED"
# What the casebook prints for a value the subject does not have (an imported subject has no
# disease or birth date): shown as absent, never as an empty or "None" cell.
ABSENT = "—"
# Changes that rewrite what was entered rather than start a new clinical fact: no valid time.
UNDATED = ("RecordCorrected", "RecordRemoved")
CHANGE_COLUMNS = ("Record", "Recorded (UTC)", "Change", "Field", "Old value", "New value",
                  "Valid from", "By (role, site)", "Reason")
# A kind with more fields than this lists them in one cell (an SDTM domain's many variables)
# instead of a column each.
MOST_COLUMNS = 8


@dataclass(frozen=True)
class Table:
    """Rows of text under column headings; ``widths`` are relative (the PDF uses them)."""

    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    widths: tuple[int, ...]


@dataclass
class Section:
    """A titled part of the casebook: key/value facts, then captioned tables."""

    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, Table]] = field(default_factory=list)


@dataclass
class CasebookDocument:
    """One subject's casebook, ready to render."""

    subject: str
    title: str
    facts: list[tuple[str, str]]
    sections: list[Section]


def utc(value: datetime | str | None) -> str:
    """A recorded or clinical time as ``YYYY-MM-DD HH:MM:SS UTC`` (a date stays a date)."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        if "T" not in value:
            return value
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def text(value: Any) -> str:
    """A stored value as the casebook prints it, as people write it: 750000 (not 750000.0),
    yes/no, lists comma-separated, objects as ``name: value`` pairs, never JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return _pairs(value)
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict) for v in value):
            return "\n".join(text(v) for v in value)
        return ", ".join(text(v) for v in value)
    return str(value)


def _pairs(value: dict[str, Any]) -> str:
    """``a: 1; b: x``; yes/no items (SLEDAI's) as those present, so a long checklist reads
    as the few findings it holds (every item not named is absent)."""
    flags = {k: v for k, v in value.items() if isinstance(v, bool)}
    parts = [f"{_spaced(k)}: {text(v)}" for k, v in sorted(value.items()) if k not in flags]
    if flags:
        present = [_spaced(k) for k in sorted(flags) if flags[k]]
        parts.append(f"present ({len(present)} of {len(flags)}): {', '.join(present)}"
                     if present else f"none of {len(flags)} present")
    return "; ".join(parts)


def _spaced(name: str) -> str:
    """``increased_dna_binding`` -> ``increased dna binding``."""
    return name.replace("_", " ")


def local(value: datetime | str | None, offset: str | None) -> str:
    """A clinical time in UTC, and beneath it in the local time it was entered in when its
    ``offset`` (``+08:00``) is known and not UTC's."""
    printed = utc(value)
    if (offset in (None, "", "+00:00") or not printed or value is None
            or (isinstance(value, str) and "T" not in value)):
        return printed  # entered in UTC, or before offsets were kept: once is enough
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return f"{printed}\n{in_offset(moment, offset).strftime('%Y-%m-%d %H:%M:%S')} {offset}"


def shown(value: Any) -> str:
    """A header value as printed, :data:`ABSENT` when there is none."""
    printed = text(value)
    return printed if printed else ABSENT


# What the casebook calls a field (its id stays in the data, the ODM and the audit trail);
# a vital sign is named by the catalogue with its unit, any other field by its words.
FIELD_LABELS = {
    "code": "Test", "value": "Result", "unit": "Unit", "reference_low": "Reference low",
    "reference_high": "Reference high", "drug": "Product", "dose": "Dose", "route": "Route",
    "frequency": "Frequency", "dose_mg": "Dose per administration (mg)",
    "dose_mg_per_day": "Daily dose (mg)", "stopped_at": "Stopped", "term": "Reported term",
    "grade": "CTCAE grade", "serious": "Serious", "seriousness_criteria": "Seriousness criteria",
    "relationship": "Relationship to study drug", "action_taken": "Action taken",
    "outcome": "Outcome", "ended_at": "Ended", "meddra_llt": "MedDRA lowest level term",
    "meddra_pt": "MedDRA preferred term", "instrument": "Instrument", "items": "Items",
    "category": "Category", "soft_check": "Soft check", "visit": "Visit",
}


# The subject's own fields, as its history names them.
SUBJECT_LABELS = {
    "study_id": "Study", "subject": "Subject", "site": "Site", "status": "Status",
    "disease": "Disease", "sex": "Sex", "date_of_birth": "Date of birth",
    "consent_date": "Consent date", "locked": "Locked", "eligibility": "Eligibility",
    "arm": "Arm", "actual_arm": "Actual arm", "enrolled_on": "Enrolled on",
    "redaction": "Redaction",
}
# What the casebook calls a derived value (its id stays in the data and the exports).
DERIVED_LABELS = {
    "bsa": "BSA", "dose_per_m2": "Dose per m²", "daily_dose": "Daily dose",
    "prednisone_equivalent": "Prednisone equivalent", "total": "Total score",
    "activity": "Activity", "flag": "Flag (L/N/H)", "grade_name": "Grade",
}


def field_label(kind: str, name: str | None) -> str:
    """The label the casebook prints for field ``name`` of a ``kind`` record: ``Result``
    for a lab's ``value``, ``Height (cm)`` for ``HEIGHT``; an imported study's SDTM variable
    names stay as they are."""
    if not name:
        return ""
    if name.startswith("derived."):
        return derived_label(name.removeprefix("derived."))
    if not kind and name in SUBJECT_LABELS:
        return SUBJECT_LABELS[name]
    if kind == "vitals" and name in VITAL_SIGNS:
        sign = VITAL_SIGNS[name]
        return f"{sign.name} ({sign.unit})"
    if kind in KIND_TITLES and name in FIELD_LABELS:
        return FIELD_LABELS[name]
    return name


def derived_label(name: str) -> str:
    """The label of a derived value: ``Daily dose`` for ``daily_dose``."""
    return DERIVED_LABELS.get(name, _spaced(name))


def _words(name: str) -> str:
    """``RecordCorrected`` -> ``Record corrected``."""
    return re.sub(r"(?<!^)([A-Z])", lambda m: " " + m.group(1).lower(), name)


def subjects(conn: psycopg.Connection[Any], schema: str,
             as_of: datetime) -> list[tuple[Any, str]]:
    """(subject id, subject code) of every subject the system showed at ``as_of``, by code."""
    heads = SQL("SELECT h.subject_id, h.data->>'subject' FROM {}.{} h WHERE h.record_id = '' "
                "AND {} ORDER BY h.data->>'subject'").format(
                    Identifier(schema), Identifier(VERSIONS), in_force(as_of, "h"))
    return [(subject_id, code) for subject_id, code in conn.execute(heads, {"t": as_of})]


def casebook(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
             subject_id: Any, as_of: datetime, created_at: datetime) -> CasebookDocument:
    """The casebook of one subject (an id from :func:`subjects`) as of ``as_of``.

    Call inside the consistent read (:func:`projections.streaming.consistent_read`) that
    listed the subjects, so that every casebook shows the same moment.
    """
    s = Identifier(schema)
    header = conn.execute(
        SQL("SELECT h.data FROM {} h WHERE h.subject_id = %(sid)s AND h.record_id = '' "
            "AND {}").format(casebook_history(schema), in_force(as_of, "h")),
        {"sid": subject_id, "t": as_of}).fetchone()
    if header is None:
        raise LookupError(f"subject {subject_id} is not shown as of {as_of.isoformat()}")
    records = conn.execute(
        SQL("SELECT r.kind, r.data FROM {}.{} r WHERE r.subject_id = %(sid)s "
            "AND r.record_id <> '' AND r.data IS NOT NULL AND {} "
            "ORDER BY r.data->>'observed_at', r.record_id").format(
                s, Identifier(VERSIONS), in_force(as_of, "r")),
        {"sid": subject_id, "t": as_of}).fetchall()
    audit = conn.execute(
        SQL("SELECT {} FROM {}.{} WHERE subject_code = %(code)s AND subject_id = %(sid)s "
            "AND recorded_at <= %(t)s ORDER BY position, seq").format(
                SQL(", ").join(Identifier(c) for c in AUDIT_COLUMNS), s, Identifier(AUDIT)),
        {"code": header[0]["subject"], "sid": subject_id, "t": as_of}).fetchall()
    return build(definition, header[0], [(kind, data) for kind, data in records],
                 [dict(zip(AUDIT_COLUMNS, row, strict=True)) for row in audit],
                 as_of, created_at)


def build(definition: StudyDefinition, header: dict[str, Any],
          records: list[tuple[str, dict[str, Any]]], audit: list[dict[str, Any]],
          as_of: datetime, created_at: datetime) -> CasebookDocument:
    """The casebook document of one subject from its header, records and audit rows."""
    code = header["subject"]
    facts = [("Study", definition.study_id), ("Subject", code), ("Site", header["site"]),
             ("As of (recorded time)", utc(as_of)), ("Generated", utc(created_at))]
    by_record: dict[str, list[dict[str, Any]]] = {}
    for row in audit:
        if row["record_id"] is not None and row["field"] not in WORKFLOW_FIELDS:
            by_record.setdefault(row["record_id"], []).append(row)
    subject_rows = [row for row in audit if row["record_id"] is None
                    and row["field"] not in WORKFLOW_FIELDS]
    sections = [_subject(definition, header, subject_rows), _signatures(header),
                _queries(header), _deviations(header)]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for kind, view in records:
        by_kind.setdefault(kind, []).append(view)
    removed: dict[str, list[str]] = {}
    in_force_ids = {view["record_id"] for _, view in records}
    for record_id, rows in by_record.items():
        if record_id not in in_force_ids:
            removed.setdefault(rows[0]["record_kind"] or "", []).append(record_id)
    order = {kind: n for n, kind in enumerate(KIND_TITLES)}
    for kind in sorted(by_kind.keys() | removed.keys(), key=lambda k: (order.get(k, 99), k)):
        sections.append(_kind(kind, by_kind.get(kind, []), removed.get(kind, []), header,
                              by_record))
    return CasebookDocument(code, f"Casebook of subject {code}, study {definition.study_id}",
                            facts, sections)


def _subject(definition: StudyDefinition, header: dict[str, Any],
             rows: list[dict[str, Any]]) -> Section:
    arm = header["arm"]
    subject = Section("Subject", facts=[
        ("Status", shown(header["status"])),
        ("Arm", f"{arm} — {definition.arms.get(arm, '')}" if arm else "not assigned"),
        ("Disease", shown(header["disease"])), ("Sex", shown(header["sex"])),
        ("Date of birth", shown(header["date_of_birth"])),
        ("Consent date", shown(header["consent_date"])),
        ("Enrolled on", shown(header["enrolled_on"])),
        ("Locked", "yes" if header["locked"] else "no")])
    if "actual_arm" in header:
        # An imported subject: the arm it was given, and its DM row's variables.
        actual = header["actual_arm"]
        subject.facts.insert(2, ("Actual arm", f"{actual} — {definition.arms.get(actual, '')}"
                                 if actual else ABSENT))
        subject.tables.append(("Demographics (DM)", Table(
            ("Variable", "Value"),
            [(name, shown(value)) for name, value in header["demographics"].items()],
            (1, 3))))
    screened = [row["new_value"] for row in rows if row["field"] == "eligibility"
                and isinstance(row["new_value"], list)]
    if screened:
        texts = {c.id: c.text for c in definition.eligibility}
        subject.tables.append(("Eligibility at screening", Table(
            ("Criterion", "Kind", "Met", "Protocol text"),
            [(str(c.get("id", "")), str(c.get("kind", "")), text(c.get("met")),
              texts.get(str(c.get("id")), "")) for c in screened[-1]], (1, 1, 1, 9))))
    if rows:
        subject.facts.append(("First entered", f"{utc(rows[0]['recorded_at'])}, "
                                               f"{_who(rows[0])}"))
    subject.tables.append(("Subject history", _changes(_after_entry(rows), {},
                                                       with_record=False)))
    return subject


def _kind(kind: str, views: list[dict[str, Any]], removed: list[str], header: dict[str, Any],
          by_record: dict[str, list[dict[str, Any]]]) -> Section:
    """One kind's records as one table (a row each), how their values were derived, what
    the soft checks found, and every change after their first entry."""
    section = Section(KIND_TITLES.get(kind, kind))
    names: list[str] = []
    for view in views:
        names += [name for name in view["fields"] if name not in names]
    derived: list[str] = []
    for view in views:
        derived += [name for name in view["derived"] if name not in derived]
    wide = len(names) + len(derived) > MOST_COLUMNS
    columns = ["Record", "Observed", "Visit"]
    columns += ["Values"] if wide else ([field_label(kind, n) for n in names]
                                        + [derived_label(n) for n in derived])
    columns += ["First entered (UTC), by", "Changes", "Source verified"]
    rows = []
    for view in views:
        offset = view.get("observed_offset")
        values = ([_listed(kind, view, names, derived)] if wide else
                  [shown(view["fields"].get(n)) if n in view["fields"] else ""
                   for n in names] + [_derived_value(view["derived"].get(n)) for n in derived])
        sdv = header["sdv"].get(view["record_id"])
        verified = "" if sdv is None else (
            f"{sdv['verified_by']}, {utc(sdv['verified_at'])}"
            + ("" if sdv["revision"] == view["changes"] else " (the record changed since)"))
        history = by_record.get(view["record_id"])
        entered = utc(view["entered_at"]) + (f"\n{_who(history[0])}" if history else "")
        rows.append((view["record_id"], local(view["observed_at"], offset),
                     shown(view["visit"]), *values, entered,
                     str(view["changes"]), verified))
    widths = (5, 8, 4, *([16] if wide else [4] * (len(names) + len(derived))), 9, 3, 6)
    section.tables.append(("Records", Table(tuple(columns), rows, widths)))
    # Records derived alike (the same method on the same inputs) share one row.
    how: dict[tuple[str, str, str, str], list[str]] = {}
    for view in views:
        for name, value in sorted(view["derived"].items()):
            if isinstance(value, dict) and value.get("inputs"):
                key = (derived_label(name), _derived_value(value), str(value.get("method", "")),
                       text(value.get("inputs")))
                how.setdefault(key, []).append(view["record_id"])
    if how:
        section.tables.append(("How the derived values were computed", Table(
            ("Records", "Derived value", "Value", "Method", "Inputs"),
            [(", ".join(ids), *key) for key, ids in how.items()], (3, 2, 2, 3, 7))))
    flags = [(view["record_id"], f["check"], field_label(kind, f["field"]), f["message"])
             for view in views for f in view.get("flags") or []]
    if flags:
        # Kept as entered, flagged by the soft checks and queried (see domain.checks).
        section.tables.append(("Soft-check findings", Table(
            ("Record", "Check", "Field", "Finding"), flags, (2, 2, 2, 6))))
    offsets = {view["record_id"]: view.get("observed_offset") for view in views}
    later = [row for view in views for row in _after_entry(by_record.get(view["record_id"], []))]
    for record_id in removed:
        # A removed record is no longer in the table: its whole history stands here.
        later += by_record[record_id]
    later.sort(key=lambda row: (row["position"], row["record_id"]))
    section.tables.append(("Changes after first entry" + (" (and removed records)"
                                                          if removed else ""),
                           _changes(later, offsets, with_record=True)))
    return section


def _listed(kind: str, view: dict[str, Any], names: list[str], derived: list[str]) -> str:
    pairs = [f"{field_label(kind, n)}: {shown(view['fields'][n])}" for n in names
             if n in view["fields"]]
    pairs += [f"{derived_label(n)}: {_derived_value(view['derived'][n])}" for n in derived
              if n in view["derived"]]
    return "; ".join(pairs)


def _derived_value(value: Any) -> str:
    # A computed value carries its unit (and method and inputs); a flag (lab L/N/H) is bare.
    if isinstance(value, dict) and "value" in value:
        return " ".join(p for p in (text(value["value"]), text(value.get("unit"))) if p)
    return text(value)


def _who(row: dict[str, Any]) -> str:
    return f"{row['printed_name']} ({row['role']}, {row['actor_site'] or 'all sites'})"


def _after_entry(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A record's audit rows after its first entry (whose values the record's row shows)."""
    return [row for row in rows if row["position"] != rows[0]["position"]]


def _changes(rows: list[dict[str, Any]], offsets: dict[str, str | None], *,
             with_record: bool) -> Table:
    out = []
    for row in rows:
        reason = ": ".join(p for p in (row["reason_code"], row["reason_text"]) if p)
        observed = "" if row["event_type"] in UNDATED else local(
            row["observed_at"], offsets.get(row["record_id"] or ""))
        kind = row["record_kind"] or ""
        old, new = row["old_value"], row["new_value"]
        if (row["field"] or "").startswith("derived."):
            old, new = _derived_value(old), _derived_value(new)
        elif row["field"] == "redaction" and isinstance(new, dict):
            # A redaction request or approval: what it covers and why (never a value).
            covered = ", ".join(f"{i.get('record_id')} {i.get('field')}"
                                for i in new.get("items") or [])
            new = f"{new.get('request_id')} {new.get('status')}: {covered}"
        elif row["field"] == "soft_check":
            # What a soft check found, in its words (its details are in the audit trail).
            old, new = (f"{v.get('check')}: {v.get('message')}" if isinstance(v, dict) else v
                        for v in (old, new))
        if row["field"] == "eligibility" and isinstance(new, list):
            met = sum(1 for c in new if isinstance(c, dict) and c.get("met"))
            new = f"{met} of {len(new)} criteria met (listed above)"
        out.append((row["record_id"] or "", utc(row["recorded_at"]), _words(row["event_type"]),
                    field_label(kind, row["field"]), text(old), text(new), observed, _who(row),
                    reason))
    widths = (5, 7, 5, 5, 6, 6, 7, 8, 8)
    if with_record:
        return Table(CHANGE_COLUMNS, out, widths)
    return Table(CHANGE_COLUMNS[1:], [row[1:] for row in out], widths[1:])
def _signatures(header: dict[str, Any]) -> Section:
    rows = []
    for sig in sorted(header["signatures"].values(), key=lambda s: s["signed_at"]):
        status = INVALIDATED if sig["status"] == "invalidated" else sig["status"].upper()
        invalidated = (f"{utc(sig['invalidated_at'])} (casebook version "
                       f"{sig['invalidated_by_version']})" if sig["invalidated_at"] else "")
        rows.append((sig["printed_name"], sig["role"], utc(sig["signed_at"]),
                     f"{sig['meaning_text']} ({sig['meaning']})",
                     f"version {sig['signed_version']}", status, invalidated))
    table = Table(("Printed name", "Role", "Signed (UTC)", "Meaning", "Signed content",
                   "Status", "Invalidated (UTC)"), rows, (3, 2, 3, 4, 2, 2, 3))
    return Section("Signatures", facts=[] if rows else [("Signatures", "none")],
                   tables=[("Electronic signatures", table)] if rows else [])


def _queries(header: dict[str, Any]) -> Section:
    rows = []
    for query in sorted(header["queries"].values(), key=lambda q: q["opened_at"]):
        answers = "\n".join(f"{a['answered_by']}, {utc(a['answered_at'])}: {a['text']}"
                            for a in query["answers"])
        closed = (f"{query['closed_by']}, {utc(query['closed_at'])}: {query['closing_text']}"
                  if query["closed_at"] else "")
        rows.append((query["query_id"], f"{query['record_id']} / {query['field']}",
                     query["text"], f"{query['opened_by']}, {utc(query['opened_at'])}",
                     answers, query["status"], closed))
    table = Table(("Query", "Record / field", "Text", "Opened", "Answers", "Status",
                   "Closed"), rows, (2, 2, 4, 3, 4, 2, 3))
    return Section("Queries", facts=[] if rows else [("Queries", "none")],
                   tables=[("Data queries", table)] if rows else [])


def _deviations(header: dict[str, Any]) -> Section:
    found = sorted((header.get("deviations") or {}).values(),
                   key=lambda d: (d["occurred_on"], d["deviation_id"]))
    rows = [(d["deviation_id"], d["occurred_on"], d["category"], d["severity"],
             d["description"], d["record_id"] or "",
             f"{d['recorded_by']} ({d['detected_by']}), {utc(d['recorded_at'])}") for d in found]
    table = Table(("Deviation", "Date", "Category", "Severity", "Description", "Record",
                   "Recorded"), rows, (2, 2, 3, 1, 5, 2, 4))
    return Section("Protocol deviations", facts=[] if rows else [("Deviations", "none")],
                   tables=[("Protocol deviations", table)] if rows else [])


