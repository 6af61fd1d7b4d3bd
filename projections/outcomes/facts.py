"""What the outcome tables read of a casebook: its *outcome facts*.

The tables read little of a casebook: its arm (assigned and actual), disease and enrolment,
the records of a few kinds whole, the latest result of each lab test at each visit, and which
visits have records. That much is its outcome facts (:func:`outcome_facts`); the read side
keeps them as of every recorded time (``projections.outcome_state``), so that the tables as of
T read a few rows per subject, not every lab result. The engine computes the same tables from
a casebook's facts or from the casebook itself (the oracle's).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from projections.casebook import at_valid_time

# The record kinds the tables read whole (native kinds, and the SDTM domains of an imported
# study's endpoints); of the labs they read the latest of each visit and test, and of every
# other kind only which visits have records.
RECORD_KINDS = ("therapies", "vitals", "assessments", "adverse-events", "AE", "DS", "SUPPAE")


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
    """Outcome facts from their parts: ``header`` with the subject, arms, disease and
    enrolment date, the visits that have records, and the records of :data:`RECORD_KINDS` and
    slim latest lab results, by kind."""
    return {"subject": header["subject"], "arm": header["arm"],
            "actual_arm": header.get("actual_arm"), "disease": header.get("disease"),
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


def outcome_facts_at_valid_time(book: dict[str, Any], valid_at: datetime) -> dict[str, Any]:
    """The outcome facts of what the casebook ``book`` said held at clinical time
    ``valid_at``: records begun by then with their fields as they stood then and derived
    values recomputed (:func:`projections.casebook.at_valid_time`), each timeline cut at
    ``valid_at`` (a taper or stop observed later is not yet known), the visits of those
    records, the latest lab result of each visit among them."""
    facts_then = outcome_facts(at_valid_time(book, valid_at))
    for views in facts_then["records"].values():
        for view in views:
            if "timeline" in view:
                view["timeline"] = [entry for entry in view["timeline"]
                                    if datetime.fromisoformat(entry["observed_at"]) <= valid_at]
    return facts_then
