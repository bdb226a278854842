"""The report's statistics on constructed numbers: textbook intervals, Holm's adjustment on a
hand-checked family, the power figure against statsmodels, and the critical length of made-up
outcomes. The rule's error rate by simulation is tests/test_calibration.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from rnnlab import stats


def test_the_interval_is_the_textbook_t_interval():
    """mean ± t(0.975, n-1) s/√n, whatever n: 0.1 and 0.3 give 0.2 ± 12.706 x 0.1."""
    x = np.random.default_rng(1).normal(0.0, 1.0, 400)
    ci = stats.mean_ci(x)
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    assert (ci.mean, ci.low, ci.high) == pytest.approx((x.mean(), x.mean() - half, x.mean() + half), rel=1e-12)
    two = stats.mean_ci([0.1, 0.3])
    assert (two.low, two.high) == pytest.approx((0.2 - 1.27062047, 0.2 + 1.27062047), abs=1e-8)


def test_small_samples_edge_cases_and_determinism():
    same = stats.mean_ci([0.5, 0.5, 0.5])
    assert (same.mean, same.low, same.high, same.n, same.p) == (0.5, 0.5, 0.5, 3, 0.0), "no spread: a sure value"
    assert stats.mean_ci([0.0, 0.0]).p == 1.0, "no spread and no difference: nothing to establish"
    one = stats.mean_ci([2.0, math.nan, math.inf])
    assert one.mean == 2.0 and one.n == 1 and math.isnan(one.low) and not one.testable
    assert stats.mean_ci([]).n == 0
    five = [0.1, 0.3, 0.2, 0.5, 0.4]
    assert stats.mean_ci(five) == stats.mean_ci(five[::-1]), "the order of the seeds changes nothing"
    assert stats.mean_ci(five, reference=0.3).p == pytest.approx(1.0), "a mean equal to the reference"


def test_a_paired_difference_is_the_t_test_of_the_per_seed_differences():
    base = {s: v for s, v in enumerate([0.15, 0.17, 0.16, 0.18, 0.14])}
    shifted = {s: v - 0.1 + 0.01 * (s % 2) for s, v in base.items()}  # 0.09 or 0.1 lower on every seed
    d = stats.paired_difference(shifted, base)
    res = sps.ttest_rel([shifted[s] for s in range(5)], [base[s] for s in range(5)])
    assert (d.mean, d.p, d.n) == pytest.approx((-0.096, res.pvalue, 5))
    assert stats.verdict(d, d.p, "min", ("gru", "rnn")) == "gru better (established)"
    assert stats.verdict(d, d.p, "max", ("gru", "rnn")) == "rnn better (established)", "higher is better"
    assert stats.verdict(d, 0.2, "min", ("gru", "rnn")) == "not established", "the adjusted p decides"
    only_one_shared = stats.paired_difference({0: 1.0, 1: 2.0}, {1: 0.0, 2: 0.0})
    assert only_one_shared.n == 1 and stats.verdict(only_one_shared, math.nan, "min", ("a", "b")) == \
        "too few shared seeds"


def test_holm_on_a_hand_checked_family():
    """p = 0.01, 0.04, 0.03, 0.005 (m = 4): ranked 0.005, 0.01, 0.03, 0.04, Holm multiplies by
    4, 3, 2, 1 and keeps the running maximum: 0.02, 0.03, 0.06, 0.06."""
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    fam = stats.Family()
    diffs = {name: stats.Interval(0.1, 0.0, 0.2, 5, p) for name, p in
             (("a", 0.01), ("b", 0.04), ("c", 0.03), ("d", 0.005))}
    for name, d in diffs.items():  # first pass: gather, twice over (a table and a sentence)
        fam.record(fam.key(("cells",), (name, "z")), d)
        fam.record(fam.key(("cells",), ("z", name)), d)
    fam.record(("untestable",), stats.Interval(0.1, math.nan, math.nan, 1))
    assert fam.size == 4, "a comparison printed twice counts once; one that cannot be tested not at all"
    fam.close()
    adjusted = {name: fam.adjusted(fam.key(("cells",), (name, "z"))) for name in diffs}
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert [name for name in diffs if fam.established(fam.key(("cells",), (name, "z")))] == ["a", "d"]
    with pytest.raises(KeyError):  # the second pass must print no comparison the first did not gather
        fam.record(("new",), diffs["a"])


def test_the_seeds_needed_for_80_percent_power_agree_with_statsmodels():
    from statsmodels.stats.power import TTestPower

    for effect in (0.3, 0.8, 1.5):
        d = stats.Interval(effect * 0.02, 0.0, 0.0, 5, 0.5, 0.02)
        n = stats.seeds_for_power(d)
        assert n == math.ceil(TTestPower().solve_power(effect_size=effect, alpha=0.05, power=0.8))
        assert TTestPower().power(effect, n, 0.05) >= 0.8 > TTestPower().power(effect, n - 1, 0.05)
    assert stats.power_text(stats.Interval(1e-4, 0, 0, 5, 0.9, 1.0)) == "> 1,000"
    assert stats.power_text(stats.Interval(0.0, 0, 0, 5, 1.0, 0.0)) == "—"


def test_critical_length_is_the_longest_length_half_the_seeds_solve():
    outcomes = {25: [True] * 5, 50: [True, True, True, False, False], 100: [True, True, False, False, False],
                200: [False] * 5}
    assert stats.critical_length(outcomes) == 50
    assert stats.critical_length({25: [False, False], 50: [True, False]}) == 50, "half counts"
    assert stats.critical_length({25: [False] * 3}) is None
