"""The tuned report's figures: the expected best validation score against the number of
trials, each arm's trials against its most important hyperparameter, and (where a cell ran at
several widths) the test metric against the state size, Zoology's figure. ``name``: the
problem a figure draws, on a page of several (:mod:`~rnnlab.report.tuning.problems`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from rnnlab import figures
from rnnlab.report.tuning.arms import ArmResult, most_important, show
from rnnlab.report.tuning.problems import Problem
from rnnlab.runs import metric_name
from rnnlab.tune.expected import expected_best

STYLES = ("-", "--", ":", "-.")  # the widths of a cell, in the expected-best figure


def plot_expected(arms: list[ArmResult], path: Path, name: str = "") -> str | None:
    plt = figures.pyplot()
    from matplotlib.ticker import MaxNLocator
    with_trials = [a for a in arms if a.trial_values]
    if not with_trials:
        return None
    lengths = sorted({a.seq_len for a in with_trials})
    variants = list(dict.fromkeys(a.variant_text for a in with_trials))
    search = "grid" if all(a.fixed.get("tune.sampler") == "grid" for a in with_trials) else "random search"
    fig, axes = plt.subplots(1, len(lengths), figsize=(5.2 * len(lengths), 3.8), squeeze=False)
    for ax, T in zip(axes[0], lengths):
        for a in (a for a in with_trials if a.seq_len == T):
            mean, std = expected_best(a.trial_values, a.mode)
            n = np.arange(1, len(mean) + 1)
            color = _color(a.cell)
            # a cell at several widths: one colour, a line style per width
            style = STYLES[variants.index(a.variant_text) % len(STYLES)]
            ax.plot(n, mean, color=color, ls=style, label=a.cell + a.variant_text, marker="o", ms=3)
            ax.fill_between(n, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        ax.set(xlabel=f"trials ({search})", ylabel=f"expected best {with_trials[0].main_metric}",
               title=f"{name + ', ' if name else ''}T = {T}: expected best of n trials (band: ± 1 sd)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return figures.save(fig, path)


def plot_importance(arms: list[ArmResult], path: Path, name: str = "") -> str | None:
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
               title=f"{name + ', ' if name else ''}{a.label}" + ("\n" if name or a.variant else ": ")
               + f"{key} ({a.importance[key]:.2f})")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    return figures.save(fig, path)


def plot_state_size(problems: list[Problem], path: Path) -> str | None:
    """The test metric of the re-seed runs against ``model/state_size``: the sweep report's
    figure (:func:`rnnlab.report.figures.plot_metric_vs_state_size`) drawn from the arms, a
    panel per problem and length where a cell ran at several state sizes (widths), a line per
    cell over them, attention marked as the ceiling; None where no cell did."""
    import pandas as pd

    from rnnlab.report.figures import plot_metric_vs_state_size
    from rnnlab.report.taskinfo import TaskInfo

    rows = [{"task": p.name, "cell": a.cell, "seq_len": a.seq_len, "state_size": a.state_size, "distance": None,
             "outcome": "finished", p.metric: value, f"baseline/{metric_name(p.metric)}": a.baseline}
            for p in problems for a in p.arms if a.state_size is not None
            for value in a.tuned.values() if math.isfinite(value)]
    info = {p.name: TaskInfo(p.name, p.metric, p.mode) for p in problems}
    drawn = plot_metric_vs_state_size(pd.DataFrame(rows), path, info=lambda name: info[name]) if rows else None
    return str(drawn) if drawn else None


def _color(cell: str) -> str:
    from rnnlab.report.figures import color  # matplotlib: only when drawing

    return color(cell)
