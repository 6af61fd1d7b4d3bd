"""Analysis datasets behind the outcome tables, as of a recorded time, from the subjects'
outcome facts: ``ADSL`` (one row per subject: arms, disease, enrolment date, baseline BSA,
visits, population flags) and ``ADLIST`` (one row per record behind each cell of the tables,
so that a figure can be recomputed or traced from the files alone)."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from domain.csv_cells import neutralised
from domain.endpoints import Endpoint
from projections.outcomes.engine import UNTREATED_ARMS, all_contributions, bsa_in_force

Row = dict[str, Any]

ADSL_COLUMNS = ("STUDYID", "USUBJID", "SUBJID", "ARMCD", "ACTARMCD", "DISEASE", "RFSTDTC", "BSABL",
                "BSABLREC", "VISITS", "LSTVISIT", "ENRLFL", "SAFFL")
ADLIST_COLUMNS = ("STUDYID", "ENDPOINT", "CELL", "USUBJID", "SUBJID", "RECORDID", "KIND", "VISIT",
                  "OBSDTC")


def _flag(value: bool) -> str:
    return "Y" if value else "N"


def adsl(books: Sequence[Row], study_id: str, prefix: str,
         visit_order: Sequence[str]) -> Iterator[Row]:
    """One row per subject (USUBJID: ``prefix`` and the subject's code, as the CSV export
    writes it). BSABL: the BSA in force at the end of the enrolment day (the
    primary endpoint's baseline) and BSABLREC its vitals record; VISITS: the visits with
    records, in the protocol's order (``visit_order``), LSTVISIT the last of them; ENRLFL:
    enrolled into an arm (the ``enrolled`` population); SAFFL: treated, by the arm actually
    received where one is recorded (``safety``)."""
    rank = {visit: n for n, visit in enumerate(visit_order)}
    for book in books:
        enrolled = book["enrolled_on"]
        baseline = bsa_in_force(book, date.fromisoformat(enrolled)) if enrolled else None
        visits = sorted(book["visits"], key=lambda v: (rank.get(v, len(rank)), v))
        actual = book.get("actual_arm") or book["arm"]
        yield {"STUDYID": study_id, "USUBJID": prefix + book["subject"],
               "SUBJID": book["subject"], "ARMCD": book["arm"] or "",
               "ACTARMCD": actual or "", "DISEASE": book.get("disease") or "",
               "RFSTDTC": enrolled or "", "BSABL": baseline[0] if baseline else "",
               "BSABLREC": baseline[1] if baseline else "", "VISITS": " ".join(visits),
               "LSTVISIT": visits[-1] if visits else "",
               "ENRLFL": _flag(bool(enrolled and book["arm"]
                                    and book["arm"] not in UNTREATED_ARMS)),
               "SAFFL": _flag(bool(enrolled and actual and actual not in UNTREATED_ARMS))}


def adlist(books: Sequence[Row], study_id: str, prefix: str,
           endpoints: Sequence[Endpoint]) -> Iterator[Row]:
    """One row per record behind each cell, by cell, subject and record id: the record's
    kind, visit and clinical time (as the casebook shows it at the export's time)."""
    where = {(book["subject"], record["record_id"]): (kind, record)
             for book in books for kind, records in book["records"].items()
             for record in records}
    for cell, contributions in sorted(all_contributions(books, endpoints).items()):
        for subject in sorted(contributions):
            for record_id in sorted(contributions[subject]):
                kind, record = where[(subject, record_id)]
                yield {"STUDYID": study_id, "ENDPOINT": cell.split("/", 1)[0], "CELL": cell,
                       "USUBJID": prefix + subject, "SUBJID": subject,
                       "RECORDID": record_id, "KIND": kind,
                       "VISIT": record.get("visit") or "",
                       "OBSDTC": record.get("observed_at") or ""}


def _write(path: Path, columns: Sequence[str], rows: Iterator[Row]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([neutralised(row[c]) for c in columns])
            count += 1
    return count


def write_analysis(directory: Path, books: Sequence[Row], study_id: str, prefix: str,
                   endpoints: Sequence[Endpoint], visit_order: Sequence[str]) -> dict[str, int]:
    """ADSL.csv and ADLIST.csv in ``directory`` (USUBJID: ``prefix`` and the subject's
    code); rows per file."""
    return {"ADSL.csv": _write(directory / "ADSL.csv", ADSL_COLUMNS,
                               adsl(books, study_id, prefix, visit_order)),
            "ADLIST.csv": _write(directory / "ADLIST.csv", ADLIST_COLUMNS,
                                 adlist(books, study_id, prefix, endpoints))}
