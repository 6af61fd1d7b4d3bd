"""SAS XPORT version 5 as :mod:`projections.xport` writes it: the headers and numbers are
the bytes pyreadstat (ReadStat), the reference writer, puts in the same file, but for the
times (the export's own, not the clock's), and read back as the same values."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyreadstat
import pytest

from projections import xport

STAMP = re.compile(rb"\d\d[A-Z]{3}\d\d:\d\d:\d\d:\d\d")
OBS = b"HEADER RECORD*******OBS     HEADER RECORD!!!!!!!" + b"0" * 30 + b"  "
CREATED = datetime(2026, 3, 9, 7, 5, 1, tzinfo=UTC)

VARIABLES = [
    [xport.Variable("STUDYID", "Study Identifier", False, 12),
     xport.Variable("AVAL", "Analysis Value", True, 8),
     xport.Variable("USUBJID", "Unique Subject Identifier", False, 1)],
    [xport.Variable("N", "", True, 8)],
    # The longest name and label version 5 holds, the widest text, 18 variables (the
    # descriptions fill more than one 80-byte record and end part way through one).
    [xport.Variable(f"LONGNA{n:02d}", "L" * 40, n % 2 == 0, 200 if n % 3 else 1)
     for n in range(18)],
]


def _pyreadstat(variables: list[xport.Variable], member: str, label: str,
                path: Path) -> bytes:
    """pyreadstat's headers of a file with ``variables``, from a one-row frame whose texts
    are as wide as each variable."""
    frame = pl.DataFrame(
        {v.name: [0.0] if v.numeric else ["x" * v.width] for v in variables},
        schema={v.name: pl.Float64 if v.numeric else pl.String for v in variables})
    pyreadstat.write_xport(frame, str(path), file_label=label,
                           column_labels={v.name: v.label for v in variables},
                           table_name=member, file_format_version=5)
    written = path.read_bytes()
    return written[:written.index(OBS) + len(OBS)]


@pytest.mark.parametrize("variables", VARIABLES)
def test_the_headers_are_the_bytes_pyreadstat_writes(variables: list[xport.Variable],
                                                    tmp_path: Path) -> None:
    ours = xport.headers("LB", "Laboratory Test Results", variables, CREATED)
    theirs = _pyreadstat(variables, "LB", "Laboratory Test Results", tmp_path / "lb.xpt")
    assert len(ours) % xport.RECORD == 0
    assert STAMP.findall(ours) == [b"09MAR26:07:05:01"] * 4
    assert STAMP.sub(b"T" * 16, ours) == STAMP.sub(b"T" * 16, theirs)


def test_a_file_of_these_headers_reads_back(tmp_path: Path) -> None:
    variables = VARIABLES[0]
    rows = [(b"NCT0439710".ljust(12), 2.5, b"A"), (b"X".ljust(12), None, b" ")]
    body = b"".join(s + (xport.MISSING if n is None else xport.ibm_double(n)) + u
                    for s, n, u in rows)
    path = tmp_path / "dm.xpt"
    path.write_bytes(xport.headers("DM", "Demographics", variables, CREATED) + body
                     + b" " * (-len(body) % xport.RECORD))
    data, meta = pyreadstat.read_xport(str(path), output_format="dict")
    assert meta.table_name == "DM" and meta.file_label == "Demographics"
    assert meta.column_names == ["STUDYID", "AVAL", "USUBJID"]
    assert meta.column_labels == ["Study Identifier", "Analysis Value",
                                  "Unique Subject Identifier"]
    assert list(data["STUDYID"]) == ["NCT0439710", "X"]
    assert list(data["AVAL"]) == [2.5, None]
    assert meta.number_rows == 2


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, 0.1, 2.5, 750000.0, -3e-5, 1e-70, 1e70,
                                   5e-324, 123456789.123456789])
def test_numbers_are_the_ibm_doubles_pyreadstat_writes_and_reads(value: float,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "n.xpt"
    pyreadstat.write_xport(pl.DataFrame({"N": [value]}), str(path), file_format_version=5)
    written = path.read_bytes()
    record = written.index(OBS) + len(OBS)
    assert written[record:record + 8] == xport.ibm_double(value)
    data, _ = pyreadstat.read_xport(str(path), output_format="dict")
    assert data["N"][0] == pytest.approx(value, rel=1e-15, abs=1e-300)
