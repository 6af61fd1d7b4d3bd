"""SDTM domains in the formats reviewers load — CSV, CDISC Dataset-JSON 1.1 (JSON and NDJSON)
and SAS XPORT v5 — of a small study with SELENA-SLEDAI and ESSDAI assessments, on real
PostgreSQL. Every Dataset-JSON file validates against CDISC's schema
(``shared/standards/dataset-json-1.1``); every XPT file reads back (pyreadstat) to the values
of the Dataset-JSON file; QS holds each instrument's items and derived total; an export as
of an earlier time leaves out what was recorded later.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pyreadstat
import pytest
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from domain.rules.essdai import ESSDAI_WEIGHTS
from domain.rules.sledai import SLEDAI_DESCRIPTORS
from domain.studies import nct04397107
from domain.study import StudyDefinition
from infra.postgres import schema_for_study
from infra.settings import Settings
from projections.csv_export import COLUMNS, write_csv
from projections.dataset_json import Layout, write_domains
from tests.interchange import assert_xpt_matches, dataset_json_schema, valid_dataset_json
from tests.support import T0, api_client, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
SCHEMA = schema_for_study(STUDY)
SLEDAI = {"arthritis": True, "rash": True, "fever": False}
ESSDAI = {"renal": 3, "muscular": 2, "glandular": 0}
SLEDAI_AT = T0 + timedelta(days=1)
ESSDAI_AT = T0 + timedelta(days=5)
C3 = 0.8


@dataclass
class Study:
    """The exported study."""

    runtime: Runtime
    settings: Settings
    definition: StudyDefinition


@pytest.fixture(scope="module")
def study(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    """001 (SLE) with a C3 and a SELENA-SLEDAI; 002 (pSS) with an ESSDAI entered later."""
    from infra.postgres import temporary_database

    with temporary_database(server_url, "tl_test") as url:
        settings = Settings(database_url=url, home=tmp_path_factory.mktemp("sdtm-home"))
        runtime = Runtime(settings, url)
        clock = simulated_clock()
        app = runtime.study(STUDY, clock=clock)
        register(app)
        enroll(app, "001", disease="SLE")
        enroll(app, "002", disease="PSS")
        clock.set(SLEDAI_AT)
        app.on_subject("001", lambda s, t: s.record_lab_result(
            "LB1", T0, "C3", C3, "g/L", envelope(), t, 0.9, 1.8, "BASELINE"))
        app.on_subject("001", lambda s, t: s.record_sledai(
            "QS1", T0, SLEDAI, envelope(), t, visit="BASELINE"))
        clock.set(ESSDAI_AT)
        app.on_subject("002", lambda s, t: s.record_essdai(
            "QS2", T0, ESSDAI, envelope(), t, visit="BASELINE"))
        app.close()
        runtime.project(STUDY)
        try:
            yield Study(runtime, settings, runtime.study(STUDY).definition())
        finally:
            runtime.close()


def _export(study: Study, layout: Layout, directory: Path, **kwargs: Any) -> dict[str, int]:
    with psycopg.connect(study.runtime.url) as conn:
        return write_domains(conn, SCHEMA, study.definition, directory, layout, "test",
                             **kwargs)


def _rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    names = [c["name"] for c in document["columns"]]
    return [dict(zip(names, row, strict=True)) for row in document["rows"]]


def _qs(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["USUBJID"][-3:], row["QSTESTCD"]): row for row in rows}


def test_qs_holds_sledai_and_essdai_items_and_totals(study: Study, tmp_path: Path) -> None:
    with psycopg.connect(study.runtime.url) as conn:
        counts = write_csv(conn, SCHEMA, study.definition, tmp_path)
    with (tmp_path / "QS.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert counts["QS.csv"] == len(SLEDAI) + 1 + len(ESSDAI) + 1
    assert list(rows[0]) == list(COLUMNS["QS"])
    qs = _qs(rows)
    sledai_total = sum(SLEDAI_DESCRIPTORS[k] for k, present in SLEDAI.items() if present)
    essdai_total = sum(ESSDAI_WEIGHTS[k] * level for k, level in ESSDAI.items())
    assert qs[("001", "SLEDAITOT")]["QSORRES"] == str(sledai_total)
    assert qs[("001", "SLEDAITOT")]["QSDRVFL"] == "Y"
    assert qs[("002", "ESSDAITOT")]["QSSTRESN"] == str(float(essdai_total))
    arthritis = qs[("001", f"SLEDAI{list(SLEDAI_DESCRIPTORS).index('arthritis') + 1:02d}")]
    assert (arthritis["QSTEST"], arthritis["QSORRES"], arthritis["QSSTRESC"],
            arthritis["QSCAT"], arthritis["VISIT"]) == (
        "Arthritis", "PRESENT", str(SLEDAI_DESCRIPTORS["arthritis"]), "SELENA-SLEDAI",
        "BASELINE")
    renal = qs[("002", f"ESSDAI{list(ESSDAI_WEIGHTS).index('renal') + 1:02d}")]
    assert (renal["QSORRES"], renal["QSSTRESC"]) == ("HIGH ACTIVITY", "3")


@pytest.mark.requirement("R22")
def test_dataset_json_validates_and_holds_every_domain(study: Study, tmp_path: Path) -> None:
    counts = _export(study, "json", tmp_path)
    assert set(counts) == {f"{d.lower()}.json" for d in COLUMNS}
    for domain, columns in COLUMNS.items():
        document = valid_dataset_json((tmp_path / f"{domain.lower()}.json").read_bytes())
        assert document["datasetJSONVersion"] == "1.1.0"
        assert (document["name"], document["itemGroupOID"]) == (domain, f"IG.{domain}")
        assert [c["name"] for c in document["columns"]] == list(columns)
        assert document["records"] == len(document["rows"]) == counts[f"{domain.lower()}.json"]
        keys = {c["name"]: c.get("keySequence") for c in document["columns"]}
        assert (keys["STUDYID"], keys["USUBJID"]) == (1, 2)
        for column in document["columns"]:
            assert column["label"] and column["itemOID"] == f"IT.{domain}.{column['name']}"
    lb = _rows(json.loads((tmp_path / "lb.json").read_bytes()))
    # A result is text in SDTM, written as people write it; the sequence is an integer.
    assert [(r["LBTESTCD"], r["LBORRES"], r["LBSEQ"]) for r in lb] == [("C3", str(C3), 1)]
    qs = _qs(_rows(json.loads((tmp_path / "qs.json").read_bytes())))
    assert qs[("002", "ESSDAITOT")]["QSSTRESN"] == sum(
        ESSDAI_WEIGHTS[k] * level for k, level in ESSDAI.items())


def test_ndjson_is_the_same_dataset_line_by_line(study: Study, tmp_path: Path) -> None:
    created = T0 + timedelta(days=30)
    _export(study, "json", tmp_path / "json", created_at=created)
    _export(study, "ndjson", tmp_path / "ndjson", created_at=created)
    metadata_schema = dataset_json_schema("dataset-ndjson-schema.json")["$defs"]["DatasetMetadata"]
    for domain in COLUMNS:
        lines = (tmp_path / "ndjson" / f"{domain.lower()}.ndjson").read_bytes().splitlines()
        metadata = json.loads(lines[0])
        jsonschema.validate(metadata, metadata_schema)
        assert "rows" not in metadata
        document = json.loads((tmp_path / "json" / f"{domain.lower()}.json").read_bytes())
        assert {**metadata, "rows": [json.loads(line) for line in lines[1:]]} == document


def test_xpt_files_read_back_to_the_dataset_json_values(study: Study, tmp_path: Path) -> None:
    _export(study, "json", tmp_path / "json")
    counts = _export(study, "xpt", tmp_path / "xpt")
    assert set(counts) == {f"{d.lower()}.xpt" for d in COLUMNS}
    for domain in COLUMNS:
        document = json.loads((tmp_path / "json" / f"{domain.lower()}.json").read_bytes())
        assert_xpt_matches(tmp_path / "xpt" / f"{domain.lower()}.xpt", document)


def test_an_export_as_of_an_earlier_time_leaves_out_what_came_later(
        study: Study, tmp_path: Path) -> None:
    _export(study, "json", tmp_path, as_of=SLEDAI_AT + timedelta(hours=1))
    qs = _qs(_rows(json.loads((tmp_path / "qs.json").read_bytes())))
    assert {subject for subject, _ in qs} == {"001"}
    document = json.loads((tmp_path / "qs.json").read_bytes())
    assert document["dbLastModifiedDateTime"] == (SLEDAI_AT + timedelta(hours=1)).isoformat()


def test_the_cli_and_http_export_dataset_json_and_xpt(study: Study, tmp_path: Path) -> None:
    for export_format, suffix in (("dataset-json", "json"), ("dataset-ndjson", "ndjson"),
                                  ("xpt", "xpt")):
        result = CliRunner().invoke(cli, [
            "export", "--study", STUDY, "--format", export_format, "-o",
            str(tmp_path / export_format), "--database-url", study.runtime.url],
            env={"TRIALLEDGER_HOME": str(study.settings.home), "COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / export_format).iterdir()) == sorted(
            f"{d.lower()}.{suffix}" for d in COLUMNS)
    regulator = api_client(study.runtime, "regulator")
    response = regulator.get(f"/v1/studies/{STUDY}/exports/xpt")
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as z:
        assert sorted(z.namelist()) == sorted(f"{d.lower()}.xpt" for d in COLUMNS)
        (tmp_path / "qs.xpt").write_bytes(z.read("qs.xpt"))
    data, _ = pyreadstat.read_xport(str(tmp_path / "qs.xpt"), output_format="dict")
    assert "SLEDAITOT" in list(data["QSTESTCD"])
    response = regulator.get(f"/v1/studies/{STUDY}/exports/dataset-json")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as z:
        valid_dataset_json(z.read("dm.json"))
