"""The between-arm comparisons of the outcome tables, against published worked examples."""

from __future__ import annotations

import math
import random

import numpy as np
from scipy.stats import norm

from projections.outcomes.statistics import hodges_lehmann, newcombe, summary


def test_hodges_lehmann_with_moses_interval_matches_hollander_and_wolfe() -> None:
    # Hollander & Wolfe, Nonparametric Statistical Methods, two-sample location problem
    # (the "chicken" data); as published by SAS PROC NPAR1WAY HL for it in the PHUSE CAMIS
    # comparison (psiaims.github.io/CAMIS, "Non-parametric point estimation"): location
    # shift A - B 0.5600, asymptotic (Moses) 95 % limits -0.3700 and 1.1830.
    a = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
    b = [0.878, 0.647, 0.598, 2.050, 1.060, 1.290, 1.060, 3.140, 1.290]
    result = hodges_lehmann(a, b)
    assert (result["estimate"], result["ci_low"], result["ci_high"]) == (0.56, -0.37, 1.183)
    # The shift is antisymmetric: B - A mirrors it.
    mirrored = hodges_lehmann(b, a)
    assert (mirrored["estimate"], mirrored["ci_low"], mirrored["ci_high"]) == (
        -0.56, -1.183, 0.37)


def test_hodges_lehmann_of_samples_too_small_for_an_interval_gives_the_estimate_only() -> None:
    result = hodges_lehmann([1.0, 2.0], [0.5])
    assert result["estimate"] == 1.0
    assert result["ci_low"] is None and result["ci_high"] is None
    assert hodges_lehmann([], [1.0])["estimate"] is None


def test_hodges_lehmann_of_arms_of_a_thousand_reads_the_sorted_differences() -> None:
    # Arms this large select their order statistics among the differences near a sample's
    # guess: the figures must be those of sorting every difference, ties and tails included.
    rng = random.Random(5)
    for make in (lambda: rng.gauss(0, 1), lambda: round(rng.uniform(-1, 1), 1),
                 lambda: rng.choice([0.0, 1.0, 2.5]), lambda: rng.expovariate(0.01)):
        test = [make() for _ in range(900 + rng.randrange(300))]
        reference = [make() for _ in range(900 + rng.randrange(300))]
        m, n = len(test), len(reference)
        ordered = np.sort(np.subtract.outer(np.asarray(test), np.asarray(reference)).ravel())
        c = math.floor(m * n / 2 - norm.ppf(0.975) * math.sqrt(m * n * (m + n + 1) / 12))
        middle = sorted({(m * n - 1) // 2, m * n // 2})
        result = hodges_lehmann(test, reference)
        assert (result["estimate"], result["ci_low"], result["ci_high"]) == (
            round(float(np.mean(ordered[middle])), 4) + 0.0,
            round(float(ordered[c - 1]), 4) + 0.0, round(float(ordered[m * n - c]), 4) + 0.0)


def test_newcombe_interval_matches_newcombe_1998() -> None:
    # Newcombe RG. Interval estimation for the difference between independent proportions:
    # comparison of eleven methods. Stat Med 1998;17:873-890, method 10 (hybrid score, no
    # continuity correction), examples (a) 56/70 - 48/80 and (b) 9/10 - 3/10.
    a = newcombe(56, 70, 48, 80)
    assert (a["estimate"], a["ci_low"], a["ci_high"]) == (0.2, 0.0524, 0.3339)
    b = newcombe(9, 10, 3, 10)
    assert (b["estimate"], b["ci_low"], b["ci_high"]) == (0.6, 0.1705, 0.809)
    assert newcombe(1, 0, 1, 3)["estimate"] is None  # an empty arm has no proportion


def test_summary_uses_inclusive_quartiles_and_one_zero() -> None:
    assert summary([1, 2, 3, 4]) == {"n": 4, "mean": 2.5, "sd": 1.291, "median": 2.5,
                                     "q1": 1.75, "q3": 3.25}
    assert str(summary([-0.00001])["mean"]) == "0.0"
    assert summary([])["mean"] is None
