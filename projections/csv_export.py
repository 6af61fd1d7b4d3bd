"""CSV export as of a recorded time: one file per SDTM domain, plus the full audit trail.

``DM``, ``DS``, ``AE``, ``EX``, ``CM``, ``LB``, ``VS``, ``QS`` (SELENA-SLEDAI and ESSDAI items
and totals) and ``DV`` use SDTM variable names and
controlled terms where SDTM has them; what SDTM has no variable for keeps the casebook's
name (``DISEASE``, ``STATUS``, ``LOCKED``). ``--DTC`` values are ISO 8601 without an offset,
as SDTM writes them, in the site's local time (per the SDTM IG): the offset each record's time
was entered with; a record entered before offsets were kept, and a subject's disposition,
in UTC. ``audit_trail.csv`` and ``audit_trail.jsonl`` hold
every audit row recorded by then with its whole envelope, times in UTC with their offset.
A text cell a spreadsheet would run as a formula is written with a leading quote
(:mod:`domain.csv_cells`); the JSON Lines keep every value exactly.

Every file is written as the rows stream from the server, in one consistent snapshot.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.sql import SQL, Composable, Composed, Identifier

from domain.csv_cells import neutralised_row
from domain.rules.dosing import FREQUENCIES
from domain.rules.essdai import ESSDAI_WEIGHTS
from domain.rules.sledai import SLEDAI_DESCRIPTORS
from domain.rules.units import LAB_TESTS, VITAL_SIGNS
from domain.study import StudyDefinition
from domain.subject import Subject
from projections.casebook import in_force as in_force_timeline
from projections.deviations import DV_CAT, DV_DECOD
from projections.history_view import (
    AUDIT,
    AUDIT_CHANGES,
    AUDIT_COLUMNS,
    AUDIT_EVENTS,
    VERSIONS,
    casebook_history,
)
from projections.streaming import (
    TIME_FIELDS,
    aware,
    consistent_read,
    in_force,
    localised,
    stream,
    utc_text,
)

Row = dict[str, Any]

COLUMNS: dict[str, tuple[str, ...]] = {
    "DM": ("STUDYID", "DOMAIN", "USUBJID", "SUBJID", "RFSTDTC", "RFICDTC", "SITEID",
           "BRTHDTC", "AGE", "AGEU", "SEX", "ARMCD", "ARM", "ACTARMCD", "ACTARM", "COUNTRY",
           "DISEASE", "STATUS", "LOCKED"),
    "DS": ("STUDYID", "DOMAIN", "USUBJID", "DSSEQ", "DSTERM", "DSDECOD", "DSCAT", "DSSTDTC"),
    "AE": ("STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AESPID", "AETERM", "AELLT", "AEDECOD",
           "AECAT", "AESER", "AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE",
           "AEREL", "AEACN", "AEOUT", "AETOXGR", "AESTDTC", "AEENDTC"),
    "EX": ("STUDYID", "DOMAIN", "USUBJID", "EXSEQ", "EXSPID", "EXTRT", "EXDOSE", "EXDOSU",
           "EXDOSFRQ", "EXROUTE", "VISITNUM", "VISIT", "EXSTDTC", "EXENDTC"),
    "CM": ("STUDYID", "DOMAIN", "USUBJID", "CMSEQ", "CMSPID", "CMTRT", "CMCAT", "CMDOSE",
           "CMDOSU", "CMDOSFRQ", "CMDOSTOT", "CMROUTE", "CMSTDTC", "CMENDTC"),
    "LB": ("STUDYID", "DOMAIN", "USUBJID", "LBSEQ", "LBSPID", "LBTESTCD", "LBTEST", "LBCAT",
           "LBORRES", "LBORRESU", "LBORNRLO", "LBORNRHI", "LBNRIND", "VISITNUM", "VISIT",
           "LBDTC"),
    "VS": ("STUDYID", "DOMAIN", "USUBJID", "VSSEQ", "VSSPID", "VSTESTCD", "VSTEST", "VSORRES",
           "VSORRESU", "VSDRVFL", "VISITNUM", "VISIT", "VSDTC"),
    "QS": ("STUDYID", "DOMAIN", "USUBJID", "QSSEQ", "QSSPID", "QSTESTCD", "QSTEST", "QSCAT",
           "QSORRES", "QSSTRESC", "QSSTRESN", "QSDRVFL", "VISITNUM", "VISIT", "QSDTC"),
    "DV": ("STUDYID", "DOMAIN", "USUBJID", "DVSEQ", "DVSPID", "DVREFID", "DVTERM", "DVDECOD",
           "DVCAT", "DVSCAT", "DVSTDTC"),
}
# The record kind each record-level domain is drawn from.
KIND_OF = {"AE": "adverse-events", "EX": "doses", "CM": "therapies", "LB": "labs",
           "VS": "vitals", "QS": "assessments"}

# CDISC controlled terms for the casebook's vocabularies.
ROUTES = {"SC": "SUBCUTANEOUS", "PO": "ORAL", "IV": "INTRAVENOUS", "IM": "INTRAMUSCULAR"}
RELATIONSHIPS = {"not_related": "NOT RELATED", "unlikely": "UNLIKELY RELATED",
                 "possible": "POSSIBLY RELATED", "probable": "PROBABLY RELATED",
                 "definite": "RELATED"}
ACTIONS = {"none": "DOSE NOT CHANGED", "dose_reduced": "DOSE REDUCED",
           "drug_interrupted": "DRUG INTERRUPTED", "drug_withdrawn": "DRUG WITHDRAWN",
           "not_applicable": "NOT APPLICABLE"}
OUTCOMES = {"recovered": "RECOVERED/RESOLVED", "recovering": "RECOVERING/RESOLVING",
            "not_recovered": "NOT RECOVERED/NOT RESOLVED",
            "recovered_with_sequelae": "RECOVERED/RESOLVED WITH SEQUELAE", "fatal": "FATAL",
            "unknown": "UNKNOWN"}
SERIOUSNESS = {"death": "AESDTH", "life_threatening": "AESLIFE", "hospitalisation": "AESHOSP",
               "disability": "AESDISAB", "congenital_anomaly": "AESCONG",
               "medically_important": "AESMIE"}
STUDY_FILE = "study.json"  # an SDTM-loaded study's definition, beside its CSV files
LAB_FLAGS = {"L": "LOW", "N": "NORMAL", "H": "HIGH"}
ESSDAI_LEVELS = {0: "NO ACTIVITY", 1: "LOW ACTIVITY", 2: "MODERATE ACTIVITY",
                 3: "HIGH ACTIVITY"}

# A header's whole JSON (aliased h).
WHOLE_HEADER = SQL("h.data")


@dataclass(frozen=True)
class QsScale:
    """An instrument's QS rows: test codes ``<prefix>01``... in item order, its category."""

    prefix: str
    category: str
    items: Mapping[str, int]  # item -> weight


QS_SCALES = {"SLEDAI": QsScale("SLEDAI", "SELENA-SLEDAI", SLEDAI_DESCRIPTORS),
             "ESSDAI": QsScale("ESSDAI", "ESSDAI", ESSDAI_WEIGHTS)}
# The end of participation, as the subject's events name it.
ENDINGS = {Subject.Completed.__name__: "COMPLETED", Subject.Withdrawn.__name__: "WITHDRAWN"}


def dtc(value: str | None) -> str:
    """An SDTM --DTC: ISO 8601 as the clock that wrote ``value`` showed it, without its
    offset (see :func:`localised`); a date stays a date."""
    if not value:
        return ""
    if "T" not in value:
        return value
    return datetime.fromisoformat(value).strftime("%Y-%m-%dT%H:%M:%S")




def yes_no(value: Any) -> str:
    """SDTM's Y/N."""
    return "Y" if value else "N"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def write_csv(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
              directory: Path, as_of: datetime | None = None,
              definition_data: dict[str, Any] | None = None) -> dict[str, int]:
    """Write the CSV files of the study as of ``as_of`` (now when None) into ``directory``.

    A study loaded from SDTM is written back as it was loaded: one file per SDTM domain
    (``DM``, ``LB``, ``SUPPAE``...) with the variables it declared, each row's values as
    stored, and ``study.json`` (its registered definition, ``definition_data``), so that
    ``import-sdtm`` reads the directory back into an equal study.

    ``conn`` must not be inside a transaction. Returns the number of rows of each file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    export = _Export(conn, schema, definition, aware("as_of", as_of))
    counts: dict[str, int] = {}
    with consistent_read(conn):
        for domain, columns, rows in export.domains():
            counts[f"{domain}.csv"] = _write(directory / f"{domain}.csv", columns, rows)
        if definition.sdtm and definition_data is not None:
            (directory / STUDY_FILE).write_bytes(
                orjson.dumps(definition_data, option=orjson.OPT_INDENT_2))
            counts[STUDY_FILE] = 1
        counts.update(export.audit_trail(directory))
    return counts


def domain_rows(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
                as_of: datetime | None = None
                ) -> Iterator[tuple[str, tuple[str, ...], Iterator[Row]]]:
    """(domain, its columns, its rows) of every SDTM domain of the study as of ``as_of`` (now
    when None), each row a dict by column: the rows the CSV files hold, for the other
    renderings (Dataset-JSON, XPT). Call inside :func:`projections.streaming.consistent_read`,
    and read each domain's rows before asking for the next domain."""
    return _Export(conn, schema, definition, aware("as_of", as_of)).domains()


def _write(path: Path, columns: tuple[str, ...], rows: Iterable[Row]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(neutralised_row(row.get(name, "") for name in columns))
            count += 1
    return count


class _Export:
    """The queries and row builders of one CSV export."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str,
                 definition: StudyDefinition, when: datetime | None) -> None:
        self.conn = conn
        self.schema = schema
        self.s = Identifier(schema)
        self.definition = definition
        self.when = when
        self.visit_numbers = {v.code: n for n, v in enumerate(definition.visits, 1)}

    def _key(self, code: str, domain: str) -> Row:
        study = self.definition.study_id
        return {"STUDYID": study, "DOMAIN": domain, "USUBJID": f"{study}-{code}"}

    def _stream(self, query: Composed, name: str, **params: Any) -> Iterator[tuple[Any, ...]]:
        return stream(self.conn, query, {"t": self.when, **params}, name)

    def _headers(self, columns: Composable = WHOLE_HEADER, *, marks: bool = False
                 ) -> Composed:
        """``columns`` of the subjects' headers (``h``) as of the export's time (with
        ``marks``: with their queries, SDV marks and deviations, which the read tables keep
        apart)."""
        versions = (casebook_history(self.schema) if marks
                    else SQL("{}.{}").format(self.s, Identifier(VERSIONS)))
        return SQL("SELECT {} FROM {} h WHERE h.record_id = '' AND {} "
                   "ORDER BY h.data->>'subject'").format(columns, versions,
                                                         in_force(self.when, "h"))

    def dm(self) -> Iterator[Row]:
        """One row per subject the system showed as of the export's time."""
        for (header,) in self._stream(self._headers(), "csv_dm"):
            site = self.definition.sites.get(header["site"], {})
            arm = header["arm"]
            arm_name = self.definition.arms.get(arm, "") if arm else ""
            yield {**self._key(header["subject"], "DM"), "SUBJID": header["subject"],
                   "RFSTDTC": _text(header["enrolled_on"]),
                   "RFICDTC": header["consent_date"], "SITEID": header["site"],
                   "BRTHDTC": header["date_of_birth"],
                   "AGE": _age(header["date_of_birth"], header["consent_date"]),
                   "AGEU": "YEARS", "SEX": header["sex"], "ARMCD": _text(arm),
                   "ARM": arm_name, "ACTARMCD": _text(arm), "ACTARM": arm_name,
                   "COUNTRY": site.get("country", ""), "DISEASE": header["disease"],
                   "STATUS": header["status"], "LOCKED": yes_no(header["locked"])}

    def ds(self) -> Iterator[Row]:
        """Consent, enrolment (the investigator's allocation to an arm: DSDECOD ENROLLED, never
        RANDOMIZED) and completion or withdrawal as recorded by then."""
        ending = SQL("AND a.recorded_at <= %(t)s") if self.when else SQL("")
        query = SQL(
            "SELECT h.data, e.event_type, e.observed_at FROM {s}.{v} h "
            "LEFT JOIN LATERAL (SELECT a.event_type, a.observed_at FROM {s}.{a} a "
            " WHERE a.subject_code = h.data->>'subject' AND a.event_type = ANY(%(endings)s) "
            " {ending} ORDER BY a.position DESC, a.seq DESC LIMIT 1) e ON TRUE "
            "WHERE h.record_id = '' AND {in_force} ORDER BY h.data->>'subject'").format(
                s=self.s, v=Identifier(VERSIONS), a=Identifier(AUDIT), ending=ending,
                in_force=in_force(self.when, "h"))
        for header, ended, ended_at in self._stream(query, "csv_ds", endings=list(ENDINGS)):
            key = self._key(header["subject"], "DS")
            consent = "INFORMED CONSENT OBTAINED"
            events = [(consent, consent, "PROTOCOL MILESTONE", header["consent_date"])]
            if header["enrolled_on"]:
                # Nothing here randomises: the investigator enrols the subject into an arm.
                events.append((f"ALLOCATED TO {_text(header['arm'])} BY THE INVESTIGATOR",
                               "ENROLLED", "PROTOCOL MILESTONE", header["enrolled_on"]))
            if ended in ENDINGS:
                events.append((ENDINGS[ended], ENDINGS[ended], "DISPOSITION EVENT",
                               dtc(utc_text(ended_at)) if ended_at else ""))
            for seq, (term, decod, category, start) in enumerate(events, 1):
                yield {**key, "DSSEQ": seq, "DSTERM": term, "DSDECOD": decod,
                       "DSCAT": category, "DSSTDTC": start}

    def dv(self) -> Iterator[Row]:
        """Protocol deviations as recorded by then, numbered per subject by date
        (DVSPID: the deviation's id; DVREFID: the record it concerns; DVSCAT: who found it)."""
        # The deviations alone: a whole header carries every query the subject had (about
        # 18 KB at 490 events), which would make this process grow with the study.
        for subject, recorded in self._stream(
                self._headers(SQL("h.data->>'subject', h.data->'deviations'"), marks=True),
                "csv_dv"):
            deviations = sorted((recorded or {}).values(),
                                key=lambda d: (d["occurred_on"], d["deviation_id"]))
            for seq, d in enumerate(deviations, 1):
                yield {**self._key(subject, "DV"), "DVSEQ": seq,
                       "DVSPID": d["deviation_id"], "DVREFID": _text(d["record_id"]),
                       "DVTERM": d["description"], "DVDECOD": DV_DECOD[d["category"]],
                       "DVCAT": DV_CAT[d["severity"]],
                       "DVSCAT": "AUTOMATIC CHECK" if d["detected_by"] == "system"
                       else d["detected_by"].replace("_", " ").upper(),
                       "DVSTDTC": d["occurred_on"]}

    def records(self, domain: str) -> Iterator[Row]:
        """The rows of a record-level domain, numbered per subject in clinical-time order."""
        query = SQL(
            "SELECT h.data->>'subject', r.record_id, r.data->>'visit', r.data->>'observed_at', "
            " r.data->'fields', r.data->'derived', "
            " CASE WHEN r.kind = 'therapies' THEN r.data->'timeline' END, "
            " r.data->>'observed_offset' "
            "FROM {s}.{v} h JOIN {s}.{v} r ON r.subject_id = h.subject_id "
            "WHERE h.record_id = '' AND {h_in_force} AND r.kind = %(kind)s "
            " AND r.data IS NOT NULL AND {r_in_force} "
            "ORDER BY h.data->>'subject', r.data->>'observed_at', r.record_id").format(
                s=self.s, v=Identifier(VERSIONS), h_in_force=in_force(self.when, "h"),
                r_in_force=in_force(self.when, "r"))
        build = self._builders()[domain]
        subject, seq = None, 0
        for code, record_id, visit, observed, fields, derived, timeline, offset in self._stream(
                query, f"csv_{domain.lower()}", kind=KIND_OF[domain]):
            if code != subject:
                subject, seq = code, 0
            if offset:
                # Every time of the record as the site's clock showed it (SDTM IG: local).
                observed = localised(observed, offset)
                fields = {k: localised(v, offset) if k in TIME_FIELDS else v
                          for k, v in fields.items()}
                timeline = [{**entry, "observed_at": localised(entry["observed_at"], offset),
                             "fields": {k: localised(v, offset) if k in TIME_FIELDS else v
                                        for k, v in entry["fields"].items()}}
                            for entry in timeline or []]
            for row in build(fields, derived or {}, observed, timeline or []):
                seq += 1
                row = {**self._key(code, domain), f"{domain}SEQ": seq,
                       f"{domain}SPID": record_id, **row}
                if "VISIT" in COLUMNS[domain]:
                    row["VISIT"] = _text(visit)
                    row["VISITNUM"] = _text(self.visit_numbers.get(visit or ""))
                yield row

    def domains(self) -> Iterator[tuple[str, tuple[str, ...], Iterator[Row]]]:
        """Every domain as (name, columns, rows): an SDTM-loaded study's as it declared them,
        otherwise the casebook's records in the domains of :data:`COLUMNS`."""
        if self.definition.sdtm:
            yield from self.sdtm()
            return
        yield "DM", COLUMNS["DM"], self.dm()
        yield "DS", COLUMNS["DS"], self.ds()
        for domain in KIND_OF:
            yield domain, COLUMNS[domain], self.records(domain)
        yield "DV", COLUMNS["DV"], self.dv()

    def sdtm(self) -> Iterator[tuple[str, tuple[str, ...], Iterator[Row]]]:
        """An SDTM-loaded study's domains, each row its variables as stored."""
        declared: dict[str, dict[str, str]] = self.definition.sdtm.get("variables", {})
        for domain, variables in declared.items():
            key = ("STUDYID", "RDOMAIN" if domain.startswith("SUPP") else "DOMAIN", "USUBJID")
            columns = (*key, *(v for v in variables if v not in key))
            yield domain, columns, self._sdtm_rows(domain, key)

    def _sdtm_rows(self, domain: str, key: tuple[str, ...]) -> Iterator[Row]:
        study = self.definition.study_id
        if domain == "DM":
            for (header,) in self._stream(self._headers(), "csv_sdtm_dm"):
                yield {"STUDYID": study, "DOMAIN": "DM", "USUBJID": header["subject"],
                       **(header.get("demographics") or {})}
            return
        # Rows in record-id order: a repeated key's "#2" comes after the first, so that
        # reading the file back gives each row the id it has here.
        query = SQL(
            "SELECT h.data->>'subject', r.data->'fields' "
            "FROM {s}.{v} h JOIN {s}.{v} r ON r.subject_id = h.subject_id "
            "WHERE h.record_id = '' AND {h_in_force} AND r.kind = %(kind)s "
            " AND r.data IS NOT NULL AND {r_in_force} "
            "ORDER BY h.data->>'subject', r.record_id").format(
                s=self.s, v=Identifier(VERSIONS), h_in_force=in_force(self.when, "h"),
                r_in_force=in_force(self.when, "r"))
        parent = domain[4:] if domain.startswith("SUPP") else domain
        for code, fields in self._stream(query, f"csv_sdtm_{domain.lower()}", kind=domain):
            yield {"STUDYID": study, key[1]: parent, "USUBJID": code, **fields}

    def _builders(self) -> dict[str, Callable[[Row, Row, str, list[Row]], Iterator[Row]]]:
        return {"AE": _ae, "EX": self._ex, "CM": _cm, "LB": _lb, "VS": _vs, "QS": _qs}

    def _ex(self, fields: Row, derived: Row, observed: str, timeline: list[Row]
            ) -> Iterator[Row]:
        product = self.definition.products.get(fields["drug"], {})
        yield {"EXTRT": product.get("name", fields["drug"]), "EXDOSE": fields["dose"],
               "EXDOSU": fields["unit"], "EXDOSFRQ": _text(fields.get("frequency")),
               "EXROUTE": ROUTES.get(fields["route"], fields["route"]),
               "EXSTDTC": dtc(observed), "EXENDTC": dtc(observed)}

    def audit_trail(self, directory: Path) -> dict[str, int]:
        """audit_trail.csv and audit_trail.jsonl, written side by side in one pass.

        Millions of rows at 1M events, and an event's who, when and why repeat on each of its
        changes: the events and their changes are read apart, each in key order, and merged
        here, so that an event's cells are read, turned into text and neutralised once, not
        once a change. Each row is the audit trail view's (``AUDIT``), in its column order."""
        until = SQL(" WHERE recorded_at <= %(t)s") if self.when else SQL("")
        events = self._stream(SQL("SELECT {} FROM {}.{}{} ORDER BY position").format(
            SQL(", ").join(Identifier(c) for c in _HEAD + _TAIL), self.s,
            Identifier(AUDIT_EVENTS), until), "csv_audit_events")
        changes = self._stream(SQL("SELECT {} FROM {}.{} ORDER BY position, seq").format(
            SQL(", ").join(Identifier(c) for c in _CHANGE_CELLS), self.s,
            Identifier(AUDIT_CHANGES)), "csv_audit_changes")
        count = 0
        with (directory / "audit_trail.csv").open("w", newline="", encoding="utf-8") as f, \
                (directory / "audit_trail.jsonl").open("wb") as lines:
            writer = csv.writer(f)
            writer.writerow(AUDIT_COLUMNS)
            observed: tuple[datetime | None, str | None] = (None, None)  # the last one's text
            for event, cells in audit_rows(events, changes):
                if cells[_OBSERVED] is not None:
                    # An event's changes mostly share one clinical time.
                    if cells[_OBSERVED] != observed[0]:
                        observed = cells[_OBSERVED], utc_text(cells[_OBSERVED])
                    cells[_OBSERVED] = observed[1]
                lines.write(event.json_head + orjson.dumps(dict(zip(
                    _CHANGE, cells, strict=True)))[1:-1] + event.json_tail)
                # In CSV, the old and new values are JSON text (a number, a string, a list,
                # null where there was none).
                cells[_OLD] = orjson.dumps(cells[_OLD]).decode()
                cells[_NEW] = orjson.dumps(cells[_NEW]).decode()
                writer.writerow(event.csv_head + neutralised_row(cells) + event.csv_tail)
                count += 1
        return {"audit_trail.csv": count, "audit_trail.jsonl": count}


# The audit trail's columns: an event's (who, when) before its change's, then the event's
# (why, from where) after them.
_MIDDLE = AUDIT_COLUMNS.index("record_id"), AUDIT_COLUMNS.index("observed_at") + 1
_HEAD, _TAIL = AUDIT_COLUMNS[:_MIDDLE[0]], AUDIT_COLUMNS[_MIDDLE[1]:]
_CHANGE = AUDIT_COLUMNS[_MIDDLE[0]:_MIDDLE[1]]  # a change's cells, as the merge gives them
_CHANGE_CELLS = ("position", *_CHANGE)  # as its table is read
_OLD, _NEW, _OBSERVED = (_CHANGE.index(c) for c in ("old_value", "new_value", "observed_at"))
_RECORDED, _SUBJECT = _HEAD.index("recorded_at"), _HEAD.index("subject_id")


@dataclass(frozen=True, slots=True)
class _AuditEvent:
    """An audited event's cells, ready to go around each of its changes' in both files."""

    position: int
    csv_head: list[Any]
    csv_tail: list[Any]
    json_head: bytes  # '{"position":...,"site":...,' : the JSON object's start
    json_tail: bytes  # ',"user_id":...}\n': its end

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> _AuditEvent:
        """The event of a row of ``_HEAD + _TAIL``."""
        cells = list(row)
        if cells[_RECORDED] is not None:
            cells[_RECORDED] = utc_text(cells[_RECORDED])
        if cells[_SUBJECT] is not None:
            cells[_SUBJECT] = str(cells[_SUBJECT])
        head, tail = cells[:len(_HEAD)], cells[len(_HEAD):]
        return cls(row[0], neutralised_row(head), neutralised_row(tail),
                   orjson.dumps(dict(zip(_HEAD, head, strict=True)))[:-1] + b",",
                   b"," + orjson.dumps(dict(zip(_TAIL, tail, strict=True)))[1:] + b"\n")


def audit_rows(events: Iterable[tuple[Any, ...]], changes: Iterable[tuple[Any, ...]]
               ) -> Iterator[tuple[_AuditEvent, list[Any]]]:
    """Each of ``changes`` (rows of position and the change's cells, in key order) with its
    event of ``events`` (rows of the events' cells, position first, in position order), as
    (event, the change's cells). A change whose event is not among ``events`` (recorded after
    the export's time: times may interleave with positions) is left out."""
    pending = iter(events)
    event: _AuditEvent | None = None
    for position, *cells in changes:
        while event is None or event.position < position:
            row = next(pending, None)
            if row is None:
                return
            event = _AuditEvent.of(row)
        if event.position == position:
            yield event, cells


def _age(born: str, on: str) -> int:
    birth, day = date.fromisoformat(born), date.fromisoformat(on)
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def _ae(fields: Row, derived: Row, observed: str, timeline: list[Row]) -> Iterator[Row]:
    criteria = fields.get("seriousness_criteria") or []
    yield {"AETERM": fields["term"], "AELLT": _text(fields.get("meddra_llt")),
           "AEDECOD": _text(fields.get("meddra_pt")), "AECAT": fields["category"].upper(),
           "AESER": yes_no(fields["serious"]),
           **{variable: yes_no(c in criteria) for c, variable in SERIOUSNESS.items()},
           "AEREL": RELATIONSHIPS.get(fields["relationship"], fields["relationship"]),
           "AEACN": ACTIONS.get(fields["action_taken"], fields["action_taken"]),
           "AEOUT": OUTCOMES.get(fields["outcome"], fields["outcome"]),
           "AETOXGR": fields["grade"], "AESTDTC": dtc(observed),
           "AEENDTC": dtc(fields.get("ended_at"))}


def _cm(fields: Row, derived: Row, observed: str, timeline: list[Row]) -> Iterator[Row]:
    """One row per dose in force: a taper step starts a new row and ends the last.

    A course dosed per administration gives CMDOSE at its CMDOSFRQ; one entered as a daily
    total gives CMDOSTOT, and CMDOSE only when a frequency says how the day was split (no
    frequency is invented for a course entered without one).
    """
    name = "dose_mg" if "dose_mg" in fields else "dose_mg_per_day"
    steps = [(entry["observed_at"], entry["fields"][name]) for entry in timeline
             if name in entry["fields"]]
    for n, (start, dose) in enumerate(steps):
        end = steps[n + 1][0] if n + 1 < len(steps) else fields.get("stopped_at")
        frequency = in_force_timeline(timeline, "frequency", datetime.fromisoformat(start))
        if name == "dose_mg":
            amounts = {"CMDOSE": dose, "CMDOSTOT": ""}
        else:
            rate = FREQUENCIES.get(frequency or "")
            amounts = {"CMDOSE": round(dose / rate, 4) if rate else "", "CMDOSTOT": dose}
        yield {"CMTRT": fields["drug"], "CMCAT": fields["category"].upper(), **amounts,
               "CMDOSU": "mg", "CMDOSFRQ": _text(frequency),
               "CMROUTE": ROUTES.get(fields["route"], fields["route"]),
               "CMSTDTC": dtc(start), "CMENDTC": dtc(end)}


def _lb(fields: Row, derived: Row, observed: str, timeline: list[Row]) -> Iterator[Row]:
    test = LAB_TESTS.get(fields["code"])
    yield {"LBTESTCD": fields["code"], "LBTEST": test.name if test else "",
           "LBCAT": test.category.upper() if test else "", "LBORRES": fields["value"],
           "LBORRESU": fields["unit"], "LBORNRLO": _text(fields.get("reference_low")),
           "LBORNRHI": _text(fields.get("reference_high")),
           "LBNRIND": LAB_FLAGS.get(derived.get("flag", ""), ""), "LBDTC": dtc(observed)}


def _vs(fields: Row, derived: Row, observed: str, timeline: list[Row]) -> Iterator[Row]:
    for code, value in fields.items():
        sign = VITAL_SIGNS[code]
        yield {"VSTESTCD": code, "VSTEST": sign.name, "VSORRES": value,
               "VSORRESU": sign.unit, "VSDRVFL": "", "VSDTC": dtc(observed)}
    if "bsa" in derived:
        yield {"VSTESTCD": "BSA", "VSTEST": "Body Surface Area",
               "VSORRES": derived["bsa"]["value"], "VSORRESU": "m2", "VSDRVFL": "Y",
               "VSDTC": dtc(observed)}


def _qs(fields: Row, derived: Row, observed: str, timeline: list[Row]) -> Iterator[Row]:
    """One row per item scored, then the derived total (QSDRVFL Y): SELENA-SLEDAI items as
    PRESENT or ABSENT with their points, ESSDAI domains with their activity level."""
    instrument = fields["instrument"]
    scale = QS_SCALES[instrument]
    for n, name in enumerate(scale.items, 1):
        if name not in fields["items"]:
            continue
        value = fields["items"][name]
        if instrument == "SLEDAI":
            result, score = ("PRESENT" if value else "ABSENT"), scale.items[name] * bool(value)
        else:
            result, score = ESSDAI_LEVELS[value], value
        yield {"QSTESTCD": f"{scale.prefix}{n:02d}", "QSTEST": _words(name),
               "QSCAT": scale.category, "QSORRES": result, "QSSTRESC": str(score),
               "QSSTRESN": score, "QSDRVFL": "", "QSDTC": dtc(observed)}
    if "total" in derived:
        total = derived["total"]["value"]
        yield {"QSTESTCD": f"{scale.prefix}TOT", "QSTEST": f"{scale.category} Total Score",
               "QSCAT": scale.category, "QSORRES": number_text(total),
               "QSSTRESC": number_text(total), "QSSTRESN": total, "QSDRVFL": "Y",
               "QSDTC": dtc(observed)}


def _words(name: str) -> str:
    """``organic_brain_syndrome`` -> ``Organic brain syndrome``."""
    return name.replace("_", " ").capitalize()


def number_text(value: float) -> str:
    """A number as people write it: ``12`` for 12.0, ``0.8`` for 0.8."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
