"""A casebook document as a PDF (fpdf2, landscape A4), with the same content as the HTML.

The text is set in DejaVu Sans, shipped beside this module (Bitstream Vera licence, see
``fonts/LICENSE-DejaVu.txt``), so that names and values outside Latin-1 print as typed on any
machine; glyphs DejaVu Sans lacks (CJK among them) print as blanks, the HTML keeps them.
Every page names the subject, the study and the as-of time, and is numbered "page n of m".
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

from projections.casebook_doc.model import INVALIDATED, CasebookDocument, Table

FONTS = Path(__file__).resolve().parent / "fonts"
FAMILY = "DejaVu"
LINE = 4.2  # mm per line of 8 pt text


class _Casebook(FPDF):
    """Landscape A4 with a running head and page numbers."""

    def __init__(self, running_head: str) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.running_head = running_head
        self.add_font(FAMILY, "", str(FONTS / "DejaVuSans.ttf"))
        self.add_font(FAMILY, "B", str(FONTS / "DejaVuSans-Bold.ttf"))
        self.set_auto_page_break(auto=True, margin=14)
        self.alias_nb_pages()

    def header(self) -> None:
        """The running head on every page."""
        self.set_font(FAMILY, "", 7)
        self.set_text_color(90)
        self.cell(0, 4, self.running_head, new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0)
        self.ln(2)

    def footer(self) -> None:
        """Page n of m."""
        self.set_y(-10)
        self.set_font(FAMILY, "", 7)
        self.cell(0, 4, f"page {self.page_no()} of {{nb}}", align="R")


def write_pdf(document: CasebookDocument, path: Path, created_at: datetime) -> None:
    """Write ``document`` as a PDF file at ``path``."""
    as_of = dict(document.facts).get("As of (recorded time)", "")
    pdf = _Casebook(f"{document.title} — as of {as_of}")
    pdf.set_title(document.title)
    pdf.set_author("TrialLedger")
    pdf.set_creation_date(created_at)
    pdf.add_page()
    pdf.set_font(FAMILY, "B", 13)
    pdf.multi_cell(0, 7, document.title, new_x="LMARGIN", new_y="NEXT")
    _facts(pdf, document.facts)
    for section in document.sections:
        if pdf.will_page_break(30):
            pdf.add_page()  # no section title alone at the foot of a page
        pdf.ln(2)
        pdf.set_font(FAMILY, "B", 11)
        pdf.multi_cell(0, 6, section.title, new_x="LMARGIN", new_y="NEXT")
        _facts(pdf, section.facts)
        for caption, table in section.tables:
            pdf.set_font(FAMILY, "B", 8)
            pdf.multi_cell(0, LINE + 1, caption, new_x="LMARGIN", new_y="NEXT")
            _table(pdf, table)
    pdf.output(str(path))


def _facts(pdf: FPDF, facts: list[tuple[str, str]]) -> None:
    for key, value in facts:
        pdf.set_font(FAMILY, "B", 8)
        pdf.write(LINE, f"{key}: ")
        pdf.set_font(FAMILY, "", 8)
        pdf.write(LINE, value)
        pdf.ln(LINE)


def _table(pdf: FPDF, table: Table) -> None:
    pdf.set_font(FAMILY, "", 7)
    if not table.rows:
        pdf.multi_cell(0, LINE, "none", new_x="LMARGIN", new_y="NEXT")
        return
    with pdf.table(col_widths=table.widths, line_height=LINE - 0.8, text_align="LEFT",
                   v_align="TOP", headings_style=FontFace(emphasis="BOLD", fill_color=235),
                   padding=0.8) as grid:
        for row in (table.columns, *table.rows):
            cells = grid.row()
            for cell in row:
                # An invalidated signature must stand out on paper too.
                style = FontFace(emphasis="BOLD", color=(170, 0, 0)) if cell == INVALIDATED \
                    else None
                cells.cell(cell, style=style)
    pdf.ln(1)
