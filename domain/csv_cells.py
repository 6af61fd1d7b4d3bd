"""CSV cells a spreadsheet would run as a formula are written as text (OWASP, "CSV
Injection"): a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
gets a leading single quote, which spreadsheets show as nothing and take as "this is text".

A text cell that already starts with a quote gets one more, so reading a file back
(:func:`restored`) gives every value exactly as it was. Numbers are data, not formulas: a
number, or a text that is only a number (``-1.5``, as SDTM character results hold them), is
written as it is. The JSON Lines beside a CSV keep every value exactly, unquoted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

QUOTE = "'"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet takes as the start of a formula (OWASP's list)."""
# The first characters of a text cell that may need a quote (a formula's, or the quote itself).
_RISKY = frozenset((QUOTE, *FORMULA_STARTS))
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralised(value: Any) -> Any:
    """``value`` as a CSV cell that no spreadsheet runs: text that could start a formula,
    or that starts with the quote itself, gets a leading quote; anything else (numbers
    included) is returned as it is."""
    if not isinstance(value, str) or not value:
        return value
    if value[0] == QUOTE or (value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value)):
        return QUOTE + value
    return value


def neutralised_row(cells: Iterable[Any]) -> list[Any]:
    """Each of ``cells`` as :func:`neutralised` makes it. Most cells need nothing, and a CSV
    export has millions (the audit trail): only a text starting with a risky character is
    looked at further."""
    return [neutralised(cell) if isinstance(cell, str) and cell[:1] in _RISKY else cell
            for cell in cells]


def restored(cell: str) -> str:
    """The value a text cell written by :func:`neutralised` holds."""
    return cell[1:] if cell.startswith(QUOTE) else cell
