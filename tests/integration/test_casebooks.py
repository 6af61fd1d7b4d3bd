"""Casebooks (HTML and PDF per subject) of a small study, on real PostgreSQL.

Child 001 has a C3 entered, queried, signed for, then corrected with a reason (which
invalidates the signature); child 002 has nothing but enrollment. The casebooks are read
back — the HTML parsed, the PDF's text extracted — and must show the old and new value, the
reason, the query, the signature's manifestation and its invalidation, as of the time asked.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pypdf
import pytest
from lxml import html as lxml_html
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from domain.envelope import Actor
from domain.studies import nct04397107
from domain.study import Study
from infra.settings import Settings
from projections.casebook_doc import file_stem
from tests.support import T0, api_client, correction, enroll, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
C3_ENTERED, C3_CORRECTED = 0.8, 0.6
REASON_TEXT = "re-checked against the laboratory report"
QUERY_TEXT = "<script>alert('q')</script> please check C3"
ENTERED_AT = T0 + timedelta(days=1)
SIGNED_AT = T0 + timedelta(days=8, hours=4)
CORRECTED_AT = T0 + timedelta(days=9)
INVESTIGATOR = Actor("u-pi", "Dr Wang Fang", "investigator", "JLU1")
MONITOR = Actor("u-mon", "Chen Mei", "monitor", "JLU1")


@dataclass
class Exported:
    """The study's deployment and its casebooks (now, and as of before the correction)."""

    runtime: Runtime
    settings: Settings
    now: dict[str, bytes]
    before: dict[str, bytes]


def _run(args: list[str], settings: Settings) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args, env={"TRIALLEDGER_HOME": str(settings.home),
                                                "COLUMNS": "200"})
    return result.exit_code, result.output


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


@pytest.fixture(scope="module")
def exported(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    from infra.postgres import temporary_database

    out = tmp_path_factory.mktemp("casebooks")
    with temporary_database(server_url, "tl_test") as url:
        settings = Settings(database_url=url, home=tmp_path_factory.mktemp("casebook-home"))
        runtime = Runtime(settings, url)
        clock = simulated_clock()
        app = runtime.study(STUDY, clock=clock)
        register(app)
        enroll(app, "001")
        enroll(app, "002")
        clock.set(ENTERED_AT)
        app.on_subject("001", lambda s, t: s.record_lab_result(
            "LB1", T0, "C3", C3_ENTERED, "g/L", envelope(), t, 0.9, 1.8, "BASELINE"))
        clock.set(SIGNED_AT - timedelta(hours=1))
        app.on_subject("001", lambda s, t: s.open_query("Q1", "LB1", "value", QUERY_TEXT,
                                                        envelope(MONITOR), t))
        clock.set(SIGNED_AT)
        meanings = app.definition().signature_meanings
        app.on_subject("001", lambda s, t: s.sign("SIG1", "approval", meanings, INVESTIGATOR,
                                                  envelope(INVESTIGATOR), t))
        clock.set(CORRECTED_AT)
        app.on_subject("001", lambda s, t: s.correct("LB1", "value", C3_CORRECTED,
                                                     correction(REASON_TEXT), t))
        app.close()
        for name, as_of in (("now.zip", None), ("before.zip", CORRECTED_AT
                                                - timedelta(seconds=1))):
            args = ["export", "--study", STUDY, "--format", "casebook", "-o", str(out / name),
                    "--database-url", url]
            code, output = _run(args + (["--as-of", as_of.isoformat()] if as_of else []),
                                settings)
            assert code == 0, output
            assert "casebooks of 2 subjects" in output
        yield Exported(runtime, settings, _members(out / "now.zip"),
                       _members(out / "before.zip"))
        runtime.close()


def html_text(document: bytes) -> str:
    """The text a reader of the page sees, cell by cell, whitespace collapsed."""
    return " ".join(" ".join(lxml_html.fromstring(document).body.itertext()).split())


def pdf_text(document: bytes) -> str:
    """The PDF's text, whitespace collapsed (cells wrap onto several lines)."""
    reader = pypdf.PdfReader(io.BytesIO(document))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


def _expect_corrected(text: str) -> None:
    # One table of lab results, a column per field named by its label, not its id.
    assert "Lab results Records Record Observed Visit Test Unit Result Reference low" in text
    assert "code" not in text.split("Lab results")[1].split("Changes after first entry")[0]
    # The value now, and beneath the table its change: 0.8 -> 0.6, who, when, why.
    assert re.search(rf"LB1 2021-01-10 09:00:00 UTC BASELINE C3 g/L {C3_CORRECTED} ", text)
    assert (f"LB1 2021-01-19 09:00:00 UTC Record corrected Result {C3_ENTERED} {C3_CORRECTED}"
            in text)
    assert f"transcription_error: {REASON_TEXT}" in text
    assert "Zhang Min (data_manager, JLU1)" in text
    assert "2021-01-19 09:00:00 UTC" in text  # when the correction was recorded
    # The query, as typed, and who opened it when.
    assert QUERY_TEXT in text
    assert "Chen Mei, 2021-01-18 12:00:00 UTC" in text
    # The signature's manifestation, and that the correction invalidated it.
    assert "Dr Wang Fang investigator 2021-01-18 13:00:00 UTC" in text
    assert "I approve these data (approval)" in text
    assert "INVALIDATED 2021-01-19 09:00:00 UTC" in text


def test_the_zip_holds_one_html_and_one_pdf_per_subject(exported: Exported) -> None:
    assert sorted(exported.now) == ["001.html", "001.pdf", "002.html", "002.pdf"]
    assert exported.now["001.pdf"].startswith(b"%PDF-")


@pytest.mark.requirement("R12", "R14")
def test_the_html_shows_values_history_reasons_queries_and_signatures(
        exported: Exported) -> None:
    _expect_corrected(html_text(exported.now["001.html"]))


@pytest.mark.requirement("R14")
def test_the_pdf_shows_the_same(exported: Exported) -> None:
    _expect_corrected(pdf_text(exported.now["001.pdf"]))


@pytest.mark.requirement("R10", "R13")
def test_as_of_before_the_correction_the_casebook_shows_the_signature_valid(
        exported: Exported) -> None:
    for text in (html_text(exported.before["001.html"]), pdf_text(exported.before["001.pdf"])):
        assert f"C3 g/L {C3_ENTERED} " in text
        assert "Record corrected" not in text and REASON_TEXT not in text
        assert "Dr Wang Fang investigator 2021-01-18 13:00:00 UTC" in text
        assert "VALID" in text and "INVALIDATED" not in text
        assert re.search(r"As of \(recorded time\):? 2021-01-19 08:59:59 UTC", text)


def test_text_is_escaped_and_the_page_is_self_contained(exported: Exported) -> None:
    page = exported.now["001.html"].decode()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;q&#x27;)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_a_subject_without_records_still_has_a_casebook(exported: Exported) -> None:
    text = html_text(exported.now["002.html"])
    assert "Casebook of subject 002" in text and "Signatures none" in text


def test_over_http_the_same_zip_streams_and_the_export_is_recorded(exported: Exported) -> None:
    regulator = api_client(exported.runtime, "regulator", username="inspector")
    response = regulator.get(f"/v1/studies/{STUDY}/exports/casebook",
                             params={"as_of": (CORRECTED_AT - timedelta(seconds=1)).isoformat()})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    members = dict(_members_of(response.content))
    assert members.keys() == exported.before.keys()
    # The same casebooks as the CLI wrote for that time; only the generation time differs.
    assert _undated(html_text(members["001.html"])) == _undated(
        html_text(exported.before["001.html"]))
    app = exported.runtime.study(STUDY)
    recorded = [e for e in app.events.get(app.study().id) if isinstance(e, Study.ExportRecorded)]
    assert [(e.export_format, e.envelope.actor.printed_name) for e in recorded][-1] == (
        "casebook", "Inspector")
    assert recorded[-1].as_of == CORRECTED_AT - timedelta(seconds=1)
    coordinator = api_client(exported.runtime, "coordinator", site="JLU1")
    assert coordinator.get(f"/v1/studies/{STUDY}/exports/casebook").status_code == 403


def _members_of(content: bytes) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        for name in z.namelist():
            yield name, z.read(name)


def _undated(text: str) -> str:
    return re.sub(r"Generated:? \S+ \S+ UTC", "", text)


def test_bad_input_is_refused_and_nothing_is_recorded(exported: Exported,
                                                      tmp_path: Path) -> None:
    app = exported.runtime.study(STUDY)
    before = app.study().exports
    code, output = _run(["export", "--study", STUDY, "--format", "casebook", "-o",
                         str(tmp_path / "x.zip"), "--as-of", "2021-01-19T00:00:00",
                         "--database-url", str(exported.settings.database_url)],
                        exported.settings)
    assert code != 0 and "--as-of" in output
    regulator = api_client(exported.runtime, "regulator", username="inspector-2")
    naive = regulator.get(f"/v1/studies/{STUDY}/exports/casebook",
                          params={"as_of": "2021-01-19T00:00:00"})
    assert naive.status_code == 422 and "as_of" in naive.text
    assert app.study().exports == before
    assert not (tmp_path / "x.zip").exists()


@pytest.mark.parametrize(("code", "stem"), [("001", "001"), ("A-7.b_2", "A-7.b_2")])
def test_safe_subject_codes_name_their_files(code: str, stem: str) -> None:
    assert file_stem(code) == stem


def test_other_subject_codes_cannot_escape_the_folder_or_clash() -> None:
    names = {file_stem(code) for code in ("../etc", "a/b", "a_b", ".hidden", "a\\b")}
    assert len(names) == 5
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names)



def _prose(tag: str, length: int) -> str:
    """Text of exactly ``length`` characters made of numbered words (``tag0001`` ...), so a
    test can check every word arrived, in order, however the renderer wrapped it."""
    words = " ".join(f"{tag}{n:04d}" for n in range(1, length))
    return words[:length].rstrip()


def _words_in_order(tag: str, text: str) -> list[str]:
    return re.findall(rf"\b{tag}\d{{4}}\b", text)


def test_long_texts_wrap_and_continue_across_pages(runtime: Runtime, tmp_path: Path) -> None:
    """2,000-character reasons, query texts and answers (the contract's limits) and a
    500-character AE term render in HTML and PDF, the PDF running on over more pages."""
    from application.exports import write_casebook_zip

    reason, query, answer = _prose("rsn", 2000), _prose("qry", 2000), _prose("ans", 2000)
    term, new_term = _prose("trm", 500), _prose("ntm", 500)
    # One unbroken 2,000-character word: wrapped inside the word, never cut.
    unbroken = "".join(f"{n:x}" for n in range(10**6))[:2000]
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    enroll(app, "001")
    enroll(app, "002")
    clock.set(ENTERED_AT)
    ae = {"term": term, "category": "injection_site_reaction", "grade": 1, "serious": False,
          "relationship": "possible", "action_taken": "none", "outcome": "recovering"}
    for code in ("001", "002"):
        app.on_subject(code, lambda s, t: s.report_adverse_event("AE1", T0, ae, envelope(), t))
    clock.set(SIGNED_AT)
    monitor = envelope(MONITOR)
    app.on_subject("001", lambda s, t: s.open_query("Q1", "AE1", "term", query, monitor, t))
    app.on_subject("001", lambda s, t: s.answer_query("Q1", answer, envelope(), t))
    app.on_subject("001", lambda s, t: s.open_query("Q2", "AE1", "grade", "grade?", monitor, t))
    app.on_subject("001", lambda s, t: s.close_query("Q2", unbroken, monitor, t))
    clock.set(CORRECTED_AT)
    app.on_subject("001", lambda s, t: s.correct("AE1", "term", new_term, correction(reason),
                                                 t))
    app.close()

    assert write_casebook_zip(runtime, STUDY, tmp_path / "casebooks.zip", None) == 2
    files = _members(tmp_path / "casebooks.zip")
    long_html = html_text(files["001.html"])
    long_pdf = pypdf.PdfReader(io.BytesIO(files["001.pdf"]))
    short_pdf = pypdf.PdfReader(io.BytesIO(files["002.pdf"]))
    assert len(long_pdf.pages) > len(short_pdf.pages)
    pdf = " ".join(" ".join(page.extract_text() for page in long_pdf.pages).split())
    for text in (long_html, pdf):
        for tag, full in (("rsn", reason), ("qry", query), ("ans", answer), ("trm", term),
                          ("ntm", new_term)):
            expected = _words_in_order(tag, full)
            # A word may appear more than once (the term is in the values and the history):
            # every occurrence holds the whole text, in order.
            found = _words_in_order(tag, text)
            assert found and len(found) % len(expected) == 0, tag
            assert found == expected * (len(found) // len(expected)), tag
    assert unbroken in long_html
    squeezed = "".join(pdf.split())
    assert unbroken[:40] in squeezed and unbroken[-40:] in squeezed


def test_workers_started_part_way_render_the_same_files(runtime: Runtime, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """A bundle's casebooks get a worker once its other renderings free a core: the files
    are those rendered without workers, byte for byte, whenever workers join."""
    import projections.casebook_doc as casebook_doc
    from infra.postgres import connect, schema_for_study

    app = runtime.study(STUDY, clock=simulated_clock())
    register(app)
    codes = [f"{n:03d}" for n in range(1, casebook_doc.PARALLEL_FROM + 5)]
    for code in codes:
        enroll(app, code)
    app.close()
    runtime.project(STUDY)
    started: list[casebook_doc.RenderWorker] = []

    class Counted(casebook_doc.RenderWorker):
        def __init__(self) -> None:
            super().__init__()
            started.append(self)

    monkeypatch.setattr(casebook_doc, "RenderWorker", Counted)
    asked: list[int] = []

    def free_after_three() -> int:
        asked.append(1)
        return 99 if len(asked) <= 3 else 0  # every core busy, then every core free

    files: dict[str, dict[str, bytes]] = {}
    for how, busy in (("none", 99), ("part-way", free_after_three), ("from the start", 0)):
        with connect(runtime.url) as conn:
            files[how] = {name: path.read_bytes() for name, path in casebook_doc.casebook_files(
                conn, schema_for_study(STUDY), runtime.study(STUDY).definition(),
                tmp_path / how.replace(" ", "-"), None, T0, busy_cores=busy)}
        if how == "none":
            assert not started
        else:
            assert started and all(w.process.poll() is not None for w in started)
            started.clear()
    assert sorted(files["none"]) == sorted(f"{c}.{e}" for c in codes for e in ("html", "pdf"))
    assert files["part-way"] == files["none"] == files["from the start"]
