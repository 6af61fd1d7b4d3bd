"""Exports of a study loaded with import-sdtm: two CDISCPILOT01 subjects (a screen failure,
and one with AE and CM rows), whose headers have no disease, birth date
or consent date. Their casebooks, alone and in the bundle, must render and show what was
loaded."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest
from lxml import html as lxml_html
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from application.sdtm_import import DataSet, Importer
from domain.caller import OPERATOR_GRANT, Caller
from infra.postgres import temporary_database
from infra.settings import Settings
from projections.casebook_doc import file_stem
from projections.casebook_doc.model import ABSENT
from tests.interchange import assert_xpt_matches, valid_dataset_json
from trialledger_verifier.bundle import load_public_keys, verify_bundle

SDTM = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdiscpilot01" / "sdtm"
STUDY = "CDISCPILOT01"
OPERATOR = Caller("os:tester", "tester", "tester", (OPERATOR_GRANT,), "trialledger-cli",
                  "test-import", "import")

pytestmark = [pytest.mark.skipif(not SDTM.is_dir(), reason="CDISCPILOT01 is not on this machine"),
              pytest.mark.slow(seconds=60)]


@dataclass
class Imported:
    """A deployment with a few CDISCPILOT01 subjects, and what the tests look for."""

    runtime: Runtime
    settings: Settings
    subjects: list[str]
    ae_terms: dict[str, list[str]]  # subject -> its AETERMs as loaded
    loaded_at: datetime


def subset(data: DataSet, keep: set[str]) -> None:
    """Keep only the rows of the subjects in ``keep`` (trial-design tables stay whole)."""
    for table in data.tables:
        if table.rows and "USUBJID" in table.rows[0]:
            table.rows = [row for row in table.rows if row.get("USUBJID") in keep]


@pytest.fixture(scope="module")
def imported(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imported]:
    data = DataSet(SDTM)
    rows = Counter(str(r["USUBJID"]) for t in data.tables for r in t.rows if "USUBJID" in r)
    screen_failures = {str(r["USUBJID"]) for r in data.by_name["DM"][0].rows
                       if r["ARMCD"] == "Scrnfail"}
    with_ae_and_cm = set.intersection(*({str(r["USUBJID"]) for t in data.by_name[name]
                                         for r in t.rows} for name in ("AE", "CM")))
    # The smallest of each keep the casebooks short: rendering is the slow part.
    keep = {min(group, key=lambda code: (rows[code], code))
            for group in (screen_failures, with_ae_and_cm)}
    subset(data, keep)
    ae_terms: dict[str, list[str]] = {}
    for row in data.by_name["AE"][0].rows:
        ae_terms.setdefault(str(row["USUBJID"]), []).append(str(row["AETERM"]))
    with temporary_database(server_url, "tl_imported") as url:
        settings = Settings(database_url=url, home=tmp_path_factory.mktemp("imported-home"))
        runtime = Runtime(settings, url)
        try:
            Importer(runtime.service(), runtime.study(STUDY), data, OPERATOR).run()
            yield Imported(runtime, settings, sorted(keep), ae_terms, datetime.now(UTC))
        finally:
            runtime.close()


def _export(imported: Imported, fmt: str, path: Path, *extra: str) -> None:
    result = CliRunner().invoke(cli, [
        "export", "--study", STUDY, "--format", fmt, "-o", str(path), *extra,
        "--database-url", imported.runtime.url],
        env={"TRIALLEDGER_HOME": str(imported.settings.home), "COLUMNS": "200"})
    assert result.exit_code == 0, result.output


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def _page_text(page: bytes) -> str:
    return " ".join(lxml_html.fromstring(page).text_content().split())


def _pdf_text(pdf: bytes) -> str:
    return " ".join(" ".join(p.extract_text() or "" for p in pypdf.PdfReader(
        io.BytesIO(pdf)).pages).split())


def _check_casebooks(imported: Imported, files: dict[str, bytes]) -> None:
    """Every subject has both files; each shows the subject, its DM row, its loaded AE terms,
    and its absent disease and birth date as absent."""
    for code in imported.subjects:
        page = _page_text(files[f"{file_stem(code)}.html"])
        pdf = _pdf_text(files[f"{file_stem(code)}.pdf"])
        for content in (page, pdf):
            assert f"Casebook of subject {code}, study {STUDY}" in content
            assert f"Disease: {ABSENT}" in content or f"Disease{ABSENT}" in content
            assert "Demographics (DM)" in content
            assert "None" not in content.split("Demographics (DM)")[0]
            for term in imported.ae_terms.get(code, []):
                assert term in content, (code, term)
    assert any(imported.ae_terms.get(code) for code in imported.subjects)


def test_the_casebooks_of_an_imported_study_render(imported: Imported, tmp_path: Path) -> None:
    _export(imported, "casebook", tmp_path / "casebooks.zip")
    files = _members(tmp_path / "casebooks.zip")
    assert sorted(files) == sorted(f"{file_stem(c)}.{ext}" for c in imported.subjects
                                   for ext in ("html", "pdf"))
    _check_casebooks(imported, files)


def test_the_bundle_of_an_imported_study_renders_and_verifies(
        imported: Imported, tmp_path: Path) -> None:
    _export(imported, "bundle", tmp_path / "bundle.zip")
    assert CliRunner().invoke(cli, ["keys", "export-public", "-o", str(tmp_path / "keys.pem")],
                              env={"TRIALLEDGER_HOME": str(imported.settings.home)}
                              ).exit_code == 0
    report = verify_bundle(tmp_path / "bundle.zip",
                           load_public_keys((tmp_path / "keys.pem").read_text()))
    assert report.study == STUDY
    files = _members(tmp_path / "bundle.zip")
    _check_casebooks(imported, {name.removeprefix("casebooks/"): data
                                for name, data in files.items()
                                if name.startswith("casebooks/")})
    # Every domain the study declared, as Dataset-JSON and as XPT holding the same values.
    declared = imported.runtime.study(STUDY).definition().sdtm["variables"]
    for folder, suffix in (("dataset-json", "json"), ("xpt", "xpt")):
        assert {n for n in files if n.startswith(f"{folder}/")} == {
            f"{folder}/{d.lower()}.{suffix}" for d in declared}
    for domain in declared:
        document = valid_dataset_json(files[f"dataset-json/{domain.lower()}.json"])
        assert [c["name"] for c in document["columns"]][:3] == [
            "STUDYID", "RDOMAIN" if domain.startswith("SUPP") else "DOMAIN", "USUBJID"]
        (tmp_path / "domain.xpt").write_bytes(files[f"xpt/{domain.lower()}.xpt"])
        assert_xpt_matches(tmp_path / "domain.xpt", document)
    dm = valid_dataset_json(files["dataset-json/dm.json"])
    assert sorted(row[2] for row in dm["rows"]) == imported.subjects
