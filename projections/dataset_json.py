"""CDISC Dataset-JSON 1.1 and SAS XPORT version 5 files of a study's SDTM domains, one file
per domain, as of a recorded time (the domains and values of :mod:`projections.sdtm_metadata`).

Dataset-JSON comes as one JSON document per domain (``dm.json``) or as NDJSON (``dm.ndjson``:
the metadata on the first line, then one row per line). Each domain's rows are first spooled
to disk, typed, so the header can state the row count and each text column's length, and
memory stays flat whatever the size of the domain. XPT files are SAS XPORT version 5
(:mod:`projections.xport`), the observations streamed from the spool. Version 5
holds names of 8 characters, labels of 40 and texts of 200 bytes: a longer text is cut at
200 bytes in the XPT file only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import psycopg

from domain.study import StudyDefinition
from projections import xport
from projections.sdtm_metadata import Column, Domain, Value, domains
from projections.streaming import aware, consistent_read

VERSION = "1.1.0"
ORIGINATOR = "TrialLedger"
MDV_OID = "MDV.1"  # as in the ODM exports: a study's definition is registered once
XPT_TEXT_BYTES = 200
Layout = Literal["json", "ndjson", "xpt"]


@dataclass(frozen=True)
class Provenance:
    """What every file of one export says about where and when it comes from."""

    study: str
    created_at: datetime
    as_of: datetime
    software_version: str


def write_domains(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
                  directory: Path, layout: Layout, software_version: str,
                  as_of: datetime | None = None,
                  created_at: datetime | None = None) -> dict[str, int]:
    """Write one file per domain of the study as of ``as_of`` (now when None) into
    ``directory``: ``<domain>.json``, ``.ndjson`` or ``.xpt`` (lower-case names). Returns
    the rows of each file. ``conn`` must not be inside a transaction."""
    counts = write_layouts(conn, schema, definition, {layout: directory}, software_version,
                           as_of, created_at)
    return counts[layout]


def write_layouts(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
                  directories: Mapping[Layout, Path], software_version: str,
                  as_of: datetime | None = None,
                  created_at: datetime | None = None) -> dict[Layout, dict[str, int]]:
    """:func:`write_domains` in each layout of ``directories`` (layout -> its directory),
    the rows read and typed once for all of them; the rows of each file, by layout."""
    created = aware("created_at", created_at) or datetime.now(UTC)
    when = aware("as_of", as_of)
    provenance = Provenance(definition.study_id, created, when or created, software_version)
    for directory in directories.values():
        directory.mkdir(parents=True, exist_ok=True)
    counts: dict[Layout, dict[str, int]] = {layout: {} for layout in directories}
    with consistent_read(conn), tempfile.TemporaryDirectory(prefix="trialledger-sdtm-") as tmp:
        for domain in domains(conn, schema, definition, when):
            spool = _Spool.of(domain, Path(tmp) / f"{domain.name}.rows")
            for layout, directory in directories.items():
                path = directory / f"{domain.name.lower()}.{layout}"
                if layout == "xpt":
                    _write_xpt(domain, spool, path, created)
                else:
                    with path.open("wb") as out:
                        _write_json(domain, spool, provenance, out, ndjson=layout == "ndjson")
                counts[layout][path.name] = spool.records
            spool.path.unlink()
    return counts


@dataclass
class _Spool:
    """A domain's typed rows on disk (one JSON array per line), counted and measured."""

    path: Path
    records: int
    lengths: list[int]  # the longest text of each column, in UTF-8 bytes

    @classmethod
    def of(cls, domain: Domain, path: Path) -> _Spool:
        lengths = [0] * len(domain.columns)
        records = 0
        with path.open("wb") as out:
            for row in domain.rows:
                for n, value in enumerate(row):
                    if isinstance(value, str):
                        lengths[n] = max(lengths[n], len(value.encode()))
                out.write(orjson.dumps(row) + b"\n")
                records += 1
        return cls(path, records, lengths)

    def lines(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            yield from f


def _metadata(domain: Domain, spool: _Spool, provenance: Provenance) -> dict[str, Any]:
    """The Dataset-JSON 1.1 top-level attributes and columns of ``domain``."""
    return {
        "datasetJSONCreationDateTime": _timestamp(provenance.created_at),
        "datasetJSONVersion": VERSION,
        "fileOID": f"{ORIGINATOR}.{provenance.study}.{domain.name}."
                   f"{_timestamp(provenance.as_of)}",
        "dbLastModifiedDateTime": _timestamp(provenance.as_of),
        "originator": ORIGINATOR,
        "sourceSystem": {"name": ORIGINATOR, "version": provenance.software_version},
        "studyOID": provenance.study,
        "metaDataVersionOID": MDV_OID,
        "itemGroupOID": f"IG.{domain.name}",
        "records": spool.records,
        "name": domain.name,
        "label": domain.label,
        "columns": [_column(domain.name, column, length)
                    for column, length in zip(domain.columns, spool.lengths, strict=True)],
    }


def _column(domain: str, column: Column, length: int) -> dict[str, Any]:
    out: dict[str, Any] = {"itemOID": f"IT.{domain}.{column.name}", "name": column.name,
                           "label": column.label, "dataType": column.data_type}
    if column.data_type == "string":
        out["length"] = max(length, 1)
    if column.key_sequence is not None:
        out["keySequence"] = column.key_sequence
    return out


def _timestamp(when: datetime) -> str:
    # Seconds, in UTC with its offset: the schema's pattern, and no false precision.
    return when.astimezone(UTC).replace(microsecond=0).isoformat()


def _write_json(domain: Domain, spool: _Spool, provenance: Provenance, out: IO[bytes], *,
                ndjson: bool) -> None:
    metadata = orjson.dumps(_metadata(domain, spool, provenance))
    if ndjson:
        out.write(metadata + b"\n")
        for line in spool.lines():
            out.write(line)
        return
    # The metadata object, opened again for its rows: {..., "rows": [[...], [...]]}.
    out.write(metadata[:-1] + b',"rows":[')
    for n, line in enumerate(spool.lines()):
        out.write((b"," if n else b"") + line.rstrip(b"\n"))
    out.write(b"]}\n")


def _write_xpt(domain: Domain, spool: _Spool, path: Path, created: datetime) -> None:
    """The XPT file of ``domain``: its headers (each text variable as wide as its longest
    value), then every observation, streamed from the spool, so that memory stays flat
    however long the domain (a polars frame of a million lab results held a gigabyte)."""
    widths = [min(max(length, 1), XPT_TEXT_BYTES) for length in spool.lengths]
    numeric = [c.data_type != "string" for c in domain.columns]
    variables = [xport.Variable(c.name, c.label, is_number, width)
                 for c, is_number, width in zip(domain.columns, numeric, widths, strict=True)]
    record = sum(v.length for v in variables)
    written = 0
    with path.open("wb") as out:
        out.write(xport.headers(domain.name, domain.label, variables, created))
        for line in spool.lines():
            out.write(_xpt_record(orjson.loads(line), numeric, widths))
            written += record
        if written % xport.RECORD:
            out.write(b" " * (xport.RECORD - written % xport.RECORD))


def _xpt_record(row: list[Value], numeric: list[bool], widths: list[int]) -> bytes:
    parts = []
    for value, is_number, width in zip(row, numeric, widths, strict=True):
        if is_number:
            parts.append(xport.MISSING if value is None else xport.ibm_double(float(value)))
        else:
            parts.append(_xpt_text(value).encode().ljust(width, b" "))
    return b"".join(parts)


def _xpt_text(value: Value) -> str:
    text = "" if value is None else str(value)
    raw = text.encode()
    if len(raw) <= XPT_TEXT_BYTES:
        return text
    return raw[:XPT_TEXT_BYTES].decode(errors="ignore")
