"""A subject's casebook as a document: sections of facts and tables, all text.

The HTML and the PDF are drawn from the same document, so they cannot disagree. It is built
from the read tables as the system showed them at a recorded time: the subject's header and
records in force then (``casebook_versions``) and every audit row recorded by then
(``audit_trail``), so each value is shown with its whole history, who changed it, when and
why; signatures with their manifestation (printed name, UTC time, meaning) and whether a later
change invalidated them; queries with their answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from domain.rules.units import VITAL_SIGNS
from domain.study import StudyDefinition
from projections.history_view import AUDIT, AUDIT_COLUMNS, VERSIONS
from projections.streaming import in_force

# Audit rows of the monitoring workflow: shown in their own sections, not as value history.
WORKFLOW_FIELDS = ("signature", "query", "sdv", "deviation")
KIND_TITLES = {"vitals": "Vital signs", "doses": "Dose", "therapies": "Therapy",
               "labs": "Lab result", "assessments": "Assessment",
               "adverse-events": "Adverse event"}
INVALIDATED = "INVALIDATED"
# What the casebook prints for a value the subject does not have (an imported subject has no
# disease or birth date): shown as absent, never as an empty or "None" cell.
ABSENT = "—"
# Changes that rewrite what was entered rather than start a new clinical fact: no valid time.
UNDATED = ("RecordCorrected", "RecordRemoved")
HISTORY_COLUMNS = ("Recorded (UTC)", "Change", "Field", "Old value", "New value",
                   "Valid from (UTC)", "By", "Reason")


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
    """A stored value as the casebook prints it: JSON for lists and objects."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # as people write it: 750000, not 750000.0
    if isinstance(value, int | float):
        return repr(value)
    # Spaces after separators let long lists (eligibility answers) wrap in a table cell.
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


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
    "category": "Category",
}


def field_label(kind: str, name: str | None) -> str:
    """The label the casebook prints for field ``name`` of a ``kind`` record: ``Result``
    for a lab's ``value``, ``Height (cm)`` for ``HEIGHT``; an imported study's SDTM variable
    names stay as they are."""
    if not name:
        return ""
    if kind == "vitals" and name in VITAL_SIGNS:
        sign = VITAL_SIGNS[name]
        return f"{sign.name} ({sign.unit})"
    if kind in KIND_TITLES and name in FIELD_LABELS:
        return FIELD_LABELS[name]
    return name


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
        SQL("SELECT h.data FROM {}.{} h WHERE h.subject_id = %(sid)s AND h.record_id = '' "
            "AND {}").format(s, Identifier(VERSIONS), in_force(as_of, "h")),
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
    arm = header["arm"]
    facts = [("Study", definition.study_id), ("Subject", code), ("Site", header["site"]),
             ("As of (recorded time)", utc(as_of)), ("Generated", utc(created_at))]
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
    subject_rows = [row for row in audit if row["record_id"] is None
                    and row["field"] not in WORKFLOW_FIELDS]
    subject.tables.append(("Subject history", _history(subject_rows)))
    sections = [subject, _signatures(header), _queries(header), _deviations(header)]
    history: dict[str, list[dict[str, Any]]] = {}
    for row in audit:
        if row["record_id"] is not None and row["field"] not in WORKFLOW_FIELDS:
            history.setdefault(row["record_id"], []).append(row)
    in_force_ids = set()
    for kind, view in records:
        in_force_ids.add(view["record_id"])
        sections.append(_record(kind, view, header, history.get(view["record_id"], [])))
    for record_id, rows in history.items():
        if record_id not in in_force_ids:
            kind = rows[0]["record_kind"] or ""
            sections.append(Section(
                f"{KIND_TITLES.get(kind, kind)} {record_id} (removed)",
                facts=[("Removed", utc(rows[-1]["recorded_at"]))],
                tables=[("History", _history(rows))]))
    return CasebookDocument(code, f"Casebook of subject {code}, study {definition.study_id}",
                            facts, sections)


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


def _record(kind: str, view: dict[str, Any], header: dict[str, Any],
            rows: list[dict[str, Any]]) -> Section:
    record_id = view["record_id"]
    facts = [("Observed (valid time)", utc(view["observed_at"])),
             ("Visit", shown(view["visit"])), ("First entered", utc(view["entered_at"])),
             ("Changes since entry", str(view["changes"]))]
    sdv = header["sdv"].get(record_id)
    if sdv is not None:
        current = sdv["revision"] == view["changes"]
        facts.append(("Source verified", f"{sdv['verified_by']}, {utc(sdv['verified_at'])}"
                      + ("" if current else " (the record changed since)")))
    values = Table(("Field", "Value"), [(field_label(kind, name), shown(value))
                                        for name, value in sorted(view["fields"].items())],
                   (1, 3))
    section = Section(f"{KIND_TITLES.get(kind, kind)} {record_id}", facts=facts,
                      tables=[("Values", values)])
    if view["derived"]:
        section.tables.append(("Derived values", Table(
            ("Name", "Value", "Unit", "Method", "Inputs"),
            [_derived(name, d) for name, d in sorted(view["derived"].items())],
            (2, 2, 1, 3, 4))))
    if view.get("flags"):
        # Kept as entered, flagged by the soft checks and queried (see domain.checks).
        section.tables.append(("Soft-check findings", Table(
            ("Check", "Field", "Finding"),
            [(f["check"], f["field"], f["message"]) for f in view["flags"]], (2, 2, 6))))
    section.tables.append(("History", _history(rows)))
    return section


def _derived(name: str, value: Any) -> tuple[str, ...]:
    # A computed value carries its unit, method and inputs; a flag (lab L/N/H) is bare.
    if isinstance(value, dict) and "value" in value:
        return (name, text(value["value"]), text(value.get("unit")),
                text(value.get("method")), text(value.get("inputs")))
    return (name, text(value), "", "", "")


def _history(rows: list[dict[str, Any]]) -> Table:
    out = []
    for row in rows:
        reason = ": ".join(p for p in (row["reason_code"], row["reason_text"]) if p)
        who = f"{row['printed_name']} ({row['role']}, {row['actor_site'] or 'all sites'})"
        observed = "" if row["event_type"] in UNDATED else utc(row["observed_at"])
        out.append((utc(row["recorded_at"]), _words(row["event_type"]),
                    field_label(row["record_kind"] or "", row["field"]),
                    text(row["old_value"]), text(row["new_value"]), observed, who, reason))
    return Table(HISTORY_COLUMNS, out, (3, 3, 2, 3, 3, 3, 4, 4))
