"""A casebook document as one self-contained HTML page (inline style, no scripts, no links).

Every piece of text is escaped: values, reasons and query texts are whatever people typed.
"""

from __future__ import annotations

from html import escape
from typing import IO

from projections.casebook_doc.model import INVALIDATED, CasebookDocument, Section, Table

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10pt; margin: 2em; }
h1 { font-size: 15pt; } h2 { font-size: 12pt; margin-top: 1.6em; border-bottom: 1px solid #888; }
h3 { font-size: 10pt; margin: 0.8em 0 0.3em; }
table { border-collapse: collapse; margin-bottom: 0.6em; }
th, td { border: 1px solid #aaa; padding: 2px 5px; vertical-align: top; text-align: left;
         white-space: pre-wrap; overflow-wrap: anywhere; }
th { background: #eee; }
dl { display: grid; grid-template-columns: max-content auto; gap: 1px 1em; margin: 0.4em 0; }
dt { font-weight: bold; } dd { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.invalidated { color: #a00; font-weight: bold; }
"""


def _facts(facts: list[tuple[str, str]]) -> str:
    if not facts:
        return ""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return f"<dl>{items}</dl>\n"


def _table(caption: str, table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    empty = f'<tr><td colspan="{len(table.columns)}">none</td></tr>\n'
    body = "".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>\n"
                   for row in table.rows) or empty
    return (f"<h3>{escape(caption)}</h3>\n<table><thead><tr>{head}</tr></thead>\n"
            f"<tbody>\n{body}</tbody></table>\n")


def _cell(cell: str) -> str:
    # An invalidated signature must stand out on the page, not only say so.
    if cell == INVALIDATED:
        return f'<td class="invalidated">{INVALIDATED}</td>'
    return f"<td>{escape(cell)}</td>"


def _section(section: Section) -> str:
    return (f"<section>\n<h2>{escape(section.title)}</h2>\n{_facts(section.facts)}"
            + "".join(_table(caption, table) for caption, table in section.tables)
            + "</section>\n")


def write_html(document: CasebookDocument, out: IO[str]) -> None:
    """Write ``document`` as an HTML page to ``out`` (section by section)."""
    out.write(f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
              f"<title>{escape(document.title)}</title>\n<style>{STYLE}</style>\n</head>\n"
              f"<body>\n<h1>{escape(document.title)}</h1>\n{_facts(document.facts)}")
    for section in document.sections:
        out.write(_section(section))
    out.write("</body>\n</html>\n")
