"""A subject's casebook as JSON: the subject's header and every current record.

The same two renderings feed the HTTP answer (from a fold of the events) and the history
tables (one rendering per version), so both answer in the same shape.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from domain.records import Context, Record, validate
from domain.subject import Subject
from projections.iso_time import iso

# Header keys that hold the monitoring workflow rather than clinical data; their changes
# reach the audit trail as rows of their own (signature, query, sdv), not as a header diff.
WORKFLOW_KEYS = ("signatures", "queries", "sdv", "deviations")
# The workflow maps whose entries the read tables keep as versions of their own, apart from the
# header (projections.history_view.MARKS): a subject's queries grow with its every visit.
MARK_KEYS = ("queries", "sdv", "deviations")


def subject_header(subject: Subject, *, workflow: bool = True) -> dict[str, Any]:
    """The subject-level part of the casebook (without version and records).

    Signatures show their manifestation (printed name, UTC time, meaning) and whether a later
    change invalidated them; queries, source-data verification marks and deviations sit
    beside them (left out when not ``workflow``: the read tables keep them apart, and the
    projector's audit compares the rest).
    """
    header = {
        "study_id": subject.study_id,
        "subject": subject.subject_code,
        "site": subject.site,
        "status": subject.status,
        "arm": subject.arm,
        "disease": subject.disease,
        "sex": subject.sex,
        "date_of_birth": _iso(subject.date_of_birth),
        "consent_date": _iso(subject.consent_date),
        "enrolled_on": subject.enrolled_on.isoformat() if subject.enrolled_on else None,
        "locked": subject.locked,
        "signatures": {k: dict(v) for k, v in subject.signatures.items()},
    }
    if workflow:
        header["queries"] = {k: {**v, "answers": [dict(a) for a in v["answers"]]}
                             for k, v in subject.queries.items()}
        header["sdv"] = {k: dict(v) for k, v in subject.sdv.items()}
        header["deviations"] = {k: dict(v) for k, v in subject.deviations.items()}
    if subject.demographics is not None:
        # Only an imported subject has these: a native casebook keeps its shape.
        header["actual_arm"] = subject.actual_arm
        header["demographics"] = dict(subject.demographics)
    return header


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def record_view(record: Record) -> dict[str, Any]:
    """One record as the casebook shows it (``observed_offset`` only when it was kept)."""
    view = {
        "record_id": record.record_id,
        "observed_at": iso(record.observed_at),
        "visit": record.visit,
        "fields": record.fields,
        "derived": record.derived,
        "entered_at": iso(record.entered_at),
        "changes": record.revisions,
        "timeline": record.timeline,
        # What the soft checks found on the record as it stands (domain.checks).
        "flags": record.flags,
    }
    if record.observed_offset is not None:
        view["observed_offset"] = record.observed_offset
    return view


def assemble(header: dict[str, Any], version: int, records: list[tuple[str, dict[str, Any]]],
             as_of: datetime | None) -> dict[str, Any]:
    """A casebook from its header, version and (kind, record view) pairs."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for kind, view in sorted(records, key=lambda kv: (kv[1]["observed_at"], kv[1]["record_id"])):
        by_kind.setdefault(kind, []).append(view)
    return {**header, "version": version, "as_of": as_of.isoformat() if as_of else None,
            "records": by_kind}


def casebook(subject: Subject, as_of: datetime | None = None) -> dict[str, Any]:
    """The casebook of ``subject`` (already folded to the wanted time) as a JSON-native dict."""
    records = [(r.kind, record_view(r)) for r in subject.records.values() if not r.removed]
    return assemble(subject_header(subject), subject.version, records, as_of)


def in_force(timeline: list[dict[str, Any]], name: str, when: datetime) -> Any:
    """A field's value in force at clinical time ``when`` from a record's timeline (JSON)."""
    value = None
    for entry in timeline:
        if datetime.fromisoformat(entry["observed_at"]) > when:
            break
        if name in entry["fields"]:
            value = entry["fields"][name]
    return value


def at_valid_time(book: dict[str, Any], valid_at: datetime) -> dict[str, Any]:
    """What the casebook says held at clinical time ``valid_at``: records begun by then, each
    field as it stood then (a later taper step or AE update not yet in force), derived values
    recomputed from those fields (and the BSA in force at each record's time)."""
    records: list[tuple[str, dict[str, Any]]] = []
    for kind, views in book["records"].items():
        for view in views:
            if datetime.fromisoformat(view["observed_at"]) > valid_at:
                continue
            fields = {name: in_force(view["timeline"], name, valid_at) for name in view["fields"]}
            records.append((kind, {**view, "fields": fields}))
    # Each record reads the BSA in force at its own time, as the domain derives it.
    rederived = [(kind, {**view, "derived": validate(kind, view["fields"], Context(
        _bsa_in_force(records, datetime.fromisoformat(view["observed_at"])), entry=False))[1]})
        for kind, view in records]
    out = assemble({k: v for k, v in book.items() if k not in ("records", "version", "as_of")},
                   book["version"], rederived, None)
    return {**out, "as_of": book["as_of"], "valid_at": valid_at.isoformat()}


def _bsa_in_force(records: list[tuple[str, dict[str, Any]]], when: datetime) -> float | None:
    vitals = [v for kind, v in records if kind == "vitals" and "HEIGHT" in v["fields"]
              and "WEIGHT" in v["fields"] and datetime.fromisoformat(v["observed_at"]) <= when]
    if not vitals:
        return None
    latest = max(vitals, key=lambda v: v["observed_at"])
    bsa = validate("vitals", latest["fields"], Context(None, entry=False))[1].get("bsa")
    return float(bsa["value"]) if bsa else None
