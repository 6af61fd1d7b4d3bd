"""The BENCH line format the benches print (bench/bench_lines.py): written, read back."""

from __future__ import annotations

import math

import pytest

from bench.bench_lines import bench_line, parse


def test_a_figure_with_baseline_and_latencies_reads_back() -> None:
    line = bench_line("http_writes", 812.5, "ev/s", 1000.0, p50_ms=12.25, p99_ms=48.0)
    assert line == ("BENCH http_writes value=812.5 unit=ev/s baseline=1000 ratio=0.8125 "
                    "p50_ms=12.25 p99_ms=48")
    figure = parse(line)
    assert (figure.name, figure.value, figure.unit) == ("http_writes", 812.5, "ev/s")
    assert figure.baseline == 1000.0 and figure.ratio == pytest.approx(0.8125)
    assert figure.extra == {"p50_ms": 12.25, "p99_ms": 48.0}


def test_a_figure_without_baseline_has_no_ratio() -> None:
    figure = parse(bench_line("casebook_pages", 9, "pages"))
    assert figure.baseline is None and figure.ratio is None and figure.value == 9


def test_a_zero_baseline_gives_nan_not_a_crash() -> None:
    assert math.isnan(parse(bench_line("x", 1.0, "s", 0.0)).ratio or 0.0)


@pytest.mark.parametrize("name, unit, extra", [
    ("two words", "s", {}), ("x", "ev / s", {}), ("x", "s", {"ratio": 1.0}),
    ("x", "s", {"P50": 1.0}),
])
def test_names_and_units_that_would_break_the_format_are_refused(
        name: str, unit: str, extra: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        bench_line(name, 1.0, unit, **extra)


@pytest.mark.parametrize("line", [
    "bench x value=1 unit=s", "BENCH x unit=s", "BENCH x value=1", "BENCH x value=1 unit=s junk",
    "BENCH x value=1 unit=s value=2", "BENCH x value=one unit=s",
])
def test_lines_that_are_not_bench_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse(line)
