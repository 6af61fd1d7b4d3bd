"""A casebook document as a PDF (fpdf2, landscape A4), with the same content as the HTML.

The text is set in DejaVu Sans, shipped beside this module (Bitstream Vera licence, see
``fonts/LICENSE-DejaVu.txt``), so that names and values outside Latin-1 print as typed on any
machine; glyphs DejaVu Sans lacks (CJK among them) print as blanks, the HTML keeps them.
Every page names the subject, the study and the as-of time, and is numbered "page n of m".
Texts of any length wrap in their cells; a row too tall for a page continues over further
rows, drawn as one box, so a long reason or query text runs on to the next page.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import CellBordersLayout, MethodReturnValue
from fpdf.fonts import FontFace
from fpdf.util import Padding

from projections.casebook_doc.model import INVALIDATED, CasebookDocument, Table

FONTS = Path(__file__).resolve().parent / "fonts"
FAMILY = "DejaVu"
LINE = 4.2  # mm per line of 8 pt text
PADDING = 0.8  # mm around the text of a table cell
# fpdf2 cannot split one table row across pages: a cell's text runs over rows of at most this
# many lines each (a few centimetres), so a long text continues on the next page.
ROW_LINES = 10
_SIDES = CellBordersLayout.LEFT | CellBordersLayout.RIGHT


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
            _table(pdf, caption, table)
    pdf.output(str(path))


def _facts(pdf: FPDF, facts: list[tuple[str, str]]) -> None:
    for key, value in facts:
        pdf.set_font(FAMILY, "B", 8)
        pdf.write(LINE, f"{key}: ")
        pdf.set_font(FAMILY, "", 8)
        pdf.write(LINE, value)
        pdf.ln(LINE)


def _table(pdf: FPDF, caption: str, table: Table) -> None:
    pdf.set_font(FAMILY, "", 7)
    widths = [pdf.epw * w / sum(table.widths) for w in table.widths]
    rows = [_pieces(pdf, row, widths) for row in table.rows]
    # No caption at the foot of a page without its headings and first row.
    opening = max((len(cell.split("\n")) for cell in rows[0][0]), default=1) if rows else 1
    if pdf.will_page_break(LINE + 1 + (opening + 2) * (LINE - 0.8) + 4 * PADDING):
        pdf.add_page()
    pdf.set_font(FAMILY, "B", 8)
    pdf.multi_cell(0, LINE + 1, caption, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FAMILY, "", 7)
    if not rows:
        pdf.multi_cell(0, LINE, "none", new_x="LMARGIN", new_y="NEXT")
        return
    with pdf.table(col_widths=table.widths, line_height=LINE - 0.8, text_align="LEFT",
                   v_align="TOP", headings_style=FontFace(emphasis="BOLD", fill_color=235),
                   padding=PADDING) as grid:
        headings = grid.row()
        for heading in table.columns:
            headings.cell(heading)
        for pieces in rows:
            for n, piece in enumerate(pieces):
                # The rows of one split row are drawn as one box: no rule or gap between them.
                first, last = n == 0, n == len(pieces) - 1
                border = CellBordersLayout(
                    _SIDES | (CellBordersLayout.TOP if first else 0)
                    | (CellBordersLayout.BOTTOM if last else 0))
                padding = (PADDING if first else 0, PADDING, PADDING if last else 0, PADDING)
                cells = grid.row()
                for cell in piece:
                    # An invalidated signature must stand out on paper too.
                    style = FontFace(emphasis="BOLD", color=(170, 0, 0)) \
                        if cell == INVALIDATED else None
                    if len(pieces) == 1:
                        cells.cell(cell, style=style)
                    else:
                        cells.cell(cell, style=style, border=border, padding=padding)
    pdf.ln(1)


def _pieces(pdf: FPDF, row: tuple[str, ...], widths: list[float]) -> list[tuple[str, ...]]:
    """``row`` as one or more table rows of at most :data:`ROW_LINES` lines each, every cell
    wrapped to its column's width as the table would wrap it."""
    lines = [_lines(pdf, cell, width) for cell, width in zip(row, widths, strict=True)]
    count = max(math.ceil(len(cell) / ROW_LINES) for cell in lines)
    if count <= 1:
        return [row]
    return [tuple("\n".join(cell[n * ROW_LINES:(n + 1) * ROW_LINES]) for cell in lines)
            for n in range(count)]


def _lines(pdf: FPDF, text: str, width: float) -> list[str]:
    """``text`` wrapped to a cell ``width`` wide; a text that cannot need more than
    :data:`ROW_LINES` lines is returned whole, unmeasured (line breaking is the slow part)."""
    usable = width - 2 * PADDING
    # Greedy word wrap fills any two consecutive lines of a paragraph with more than one
    # line's width, so a paragraph of width w takes at most 2 * w / usable + 1 lines.
    paragraphs = text.count("\n") + 1
    if 2 * pdf.get_string_width(text) / usable + 3 * paragraphs <= ROW_LINES:
        return [text]
    wrapped = pdf.multi_cell(width, LINE - 0.8, text, padding=Padding.new(PADDING), dry_run=True,
                             output=MethodReturnValue.LINES)
    assert isinstance(wrapped, list)  # what output=LINES returns
    return [str(line) for line in wrapped]
