"""A casebook document as a PDF (fpdf2): landscape A4, the subject and the as-of time in a
running head on every page, page numbers, a bookmark (outline entry) per section.

Tables are drawn here rather than with fpdf2's table: its line breaking measures every cell
twice and took most of a casebook's time. Each cell is wrapped once, word by word (a word
wider than its column is broken inside), with widths from the font's own metrics; a row
taller than what is left of a page continues on the next one, under the headings again.

The fonts are parsed once per process and copied into each document (fpdf2 subsets a font
in place when it writes a file, so each document gets a fresh copy of the font file, less
the tables the subset drops anyway). The file fpdf2 subsets for a document is the smallest
that serves it: one with exactly the glyphs it uses (made once per set of glyphs), cut from
a font of the common characters, or the whole font when the document uses others.
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fontTools import subset as ftsubset  # type: ignore[import-untyped]
from fontTools import ttLib
from fpdf import FPDF
from fpdf.fonts import SubsetMap, TTFFont
from fpdf.util import escape_parens

from projections.casebook_doc.model import INVALIDATED, CasebookDocument, Table

FONTS = Path(__file__).resolve().parent / "fonts"
FAMILY = "DejaVu"
_KEY = FAMILY.lower()  # as fpdf2 keys the family
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
LINE = 4.2  # mm per line of 8 pt text
CELL_LINE = 3.4  # mm per line of 7 pt text in a table cell
PADDING = 0.8  # mm around the text of a table cell
TABLE_SIZE, HEADING_FILL = 7, 235
RED = (170, 0, 0)
FOOTER = "page {} of {}"
FOOTER_CHARACTERS = FOOTER.format("0123456789", "")
_RED_TEXT = "q {:.3f} {:.3f} {:.3f} rg".format(*(c / 255 for c in RED))


@dataclass(frozen=True)
class _Font:
    """A font as this process loaded it once: parsed by fpdf2, and its file's bytes twice,
    whole and cut down to the characters casebooks nearly always use (:data:`COMMON`)."""

    parsed: TTFFont
    whole: bytes
    common: bytes
    common_glyphs: frozenset[str]


# The characters of the cut-down font: Latin (with Latin-1 and Extended-A), Greek, general
# punctuation, super- and subscripts, currency, letter-like symbols, arrows, mathematical
# operators. fpdf2 subsets the font file it is given for every document it writes, which
# means decompiling its every table: a file of these 1,100 glyphs rather than DejaVu's 6,000
# takes a sixth of the time, and yields the same subset.
COMMON = (*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x370, 0x400),
          *range(0x2010, 0x205F), *range(0x2070, 0x20C0), *range(0x2100, 0x2150),
          *range(0x2190, 0x2300))


@functools.cache
def _fonts() -> dict[str, _Font]:
    """This process's fonts by style."""
    scratch = FPDF()
    loaded = {}
    for style, name in FONT_FILES.items():
        scratch.add_font(FAMILY, style, str(FONTS / name))
        font = scratch.fonts[f"{FAMILY.lower()}{style}"]
        assert isinstance(font, TTFFont)  # what add_font makes of a .ttf file
        whole = _without_layout_tables(FONTS / name)
        common = _subset(whole, unicodes=COMMON)
        glyphs = ttLib.TTFont(io.BytesIO(common), lazy=True).getGlyphOrder()
        loaded[style] = _Font(font, whole, common, frozenset(glyphs))
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


def _subset(data: bytes, *, unicodes: Sequence[int] = (),
            glyphs: Iterable[str] = ()) -> bytes:
    """The font file ``data`` with only the glyphs of ``unicodes`` and ``glyphs`` (names),
    as fpdf2 subsets a font (the same options), but keeping the glyphs' names: fpdf2 finds
    glyphs by name."""
    font = ttLib.TTFont(io.BytesIO(data), recalcTimestamp=False)
    options = ftsubset.Options(notdef_outline=True, recommended_glyphs=True,
                               glyph_names=True)
    subsetter = ftsubset.Subsetter(options)
    subsetter.populate(unicodes=unicodes, glyphs=glyphs)
    subsetter.subset(font)
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


class _Codes(dict[int, str | None]):
    """A font's characters as this document's subset writes them in a text string: what
    fpdf2's ``encode_text`` makes of each character (its code in the subset, two bytes,
    escaped), worked out once per character rather than once per character of every line,
    for ``str.translate`` (a character the font lacks maps to None: left out, as there)."""

    def __init__(self, font: TTFFont) -> None:
        super().__init__()
        self.font = font

    def __missing__(self, char: int) -> str | None:
        # Picked on first use, in the order of the text, as encode_text picks them.
        mapped = self.font.subset.pick(char)
        code = (None if mapped is None
                else escape_parens(chr(mapped).encode("utf-16-be").decode("latin-1")))
        self[char] = code
        return code


class _Casebook(FPDF):
    """Landscape A4 with a running head and page numbers."""

    def __init__(self, running_head: str) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.running_head = running_head
        self.codes: dict[str, _Codes] = {}
        for n, (style, loaded) in enumerate(_fonts().items(), start=1):
            font = copy.copy(loaded.parsed)
            font.i = n
            font.ttfont = _open(loaded.whole)
            font.subset = SubsetMap(font)
            font.missing_glyphs = []
            self.fonts[f"{FAMILY.lower()}{style}"] = font
            self.codes[style] = _Codes(font)
        # The last page's footer is drawn as the file is written, after the font to embed was
        # chosen from the glyphs used by then: its characters are taken in from the start.
        FOOTER_CHARACTERS.translate(self.codes[""])
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
        self.cell(0, 4, FOOTER.format(self.page_no(), "{nb}"), align="R")


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
    for style, loaded in _fonts().items():
        font = pdf.fonts[f"{FAMILY.lower()}{style}"]
        assert isinstance(font, TTFFont)
        glyphs = frozenset(font.subset.get_all_glyph_names())
        if loaded.common_glyphs.issuperset(glyphs):
            # What fpdf2 subsets: the smaller the faster.
            font.ttfont = _open(_exactly(style, glyphs))
    pdf.output(str(path))


# Casebooks mostly use one of a few sets of glyphs (56 subjects: 8 sets, 24 of them one).
@functools.lru_cache(maxsize=64)
def _exactly(style: str, glyphs: frozenset[str]) -> bytes:
    """The cut-down font of ``style`` with only ``glyphs`` (names): made once per set, so
    fpdf2's subsetting of it for each document finds little to do."""
    return _subset(_fonts()[style].common, glyphs=sorted(glyphs))


def _open(data: bytes) -> ttLib.TTFont:
    """A font file's bytes as the TTFont fpdf2 subsets in place (a copy for each document).

    Bounding boxes are not recalculated on saving the subset (which expands every glyph it
    keeps): the font's own boxes bound the subset's glyphs all the same."""
    return ttLib.TTFont(io.BytesIO(data), recalcTimestamp=False, recalcBBoxes=False, lazy=True)


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


def _draw(pdf: _Casebook, cells: list[_Cell], widths: list[float], start: int, count: int,
          heading: bool) -> None:
    """Lines ``start`` to ``start + count`` of a row's cells, with their borders.

    The operators are those fpdf2's ``rect`` and ``text`` write, but written here, a row at a
    time: through fpdf2's methods (their checks, colours and wrappers for every line) they
    took half of a long casebook's time."""
    top = pdf.get_y()
    height = count * CELL_LINE + 2 * PADDING
    x = pdf.l_margin
    k, page_height = pdf.k, pdf.h
    pdf.set_draw_color(150)
    pdf.set_fill_color(HEADING_FILL)
    border = "B" if heading else "S"  # drawn and filled, or drawn only
    ops = []
    for cell, width in zip(cells, widths, strict=True):
        style = "B" if cell.bold else ""
        if (pdf.font_family != _KEY or pdf.font_style != style
                or pdf.font_size_pt != TABLE_SIZE):
            pdf.set_font(FAMILY, style, TABLE_SIZE)  # fpdf2's own check costs more than this
        font = pdf.current_font
        assert isinstance(font, TTFFont)
        codes = pdf.codes[style]
        ops.append(f"{x * k:.2f} {(page_height - top) * k:.2f} {width * k:.2f} "
                   f"{-height * k:.2f} re {border}")
        if not pdf.current_font_is_set_on_page:
            ops.append(pdf._set_font_for_page(font, pdf.font_size_pt))
        ops.append(_RED_TEXT if cell.red else "q 0 g")
        for n, line in enumerate(cell.lines[start:start + count]):
            if line:
                y = top + PADDING + (n + 0.78) * CELL_LINE
                ops.append(f"BT {(x + PADDING) * k:.2f} {(page_height - y) * k:.2f} Td "
                           f"({line.translate(codes)}) Tj ET")
        ops.append("Q")
        x += width
    pdf._out("\n".join(ops))
    pdf.set_y(top + height)


def _wrap(pdf: FPDF, value: str, width: float, bold: bool) -> list[str]:
    """``value`` broken into lines no wider than ``width`` (mm) at 7 pt."""
    return list(_lines(value, width, TABLE_SIZE * 0.001 / pdf.k, bold))


# Cell values repeat across rows and subjects (tests, units, names, dates): each is wrapped
# once per process (a few thousand distinct values suffice: most others occur once).
@functools.lru_cache(maxsize=4096)
def _lines(value: str, width: float, scale: float, bold: bool) -> tuple[str, ...]:
    """``value`` broken into lines no wider than ``width``, the font's widths times
    ``scale``."""
    widths: Mapping[int, float] = _fonts()["B" if bold else ""].parsed.cw

    def units(text: str) -> float:
        # The font's advance widths, as fpdf2 measures unshaped text (without its overhead).
        return sum(widths[ord(c)] for c in text)

    def measure(text: str) -> float:
        return units(text) * scale

    space = units(" ")

    lines: list[str] = []
    for paragraph in value.split("\n"):
        line, used = "", 0.0
        for word in paragraph.split(" "):
            size = units(word)
            # The widths are whole font units: a line's is the sum of its words' and spaces'.
            candidate = used + space + size if line else size
            if candidate * scale <= width:
                line, used = (f"{line} {word}" if line else word), candidate
                continue
            if line:
                lines.append(line)
            while size * scale > width:  # a word wider than the column breaks inside
                cut = _fitting(measure, word, width)
                lines.append(word[:cut])
                word = word[cut:]
                size = units(word)
            line, used = word, size
        lines.append(line)
    return tuple(lines)


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
