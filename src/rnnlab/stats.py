"""The statistics a comparison of a few seeds can support, chosen by measurement.

With 2 to 10 seeds a mean ± std says little; what a reader needs is an interval for the mean
and, between two cells run on the same seeds, a test of their paired difference. The rule,
chosen by the calibration in :mod:`rnnlab.calibration` (``docs/statistics.md`` shows its
table and the command that regenerates it):

* **intervals** are Student-t intervals (``scipy.stats.ttest_1samp``): exact for normal
  values at any n, slightly conservative for heavy tails. The percentile bootstrap this
  module used before is too narrow at small n: its 95% interval of 5 paired differences with
  no true effect excluded 0 about 17% of the time;
* **a difference** is tested with the paired t-test (the one-sample t-test of the per-seed
  differences; against a constant such as a task's baseline, the one-sample t-test of the
  values). At 5 seeds its false-positive rate stays at 5% on normal and heavy-tailed
  differences. The exact sign-flip and Wilcoxon tests cannot go below p = 2/32 with 5 seeds;
* **a report is a family**: every p-value a page prints is adjusted together by Holm's
  step-down method (``statsmodels.stats.multitest.multipletests``), which bounds the chance
  that *any* verdict of the page is a false positive by 5%: a reader may quote one verdict
  out of a page of a hundred. See :class:`Family`;
* a difference is **established** when its Holm-adjusted p is below ``ALPHA``. One that is
  not shows the seeds a follow-up would need to detect the observed difference with 80%
  power (``statsmodels.stats.power.TTestPower``, the observed effect taken as true).

The long-range headline is the *critical length*: the largest sequence length that at least
half the seeds solve within the budget (val/skill >= the threshold, see ``steps_to_solve``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # a verdict's Holm-adjusted p must be below this to establish it
POWER = 0.8  # the power the "seeds needed" figure aims at
MIN_SEEDS = 2  # the fewest shared seeds a t-test can use (its size holds at any n; its power does not)
POWER_CAP = 1_000  # beyond this many seeds the figure says "more than 1,000"
METHOD = "95% Student-t interval over seeds"
TEST = ("t-test (paired over the seeds both finished; one-sample against a baseline), Holm-adjusted across "
        "every comparison of the page")


@dataclass(frozen=True)
class Interval:
    """A mean (or a mean difference) over seeds with its 95% t-interval; ``p`` is the two-sided
    p of the t-test that the mean equals the reference (0 for a difference), ``sd`` the
    sample standard deviation the interval rests on."""

    mean: float
    low: float
    high: float
    n: int
    p: float = math.nan
    sd: float = math.nan

    @property
    def testable(self) -> bool:
        return self.n >= MIN_SEEDS and math.isfinite(self.p)


def _finite(values: Iterable[float]) -> np.ndarray:
    """The finite values, sorted: a sum in one order, so that the seeds' order cannot move a last digit."""
    return np.sort(np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float))


def mean_ci(values: Iterable[float], reference: float = 0.0) -> Interval:
    """The mean of the finite values, its t-interval, and the t-test of mean = ``reference``
    (NaN bounds and p for one value)."""
    v = _finite(values)
    if len(v) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if len(v) == 1:
        return Interval(mean, math.nan, math.nan, 1)
    sd = float(v.std(ddof=1))
    if sd == 0 or sd <= 1e-12 * max(abs(mean), abs(reference), 1e-300):  # no spread: the t statistic is ±inf or 0/0
        p = 1.0 if mean == reference else 0.0
        return Interval(mean, mean, mean, len(v), p, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns of near-identical values
        res = stats.ttest_1samp(v, reference)
    ci = res.confidence_interval(CONFIDENCE)
    return Interval(mean, float(ci.low) + 0.0, float(ci.high) + 0.0, len(v), float(res.pvalue), sd)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """``a - b`` over the seeds both have (a seed fixes data order and init for both cells),
    with the paired t-test of a zero mean difference."""
    seeds = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in seeds])


def seeds_for_power(d: Interval, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """How many seeds a follow-up testing this difference alone (paired t, two-sided, level
    ``alpha``) needs to detect it with ``power``, taking the observed mean/sd as the true
    effect; None when there is no effect to size (no spread, one seed) or it needs more than
    ``POWER_CAP``. An optimistic figure: the observed effect of a few seeds is noisy."""
    if d.n < 2 or not math.isfinite(d.sd) or d.sd == 0 or d.mean == 0:
        return None
    from statsmodels.stats.power import TTestPower

    effect = abs(d.mean) / d.sd
    nobs = np.arange(2, POWER_CAP + 1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        reached = np.asarray(TTestPower().power(effect_size=effect, nobs=nobs, alpha=alpha)) >= power
    # scipy's noncentral t loses precision (NaN) for effects of tens of sd at the smallest n,
    # where the power is near 1: such n count as reached once a larger n is
    return int(nobs[reached.argmax()]) if reached.any() else None


def power_text(d: Interval) -> str:
    n = seeds_for_power(d)
    if n is not None:
        return str(n)
    return "—" if d.n < 2 or not math.isfinite(d.sd) or d.sd == 0 or d.mean == 0 else f"> {POWER_CAP:,}"


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm's step-down adjustment (``statsmodels``), which bounds the family-wise error rate."""
    from statsmodels.stats.multitest import multipletests

    p = list(pvalues)
    if not p:
        return []
    return [float(x) for x in multipletests(p, alpha=ALPHA, method="holm")[1]]


class Family:
    """Every comparison one page makes, adjusted together (Holm).

    A page is rendered twice: the first pass records each test under a key (what is compared,
    where), :meth:`close` adjusts them all, and the second pass reads the adjusted p-values. So
    the family is exactly the set of verdicts the page prints, whatever table or sentence
    prints them, and a comparison printed twice (a table row and an observation) counts once.
    A key names the comparison without its direction (:meth:`key`), since the p-value has none.
    """

    def __init__(self) -> None:
        self._p: dict[Hashable, float] = {}
        self._adjusted: dict[Hashable, float] | None = None

    @staticmethod
    def key(context: tuple, names: tuple[str, str]) -> tuple:
        return (*context, tuple(sorted(names)))

    def record(self, key: Hashable, d: Interval) -> None:
        if self._adjusted is not None:
            if d.testable and key not in self._adjusted:
                raise KeyError(f"{key} was not among the comparisons recorded before the family closed")
            return
        if d.testable:
            self._p.setdefault(key, d.p)

    def close(self) -> None:
        keys = list(self._p)
        self._adjusted = dict(zip(keys, holm(self._p[k] for k in keys)))

    @property
    def size(self) -> int:
        return len(self._p)

    def adjusted(self, key: Hashable) -> float:
        """The Holm-adjusted p of a recorded comparison; NaN before :meth:`close` or untested."""
        if self._adjusted is None:
            return math.nan
        return self._adjusted.get(key, math.nan)

    def established(self, key: Hashable) -> bool:
        return self.adjusted(key) < ALPHA


def fmt_p(p: float) -> str:
    """``0.003``, ``< 0.001``, ``1`` (Holm caps at 1); an em dash when there is none."""
    if not math.isfinite(p):
        return "—"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}".rstrip("0").rstrip(".") if p < 1 else "1"


def verdict(diff: Interval, p_adjusted: float, better: str, names: tuple[str, str]) -> str:
    """One phrase on a difference ``names[0] - names[1]``; ``better`` is ``min`` or ``max``."""
    if diff.n < MIN_SEEDS:
        return "too few shared seeds"
    if not math.isfinite(p_adjusted) or p_adjusted >= ALPHA:
        return "not established"
    first_wins = (diff.mean < 0) == (better == "min")
    return f"{names[0] if first_wins else names[1]} better (established)"


def critical_length(solved: Mapping[int, Iterable[bool]]) -> int | None:
    """The largest length whose seeds solve the task at least half of the time, or None.
    ``solved``: length -> one bool per seed."""
    ok = [T for T, outcomes in solved.items() if (o := list(outcomes)) and sum(o) >= len(o) / 2]
    return max(ok) if ok else None
