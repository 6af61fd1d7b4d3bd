"""``trialledger import-sdtm``: an SDTM data set loaded as signed events with ``source=import``.

Every DM row becomes a subject (screen failures kept; ARMCD and ACTARMCD both kept); every
row of DS, SV, SE, EX, CM, LB (split or whole), VS, AE and SUPPxx becomes one record of that
subject, its fields the row's variables as given, its valid time from the row's --DTC
(partial dates kept as given, see :func:`domain.sdtm.parse_dtc`). Each event's envelope
carries the row's provenance: file, row number, and the row's values as read.

A study not yet registered is registered first, from TS/TA/TV/TI and the data's own
vocabularies (or from the ``study.json`` a CSV export writes next to its CSV files).

The load is idempotent and resumable: subjects and record ids are derived from the data
(USUBJID, domain, --SEQ), so a second run finds what is stored and adds only what is not.
Events are written a few thousand per transaction (whole subjects, a long casebook in parts),
each transaction stored while the next subjects are built (:class:`infra.bulk.BulkWriter`);
each event is still signed on its own, exactly as the application signs it.
"""

from __future__ import annotations

import gc
import json
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from functools import partial
from pathlib import Path
from typing import Any

from application.import_workers import BuildPool, NewSubject
from application.trial_service import TrialService
from domain.caller import Caller
from domain.commands import RegisterStudy
from domain.envelope import Envelope
from domain.errors import DomainError, InvalidInput
from domain.permissions import Action
from domain.sdtm import (
    KEYS,
    TOPICS,
    CheckedRow,
    check_row,
    dtc_date,
    record_id,
    sdtm_endpoints,
    valid_time,
)
from domain.service import StudyApplication
from domain.study import StudyDefinition
from domain.subject import SCREEN_FAILURE_ARM, Subject
from infra.bulk import BulkWriteFailed, BulkWriter
from infra.copy_rows import CopyRows
from infra.sdtm_files import SdtmFileError, Table, read_directory
from projections.csv_export import STUDY_FILE

# What DM must hold for a subject to be loaded at all.
DM_REQUIRED = ("USUBJID", "SITEID", "SEX", "ARMCD", "ACTARMCD")
# Trial-design domains (they describe the study, not a subject) and what is not loaded.
DESIGN = ("TS", "TA", "TE", "TV", "TI")
DEFINITION_FILE = STUDY_FILE  # the study's definition, as a CSV export writes it
# Events stored per transaction by the bulk writer (COPY): fewer commits, and a long
# casebook is rarely split.
EVENTS_PER_TRANSACTION = 2000
# ... and by the application's own save (bulk=False), which inserts in psycopg's pipeline
# mode: a large batch stalls it, the server blocking on writing the returned ids while the
# client is still sending (psycopg issue #685; seen here at ~1,700 events on a Unix socket).
EVENTS_PER_SAVE = 200
# Batches of new subjects the worker processes may have built and not yet stored: while
# the rows are still being checked, they build ahead (a batch is about 2 MB of stored bytes).
BATCHES_AHEAD = 16
SIGNATURE_MEANINGS = [
    {"code": "authorship", "text": "I am the author of these data"},
    {"code": "review", "text": "I have reviewed these data"},
    {"code": "approval", "text": "I approve these data"},
    {"code": "responsibility", "text": "I take responsibility for the data in this casebook"},
]


class ImportRefused(Exception):
    """The data set cannot be loaded as it is; nothing was stored."""


class ImportInterrupted(Exception):
    """The import stopped part way (a worker process died, or the database refused a batch):
    the transactions committed are kept, whole; running the import again adds the rest."""


@dataclass
class Row:
    """One row to load: its table, its 1-based row number in its file, its values."""

    table: Table
    number: int
    values: dict[str, Any]


@dataclass
class SubjectRows:
    """A subject's DM row and every other row naming its USUBJID, in file order."""

    dm: Row
    rows: list[Row] = field(default_factory=list)


@dataclass
class ImportResult:
    """What a run did."""

    subjects_added: int = 0
    records_added: int = 0
    events_added: int = 0
    registered: bool = False
    already_present: int = 0
    skipped_tables: list[str] = field(default_factory=list)
    by_domain: Counter[str] = field(default_factory=Counter)


class DataSet:
    """An SDTM data set read from a directory, checked before anything is stored."""

    def __init__(self, directory: Path, variable_types: dict[str, dict[str, str]] | None = None
                 ) -> None:
        definition_file = directory / DEFINITION_FILE
        self.definition: dict[str, Any] | None = None
        if definition_file.is_file():
            try:
                self.definition = json.loads(definition_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ImportRefused(f"{DEFINITION_FILE}: {e}") from None
            variable_types = self.definition.get("sdtm", {}).get("variables", variable_types)
        try:
            self.tables = read_directory(directory, variable_types)
        except SdtmFileError as e:
            raise ImportRefused(str(e)) from None
        self.by_name: dict[str, list[Table]] = defaultdict(list)
        for table in self.tables:
            self.by_name[table.name].append(table)
        self._check()

    def _check(self) -> None:
        if "DM" not in self.by_name:
            raise ImportRefused("no DM file: subjects come from DM")
        for table in self.tables:
            required: tuple[str, ...] = ()
            if table.name == "DM":
                required = DM_REQUIRED
            elif table.name in TOPICS:
                required = ("USUBJID", TOPICS[table.name])
            missing = [v for v in required if v not in table.variables]
            if missing:
                raise ImportRefused(f"{table.file}: missing required variable"
                                    f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}")

    def loaded_tables(self) -> list[Table]:
        """The subject-level tables the import loads (DM, then the record domains)."""
        return [t for t in self.tables if t.name == "DM" or t.name in TOPICS]

    def skipped_tables(self) -> list[str]:
        """Files present but not loaded (trial design is read into the definition)."""
        return [t.file for t in self.tables if t.name != "DM" and t.name not in TOPICS
                and t.name not in DESIGN]

    def subjects(self) -> dict[str, SubjectRows]:
        """Every subject's rows, by USUBJID; a row naming no DM subject refuses the load."""
        subjects: dict[str, SubjectRows] = {}
        for table in self.by_name["DM"]:
            for number, values in enumerate(table.rows, 1):
                code = _text(values.get("USUBJID"))
                if not code:
                    raise ImportRefused(f"{table.file} row {number}: USUBJID is empty")
                if code in subjects:
                    raise ImportRefused(f"{table.file} row {number}: USUBJID {code} twice in DM")
                subjects[code] = SubjectRows(Row(table, number, values))
        for table in self.tables:
            if table.name not in TOPICS:
                continue
            for number, values in enumerate(table.rows, 1):
                code = _text(values.get("USUBJID"))
                if code not in subjects:
                    raise ImportRefused(f"{table.file} row {number}: USUBJID {code!r} is not "
                                        "in DM")
                subjects[code].rows.append(Row(table, number, values))
        return subjects

    def study_definition(self, study_id: str) -> dict[str, Any]:
        """The definition to register the study with (see the module's docstring)."""
        if self.definition is not None:
            return {**self.definition, "study_id": study_id}
        return _definition_from_design(study_id, self)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _design_rows(data: DataSet, name: str) -> list[dict[str, Any]]:
    return [row for table in data.by_name.get(name, []) for row in table.rows]


def _definition_from_design(study_id: str, data: DataSet) -> dict[str, Any]:
    ts = {_text(r.get("TSPARMCD")): _text(r.get("TSVAL")) for r in _design_rows(data, "TS")}
    dm = _design_rows(data, "DM")
    arms: dict[str, str] = {}
    for row in (*_design_rows(data, "TA"), *dm):
        if _text(row.get("ARMCD")):
            arms.setdefault(_text(row["ARMCD"]), _text(row.get("ARM")) or _text(row["ARMCD"]))
    for row in dm:
        if _text(row.get("ACTARMCD")):
            arms.setdefault(_text(row["ACTARMCD"]), _text(row.get("ACTARM")))
    sites = {_text(r["SITEID"]): _text(r.get("COUNTRY")) for r in dm if _text(r.get("SITEID"))}
    visits: dict[str, dict[str, Any]] = {}
    for row in sorted(_design_rows(data, "TV") or _design_rows(data, "SV"),
                      key=lambda r: r.get("VISITNUM") or 0):
        name = _text(row.get("VISIT"))
        if name and name not in visits:
            day = row.get("VISITDY")
            # A visit with no planned study day (e.g. AE follow-up) is placed at day 0.
            visits[name] = {"code": name, "name": name,
                            "day": int(day) if isinstance(day, float) else 0, "window_days": 0}
    criteria = [{"id": _text(r["IETESTCD"]),
                 "kind": "exclusion" if _text(r.get("IECAT")) == "EXCLUSION" else "inclusion",
                 "text": _text(r.get("IETEST")), "fact": _text(r["IETESTCD"]), "op": "is_true"}
                for r in _design_rows(data, "TI") if _text(r.get("IETESTCD"))]
    dates = sorted(d for r in dm for v in ("RFSTDTC", "RFPENDTC", "DMDTC")
                   if (d := dtc_date(_text(r.get(v)))) is not None)
    products = {_text(r.get("EXTRT")) for r in _design_rows(data, "EX") if _text(r.get("EXTRT"))}
    return {
        "study_id": study_id,
        "title": ts.get("TITLE") or f"SDTM study {study_id}",
        "start_date": (dates[0] if dates else date.today()).isoformat(),
        "end_date": (dates[-1] if dates else date.today()).isoformat(),
        "arms": [{"code": code, "name": name} for code, name in arms.items()],
        "sites": [{"code": code, "name": f"Site {code}", "country": country}
                  for code, country in sorted(sites.items())],
        "visits": list(visits.values()),
        "eligibility": criteria or [{"id": "SCREENED", "kind": "inclusion",
                                     "text": "eligible as screened by the sponsor (no TI)",
                                     "fact": "screened", "op": "is_true"}],
        "signature_meanings": SIGNATURE_MEANINGS,
        "products": [{"code": p, "name": p} for p in sorted(products)],
        "sdtm": {"variables": _variables(data), "vocabulary": _vocabulary(data)},
        "endpoints": [e.to_dict() for e in sdtm_endpoints(
            {table.name for table in data.loaded_tables()})],
    }


def _variables(data: DataSet) -> dict[str, dict[str, str]]:
    variables: dict[str, dict[str, str]] = {}
    for table in data.loaded_tables():
        declared = variables.setdefault(table.name, {})
        for name, kind in table.variables.items():
            declared.setdefault(name, kind)
    return variables


def _vocabulary(data: DataSet) -> dict[str, Any]:
    """The study's own vocabularies, from its data: tests with their units, coded values."""
    vocabulary: dict[str, Any] = {}
    for domain, (code_var, unit_var) in (("LB", ("LBTESTCD", "LBSTRESU")),
                                         ("VS", ("VSTESTCD", "VSSTRESU"))):
        tests: dict[str, dict[str, Any]] = {}
        for row in _design_rows(data, domain):
            code = row.get(code_var)
            if isinstance(code, str) and code:
                test = tests.setdefault(code, {"name": row.get(f"{domain}TEST") or code,
                                               "units": []})
                unit = row.get(unit_var) or ""
                if unit not in test["units"]:
                    test["units"].append(unit)
        if tests:
            vocabulary[code_var] = tests
    for name in ("AESEV", "AESER", "AEREL", "AEOUT", "DSDECOD", "DSCAT"):
        values = sorted({v for r in _design_rows(data, name[:2]) if isinstance(v := r.get(name),
                                                                             str) and v})
        if values:
            vocabulary[name] = values
    return vocabulary


class Importer:
    """Loads one data set into one study application.

    With ``bulk`` (the default), batches are stored by a :class:`infra.bulk.BulkWriter` while
    the next subjects are built; ``on_progress`` is then called from its thread, once a batch
    is committed. Without, each batch is saved by the application itself, in turn. Either
    way each batch goes through the trial service's bulk door
    (:meth:`~application.trial_service.TrialService.import_subjects`), which holds it to
    the caller's grant and the locks as any other write.
    """

    def __init__(self, service: TrialService, app: StudyApplication, data: DataSet,
                 caller: Caller, on_progress: Callable[[int], object] | None = None,
                 events_per_transaction: int | None = None, *, bulk: bool = True,
                 workers: int = 1) -> None:
        self.service = service
        self.app = app
        self.data = data
        self.caller = caller
        self.on_progress = on_progress
        self.bulk = bulk
        # More than one: new subjects are built and signed in that many worker processes
        # (see application.import_workers), when the study seals no identifying values.
        self.workers = workers
        self.batch = events_per_transaction or (EVENTS_PER_TRANSACTION if bulk
                                                else EVENTS_PER_SAVE)
        self._writer: BulkWriter | None = None
        # Every event of the load carries this envelope, with its own row's provenance.
        self._base_envelope = caller.envelope(caller.grant_for(Action.IMPORT, app.study_id,
                                                               None))
        self._keys_by_file: dict[str, list[str]] = {}

    def run(self) -> ImportResult:
        """Register the study if needed, then load every subject not yet fully loaded."""
        # The data set, the plans and the batches waiting to be stored are millions of
        # objects, and the cycle collector would walk them again and again (a third of the
        # building time; with them frozen, still about 4 us an event of the importing
        # process's time beside worker processes). An import makes no cyclic garbage (after
        # a run with the collector off, gc.collect() finds none), so it is off until the end.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if collecting:
                gc.enable()

    def _run(self) -> ImportResult:
        result = ImportResult(skipped_tables=self.data.skipped_tables())
        try:
            self.service.check_import(self.app, self.caller)
        except DomainError as e:
            raise ImportRefused(str(e)) from None
        subjects = self.data.subjects()
        definition = self.data.study_definition(self.app.study_id)
        registered = self.app.is_registered()
        try:
            # A new study: loaded with the definition it is about to be registered with.
            study = (self.app.definition() if registered
                     else StudyDefinition.from_dict(definition))
        except DomainError as e:
            # A bad row is named before the definition it would have been checked against.
            for code, rows in subjects.items():
                self._plan(code, rows, definition.get("sdtm") or {})
            raise ImportRefused(f"study definition: {e}") from None
        # Every row is checked, against the study's declaration, before any is stored;
        # with worker processes, new subjects are built meanwhile (built, not stored).
        building = (_Building(self, study, definition, started=registered)
                    if self.bulk and self.workers > 1 and not study.identifying else None)
        try:
            plans = []
            for code, rows in subjects.items():
                plan = self._plan(code, rows, study.sdtm)
                if building is not None and not (registered and self.app.is_subject(code)):
                    building.add(plan)
                else:
                    plans.append(plan)
            if building is not None:
                building.flush()
            if not registered:
                try:
                    self.service.handle(RegisterStudy(study=self.app.study_id,
                                                      definition=definition), self.caller)
                except DomainError as e:
                    raise ImportRefused(f"study definition: {e}") from None
                result.registered = True
                if building is not None:
                    building.start()
            if not self.bulk:
                self._load_all(study, plans, result)
                return result
            try:
                # Left by an error, the writer stores nothing more than the batch it is
                # storing.
                with BulkWriter(self.app.mapper, self.app.recorder) as self._writer:
                    self._load_all(study, plans, result)  # all, or a re-run's stored subjects
                    if building is not None:
                        building.store(self._writer, result)
            finally:
                self._writer = None
        except BrokenProcessPool:
            raise ImportInterrupted(
                "a worker process of the import stopped; the batches stored before are kept "
                "whole, and running the import again adds the rest") from None
        except BulkWriteFailed as e:
            # E.g. another writer stored one of these subjects meanwhile (a unique violation),
            # or the database went away: psycopg's message spans lines.
            cause = " ".join(str(e.__cause__ or e).split())
            raise ImportInterrupted(
                f"a batch could not be stored ({type(e.__cause__ or e).__name__}: {cause}); "
                "the batches stored before are kept whole, and running the import again adds "
                "the rest") from e
        finally:
            if building is not None:
                building.close()
        return result

    def _load_all(self, study: StudyDefinition, plans: list[SubjectPlan],
                  result: ImportResult) -> None:
        pending: list[tuple[Subject, int]] = []
        for plan in plans:
            subject = self._load(study, plan, result)
            if subject is not None:
                pending.append((subject, len(plan.records) + 1))
            elif self.on_progress is not None:
                self.on_progress(len(plan.records) + 1)
            if sum(len(s.pending_events) for s, _ in pending) >= self.batch:
                self._save(pending, result)
        self._save(pending, result)

    def _new_subject(self, study: StudyDefinition, plan: SubjectPlan) -> NewSubject:
        """What a worker is sent to build a subject not yet stored, as :meth:`_load` would."""
        dm = plan.dm.values
        arm = _text(dm.get("ARMCD")) or None
        return (plan.code, _text(dm.get("SITEID")), _text(dm.get("SEX")),
                {k: v for k, v in dm.items() if k not in KEYS}, arm,
                _text(dm.get("ACTARMCD")) or None,
                None if arm == SCREEN_FAILURE_ARM else dtc_date(_text(dm.get("RFSTDTC"))),
                self._provenance(plan.dm), self.app.clock.now(),
                [(r.record_id, r.kind, r.checked.fields, r.observed_at, r.visit,
                  self._provenance(r.row)) for r in plan.records])

    def _plan(self, code: str, rows: SubjectRows, sdtm: dict[str, Any]) -> SubjectPlan:
        """The subject's records, with ids, valid times and fields, each row checked."""
        dm = rows.dm.values
        fallback = _fallback_time(dm)
        records: list[PlannedRecord] = []
        seen: Counter[str] = Counter()
        for row in rows.rows:
            kind = row.table.name
            # The row without its keys, in file order (a copy, then the keys dropped: a
            # third of the time of filtering every variable).
            fields = dict(row.values)
            for key in self._file_keys(row.table):
                fields.pop(key, None)
            base = record_id(kind, fields)
            seen[base] += 1
            # An exact duplicate (same key twice, e.g. a repeated AE row) is loaded too, as
            # the key's second occurrence: stable as long as the file is the same.
            rid = base if seen[base] == 1 else f"{base}#{seen[base]}"
            try:
                checked = check_row(kind, fields, sdtm)
            except InvalidInput as e:
                raise ImportRefused(f"{row.table.file} row {row.number}: {e}") from None
            visit = row.values.get("VISIT")
            records.append(PlannedRecord(row, rid, valid_time(kind, fields, fallback),
                                         visit if isinstance(visit, str) and visit else None,
                                         checked))
        return SubjectPlan(code, rows.dm, records)

    def _load(self, study: StudyDefinition, plan: SubjectPlan,
              result: ImportResult) -> Subject | None:
        """The subject with every record not yet stored added (None when nothing is new)."""
        at = self.app.clock.now()
        dm = plan.dm.values
        try:
            if self.app.is_subject(plan.code):
                subject = self.app.subject(plan.code, to_change=True)
            else:
                arm = _text(dm.get("ARMCD")) or None
                subject = Subject.import_from_sdtm(
                    study, plan.code, _text(dm.get("SITEID")), _text(dm.get("SEX")),
                    {k: v for k, v in dm.items() if k not in KEYS}, arm,
                    _text(dm.get("ACTARMCD")) or None,
                    None if arm == SCREEN_FAILURE_ARM else dtc_date(_text(dm.get("RFSTDTC"))),
                    self._envelope(plan.dm), at)
                result.subjects_added += 1
            for record in plan.records:
                if record.record_id in subject.records:
                    result.already_present += 1
                    continue
                subject.import_record(study, record.record_id, record.checked,
                                      record.observed_at, record.visit,
                                      self._envelope(record.row), at)
                result.records_added += 1
                result.by_domain[record.kind] += 1
                if len(subject.pending_events) >= self.batch:  # a long casebook: store a part
                    self._store([subject], result)
        except DomainError as e:
            raise ImportRefused(f"subject {plan.code}: {e}") from None
        return subject if subject.pending_events else None

    def _save(self, pending: list[tuple[Subject, int]], result: ImportResult) -> None:
        if not pending:
            return
        self._store([subject for subject, _ in pending], result,
                    sum(rows for _, rows in pending))
        pending.clear()

    def _store(self, subjects: list[Subject], result: ImportResult, rows: int = 0) -> None:
        """Store the subjects' new events in one transaction; then count them, and ``rows``
        as done."""
        def stored(events: int) -> None:
            result.events_added += events
            if rows and self.on_progress is not None:
                self.on_progress(rows)

        writer = self._writer
        if writer is not None:
            def submit(batch: Sequence[Subject]) -> None:
                events = [event for subject in batch for event in subject.collect_events()]
                writer.submit(events, partial(stored, len(events)))

            self.service.import_subjects(self.app, self.caller, subjects, submit)
        else:
            count = sum(len(s.pending_events) for s in subjects)
            self.service.import_subjects(self.app, self.caller, subjects)
            stored(count)

    def _envelope(self, row: Row | None) -> Envelope:
        # The record's fields are the row's other values, unchanged: provenance adds the keys
        # they leave out, so fields and provenance together are the row exactly as read.
        if row is None:
            return self._base_envelope
        return self._base_envelope.with_provenance(self._provenance(row))

    def _provenance(self, row: Row) -> dict[str, Any]:
        keys = self._file_keys(row.table)
        values = row.values
        return {"file": row.table.file, "row": row.number,
                "values": {k: values[k] for k in keys if k in values}}

    def _file_keys(self, table: Table) -> list[str]:
        """The file's key variables (:data:`domain.sdtm.KEYS`), in file order."""
        keys = self._keys_by_file.get(table.file)
        if keys is None:
            keys = self._keys_by_file[table.file] = [k for k in table.variables if k in KEYS]
        return keys


class _Building:
    """An import's new subjects handed to worker processes, a batch (whole subjects) at a
    time as their rows are checked, and stored once every row is checked, in the order
    handed out. At most :data:`BATCHES_AHEAD` batches are built and not yet stored."""

    def __init__(self, importer: Importer, study: StudyDefinition, definition: dict[str, Any],
                 *, started: bool) -> None:
        self._importer = importer
        # Nothing is handed out before the study is registered: an event's recorded time
        # (taken as its batch is handed out) is then never before the registration's.
        self._started = started
        self._study = study
        self._pool = BuildPool(importer.app, definition, importer._base_envelope,
                               importer.workers)
        self._batch: list[SubjectPlan] = []
        self._size = 0
        self._later: deque[list[SubjectPlan]] = deque()  # batches not yet handed out
        self._ahead: deque[tuple[Future[CopyRows | str], list[SubjectPlan]]] = deque()

    def add(self, plan: SubjectPlan) -> None:
        """A new subject whose rows are checked; refused (nothing stored) if the caller may
        not import at its site."""
        importer = self._importer
        try:
            importer.service.check_import(importer.app, importer.caller,
                                          [_Site(plan.code, _text(plan.dm.values.get("SITEID")))])
        except DomainError as e:
            raise ImportRefused(str(e)) from None
        self._batch.append(plan)
        self._size += len(plan.records) + 1
        if self._size >= importer.batch:
            self.flush()

    def flush(self) -> None:
        """Hand out the subjects added since the last batch."""
        if self._batch:
            self._later.append(self._batch)
            self._batch, self._size = [], 0
        self._hand_out()

    def start(self) -> None:
        """The study is registered: hand out what waits."""
        self._started = True
        self._hand_out()

    def _hand_out(self) -> None:
        while self._started and self._later and len(self._ahead) < BATCHES_AHEAD:
            plans = self._later.popleft()
            subjects = [self._importer._new_subject(self._study, p) for p in plans]
            self._ahead.append((self._pool.submit(subjects), plans))

    def store(self, writer: BulkWriter, result: ImportResult) -> None:
        """Hand every batch, as built, to ``writer``, in order; count them."""
        while self._ahead:
            built, plans = self._ahead.popleft()
            self._hand_out()
            answer = built.result()
            if isinstance(answer, str):
                raise ImportRefused(answer)
            self._submit(writer, answer, plans, result)

    def _submit(self, writer: BulkWriter, events: CopyRows, plans: list[SubjectPlan],
                result: ImportResult) -> None:
        rows = sum(len(plan.records) + 1 for plan in plans)
        on_progress = self._importer.on_progress

        def stored() -> None:
            result.events_added += events.count
            if on_progress is not None:
                on_progress(rows)

        writer.submit_copy_rows(events, stored)
        result.subjects_added += len(plans)
        for plan in plans:
            result.records_added += len(plan.records)
            result.by_domain.update(record.kind for record in plan.records)

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.close()


@dataclass(frozen=True)
class _Site:
    """A subject not yet stored, as the import's grant and lock checks see it."""

    subject_code: str
    site: str
    locked: bool = False


@dataclass
class PlannedRecord:
    """One row, checked and ready to load."""

    row: Row
    record_id: str
    observed_at: datetime
    visit: str | None
    checked: CheckedRow

    @property
    def kind(self) -> str:
        """The row's SDTM domain."""
        return self.checked.kind


@dataclass
class SubjectPlan:
    """A subject's DM row and its planned records."""

    code: str
    dm: Row
    records: list[PlannedRecord]


def _fallback_time(dm: dict[str, Any]) -> datetime:
    """The valid time of a row with no usable --DTC: the subject's reference start, else the
    DM collection date, else the first day of the Unix era (never in the future)."""
    for name in ("RFSTDTC", "DMDTC"):
        day = dtc_date(_text(dm.get(name)))
        if day is not None:
            return datetime.combine(day, time(), UTC)
    return datetime(1970, 1, 1, tzinfo=UTC)


def count_rows(data: DataSet) -> int:
    """Rows the import loads (DM and record domains): the progress bar's total."""
    return sum(len(t.rows) for t in data.loaded_tables())
