"""Analysis datasets behind the outcome tables, as of a recorded time, from the subjects'
outcome facts: ``ADSL`` (one row per subject: arms, disease, enrolment date, baseline BSA,
visits, population flags) and ``ADLIST`` (one row per record behind each cell of the tables,
so that a figure can be recomputed or traced from the files alone)."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from domain.csv_cells import neutralised
from domain.endpoints import Endpoint
from projections.outcomes.engine import (
    UNTREATED_ARMS,
    Summary,
    bsa_in_force,
    contributions_of_summaries,
    subject_summary,
)

Row = dict[str, Any]

ADSL_COLUMNS = ("STUDYID", "USUBJID", "SUBJID", "ARMCD", "ACTARMCD", "DISEASE", "RFSTDTC", "BSABL",
                "BSABLREC", "VISITS", "LSTVISIT", "ENRLFL", "SAFFL")
ADLIST_COLUMNS = ("STUDYID", "ENDPOINT", "CELL", "USUBJID", "SUBJID", "RECORDID", "KIND", "VISIT",
                  "OBSDTC")


def _flag(value: bool) -> str:
    return "Y" if value else "N"


def adsl_row(book: Row, study_id: str, prefix: str, rank: dict[str, int]) -> Row:
    """The subject's row (USUBJID: ``prefix`` and the subject's code, as the CSV export
    writes it). BSABL: the BSA in force at the end of the enrolment day (the
    primary endpoint's baseline) and BSABLREC its vitals record; VISITS: the visits with
    records, in the protocol's order (``rank``: each visit's place), LSTVISIT the last of
    them; ENRLFL: enrolled into an arm (the ``enrolled`` population); SAFFL: treated, by the
    arm actually received where one is recorded (``safety``)."""
    enrolled = book["enrolled_on"]
    baseline = bsa_in_force(book, date.fromisoformat(enrolled)) if enrolled else None
    visits = sorted(book["visits"], key=lambda v: (rank.get(v, len(rank)), v))
    actual = book.get("actual_arm") or book["arm"]
    return {"STUDYID": study_id, "USUBJID": prefix + book["subject"],
            "SUBJID": book["subject"], "ARMCD": book["arm"] or "",
            "ACTARMCD": actual or "", "DISEASE": book.get("disease") or "",
            "RFSTDTC": enrolled or "", "BSABL": baseline[0] if baseline else "",
            "BSABLREC": baseline[1] if baseline else "", "VISITS": " ".join(visits),
            "LSTVISIT": visits[-1] if visits else "",
            "ENRLFL": _flag(bool(enrolled and book["arm"]
                                 and book["arm"] not in UNTREATED_ARMS)),
            "SAFFL": _flag(bool(enrolled and actual and actual not in UNTREATED_ARMS))}


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON-native value (a summary's record ids among them)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@dataclass
class _Reading:
    """What one pass over the books keeps: ADSL's rows and, of each record a summary names,
    what ADLIST shows (kind, visit, clinical time) — not the books themselves."""

    adsl: list[Row] = field(default_factory=list)
    shown: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)

    def summaries(self, books: Iterable[Row], study_id: str, prefix: str,
                  endpoints: Sequence[Endpoint], visit_order: Sequence[str]
                  ) -> Iterator[Summary]:
        rank = {visit: n for n, visit in enumerate(visit_order)}
        for book in books:
            self.adsl.append(adsl_row(book, study_id, prefix, rank))
            summary = subject_summary(book, endpoints)
            named = set(_strings(summary["endpoints"]))
            for kind, records in book["records"].items():
                for record in records:
                    if record["record_id"] in named:
                        self.shown[(book["subject"], record["record_id"])] = (
                            kind, record.get("visit") or "", record.get("observed_at") or "")
            yield summary


def write_analysis(directory: Path, books: Iterable[Row], study_id: str, prefix: str,
                   endpoints: Sequence[Endpoint], visit_order: Sequence[str]) -> dict[str, int]:
    """ADSL.csv (one row per subject, by subject code) and ADLIST.csv (one row per record
    behind each cell, by cell, subject and record id: the record's kind, visit and clinical
    time as the casebook shows it at the export's time) in ``directory``, reading ``books``
    once, one at a time; rows per file."""
    reading = _Reading()
    cells = contributions_of_summaries(
        reading.summaries(books, study_id, prefix, endpoints, visit_order), endpoints)
    adlist = ({"STUDYID": study_id, "ENDPOINT": cell.split("/", 1)[0], "CELL": cell,
               "USUBJID": prefix + subject, "SUBJID": subject, "RECORDID": record_id,
               "KIND": shown[0], "VISIT": shown[1], "OBSDTC": shown[2]}
              for cell, contributions in sorted(cells.items())
              for subject in sorted(contributions)
              for record_id in sorted(contributions[subject])
              for shown in (reading.shown[(subject, record_id)],))
    return {"ADSL.csv": _write(directory / "ADSL.csv", ADSL_COLUMNS,
                               iter(sorted(reading.adsl, key=lambda row: row["SUBJID"]))),
            "ADLIST.csv": _write(directory / "ADLIST.csv", ADLIST_COLUMNS, adlist)}


def _write(path: Path, columns: Sequence[str], rows: Iterator[Row]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([neutralised(row[c]) for c in columns])
            count += 1
    return count
