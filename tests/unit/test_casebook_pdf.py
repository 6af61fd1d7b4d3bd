"""The casebook PDF keeps every character it is given: text in the characters casebooks
nearly always use (embedded from the cut-down font) and text beyond them (from the whole)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pypdf
import pytest

from projections.casebook_doc.model import CasebookDocument, Section, Table
from projections.casebook_doc.pdf import COMMON, write_pdf

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _document(name: str) -> CasebookDocument:
    rows = [(f"R{n}", f"{name} {n}", "µg/m² — ≤ 5") for n in range(40)]
    return CasebookDocument("001", "Casebook of subject 001", [("Investigator", name)],
                            [Section("Doses", tables=[("Records", Table(
                                ("Record", "Given by", "Note"), rows, (1, 3, 3)))])])


@pytest.mark.parametrize("name", ["Dr Wang Fang", "Dr Ёлкина Жанна", "Dr Ağaoğlu Ωmega"])
def test_every_character_comes_back_from_the_pdf(name: str, tmp_path: Path) -> None:
    # Cyrillic is beyond the cut-down font: that document embeds from the whole one.
    assert (ord("Ж") in COMMON, ord("Ω") in COMMON) == (False, True)
    path = tmp_path / "001.pdf"
    write_pdf(_document(name), path, CREATED)
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(path).pages)
    assert name in text
    assert f"{name} 39" in text and "µg/m² — ≤ 5" in text



def test_a_one_page_casebook_carries_its_page_number(tmp_path: Path) -> None:
    # Its only footer is drawn as the file is written, after the font's glyphs were chosen;
    # nothing else on the page uses a "p", a "g" or a "1" in the regular style.
    document = CasebookDocument("ABC", "Subject ABC", [("Site", "JLU")], [])
    path = tmp_path / "ABC.pdf"
    write_pdf(document, path, CREATED)
    pages = pypdf.PdfReader(path).pages
    assert len(pages) == 1 and "page 1 of 1" in pages[0].extract_text()
