"""import-sdtm on the real CDISCPILOT01 data set: every figure checked here is computed from
the XPT files themselves (read with pyreadstat), never typed in."""

from __future__ import annotations

import csv
import math
import multiprocessing
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyreadstat
import pytest
from lxml import etree
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from application.sdtm_import import DataSet, Importer, ImportInterrupted, ImportRefused, count_rows
from domain.caller import OPERATOR_GRANT, Caller
from domain.clock import SimulatedClock
from domain.sdtm import parse_dtc
from domain.service import StudyApplication
from domain.studies.protocols import study_endpoints
from domain.subject import Subject
from infra.postgres import connect, schema_for_study, temporary_database
from infra.settings import Settings
from infra.signing import EventSigner
from projections.casebook import casebook
from projections.outcomes.engine import outcome_tables
from projections.queries import outcome_facts_as_of, outcome_summaries_as_of

SHARED = Path(__file__).resolve().parents[3] / "shared"
SDTM = SHARED / "data" / "cdiscpilot01" / "sdtm"
XSD = SHARED / "standards" / "odm-1.3.2" / "ODM1-3-2.xsd"
ODM = "{http://www.cdisc.org/ns/odm/v1.3}"
STUDY = "CDISCPILOT01"
RECORD_FILES = {"AE": ["ae"], "CM": ["cm"], "EX": ["ex"], "DS": ["ds"], "SV": ["sv"], "SE": ["se"],
                "LB": ["lbch", "lbhe", "lbur"], "VS": ["vs"], "SUPPAE": ["suppae"],
                "SUPPDM": ["suppdm"], "SUPPDS": ["suppds"]}
OPERATOR = Caller("os:tester", "tester", "tester", (OPERATOR_GRANT,), "trialledger-cli",
                  "test-import", "import")

pytestmark = [pytest.mark.skipif(not SDTM.is_dir(), reason="CDISCPILOT01 is not on this machine"),
              pytest.mark.slow(seconds=60)]  # CDISCPILOT01 loaded, exported


def xpt(name: str) -> dict[str, list[Any]]:
    """One XPT file's columns, read independently of the importer."""
    data, _ = pyreadstat.read_xport(str(SDTM / f"{name}.xpt"), output_format="dict")
    assert isinstance(data, dict)
    return data


class Loaded:
    """CDISCPILOT01 loaded once into its own database (the load is the slow part)."""

    def __init__(self, runtime: Runtime, events_after_load: int, loaded_at: datetime,
                 skipped_tables: list[str]) -> None:
        self.runtime = runtime
        self.events_after_load = events_after_load
        self.loaded_at = loaded_at
        self.skipped_tables = skipped_tables


@pytest.fixture(scope="module")
def loaded(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """A deployment with CDISCPILOT01 imported from its XPT files."""
    with temporary_database(server_url, "tl_sdtm") as url:
        runtime = Runtime(Settings(database_url=url, home=tmp_path_factory.mktemp("home")), url)
        try:
            app = runtime.study(STUDY)
            result = Importer(runtime.service(), app, DataSet(SDTM), OPERATOR).run()
            loaded_at = datetime.now(UTC)
            yield Loaded(runtime, app.recorder.max_notification_id() or 0, loaded_at,
                         result.skipped_tables)
        finally:
            runtime.close()


def test_every_subject_is_loaded_with_both_arms_and_screen_failures_kept(
        loaded: Loaded) -> None:
    dm = xpt("dm")
    app = loaded.runtime.study(STUDY)
    subjects = {code: app.subject(code) for code in dm["USUBJID"]}
    assert len(subjects) == len(dm["USUBJID"])
    for i, code in enumerate(dm["USUBJID"]):
        subject = subjects[code]
        assert (subject.arm, subject.actual_arm) == (dm["ARMCD"][i], dm["ACTARMCD"][i])
        assert subject.site == dm["SITEID"][i] and subject.sex == dm["SEX"][i]
    screen_failures = {c for c, arm in zip(dm["USUBJID"], dm["ARM"], strict=True)
                       if arm == "Screen Failure"}
    assert screen_failures
    assert {c for c, s in subjects.items() if s.status == "screen_failure"} == screen_failures
    differing = sum(a != b for a, b in zip(dm["ARM"], dm["ACTARM"], strict=True))
    assert differing > 0
    assert sum(s.arm != s.actual_arm for s in subjects.values()) == differing


def test_every_row_of_every_domain_is_one_record(loaded: Loaded) -> None:
    app = loaded.runtime.study(STUDY)
    expected: Counter[tuple[str, str]] = Counter()
    for kind, files in RECORD_FILES.items():
        for name in files:
            for code in xpt(name)["USUBJID"]:
                expected[(code, kind)] += 1
    found: Counter[tuple[str, str]] = Counter()
    for code in set(xpt("dm")["USUBJID"]):
        for record in app.subject(code).records.values():
            found[(code, record.kind)] += 1
    assert found == expected
    keyring = app.keyring()
    registration = 1 + (keyring.version if keyring else 0)  # the study, and its signing keys
    assert loaded.events_after_load == len(xpt("dm")["USUBJID"]) + sum(expected.values()) + \
        registration
    assert loaded.skipped_tables == []  # every file is loaded (trial design: the definition)


def test_values_partial_dates_and_provenance_are_kept_as_given(loaded: Loaded) -> None:
    cm = xpt("cm")
    app = loaded.runtime.study(STUDY)
    partial = next(i for i, v in enumerate(cm["CMSTDTC"]) if len(v) == 4)
    subject = app.subject(cm["USUBJID"][partial])
    record = subject.records[f"CM-{int(cm['CMSEQ'][partial])}"]
    for variable in ("CMTRT", "CMSTDTC", "CMDOSU", "CMROUTE"):
        assert record.fields[variable] == cm[variable][partial]
    assert record.observed_at == parse_dtc(cm["CMSTDTC"][partial])
    assert record.observed_at == datetime(int(cm["CMSTDTC"][partial]), 1, 1, tzinfo=UTC)
    event = next(e for e in app.events.get(subject.id)
                 if getattr(e, "record_id", None) == record.record_id)
    assert isinstance(event, Subject.RowImported)
    assert event.envelope.source == "import"
    assert event.envelope.provenance == {
        "file": "cm.xpt", "row": partial + 1,
        "values": {"STUDYID": cm["STUDYID"][partial], "DOMAIN": "CM",
                   "USUBJID": cm["USUBJID"][partial]}}


def test_a_second_import_adds_nothing(loaded: Loaded) -> None:
    app = loaded.runtime.study(STUDY)
    result = Importer(loaded.runtime.service(), app, DataSet(SDTM), OPERATOR).run()
    assert (result.events_added, result.subjects_added, result.records_added) == (0, 0, 0)
    assert app.recorder.max_notification_id() == loaded.events_after_load


def test_the_study_is_registered_with_its_own_vocabulary(loaded: Loaded) -> None:
    definition = loaded.runtime.study(STUDY).definition()
    lab_units: dict[str, set[str]] = {}
    for name in RECORD_FILES["LB"]:
        lb = xpt(name)
        for code, unit in zip(lb["LBTESTCD"], lb["LBSTRESU"], strict=True):
            lab_units.setdefault(code, set()).add(unit)
    tests = definition.sdtm["vocabulary"]["LBTESTCD"]
    assert {code: set(t["units"]) for code, t in tests.items()} == lab_units
    ta = xpt("ta")
    assert set(ta["ARMCD"]) <= set(definition.arms)
    assert set(xpt("dm")["SITEID"]) == set(definition.sites)


def test_outcomes_are_the_studys_own_endpoints_and_match_its_data(loaded: Loaded) -> None:
    import json

    runtime = loaded.runtime
    result = CliRunner().invoke(cli, ["outcomes", "--study", STUDY, "--format", "json",
                                      "--database-url", runtime.url],
                                env={"TRIALLEDGER_HOME": str(runtime.settings.home)})
    assert result.exit_code == 0, result.output
    tables = json.loads(result.output)
    assert set(tables["endpoints"]) == {"ae-incidence", "teae-soc-severity", "disposition"}
    # Counted straight from the files: subjects treated (a reference start, not a screen
    # failure) by actual arm; those with an AE row, and the rows.
    dm = xpt("dm")
    treated = {code: arm for code, arm, start in zip(dm["USUBJID"], dm["ACTARMCD"],
                                                      dm["RFSTDTC"], strict=True)
               if start and arm != "Scrnfail"}
    ae = xpt("ae")["USUBJID"]
    rows = {r["arm"]: r for r in tables["endpoints"]["ae-incidence"]["rows"]}
    assert set(rows) == set(treated.values())
    for arm, row in rows.items():
        members = {c for c, a in treated.items() if a == arm}
        assert row["denominator"] == len(members)
        assert row["subjects"] == len(members & set(ae))
        assert row["events"] == sum(1 for c in ae if c in members)
    # Treatment-emergent: the AE rows SUPPAE flags AETRTEM = Y, in all and by severity.
    supp = xpt("suppae")
    flagged = {(c, str(int(float(v)))) for c, q, v, val in zip(
        supp["USUBJID"], supp["QNAM"], supp["IDVARVAL"], supp["QVAL"], strict=True)
        if q == "AETRTEM" and val == "Y"}
    ae_rows = xpt("ae")
    emergent = [(c, sev) for c, seq, sev in zip(ae_rows["USUBJID"], ae_rows["AESEQ"],
                                                 ae_rows["AESEV"], strict=True)
                if (c, str(int(seq))) in flagged and c in treated]
    teae = {(r["parameter"], r["arm"]): r["events"]
            for r in tables["endpoints"]["teae-soc-severity"]["rows"]}
    for arm in rows:
        assert teae[("ANY|ANY", arm)] == sum(1 for c, _ in emergent if treated[c] == arm)
        assert sum(n for (p, a), n in teae.items() if a == arm and not p.endswith("|ANY")
                   ) == teae[("ANY|ANY", arm)]
    # Disposition by planned arm, from DS.
    ds = xpt("ds")
    planned = {c: a for c, a, start in zip(dm["USUBJID"], dm["ARMCD"], dm["RFSTDTC"],
                                            strict=True) if start}
    expected = Counter((planned[c], decod) for c, decod, cat in zip(
        ds["USUBJID"], ds["DSDECOD"], ds["DSCAT"], strict=True)
        if cat == "DISPOSITION EVENT" and c in planned)
    found = {(r["arm"], r["parameter"]): r["events"]
             for r in tables["endpoints"]["disposition"]["rows"] if r["events"]}
    assert found == dict(expected)
    # The tables combined the summaries the projector kept of the imported study's own
    # endpoints: those of the subjects' facts, computed afresh, are the same.
    endpoints = study_endpoints(runtime.study(STUDY).definition())
    with connect(runtime.url) as conn:
        schema = schema_for_study(STUDY)
        assert outcome_summaries_as_of(conn, schema, endpoints) is not None
        facts = outcome_facts_as_of(conn, schema)
    assert runtime.outcomes(STUDY) == outcome_tables(facts, STUDY, endpoints, None)
    # A cell opens onto the subjects behind it, each record with its events' positions.
    arm = sorted(rows)[0]
    sources = runtime.outcome_cell(STUDY, f"ae-incidence/any/STUDY/{arm}")
    assert {s["subject"] for s in sources["subjects"]} == {
        c for c in set(ae) if treated.get(c) == arm}
    assert all(r["positions"] for s in sources["subjects"] for r in s["records"])


def _casebook_content(book: dict[str, Any]) -> dict[str, Any]:
    """A casebook without what differs between two loads of the same data: the study it is
    in, when each record was entered, and the time it was read as of."""
    records = {kind: [{k: v for k, v in r.items() if k != "entered_at"} for r in views]
               for kind, views in book["records"].items()}
    return {**{k: v for k, v in book.items() if k not in ("study_id", "as_of", "records")},
            "records": records}


def test_round_trip_export_as_of_then_reimport_gives_the_same_casebooks(
        loaded: Loaded, tmp_path: Path) -> None:
    runtime = loaded.runtime
    export_dir = tmp_path / "export"
    result = CliRunner().invoke(cli, [
        "export", "--study", STUDY, "--format", "csv", "-o", str(export_dir),
        "--as-of", loaded.loaded_at.isoformat(), "--database-url", runtime.url],
        env={"TRIALLEDGER_HOME": str(runtime.settings.home)})
    assert result.exit_code == 0, result.output
    dm = xpt("dm")
    # A handful of subjects keeps the re-import quick: a screen failure, one given another
    # arm than planned, and the subjects with the most AE, CM and SV rows.
    chosen = {next(c for c, a in zip(dm["USUBJID"], dm["ARMCD"], strict=True)
                   if a == "Scrnfail"),
              next(c for c, a, b in zip(dm["USUBJID"], dm["ARM"], dm["ACTARM"], strict=True)
                   if a != b)}
    for name in ("ae", "cm", "sv"):
        chosen.add(Counter(xpt(name)["USUBJID"]).most_common(1)[0][0])
    subset = tmp_path / "subset"
    subset.mkdir()
    shutil.copy(export_dir / "study.json", subset / "study.json")
    for path in export_dir.glob("*.csv"):
        if path.stem.startswith("audit_trail"):
            continue
        with path.open(newline="") as f, (subset / path.name).open("w", newline="") as out:
            reader = csv.DictReader(f)
            writer = csv.DictWriter(out, fieldnames=reader.fieldnames or [])
            writer.writeheader()
            writer.writerows(r for r in reader if r["USUBJID"] in chosen)
    copy = runtime.study("CDISCPILOT01-COPY")
    added = Importer(runtime.service(), copy, DataSet(subset), OPERATOR).run()
    assert added.subjects_added == len(chosen)
    original = runtime.study(STUDY)
    for code in sorted(chosen):
        before = casebook(original.subject_as_of(code, loaded.loaded_at))
        after = casebook(copy.subject(code))
        assert _casebook_content(after) == _casebook_content(before), code


def _export(loaded: Loaded, fmt: str, path: Path) -> None:
    result = CliRunner().invoke(cli, [
        "export", "--study", STUDY, "--format", fmt, "-o", str(path),
        "--as-of", loaded.loaded_at.isoformat(), "--database-url", loaded.runtime.url],
        env={"TRIALLEDGER_HOME": str(loaded.runtime.settings.home)})
    assert result.exit_code == 0, result.output


def _validated_subjects(path: Path) -> Iterator[etree._Element]:
    """Each SubjectData of an ODM file, read while the XSD validates the whole file (an
    invalid file raises); each is dropped once seen, so memory stays flat."""
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    for _, element in etree.iterparse(str(path), tag=f"{ODM}SubjectData", schema=schema,
                                      huge_tree=True):
        yield element
        element.clear()
        while element.getprevious() is not None:
            del element.getparent()[0]


def _xpt_rows(kind: str, subject: str) -> Counter[frozenset[tuple[str, Any]]]:
    """A subject's rows of one domain as the XPT files hold them: variable -> value, keys
    and missing values left out."""
    rows: Counter[frozenset[tuple[str, Any]]] = Counter()
    for name in RECORD_FILES[kind]:
        data = xpt(name)
        for i, code in enumerate(data["USUBJID"]):
            if code == subject:
                rows[frozenset((var, column[i]) for var, column in data.items()
                               if var not in ("STUDYID", "DOMAIN", "RDOMAIN", "USUBJID")
                               and not _missing(column[i]))] += 1
    return rows


def _missing(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _odm_rows(groups: list[etree._Element], numeric: set[str]
              ) -> Counter[frozenset[tuple[str, Any]]]:
    """The same rows as the snapshot's item groups hold them."""
    rows: Counter[frozenset[tuple[str, Any]]] = Counter()
    for group in groups:
        values = {}
        for item in group.iter(f"{ODM}ItemData"):
            variable = item.get("ItemOID", "").split(".", 2)[2]
            if variable != "OBSERVED_AT":
                value = item.get("Value", "")
                values[variable] = float(value) if variable in numeric else value
        rows[frozenset(values.items())] += 1
    return rows


def test_odm_snapshot_of_the_loaded_study_validates_and_holds_every_row(
        loaded: Loaded, tmp_path: Path) -> None:
    _export(loaded, "odm-snapshot", tmp_path / "snapshot.xml")
    dm = xpt("dm")
    expected_groups: Counter[str] = Counter()
    for kind, files in RECORD_FILES.items():
        expected_groups[f"F.{kind}"] = sum(len(xpt(name)["USUBJID"]) for name in files)
    chosen = Counter(xpt("ae")["USUBJID"]).most_common(1)[0][0]
    groups: Counter[str] = Counter()
    subjects: list[str] = []
    chosen_groups: dict[str, list[etree._Element]] = {}
    for subject in _validated_subjects(tmp_path / "snapshot.xml"):
        code = subject.get("SubjectKey", "")
        subjects.append(code)
        for form in subject.iter(f"{ODM}FormData"):
            found = list(form.iter(f"{ODM}ItemGroupData"))
            groups[form.get("FormOID", "")] += len(found)
            if code == chosen:
                chosen_groups.setdefault(form.get("FormOID", ""), []).extend(found)
    assert sorted(subjects) == sorted(dm["USUBJID"])
    assert groups == {**expected_groups, "F.SUBJECT": len(dm["USUBJID"])}
    # Every value of the chosen subject's rows, as the XPT files hold them.
    for kind, files in RECORD_FILES.items():
        numeric = {var for name in files for var, column in xpt(name).items()
                   if any(isinstance(v, float) for v in column)}
        assert _odm_rows(chosen_groups.get(f"F.{kind}", []), numeric) == \
            _xpt_rows(kind, chosen), kind
    (header,) = chosen_groups["F.SUBJECT"]
    row = dm["USUBJID"].index(chosen)
    items = {i.get("ItemOID"): i.get("Value") for i in header.iter(f"{ODM}ItemData")}
    assert items["IT.SUBJECT.ACTUAL_ARM"] == dm["ACTARMCD"][row]
    assert items["IT.SUBJECT.DM_RACE"] == dm["RACE"][row]
    assert float(items["IT.SUBJECT.DM_AGE"] or "nan") == dm["AGE"][row]


def test_odm_archive_of_the_loaded_study_validates_with_an_audit_record_per_item(
        loaded: Loaded, tmp_path: Path) -> None:
    _export(loaded, "odm-archive", tmp_path / "archive.xml")
    records = sum(len(xpt(name)["USUBJID"]) for files in RECORD_FILES.values()
                  for name in files)
    subjects: Counter[str] = Counter()
    inserted: Counter[str] = Counter()
    positions: set[int] = set()
    for transaction in _validated_subjects(tmp_path / "archive.xml"):
        subjects[transaction.get("TransactionType", "")] += 1
        for group in transaction.iter(f"{ODM}ItemGroupData"):
            inserted[group.get("TransactionType", "")] += 1
            for item in group.iter(f"{ODM}ItemData"):
                (audit,) = item.iter(f"{ODM}AuditRecord")
                user = audit.find(f"{ODM}UserRef")
                assert user is not None and user.get("UserOID") == OPERATOR.user_id
                positions.add(int(audit.findtext(f"{ODM}SourceID") or "0"))
    dm_rows = len(xpt("dm")["USUBJID"])
    assert subjects == {"Insert": dm_rows, "Context": records}
    assert inserted == {"Insert": dm_rows + records}
    assert len(positions) == dm_rows + records  # one event each, named by its position


def _invoke(args: list[str], settings: Settings) -> tuple[int, str]:
    """Exit code and output (its line breaks, which depend on the terminal, undone)."""
    result = CliRunner().invoke(cli, [*args, "--database-url", str(settings.database_url)],
                                env={"TRIALLEDGER_HOME": str(settings.home)})
    return result.exit_code, " ".join(result.output.split())


def _stored_studies(url: str) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'study_%'"
                           ).fetchone()
    assert row is not None
    return int(row[0])


def test_bad_input_is_refused_with_a_message_and_nothing_stored(
        settings: Settings, db_url: str, tmp_path: Path) -> None:
    code, output = _invoke(["import-sdtm", "--study", "X1", str(tmp_path / "nowhere")], settings)
    assert code == 2 and "no such directory" in output
    not_xpt = tmp_path / "not_xpt"
    not_xpt.mkdir()
    (not_xpt / "dm.xpt").write_text("STUDYID,USUBJID\nX,1\n")
    code, output = _invoke(["import-sdtm", "--study", "X1", str(not_xpt)], settings)
    assert code == 2 and "not a SAS XPORT file" in output
    # A name that reads as console markup is shown as it is.
    (not_xpt / "dm.xpt").rename(not_xpt / "[bold]dm.xpt")
    code, output = _invoke(["import-sdtm", "--study", "X1", str(not_xpt)], settings)
    assert code == 2 and "[bold]dm.xpt" in output
    no_sex = tmp_path / "no_sex"
    no_sex.mkdir()
    (no_sex / "DM.csv").write_text("STUDYID,DOMAIN,USUBJID,SITEID,ARMCD,ACTARMCD\n"
                                   "X,DM,X-1,701,A,A\n")
    code, output = _invoke(["import-sdtm", "--study", "X1", str(no_sex)], settings)
    assert code == 2 and "missing required variable SEX" in output
    assert _stored_studies(db_url) == 0


def test_a_row_the_study_vocabulary_refuses_stores_nothing(
        runtime: Runtime, tmp_path: Path) -> None:
    (tmp_path / "DM.csv").write_text("STUDYID,DOMAIN,USUBJID,SITEID,SEX,ARMCD,ARM,ACTARMCD,"
                                     "ACTARM,RFSTDTC\nX,DM,X-1,701,F,A,Arm A,A,Arm A,2013-01-02\n")
    (tmp_path / "LB.csv").write_text("STUDYID,DOMAIN,USUBJID,LBSEQ,LBTESTCD,LBSTRESU,LBDTC\n"
                                     "X,LB,X-1,1,ALB,g/L,2013-01-02\n"
                                     "X,LB,X-1,2,,g/L,2013-01-03\n")
    app = runtime.study("X2")
    with pytest.raises(ImportRefused, match=r"LB\.csv row 2: LBTESTCD: is required"):
        Importer(runtime.service(), app, DataSet(tmp_path), OPERATOR).run()
    assert not app.is_registered()
    keyring = app.keyring()  # opening a study registers the signing key, nothing else
    assert (app.recorder.max_notification_id() or 0) == (keyring.version if keyring else 0)


def _subject_events(app: StudyApplication) -> list[tuple[Any, ...]]:
    """Every stored subject event, in log order: id, version, topic and signed bytes."""
    return [(n.originator_id, n.originator_version, n.topic, n.state)
            for n in app.recorder.select_notifications(1, 10**7)
            if n.topic.startswith("Subject.")]


def test_worker_processes_store_the_same_signed_events_in_the_same_order(
        server_url: str, tmp_path: Path) -> None:
    """The import built in two worker processes stores, byte for byte and in the same log
    order, what the one-process import stores (same key, same clock); a re-run adds nothing."""
    clock_start = datetime(2026, 12, 6, 12, tzinfo=UTC)
    stored = []
    for workers in (1, 2):
        with temporary_database(server_url, f"tl_workers{workers}") as url:
            runtime = Runtime(Settings(database_url=url, home=tmp_path / "home"), url)
            try:
                app = runtime.study(STUDY, clock=SimulatedClock(clock_start))
                rows: list[int] = []
                result = Importer(runtime.service(), app, DataSet(SDTM), OPERATOR,
                                  on_progress=rows.append, workers=workers).run()
                assert sum(rows) == count_rows(DataSet(SDTM))
                stored.append(_subject_events(app))
                assert result.events_added == len(stored[-1])
                again = Importer(runtime.service(), app, DataSet(SDTM), OPERATOR,
                                 workers=workers).run()
                assert again.events_added == 0 and again.already_present == result.records_added
            finally:
                runtime.close()
    assert len(stored[0]) > 100_000
    assert stored[0] == stored[1]
    assert not multiprocessing.active_children()


def test_a_worker_that_cannot_start_stops_the_import_with_one_message_and_stores_nothing(
        runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker process that dies (here: handed a key it cannot open) stops the import with
    :class:`ImportInterrupted`; no subject is stored, no process is left behind, and the
    import run again finishes the load."""
    (tmp_path / "DM.csv").write_text("STUDYID,DOMAIN,USUBJID,SITEID,SEX,ARMCD,ARM,ACTARMCD,"
                                     "ACTARM,RFSTDTC\nX,DM,X-1,701,F,A,Arm A,A,Arm A,2013-01-02\n")
    (tmp_path / "LB.csv").write_text("STUDYID,DOMAIN,USUBJID,LBSEQ,LBTESTCD,LBSTRESU,LBDTC\n"
                                     "X,LB,X-1,1,ALB,g/L,2013-01-02\n")
    (tmp_path / "SV.csv").write_text("STUDYID,DOMAIN,USUBJID,VISITNUM,VISIT,SVSTDTC\n"
                                     "X,SV,X-1,1,SCREENING,2013-01-02\n")
    app = runtime.study("X3")
    monkeypatch.setattr(EventSigner, "handover", lambda self: b"?broken")
    with pytest.raises(ImportInterrupted, match="worker process of the import stopped"):
        Importer(runtime.service(), app, DataSet(tmp_path), OPERATOR, workers=2).run()
    assert not multiprocessing.active_children()
    assert not app.is_subject("X-1")
    monkeypatch.undo()
    result = Importer(runtime.service(), app, DataSet(tmp_path), OPERATOR, workers=2).run()
    assert (result.subjects_added, result.records_added) == (1, 2)


def _three_subjects(directory: Path, codes: tuple[str, ...] = ("X-1", "X-2", "X-3")) -> Path:
    """A small data set in CSV: each subject its DM row, a visit and a lab result."""
    directory.mkdir()
    (directory / "DM.csv").write_text(
        "STUDYID,DOMAIN,USUBJID,SITEID,SEX,ARMCD,ARM,ACTARMCD,ACTARM,RFSTDTC\n"
        + "".join(f"X,DM,{c},701,F,A,Arm A,A,Arm A,2013-01-02\n" for c in codes))
    (directory / "LB.csv").write_text(
        "STUDYID,DOMAIN,USUBJID,LBSEQ,LBTESTCD,LBSTRESU,LBDTC\n"
        + "".join(f"X,LB,{c},1,ALB,g/L,2013-01-02\n" for c in codes))
    (directory / "SV.csv").write_text(
        "STUDYID,DOMAIN,USUBJID,VISITNUM,VISIT,SVSTDTC\n"
        + "".join(f"X,SV,{c},1,SCREENING,2013-01-02\n" for c in codes))
    return directory


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_the_database_refuses_stops_the_import_with_one_line_and_exit_1(
        workers: int, settings: Settings, db_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer stores a subject of the load while the import runs (a second import of
    an overlapping data set, just before the first's second transaction): the
    database refuses the batch that stores it again (a unique violation), and the command
    ends with one line and exit code 1; what was committed is kept, and the command run
    again adds the rest."""
    from application import sdtm_import
    from infra.recorder import AppendOnlyApplicationRecorder

    data = _three_subjects(tmp_path / "all")
    overlapping = _three_subjects(tmp_path / "x2", ("X-2",))
    monkeypatch.setattr(sdtm_import, "EVENTS_PER_TRANSACTION", 1)  # a subject a transaction
    writes: list[str] = []

    def another_writer_first(name: str) -> Any:
        write = getattr(AppendOnlyApplicationRecorder, name)

        def written(self: AppendOnlyApplicationRecorder, *args: Any, **kwargs: Any) -> Any:
            writes.append(name)
            if len(writes) == 3:  # after the registration and the first subject, before X-2
                other = Runtime(settings, db_url)
                try:
                    Importer(other.service(), other.study("X4"), DataSet(overlapping),
                             OPERATOR).run()
                finally:
                    other.close()
            return write(self, *args, **kwargs)

        return written

    # A subject's events are stored by one or the other (the worker processes send COPY rows).
    for name in ("insert_events", "insert_copy_rows"):
        monkeypatch.setattr(AppendOnlyApplicationRecorder, name, another_writer_first(name))
    result = CliRunner().invoke(cli, ["import-sdtm", "--study", "X4", str(data),
                                      "--workers", str(workers), "--database-url", db_url],
                                env={"TRIALLEDGER_HOME": str(settings.home)})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1, result.stderr
    assert stderr[0].startswith("Import stopped: a batch could not be stored (IntegrityError: "
                                "duplicate key value violates unique constraint")
    assert "running the import again adds the rest" in stderr[0]
    monkeypatch.undo()
    runtime = Runtime(settings, db_url)
    try:
        app = runtime.study("X4")
        assert [app.is_subject(c) for c in ("X-1", "X-2", "X-3")] == [True, True, False]
        again = Importer(runtime.service(), app, DataSet(data), OPERATOR, workers=workers).run()
        assert (again.subjects_added, again.records_added, again.already_present) == (1, 2, 4)
    finally:
        runtime.close()
