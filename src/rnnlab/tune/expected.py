"""Expected best validation score against the number of trials (Dodge et al. 2019).

"Show Your Work" reports, for a budget of n trials, the expected best validation score a
researcher would have found had they run only n of the N random-search trials. Dodge et al.
draw the n with replacement from the N observed scores; Tang et al. (2020, "Showing Your Work
Doesn't Always Work") show that this is biased, since the n trials a researcher runs are n
distinct draws, and give the unbiased estimator: the mean, over all C(N, n) subsets of n
distinct trials, of the best score in the subset. With the scores sorted from worst to best,
v(1) <= ... <= v(N) for a score to maximise, the i-th is the best of a subset when the other
n - 1 come from the i - 1 below it:

    E[best of n] = sum_{i=n}^{N} C(i-1, n-1) / C(N, n) * v(i)

and the spread is the standard deviation of that same subset maximum. Both estimators are
here (``replacement=True`` for Dodge's); tests/test_tune.py checks each against brute-force
enumeration of the subsets (or tuples) it averages over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def expected_best(scores: Sequence[float], mode: str, replacement: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the best score among n trials, for n = 1..N; ``mode`` is ``max`` when a
    higher score is better (accuracy), ``min`` when lower is (a loss, bpc, MSE)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
    v = np.sort(np.asarray(scores, dtype=float))
    if mode == "min":
        v = -v[::-1]  # best last: the largest of the negated scores
    n_all = len(v)
    means, stds = np.empty(n_all), np.empty(n_all)
    for n in range(1, n_all + 1):
        w = _weights(n_all, n, replacement)
        mean = float(w @ v)
        means[n - 1] = mean
        stds[n - 1] = math.sqrt(max(float(w @ (v - mean) ** 2), 0.0))
    return (-means if mode == "min" else means), stds


def _weights(n_all: int, n: int, replacement: bool) -> np.ndarray:
    """P(the i-th worst of n_all scores is the best of n drawn), for i = 1..n_all."""
    i = np.arange(1, n_all + 1)
    if replacement:
        return (i / n_all) ** n - ((i - 1) / n_all) ** n
    total = math.comb(n_all, n)
    return np.array([math.comb(k - 1, n - 1) / total if k >= n else 0.0 for k in i])
