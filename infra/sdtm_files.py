"""Reading an SDTM data set from a directory: SAS XPORT (``.xpt``) files, or the CSV files
``trialledger export --format csv`` writes (same variable names).

Each file becomes a :class:`Table` of rows in file order, values as given: text as text
(whitespace kept), numbers as floats, missing numbers as None. Files of one domain (LB split
into chemistry, haematology and urinalysis) are kept apart, each with its own name, so every
row's provenance names its file.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyreadstat

from domain.csv_cells import restored

Value = str | float | None

# Files a CSV export writes besides the SDTM domains; the importer does not read them.
NOT_SDTM = frozenset({"audit_trail", "adsl", "adlist"})  # + the analysis datasets


class SdtmFileError(Exception):
    """The directory or one of its files cannot be read as SDTM; nothing was loaded."""


@dataclass
class Table:
    """The rows of one SDTM file."""

    name: str  # the SDTM domain (LB for lbch.xpt), or SUPPxx / a trial-design domain
    file: str  # file name as found in the directory
    variables: dict[str, str]  # variable -> "num" or "char", in file order
    rows: list[dict[str, Value]] = field(default_factory=list)


def read_directory(directory: Path,
                   variable_types: Mapping[str, Mapping[str, str]] | None = None) -> list[Table]:
    """Every SDTM table in ``directory``: its ``.xpt`` files, or else its ``.csv`` files.

    CSV holds no types: a variable is read as a number when ``variable_types`` (the study's
    declared SDTM variables) says ``num``.
    """
    if not directory.is_dir():
        raise SdtmFileError(f"{directory}: no such directory")
    xpt = sorted(p for p in directory.iterdir() if p.suffix.lower() == ".xpt")
    if xpt:
        return [read_xpt(path) for path in xpt]
    csvs = sorted(p for p in directory.iterdir()
                  if p.suffix.lower() == ".csv" and p.stem.lower() not in NOT_SDTM)
    if not csvs:
        raise SdtmFileError(f"{directory}: no .xpt or .csv files")
    return [read_csv(path, variable_types or {}) for path in csvs]


def read_xpt(path: Path) -> Table:
    """One SAS XPORT file."""
    rows: list[Any] = []
    for encoding in (None, "latin1"):  # TS holds Windows-1252 quotes in the pilot package
        try:
            data, meta = pyreadstat.read_xport(str(path), output_format="dict",
                                               encoding=encoding)
            break
        except pyreadstat.ReadstatError as e:
            if "unicode" not in str(e).lower() and "encoding" not in str(e).lower():
                raise SdtmFileError(f"{path.name}: not a SAS XPORT file ({e})") from None
        except (OSError, UnicodeDecodeError) as e:
            if encoding is not None:
                raise SdtmFileError(f"{path.name}: cannot be read ({e})") from None
    else:
        raise SdtmFileError(f"{path.name}: cannot be decoded")
    assert isinstance(data, dict)
    names: list[str] = [str(n).upper() for n in meta.column_names]
    kinds = meta.readstat_variable_types or {}
    variables = {name.upper(): "num" if kinds.get(name) == "double" else "char"
                 for name in meta.column_names}
    columns = [data[name] for name in meta.column_names]
    rows = [dict(zip(names, map(_value, values), strict=True))
            for values in zip(*columns, strict=True)]
    return Table(_table_name(path, rows), path.name, variables, rows)


def read_csv(path: Path, variable_types: Mapping[str, Mapping[str, str]]) -> Table:
    """One CSV file with SDTM variable names in its header row."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise SdtmFileError(f"{path.name}: empty file")
            names = [h.strip().upper() for h in header]
            body = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SdtmFileError(f"{path.name}: not a readable CSV file ({e})") from None
    name = path.stem.upper()
    types = variable_types.get(name, {})
    variables = {n: types.get(n, "char") for n in names}
    rows: list[dict[str, Value]] = []
    for number, values in enumerate(body, 2):
        if len(values) != len(names):
            raise SdtmFileError(f"{path.name} line {number}: {len(values)} values for "
                                f"{len(names)} columns")
        row: dict[str, Value] = {}
        for variable, text in zip(names, values, strict=True):
            if variables[variable] == "num":
                try:
                    row[variable] = float(text) if text.strip() else None
                except ValueError:
                    raise SdtmFileError(f"{path.name} line {number}: {variable} {text!r} is "
                                        "not a number") from None
            else:
                row[variable] = restored(text)  # the export's quote before a formula
        rows.append(row)
    return Table(name, path.name, variables, rows)


def _value(value: Any) -> Value:
    if value is None or isinstance(value, str):
        return value
    number = float(value)
    return None if math.isnan(number) else number


def _table_name(path: Path, rows: list[dict[str, Value]]) -> str:
    stem = path.stem.upper()
    if stem.startswith("SUPP") or not rows:
        return stem
    domain = rows[0].get("DOMAIN")
    return domain.strip().upper() if isinstance(domain, str) and domain.strip() else stem
