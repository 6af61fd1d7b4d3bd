"""The outcome tables as a person reads them (rich tables) and as a spreadsheet does (CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from rich.table import Table

from domain.csv_cells import neutralised

STAT_KEYS = ("n", "mean", "sd", "median", "q1", "q3")
COUNT_KEYS = ("subjects", "denominator", "percent", "events", "serious_events", "increased",
              "decreased")
COMPARISON_KEYS = ("estimate", "ci_low", "ci_high", "level", "method")
COLUMNS = ("endpoint", "cell", "parameter", "timepoint", "arm", "unit", *STAT_KEYS,
           *COUNT_KEYS, *COMPARISON_KEYS)


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def rows(tables: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every row and comparison of every endpoint, with its endpoint's id."""
    for endpoint_id, endpoint in sorted(tables["endpoints"].items()):
        for row in endpoint["rows"]:
            yield {"endpoint": endpoint_id, **row}
        for row in endpoint["comparisons"]:
            yield {"endpoint": endpoint_id, "arm": row["arms"], **row}


def _row(writer: Any, cells: list[Any]) -> None:
    writer.writerow([neutralised(cell) for cell in cells])


def to_csv(tables: dict[str, Any]) -> str:
    """Long-format CSV: one line per cell (a summary, a count or a comparison)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    _row(writer, list(COLUMNS))
    for row in rows(tables):
        _row(writer, ["" if row.get(k) is None else row[k] for k in COLUMNS])
    return out.getvalue()


def to_rich(tables: dict[str, Any]) -> list[Table]:
    """One rich table per endpoint: its summaries, counts and comparisons."""
    out = []
    for endpoint_id, endpoint in sorted(tables["endpoints"].items()):
        table = Table(title=f"{tables['study_id']} · {endpoint['type']} · {endpoint['title']} "
                            f"({endpoint_id}) as of {tables['as_of'] or 'now'}"
                            + (f", valid at {tables['valid_at']}" if tables.get("valid_at")
                               else ""))
        for column in ("parameter", "time point", "arm", "unit", "n / subjects", "mean / %",
                       "SD / events", "median", "Q1", "Q3"):
            table.add_column(column)
        for row in endpoint["rows"]:
            if "n" in row:
                table.add_row(row["parameter"], row["timepoint"], row["arm"], row["unit"],
                              *(_fmt(row[k]) for k in STAT_KEYS))
            else:
                table.add_row(row["parameter"], row["timepoint"], row["arm"], "",
                              f"{row['subjects']}/{row['denominator']}", _fmt(row["percent"]),
                              _fmt(row.get("events")), "", "", "")
        for row in endpoint["comparisons"]:
            table.add_row(row["parameter"], row["timepoint"], row["arms"], row["method"],
                          "estimate", _fmt(row["estimate"]),
                          f"{row['level']:.0%} CI", _fmt(row["ci_low"]), _fmt(row["ci_high"]),
                          "")
        out.append(table)
    return out
