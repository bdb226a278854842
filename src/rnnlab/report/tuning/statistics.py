"""The numbers behind the tuned report's verdicts: paired differences by seed, each verdict
recorded in the page's Holm family (:mod:`rnnlab.stats`), the rankings by mean, and which
hyperparameters mattered (PED-ANOVA).
"""

from __future__ import annotations

import math

import numpy as np

from rnnlab import stats
from rnnlab.report.tuning.arms import ArmResult


def importance(study) -> dict[str, float]:
    """PED-ANOVA (Watanabe et al. 2023) over the finished trials: how much each
    hyperparameter's distribution differs between the top trials and all of them."""
    import warnings

    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dict(get_param_importances(study, evaluator=PedAnovaImportanceEvaluator()))
        except (RuntimeError, ValueError):  # too few distinct trials to tell
            return {}


def paired(a: dict[int, float], b: dict[int, float]) -> stats.Interval:
    return stats.paired_difference({s: v for s, v in a.items() if math.isfinite(v)},
                                   {s: v for s, v in b.items() if math.isfinite(v)})


def verdict(d: stats.Interval, family: stats.Family, key: tuple, mode: str, names: tuple[str, str]) -> str:
    """The verdict with its adjusted p, and for one not established the seeds a follow-up needs."""
    family.record(key, d)
    p = family.adjusted(key)
    v = stats.verdict(d, p, mode, names)
    if v == "not established":
        return f"not established (p = {stats.fmt_p(p)}; 80% power: {stats.power_text(d)} seeds)"
    return v if d.n < stats.MIN_SEEDS else f"{v}, p = {stats.fmt_p(p)}"


def winner(text: str) -> str:
    """The better cell of an established verdict; \"none\" for any other."""
    return text.split()[0] if "(established)" in text else "none"


def ranking(arms: list[ArmResult], which: str) -> str:
    """``gru < rnn < lstm`` by mean test metric, best first, per length (and width)."""
    parts = []
    for T, variant in sorted(dict.fromkeys((a.seq_len, a.variant_text) for a in arms), key=lambda g: g[0]):
        at = [(np.nanmean(list(getattr(a, which).values())) if getattr(a, which) else math.nan, a.cell)
              for a in arms if a.seq_len == T and a.variant_text == variant]
        at = [x for x in at if math.isfinite(x[0])]
        reverse = arms[0].mode == "max"
        order = [c for _, c in sorted(at, reverse=reverse)]
        shown = (" > " if reverse else " < ").join(order) if order else "no finished runs yet"
        parts.append(f"T={T}{variant}: {shown}")
    return "; ".join(parts)
