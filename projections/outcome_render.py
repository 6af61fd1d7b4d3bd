"""The outcome tables as a person reads them (rich tables) and as a spreadsheet does (CSV)."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.table import Table

from domain.csv_cells import neutralised

STAT_KEYS = ("n", "mean", "sd", "median", "q1", "q3")
LABELS = {
    "steroid_prednisone_equivalent_mg_per_day": "steroid, prednisone-eq mg/day",
    "immunosuppressant_mg_per_m2_per_day": "immunosuppressant mg/m²/day",
}


def _fmt(value: Any) -> str:
    return "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))


def stat_rows(tables: dict[str, Any]) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """(section, measure, time point, arm, statistics) for every summary in the tables."""
    rows = []
    for measure, by_arm in tables["primary"].items():
        for arm, points in by_arm.items():
            for point, stat in points.items():
                rows.append(("primary", measure, point, arm, stat))
    for code, by_visit in tables["secondary"]["labs"].items():
        for visit, by_arm in by_visit.items():
            for arm, stat in by_arm.items():
                rows.append(("labs", code, visit, arm, stat))
    sledai = tables["secondary"]["sledai_total"]
    for visit, by_arm in sledai["by_visit"].items():
        for arm, stat in by_arm.items():
            rows.append(("sledai", "SLEDAI total", visit, arm, stat))
    for arm, stat in sledai["change_m12_minus_baseline"].items():
        rows.append(("sledai", "SLEDAI total", "change M12 - baseline", arm, stat))
    return rows


def _row(writer: Any, cells: list[Any]) -> None:
    writer.writerow([neutralised(cell) for cell in cells])


def to_csv(tables: dict[str, Any]) -> str:
    """Long-format CSV: one row per summary, then one per ESSDAI level and AE category."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    _row(writer, ["section", "measure", "timepoint", "arm", *STAT_KEYS, "subjects",
                     "percent", "events", "serious_events"])
    for section, measure, point, arm, stat in stat_rows(tables):
        _row(writer, [section, measure, point, arm, *(stat[k] for k in STAT_KEYS),
                         "", "", "", ""])
    for visit, by_arm in tables["secondary"]["essdai_levels"].items():
        for arm, levels in by_arm.items():
            for level, count in levels.items():
                _row(writer, ["essdai", f"ESSDAI {level}", visit, arm, count, "", "", "", "",
                                 "", "", "", "", ""])
    for category, by_arm in tables["adverse_events"].items():
        for arm, row in by_arm.items():
            _row(writer, ["adverse_events", category, "", arm, "", "", "", "", "", "",
                             row["subjects"], row["percent"], row["events"],
                             row["serious_events"]])
    return out.getvalue()


def to_rich(tables: dict[str, Any]) -> list[Table]:
    """Rich tables: summaries, ESSDAI levels, adverse events."""
    title = f"{tables['study_id']} outcomes as of {tables['as_of'] or 'now'}"
    summary = Table(title=title)
    for column in ("measure", "time point", "arm", *STAT_KEYS):
        summary.add_column(column, justify="left" if column in ("measure", "time point", "arm")
                           else "right")
    for section, measure, point, arm, stat in stat_rows(tables):
        if stat["n"]:
            summary.add_row(LABELS.get(measure, f"lab {measure}" if section == "labs" else measure),
                            point, arm,
                            *(_fmt(stat[k]) for k in STAT_KEYS))
    events = Table(title="Adverse events by category and arm")
    for column in ("category", "arm", "subjects", "%", "events", "serious"):
        events.add_column(column)
    for category, by_arm in tables["adverse_events"].items():
        for arm, row in by_arm.items():
            events.add_row(category, arm, str(row["subjects"]), _fmt(row["percent"]),
                           str(row["events"]), str(row["serious_events"]))
    levels = Table(title="ESSDAI activity levels (pSS)")
    for column in ("visit", "arm", "low", "moderate", "high"):
        levels.add_column(column)
    for visit, by_arm in tables["secondary"]["essdai_levels"].items():
        for arm, counts in by_arm.items():
            levels.add_row(visit, arm, *(str(counts[k]) for k in ("low", "moderate", "high")))
    return [summary, levels, events]
