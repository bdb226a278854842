"""The tuned report's figures: the expected best validation score against the number of
trials, and each arm's trials against its most important hyperparameter.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from rnnlab import figures
from rnnlab.report.tuning.arms import ArmResult, most_important, show
from rnnlab.tune.expected import expected_best


def plot_expected(arms: list[ArmResult], path: Path) -> str | None:
    plt = figures.pyplot()
    from matplotlib.ticker import MaxNLocator
    with_trials = [a for a in arms if a.trial_values]
    if not with_trials:
        return None
    lengths = sorted({a.seq_len for a in with_trials})
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.2 * len(lengths), 3.8), squeeze=False)
    for ax, T in zip(axes[0], lengths):
        for a in (a for a in with_trials if a.seq_len == T):
            mean, std = expected_best(a.trial_values, a.mode)
            n = np.arange(1, len(mean) + 1)
            color = _color(a.cell)
            ax.plot(n, mean, color=color, label=a.cell, marker="o", ms=3)
            ax.fill_between(n, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        ax.set(xlabel="trials (random search)", ylabel=f"expected best {with_trials[0].main_metric}",
               title=f"T = {T}: expected best of n trials (band: ± 1 sd)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return figures.save(fig, path)


def plot_importance(arms: list[ArmResult], path: Path) -> str | None:
    """Each arm's trials against its most important hyperparameter."""
    plt = figures.pyplot()
    shown = [a for a in arms if a.trials and a.importance]
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, a in zip(axes.flat, shown):
        key = most_important(a)
        xs = [t["params"].get(key) for t in a.trials]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        labels = sorted({show(x) for x in xs}) if not numeric else []
        x = np.array(xs, dtype=float) if numeric else np.array([labels.index(show(v)) for v in xs], dtype=float)
        y = np.array([t["value"] for t in a.trials], dtype=float)
        div = np.array([t["diverged"] for t in a.trials])
        ax.scatter(x[~div], y[~div], color=_color(a.cell), s=18)
        if div.any():
            ax.scatter(x[div], y[div], color="black", marker="x", s=22, label="diverged (worst value)")
            ax.legend(fontsize=7)
        if numeric and "log" in a.space.get(key, ""):
            ax.set_xscale("log")
            # labels at 1 and 3 of each decade, as numbers: matplotlib's own label every minor
            # tick of a range under a decade, which overlap in a panel this narrow
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
        ax.set(xlabel=key, ylabel=f"{a.main_metric} (best of the run)",
               title=f"{a.label}: {key} ({a.importance[key]:.2f})")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    return figures.save(fig, path)


def _color(cell: str) -> str:
    from rnnlab.report.figures import color  # matplotlib: only when drawing

    return color(cell)
