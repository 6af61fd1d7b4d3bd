"""The machine-readable figure lines every bench ends with, so runs can be compared:

    BENCH <name> value=<v> unit=<u> [baseline=<b> ratio=<r>] [p50_ms=<x> p99_ms=<y> ...]

``ratio`` is value / baseline, measured in the same run. Benches import this module as
``bench_lines`` (bench/ is a script's directory, hence on sys.path); ``parse`` reads a line
back, for comparisons run to run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_UNIT = re.compile(r"[A-Za-z0-9_/%.\-]+")
_PAIR = re.compile(r"([a-z0-9_]+)=(\S+)")


@dataclass(frozen=True)
class Figure:
    """One figure read back from a BENCH line."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


def bench_line(name: str, value: float, unit: str, baseline: float | None = None,
               **extra: float) -> str:
    """The BENCH line of one figure; with ``baseline``, its ratio (value / baseline)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a figure's name is letters, digits, '_', '.', '-': {name!r}")
    if not _UNIT.fullmatch(unit):
        raise ValueError(f"a unit has no spaces: {unit!r}")
    line = f"BENCH {name} value={value:.6g} unit={unit}"
    if baseline is not None:
        ratio = value / baseline if baseline else float("nan")
        line += f" baseline={baseline:.6g} ratio={ratio:.4g}"
    for key, number in extra.items():
        if key in ("value", "unit", "baseline", "ratio") or not re.fullmatch(r"[a-z0-9_]+", key):
            raise ValueError(f"not a name for an extra figure: {key!r}")
        line += f" {key}={number:.6g}"
    return line


def parse(line: str) -> Figure:
    """The figure of a BENCH line; ValueError when the line is not one."""
    head, _, rest = line.strip().partition(" ")
    name, _, rest = rest.partition(" ")
    if head != "BENCH" or not _NAME.fullmatch(name):
        raise ValueError(f"not a BENCH line: {line!r}")
    pairs: dict[str, str] = {}
    for part in rest.split():
        pair = _PAIR.fullmatch(part)
        if pair is None or pair[1] in pairs:
            raise ValueError(f"not a name=value pair (or a repeated one) in {line!r}: {part!r}")
        pairs[pair[1]] = pair[2]
    if "value" not in pairs or "unit" not in pairs:
        raise ValueError(f"a BENCH line needs value= and unit=: {line!r}")
    unit = pairs.pop("unit")
    value = float(pairs.pop("value"))
    baseline = float(pairs.pop("baseline")) if "baseline" in pairs else None
    ratio = float(pairs.pop("ratio")) if "ratio" in pairs else None
    return Figure(name, value, unit, baseline, ratio, {k: float(v) for k, v in pairs.items()})
