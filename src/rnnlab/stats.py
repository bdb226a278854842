"""The statistics a comparison of a few seeds can support, from ``scipy.stats``.

With 2 to 10 seeds a mean ± std says little; what a reader needs is an interval for the mean
and, between two cells run on the same seeds, an interval for their paired difference. Both
are percentile bootstrap intervals (``scipy.stats.bootstrap``, 9,999 resamples, a fixed seed
so that a report regenerates identically). A difference is called *established* when its
95% interval excludes 0 and it rests on at least ``MIN_SEEDS`` seeds, and nothing else is
claimed. The floor is there because a percentile bootstrap of a few values is too narrow: with
3 seeds it excludes 0 whenever the three differences share a sign, which happens 1 time in 4
by chance alone; with 5, 1 time in 16.

The long-range headline is the *critical length*: the largest sequence length that at least
half the seeds solve within the budget (val/skill >= the threshold, see ``steps_to_solve``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9_999
SEED = 0
MIN_SEEDS = 5  # the fewest seeds on which anything is called established (the study presets run 5)
METHOD = "95% percentile bootstrap over seeds (scipy.stats.bootstrap, 9,999 resamples)"


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    @property
    def established(self) -> bool:
        """The interval excludes 0 and rests on enough seeds to mean it (``MIN_SEEDS``)."""
        return self.excludes_zero and self.n >= MIN_SEEDS


def mean_ci(values: Iterable[float]) -> Interval:
    """The mean of the finite values and its bootstrap interval (NaN bounds for one value)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if len(v) == 1:
        return Interval(mean, math.nan, math.nan, 1)
    if np.all(v == v[0]):  # no spread to resample
        return Interval(mean, mean, mean, len(v))
    res = stats.bootstrap((v,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                          method="percentile", rng=np.random.default_rng(SEED))
    return Interval(mean, float(res.confidence_interval.low), float(res.confidence_interval.high), len(v))


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Interval:
    """``a - b`` over the seeds both have (a seed fixes data order and init for both cells)."""
    seeds = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in seeds])


def verdict(diff: Interval, better: str, names: tuple[str, str]) -> str:
    """One word on a difference ``names[0] - names[1]``; ``better`` is ``min`` or ``max``."""
    if diff.n < 2 or math.isnan(diff.low):
        return "too few shared seeds"
    if diff.n < MIN_SEEDS:
        return f"{diff.n} shared seeds: too few to establish (≥ {MIN_SEEDS})"
    if not diff.excludes_zero:
        return "not established"
    first_wins = (diff.mean < 0) == (better == "min")
    return f"{names[0] if first_wins else names[1]} better (established)"


def critical_length(solved: Mapping[int, Iterable[bool]]) -> int | None:
    """The largest length whose seeds solve the task at least half of the time, or None.
    ``solved``: length -> one bool per seed."""
    ok = [T for T, outcomes in solved.items() if (o := list(outcomes)) and sum(o) >= len(o) / 2]
    return max(ok) if ok else None
