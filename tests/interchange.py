"""Checks shared by the tests of the Dataset-JSON and XPT exports."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pyreadstat

STANDARD = Path(__file__).resolve().parents[2] / "shared" / "standards" / "dataset-json-1.1"


def dataset_json_schema(name: str = "dataset.schema.json") -> dict[str, Any]:
    """One of CDISC's Dataset-JSON 1.1 schemas (the NDJSON one is stored as UTF-16)."""
    raw = (STANDARD / name).read_bytes()
    encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8"
    loaded: dict[str, Any] = json.loads(raw.decode(encoding))
    return loaded


def valid_dataset_json(data: bytes) -> dict[str, Any]:
    """``data`` parsed, after validating it against the Dataset-JSON 1.1 schema."""
    document: dict[str, Any] = json.loads(data)
    jsonschema.validate(document, dataset_json_schema())
    assert document["records"] == len(document["rows"])
    return document


def plain(value: Any) -> Any:
    """A value as both files can hold it: XPT numbers are doubles, missing ones NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def assert_xpt_matches(path: Path, document: dict[str, Any]) -> None:
    """The XPT file at ``path`` holds the Dataset-JSON ``document``: its name, labels,
    variables and every value."""
    data, meta = pyreadstat.read_xport(str(path), output_format="dict")
    assert isinstance(data, dict)
    assert meta.table_name == document["name"] and meta.file_label == document["label"]
    assert meta.column_names == [c["name"] for c in document["columns"]]
    assert meta.column_labels == [c["label"] for c in document["columns"]]
    read = [[plain(data[name][n]) for name in meta.column_names]
            for n in range(meta.number_rows or 0)]
    assert read == [[plain(v) for v in row] for row in document["rows"]], document["name"]
