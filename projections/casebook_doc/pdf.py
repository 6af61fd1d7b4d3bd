"""A casebook document as a PDF (fpdf2): landscape A4, the subject and the as-of time in a
running head on every page, page numbers, a bookmark (outline entry) per section.

Tables are drawn here rather than with fpdf2's table: its line breaking measures every cell
twice and took most of a casebook's time. Each cell is wrapped once, word by word (a word
wider than its column is broken inside), with widths from the font's own metrics; a row
taller than what is left of a page continues on the next one, under the headings again.

The fonts are parsed once per process and copied into each document (fpdf2 subsets a font
in place when it writes a file, so each document gets a fresh copy of the font file, less
the tables the subset drops anyway).
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fontTools import ttLib  # type: ignore[import-untyped]
from fpdf import FPDF
from fpdf.fonts import SubsetMap, TTFFont

from projections.casebook_doc.model import INVALIDATED, CasebookDocument, Table

FONTS = Path(__file__).resolve().parent / "fonts"
FAMILY = "DejaVu"
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
LINE = 4.2  # mm per line of 8 pt text
CELL_LINE = 3.4  # mm per line of 7 pt text in a table cell
PADDING = 0.8  # mm around the text of a table cell
TABLE_SIZE, HEADING_FILL = 7, 235
RED = (170, 0, 0)
_RED_TEXT = "q {:.3f} {:.3f} {:.3f} rg".format(*(c / 255 for c in RED))


@functools.cache
def _fonts() -> dict[str, tuple[TTFFont, bytes]]:
    """This process's parsed fonts by style, and the bytes of their files."""
    scratch = FPDF()
    loaded = {}
    for style, name in FONT_FILES.items():
        scratch.add_font(FAMILY, style, str(FONTS / name))
        font = scratch.fonts[f"{FAMILY.lower()}{style}"]
        assert isinstance(font, TTFFont)  # what add_font makes of a .ttf file
        loaded[style] = (font, _without_layout_tables(FONTS / name))
    return loaded


# Tables fpdf2 drops from every font subset it embeds (text is not shaped): dropped here once
# per process, rather than decompiled and dropped again for every document (a fifth of a
# long casebook's time went to these).
_DROPPED_TABLES = ("FFTM", "GDEF", "GPOS", "GSUB", "MATH", "hdmx", "meta")


def _without_layout_tables(path: Path) -> bytes:
    """The font file at ``path`` without the tables every embedded subset goes without."""
    font = ttLib.TTFont(str(path), recalcTimestamp=False)
    for tag in _DROPPED_TABLES:
        if tag in font:
            del font[tag]
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


class _Casebook(FPDF):
    """Landscape A4 with a running head and page numbers."""

    def __init__(self, running_head: str) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.running_head = running_head
        for n, (style, (parsed, data)) in enumerate(_fonts().items(), start=1):
            font = copy.copy(parsed)
            font.i = n
            font.ttfont = ttLib.TTFont(io.BytesIO(data), recalcTimestamp=False, lazy=True)
            font.subset = SubsetMap(font)
            font.missing_glyphs = []
            self.fonts[f"{FAMILY.lower()}{style}"] = font
        self.set_auto_page_break(auto=True, margin=14)
        self.alias_nb_pages()
        self.repeat: tuple[Table, list[float]] | None = None  # headings to repeat on a new page

    def header(self) -> None:
        """The running head on every page (and a continued table's headings)."""
        self.set_font(FAMILY, "", 7)
        self.set_text_color(90)
        self.cell(0, 4, self.running_head, new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(0)
        self.ln(2)
        if self.repeat is not None:
            _row(self, self.repeat[0].columns, self.repeat[1], heading=True)

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
    pdf.start_section(document.title)
    pdf.set_font(FAMILY, "B", 13)
    pdf.multi_cell(0, 7, document.title, new_x="LMARGIN", new_y="NEXT")
    _facts(pdf, document.facts)
    for section in document.sections:
        if pdf.will_page_break(30):
            pdf.add_page()  # no section title alone at the foot of a page
        pdf.ln(2)
        pdf.start_section(section.title, level=1)
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


def _table(pdf: _Casebook, caption: str, table: Table) -> None:
    widths = [pdf.epw * w / sum(table.widths) for w in table.widths]
    # No caption at the foot of a page without its headings and first row.
    if pdf.will_page_break(LINE + 1 + 4 * CELL_LINE + 4 * PADDING):
        pdf.add_page()
    pdf.set_font(FAMILY, "B", 8)
    pdf.multi_cell(0, LINE + 1, caption, new_x="LMARGIN", new_y="NEXT")
    if not table.rows:
        pdf.set_font(FAMILY, "", 7)
        pdf.multi_cell(0, LINE, "none", new_x="LMARGIN", new_y="NEXT")
        return
    _row(pdf, table.columns, widths, heading=True)
    pdf.repeat = (table, widths)
    for row in table.rows:
        _row(pdf, row, widths, heading=False)
    pdf.repeat = None
    pdf.ln(1)


@dataclass
class _Cell:
    lines: list[str]
    bold: bool
    red: bool


def _row(pdf: _Casebook, row: tuple[str, ...], widths: list[float], *, heading: bool) -> None:
    """Draw one row; what does not fit on this page continues on the next."""
    cells = []
    for value, width in zip(row, widths, strict=True):
        # An invalidated signature must stand out on paper too.
        red = value == INVALIDATED and not heading
        bold = heading or red
        cells.append(_Cell(_wrap(pdf, value, width - 2 * PADDING, bold), bold, red))
    done = 0
    tallest = max(len(c.lines) for c in cells)
    while done < tallest:
        room = int((pdf.page_break_trigger - pdf.get_y() - 2 * PADDING) // CELL_LINE)
        if room < 1 or (done == 0 and room < min(tallest, 3)):
            pdf.add_page()
            continue
        count = min(room, tallest - done)
        _draw(pdf, cells, widths, done, count, heading)
        done += count
        if done < tallest:
            pdf.add_page()


def _draw(pdf: FPDF, cells: list[_Cell], widths: list[float], start: int, count: int,
          heading: bool) -> None:
    """Lines ``start`` to ``start + count`` of a row's cells, with their borders.

    The operators are those fpdf2's ``rect`` and ``text`` write, but written here, a cell at a
    time: through fpdf2's methods (their checks, colours and wrappers for every line) they
    took half of a long casebook's time."""
    top = pdf.get_y()
    height = count * CELL_LINE + 2 * PADDING
    x = pdf.l_margin
    k, page_height = pdf.k, pdf.h
    pdf.set_draw_color(150)
    pdf.set_fill_color(HEADING_FILL)
    border = "B" if heading else "S"  # drawn and filled, or drawn only
    for cell, width in zip(cells, widths, strict=True):
        pdf.set_font(FAMILY, "B" if cell.bold else "", TABLE_SIZE)
        font = pdf.current_font
        assert isinstance(font, TTFFont)
        ops = [f"{x * k:.2f} {(page_height - top) * k:.2f} {width * k:.2f} "
               f"{-height * k:.2f} re {border}"]
        if not pdf.current_font_is_set_on_page:
            ops.append(pdf._set_font_for_page(font, pdf.font_size_pt))
        ops.append(_RED_TEXT if cell.red else "q 0 g")
        for n, line in enumerate(cell.lines[start:start + count]):
            if line:
                y = top + PADDING + (n + 0.78) * CELL_LINE
                ops.append(f"BT {(x + PADDING) * k:.2f} {(page_height - y) * k:.2f} Td "
                           f"{font.encode_text(line)} ET")
        ops.append("Q")
        pdf._out("\n".join(ops))
        x += width
    pdf.set_y(top + height)


def _wrap(pdf: FPDF, value: str, width: float, bold: bool) -> list[str]:
    """``value`` broken into lines no wider than ``width`` (mm) at 7 pt."""
    font = pdf.fonts[f"{FAMILY.lower()}{'B' if bold else ''}"]
    assert isinstance(font, TTFFont)
    widths: Mapping[int, float] = font.cw
    scale = TABLE_SIZE * 0.001 / pdf.k

    def measure(text: str) -> float:
        # The font's advance widths, as fpdf2 measures unshaped text (without its overhead).
        return sum(widths[ord(c)] for c in text) * scale

    lines: list[str] = []
    for paragraph in value.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if measure(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while measure(word) > width:  # a word wider than the column breaks inside
                cut = _fitting(measure, word, width)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _fitting(measure: Callable[[str], float], word: str, width: float) -> int:
    """How many leading characters of ``word`` fit in ``width`` (at least one)."""
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(word[:middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low
