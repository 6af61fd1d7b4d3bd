"""Protocol deviations of a study, from the subjects' current headers in the read tables."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import psycopg
from psycopg.sql import SQL

from domain.csv_cells import neutralised
from projections.history_view import casebook_history

COLUMNS = ("subject", "site", "deviation_id", "category", "severity", "occurred_on",
           "description", "detected_by", "record_id", "recorded_at", "recorded_by")
# SDTM DV: DVDECOD from the category, DVCAT from the severity.
DV_DECOD = {"visit_out_of_window": "VISIT OUT OF WINDOW", "missed_visit": "MISSED VISIT",
            "dose_deviation": "STUDY TREATMENT DEVIATION", "eligibility": "ELIGIBILITY CRITERIA",
            "prohibited_medication": "PROHIBITED MEDICATION", "procedure": "PROCEDURE DEVIATION",
            "informed_consent": "INFORMED CONSENT", "other": "OTHER"}
DV_CAT = {"major": "MAJOR PROTOCOL DEVIATION", "minor": "MINOR PROTOCOL DEVIATION"}


def deviation_list(conn: psycopg.Connection[Any], schema: str, sites: set[str] | None,
                   site: str | None = None, subject: str | None = None) -> list[dict[str, Any]]:
    """Every deviation of the subjects at ``sites`` (None: every site), optionally of one
    ``site`` or ``subject``, by subject, date and id."""
    rows = conn.execute(
        SQL("SELECT h.data FROM {} h WHERE h.record_id = '' AND h.recorded_to IS NULL"
            " AND h.data->'deviations' <> '{{}}'::jsonb").format(
            casebook_history(schema))).fetchall()
    listed = [{"subject": h["subject"], "site": h["site"],
               **{k: d.get(k) for k in COLUMNS[2:]}}
              for (h,) in rows
              if (sites is None or h["site"] in sites) and site in (None, h["site"])
              and subject in (None, h["subject"])
              for d in h["deviations"].values()]
    return sorted(listed, key=lambda d: (str(d["subject"]), d["occurred_on"],
                                         d["deviation_id"]))


def to_csv(deviations: list[dict[str, Any]]) -> str:
    """The list as CSV, one deviation a line, with a header line."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: neutralised(v) for k, v in d.items()} for d in deviations)
    return out.getvalue()


def to_json(deviations: list[dict[str, Any]]) -> str:
    """The list as JSON (keys sorted, stable byte for byte)."""
    return orjson.dumps(deviations, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode()
