"""Summary statistics and the between-arm comparisons of the outcome tables.

- Summaries: n, mean, SD (n - 1), median, Q1 and Q3 (inclusive quantiles), 4 decimals.
- Location shift of a continuous value (doses, labs, scores): the Hodges-Lehmann estimate
  (the median of every test - reference difference) with the Moses distribution-free
  confidence interval (Hollander & Wolfe, large-sample form, as SAS PROC NPAR1WAY's
  ``HL`` gives it): the C-th smallest and C-th largest differences, with
  C = floor(mn/2 - z * sqrt(mn(m + n + 1)/12)), z the normal quantile from scipy.
- Difference in proportions: test - reference with Newcombe's hybrid score interval (method
  10 of Newcombe 1998), by statsmodels.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

DIGITS = 4


def _round(value: float) -> float:
    # -0.0 and 0.0 print differently: the stable JSON keeps one zero.
    return round(float(value), DIGITS) + 0.0


def summary(values: Iterable[float]) -> dict[str, Any]:
    """n, mean, SD, median, Q1, Q3 (None where undefined), rounded to 4 decimals."""
    data = sorted(float(v) for v in values)
    n = len(data)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "median": None, "q1": None, "q3": None}
    q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive") if n > 1 else (data[0],) * 3
    return {
        "n": n,
        "mean": _round(statistics.fmean(data)),
        "sd": _round(_sd(data)) if n > 1 else None,
        "median": _round(statistics.median(data)),
        "q1": _round(q1),
        "q3": _round(q3),
    }


def _sd(data: Sequence[float]) -> float:
    """The sample SD (n - 1) in floats: ``statistics.stdev`` sums exact fractions, the
    outcome tables' largest cost at thousands of subjects; fsum of the squared deviations
    from the mean agrees with it well past the 4 decimals shown."""
    mean = statistics.fmean(data)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in data) / (len(data) - 1))


# Order statistics of the m x n differences without making all of them: with both samples
# sorted (the reference descending) each test value's differences rise along its row, so how
# many lie below a value is found by bisecting every row at once, and only those between two
# values around a wanted rank (guessed from a grid of SIDE x SIDE of them) are made and put in
# order. A difference is made as the outer product makes it (x - y in floats), and rounding
# keeps each row's order, so the figures are those of sorting every difference.
SIDE = 96
MARGIN = 300  # positions in the grid's order either side of a rank's guess (3 %)
SMALL = 1 << 16  # fewer differences than this: all made and selected among


def _below(xs: Any, yr: Any, value: float, strict: bool) -> Any:
    """Per row i, how many of xs[i] - yr[j] (rising in j) are below ``value`` (or equal,
    unless ``strict``)."""
    import numpy as np  # see hodges_lehmann

    low = np.zeros(xs.size, np.int64)
    high = np.full(xs.size, yr.size, np.int64)
    while (active := low < high).any():
        middle = (low + high) // 2
        differences = xs - yr[np.minimum(middle, yr.size - 1)]
        under = differences < value if strict else differences <= value
        low = np.where(active & under, middle + 1, low)
        high = np.where(active & ~under, middle, high)
    return low


def _order_statistics(test: Sequence[float], reference: Sequence[float],
                      ranks: set[int]) -> dict[int, float]:
    """The values of ``ranks`` (0-based) of every test - reference difference, had they been
    sorted. Selecting among all of them, the tables' largest cost at a thousand subjects an
    arm, takes several times as long."""
    import numpy as np  # see hodges_lehmann

    xs = np.sort(np.asarray(test, float))
    yr = np.sort(np.asarray(reference, float))[::-1]
    size = xs.size * yr.size
    if size < SMALL:
        ordered = np.partition(np.subtract.outer(xs, yr).ravel(), sorted(ranks))
        return {rank: float(ordered[rank]) for rank in ranks}
    # Every stride-th value from the middle of the first stride: each stands for the stride
    # around it (a grid from the first would leave each sample's top stride out).
    step_x, step_y = max(1, xs.size // SIDE), max(1, yr.size // SIDE)
    grid = np.sort(np.subtract.outer(xs[step_x // 2::step_x], yr[step_y // 2::step_y]).ravel())
    # Ranks whose guesses are near share one look (the two middle ones do).
    groups: list[list[int]] = []
    for rank in sorted(ranks):
        if groups and (rank - groups[-1][-1]) * grid.size < MARGIN * size:
            groups[-1].append(rank)
        else:
            groups.append([rank])
    found = {}
    for group in groups:
        first = group[0] * grid.size // size - MARGIN
        last = group[-1] * grid.size // size + MARGIN
        starts = _below(xs, yr, grid[first] if first >= 0 else -np.inf, strict=True)
        ends = _below(xs, yr, grid[last] if last < grid.size else np.inf, strict=False)
        below, counts = int(starts.sum()), ends - starts
        if not (below <= group[0] and group[-1] < below + int(counts.sum())):
            # The grid misled (never seen): select among all of them.
            ordered = np.partition(np.subtract.outer(xs, yr).ravel(), group)
            found.update({rank: float(ordered[rank]) for rank in group})
            continue
        rows = np.repeat(np.arange(xs.size), counts)
        columns = (np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
                   + np.repeat(starts, counts))
        ordered = np.partition(xs[rows] - yr[columns], [rank - below for rank in group])
        found.update({rank: float(ordered[rank - below]) for rank in group})
    return found


def hodges_lehmann(test: Sequence[float], reference: Sequence[float],
                   level: float = 0.95) -> dict[str, Any]:
    """The Hodges-Lehmann shift (test - reference) with its Moses confidence interval
    (None where the samples are too small for one)."""
    out: dict[str, Any] = {"method": "Hodges-Lehmann shift, Moses confidence interval",
                           "estimate": None, "ci_low": None, "ci_high": None,
                           "level": level}
    if not test or not reference:
        return out
    # Imported when first needed: numpy, scipy and statsmodels add 170 MB to every process
    # that imports the outcome engine (an export, its workers), and most never compare arms.
    import numpy as np
    from scipy import stats as scipy_stats

    m, n = len(test), len(reference)
    z = float(scipy_stats.norm.ppf(1 - (1 - level) / 2))
    c = math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12))
    middle = sorted({(m * n - 1) // 2, m * n // 2})
    selected = _order_statistics(test, reference,
                                 {*middle, *((c - 1, m * n - c) if c >= 1 else ())})
    out["estimate"] = _round(float(np.mean(np.array([selected[r] for r in middle]))))
    if c >= 1:
        out["ci_low"] = _round(selected[c - 1])
        out["ci_high"] = _round(selected[m * n - c])
    return out


def newcombe(test_count: int, test_n: int, reference_count: int, reference_n: int,
             level: float = 0.95) -> dict[str, Any]:
    """test - reference proportion with Newcombe's hybrid score confidence interval."""
    out: dict[str, Any] = {"method": "difference in proportions, Newcombe hybrid score "
                                     "interval", "estimate": None, "ci_low": None,
                           "ci_high": None, "level": level}
    if not test_n or not reference_n:
        return out
    from statsmodels.stats.proportion import confint_proportions_2indep  # see hodges_lehmann

    low, high = confint_proportions_2indep(test_count, test_n, reference_count, reference_n,
                                           method="newcomb", compare="diff",
                                           alpha=1 - level)
    out["estimate"] = _round(test_count / test_n - reference_count / reference_n)
    out["ci_low"] = _round(low)
    out["ci_high"] = _round(high)
    return out
