"""How often each candidate rule calls a difference *established*, measured by simulation.

A study compares cells on 3 to 10 seeds. The rule that turns those paired differences into a
verdict must keep its promise at that n: with no true difference, "established" at most 5% of
the time. This module draws paired differences with a known mean (0: the false-positive rate;
0.5, 1 or 2 standard deviations: the power) from three shapes: normal, heavy-tailed (Student t
with 3 degrees of freedom) and skewed (a lognormal minus its mean), each scaled to unit
variance. It asks each candidate whether the difference is established at the two-sided 5%
level:

* ``percentile bootstrap``: the 95% percentile interval excludes 0 (rnnlab's rule before the
  calibration, 9,999 resamples as it used);
* ``BCa bootstrap``: the same with scipy's bias-corrected and accelerated interval;
* ``paired t-test``: the test of :func:`rnnlab.stats.paired_difference`, vectorised (the
  decisions are the same as through ``rnnlab.stats``, study by study: a test checks it);
* ``sign-flip permutation``: the exact permutation test of the mean under sign flips;
* ``Wilcoxon signed-rank``: the exact signed-rank test.

and, for a page of comparisons, how often *any* null comparison is established (the
family-wise error rate) with no correction, with Holm's and with Benjamini-Hochberg's, and the
power each leaves. ``python src/calibrate.py`` regenerates ``docs/calibration.md``.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from rnnlab import stats

ALPHA = stats.ALPHA


def normal(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.standard_normal(size)


def heavy_tailed(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.standard_t(3, size) / math.sqrt(3.0)  # t(3) has variance 3


def lognormal(sigma: float) -> Callable[[np.random.Generator, tuple[int, int]], np.ndarray]:
    """A lognormal(0, sigma) minus its mean, scaled to unit variance: skewness 1.75 at sigma
    0.5, 6.2 at sigma 1 (most seeds a little below the mean, a rare one far above it)."""
    mean, var = math.exp(sigma**2 / 2), (math.exp(sigma**2) - 1) * math.exp(sigma**2)

    def draw(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
        return (rng.lognormal(0.0, sigma, size) - mean) / math.sqrt(var)

    return draw


SHAPES: dict[str, Callable[[np.random.Generator, tuple[int, int]], np.ndarray]] = {
    "normal": normal, "heavy-tailed (t, 3 d.o.f.)": heavy_tailed,
    "skewed, mildly (lognormal σ = 0.5 − mean)": lognormal(0.5),
    "skewed, strongly (lognormal σ = 1 − mean)": lognormal(1.0)}


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis)


def percentile_bootstrap(x: np.ndarray) -> np.ndarray:
    return _bootstrap(x, "percentile")


def bca_bootstrap(x: np.ndarray) -> np.ndarray:
    return _bootstrap(x, "BCa")


def _bootstrap(x: np.ndarray, method: str) -> np.ndarray:
    res = sps.bootstrap((x,), _mean, axis=-1, vectorized=True, method=method, n_resamples=9_999,
                        confidence_level=0.95, rng=np.random.default_rng(0), batch=200)
    low, high = res.confidence_interval
    return (low > 0) | (high < 0)


def paired_t(x: np.ndarray) -> np.ndarray:
    """The paired t-test, vectorised over studies: the test ``rnnlab.stats`` runs one study at a
    time (:func:`through_stats` gives the same decisions, and tests/test_calibration.py checks it)."""
    return np.asarray(sps.ttest_1samp(x, 0.0, axis=-1).pvalue) < ALPHA


def through_stats(x: np.ndarray) -> np.ndarray:
    """rnnlab's verdict on each study, through ``rnnlab.stats`` itself (a family of one)."""
    ps = [stats.paired_difference(dict(enumerate(row)), dict.fromkeys(range(len(row)), 0.0)).p for row in x]
    return np.asarray(ps) < ALPHA


def sign_flip(x: np.ndarray) -> np.ndarray:
    res = sps.permutation_test((x,), _mean, permutation_type="samples", vectorized=True, axis=-1,
                               n_resamples=np.inf, alternative="two-sided")
    return np.asarray(res.pvalue) < ALPHA


def wilcoxon(x: np.ndarray) -> np.ndarray:
    return np.asarray(sps.wilcoxon(x, axis=-1, method="exact").pvalue) < ALPHA


CANDIDATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "percentile bootstrap (the old rule)": percentile_bootstrap, "BCa bootstrap": bca_bootstrap,
    "paired t-test (the rule)": paired_t, "sign-flip permutation (exact)": sign_flip,
    "Wilcoxon signed-rank (exact)": wilcoxon}
CHOSEN = "paired t-test (the rule)"


@dataclass(frozen=True)
class Cell:
    candidate: str
    shape: str
    n: int
    effect: float  # the true mean difference in standard deviations
    rate: float  # the share of trials called established
    trials: int

    @property
    def error(self) -> float:
        """Two Monte Carlo standard errors of ``rate``."""
        return 2 * math.sqrt(max(self.rate * (1 - self.rate), 1e-12) / self.trials)


def rate(candidate: str, shape: str, n: int, effect: float, trials: int, seed: int = 0) -> Cell:
    """The share of ``trials`` simulated studies of ``n`` seeds whose difference ``candidate``
    calls established. The draws depend only on (shape, n, effect, seed), so every candidate
    sees the same data."""
    rng = np.random.default_rng([seed, n, round(effect * 1000), list(SHAPES).index(shape)])
    x = SHAPES[shape](rng, (trials, n)) + effect
    return Cell(candidate, shape, n, effect, float(np.mean(CANDIDATES[candidate](x))), trials)


@contextmanager
def _no_gc_collect() -> Iterator[None]:
    """statsmodels' Holm branch calls ``gc.collect()`` on every call (0.1 s each in a large
    process): harmless once per report, thousands of seconds in a simulation of thousands of
    pages. The calls do nothing while this holds; the adjustment itself is statsmodels'."""
    collect = gc.collect
    gc.collect = lambda *args, **kwargs: 0
    try:
        yield
    finally:
        gc.collect = collect


@dataclass(frozen=True)
class FamilyCell:
    correction: str
    fwer: float  # P(any null comparison established)
    power: float  # the mean share of true differences established
    trials: int


def family(m: int, true: int, effect: float, n: int, trials: int, seed: int = 0) -> list[FamilyCell]:
    """A page of ``m`` paired comparisons on ``n`` normal seeds, ``true`` of them with a real
    difference of ``effect`` sd: the family-wise error rate and the power, uncorrected, Holm and
    Benjamini-Hochberg (``statsmodels.stats.multitest``)."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng([seed, m, true, n, round(effect * 1000)])
    x = rng.standard_normal((trials, m, n))
    x[:, :true] += effect
    p = sps.ttest_1samp(x, 0.0, axis=-1).pvalue
    out = []
    for name, method in (("none", None), ("Holm", "holm"), ("Benjamini-Hochberg", "fdr_bh")):
        with _no_gc_collect():
            rejected = p < ALPHA if method is None else np.array([multipletests(row, ALPHA, method)[0] for row in p])
        fwer = float(np.mean(rejected[:, true:].any(axis=1)))
        power = float(np.mean(rejected[:, :true])) if true else math.nan
        out.append(FamilyCell(name, fwer, power, trials))
    return out
