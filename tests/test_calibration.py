"""The rule's promise, by simulation: with no true difference, rnnlab's verdict says
*established* at most 5% of the time (within Monte Carlo error) at 5 and 10 seeds, on normal
and on heavy-tailed differences. The simulation runs the same test as the report's own code
(checked study by study against ``stats.paired_difference``), and it does catch a rule that
breaks the promise: the percentile bootstrap that rnnlab used before. docs/calibration.md is
the full table (``python src/calibrate.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from rnnlab import calibration as cal

TRIALS = 20_000  # two Monte Carlo standard errors at 5%: 0.3 points


def test_the_simulated_rule_is_the_reports_rule():
    x = np.random.default_rng(0).standard_t(3, (400, 5)) + 1.2  # some established, some not
    decided = cal.paired_t(x)
    assert 0.2 < decided.mean() < 0.8 and (decided == cal.through_stats(x)).all()


@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize("shape", ["normal", "heavy-tailed (t, 3 d.o.f.)"])
def test_the_rule_calls_a_null_difference_established_at_most_5_percent_of_the_time(shape, n):
    cell = cal.rate(cal.CHOSEN, shape, n, 0.0, TRIALS)
    assert cell.rate <= 0.06, f"{cal.CHOSEN} on {shape} differences, n = {n}: {cell.rate:.3f}"
    if shape == "normal":
        assert cell.rate >= 0.04, "exact under normality: near 5%, not far below it"


def test_the_rule_finds_a_difference_of_two_standard_deviations_on_5_seeds():
    assert cal.rate(cal.CHOSEN, "normal", 5, 2.0, TRIALS).rate > 0.85


def test_the_simulation_catches_the_rule_it_replaced():
    old = cal.rate("percentile bootstrap (the old rule)", "normal", 5, 0.0, 1_000)
    assert old.rate > 0.1, "the percentile bootstrap's interval is too narrow at 5 seeds"


def test_five_seeds_cannot_reach_p_below_0_05_with_an_exact_sign_or_rank_test():
    """Every paired difference of one sign on 5 seeds: p = 2/32 = 0.0625, never established."""
    for candidate in ("sign-flip permutation (exact)", "Wilcoxon signed-rank (exact)"):
        assert cal.rate(candidate, "normal", 5, 3.0, 300).rate == 0.0


def test_holm_holds_the_family_wise_rate_that_no_correction_loses():
    rows = {c.correction: c for c in cal.family(m=30, true=0, effect=0.0, n=5, trials=1_000)}
    assert rows["none"].fwer > 0.5 and rows["Holm"].fwer <= 0.07
