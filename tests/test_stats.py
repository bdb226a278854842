"""The report's statistics on constructed numbers: known intervals, known differences, and the
critical length of made-up outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlab import stats


def test_bootstrap_interval_of_a_large_normal_sample_matches_the_textbook_one():
    """For n = 400 draws of N(0, 1) the 95% interval for the mean is mean ± 1.96 σ/√n."""
    x = np.random.default_rng(1).normal(0.0, 1.0, 400)
    ci = stats.mean_ci(x)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert ci.mean == pytest.approx(x.mean())
    assert ci.low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert ci.high == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_small_samples_edge_cases_and_determinism():
    assert stats.mean_ci([0.5, 0.5, 0.5]) == stats.Interval(0.5, 0.5, 0.5, 3)
    one = stats.mean_ci([2.0, math.nan, math.inf])
    assert one.mean == 2.0 and one.n == 1 and math.isnan(one.low)
    assert stats.mean_ci([]).n == 0
    five = [0.1, 0.3, 0.2, 0.5, 0.4]
    assert stats.mean_ci(five) == stats.mean_ci(five), "a fixed seed: a report regenerates identically"
    ci = stats.mean_ci(five)
    assert min(five) <= ci.low < 0.3 < ci.high <= max(five)


def test_a_paired_difference_is_established_only_when_its_interval_excludes_zero():
    base = {s: v for s, v in enumerate([0.15, 0.17, 0.16, 0.18, 0.14])}
    shifted = {s: v - 0.1 for s, v in base.items()}  # every seed 0.1 lower: a sure difference
    d = stats.paired_difference(shifted, base)
    assert (d.mean, d.low, d.high, d.n) == pytest.approx((-0.1, -0.1, -0.1, 5))
    assert stats.verdict(d, "min", ("gru", "rnn")) == "gru better (established)"
    noisy = {s: v + (0.02 if s % 2 else -0.02) for s, v in base.items()}  # up on some seeds, down on others
    n = stats.paired_difference(noisy, base)
    assert n.low < 0 < n.high and stats.verdict(n, "min", ("a", "b")) == "not established"
    three = stats.paired_difference({s: shifted[s] for s in range(3)}, base)  # same sign on all three
    assert three.excludes_zero and not three.established
    assert stats.verdict(three, "min", ("gru", "rnn")) == "3 shared seeds: too few to establish (≥ 5)"
    only_one_shared = stats.paired_difference({0: 1.0, 1: 2.0}, {1: 0.0, 2: 0.0})
    assert stats.verdict(only_one_shared, "min", ("a", "b")) == "too few shared seeds"


def test_critical_length_is_the_longest_length_half_the_seeds_solve():
    outcomes = {25: [True] * 5, 50: [True, True, True, False, False], 100: [True, True, False, False, False],
                200: [False] * 5}
    assert stats.critical_length(outcomes) == 50
    assert stats.critical_length({25: [False, False], 50: [True, False]}) == 50, "half counts"
    assert stats.critical_length({25: [False] * 3}) is None
