"""The report's figures, apart from the rest of :mod:`rnnlab.report` so that its pandas steps
(loading, selecting, aggregating, the page) stay importable and testable without matplotlib, and
so that every figure is written the way the other artifacts are: through :mod:`rnnlab.figures`,
which alone picks the backend. :func:`rnnlab.report.build` imports this module when it draws; it
builds on the labels, frames and task info, never on the package itself.

Each ``plot_*`` takes the report's tidy frames and a path, and returns the path, or None when
the runs hold nothing to draw (the page then says so instead of linking a stale file).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, ScalarFormatter
from matplotlib.transforms import blended_transform_factory

from rnnlab import figures, stats
from rnnlab.cells import SPECS
from rnnlab.report.frames import COMPLETED, at_longest, baseline_columns, longest
from rnnlab.report.labels import base, cell_order, clip_order, length_label
from rnnlab.report.taskinfo import TaskInfo, task_info

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CELL_COLORS = {name: s.color for name, s in SPECS.items()}
VARIANT_COLORS = {"rnn": "tab:orange", "lstm": "tab:cyan", "gru": "tab:olive"}  # e.g. lstm (forget_bias=0)
DPI = 110  # the report's resolution, finer than figures.save's default: its figures are large grids
LineStyle = str | tuple[int, tuple[int, ...]]
CLIP_STYLES: list[LineStyle] = ["-", "-.", (0, (6, 2, 1, 2, 1, 2))]
UNCLIPPED_STYLES: list[LineStyle] = [":", (0, (1, 3))]
CEILING_STYLE: LineStyle = (0, (5, 2))  # a cell whose state is its context, drawn apart from the recurrences


def clip_style(clip: str, clips: list[str]) -> LineStyle:
    """Solid for the (first) clipped value, dotted for no clipping: the grey dashed line is the
    baseline's. Where sizes vary the arm is ``"1.0, 20,000 params"``: clipped and unclipped
    arms still take styles from their own lists, so "none" stays dotted."""
    def unclipped(c: str) -> bool:
        return c.split(",", 1)[0] == "none"

    if unclipped(clip):
        return UNCLIPPED_STYLES[sorted(filter(unclipped, clips), key=clip_order).index(clip) % len(UNCLIPPED_STYLES)]
    clipped = [c for c in sorted(clips, key=clip_order) if not unclipped(c)]
    return CLIP_STYLES[clipped.index(clip) % len(CLIP_STYLES)]


EXTRA_COLORS = ["tab:purple", "tab:brown", "tab:pink", "tab:gray"]
_VARIANT_COLOR: dict[str, str] = {}  # a report's variant labels -> colour, set by assign_colors


def assign_colors(cells: Iterable[str]) -> None:
    """The variants of one cell (``lstm (forget_bias=0)``, ``lstm (forget_bias=1)``), in label
    order: the first gets the cell's own colour, the second a kindred one, then others, so two
    arms of one cell never share a colour. Every figure calls it with its cells."""
    by_base: dict[str, list[str]] = {}
    for c in sorted(set(cells), key=cell_order):
        if c != base(c):
            by_base.setdefault(base(c), []).append(c)
    for b, labels in by_base.items():
        palette = [c for c in (CELL_COLORS.get(b), VARIANT_COLORS.get(b)) if c] + EXTRA_COLORS
        for i, label in enumerate(labels):
            _VARIANT_COLOR[label] = palette[i % len(palette)]


def color(cell: str) -> str:
    """A fixed colour per known cell so every figure (and every report) reads the same; a
    cell's variants those :func:`assign_colors` gave them; a cell added later still gets one,
    the same in every process."""
    if cell in CELL_COLORS:
        return CELL_COLORS[cell]
    if cell in _VARIANT_COLOR:
        return _VARIANT_COLOR[cell]
    if base(cell) in VARIANT_COLORS:
        return VARIANT_COLORS[base(cell)]
    return EXTRA_COLORS[sum(map(ord, cell)) % len(EXTRA_COLORS)]


def legend_handles(cells: list[str], clips: list[str], baseline: bool = True,
                   extra: Iterable[Line2D] = ()) -> list[Line2D]:
    """Colour and line style are legended apart (cells, then clip values), because every
    panel combines them: one entry per combination would not fit."""
    assign_colors(cells)
    h = [Line2D([], [], color=color(c), lw=2.5, label=c) for c in cells]
    h += [Line2D([], [], color="black", lw=1.5, ls=clip_style(k, clips),
                 label="no clipping" if k == "none" else f"clip {k}") for k in clips]
    if baseline:
        h.append(Line2D([], [], color="grey", lw=1.5, ls="--", label="trivial baseline"))
    return h + list(extra)


def _grid(n: int, ncols: int, w: float, h: float, handles: Sequence[Line2D], **kw) -> tuple[Figure, np.ndarray]:
    """Panels with one legend below them all, since the panels share it: constrained layout
    makes the room (figures.save keeps a figure's own layout)."""
    nrows = math.ceil(n / ncols)
    width = max(w * ncols, 7.0)
    legend_cols = _legend_cols(handles, width)
    legend_rows = math.ceil(len(handles) / legend_cols)
    fig, axes = figures.pyplot().subplots(nrows, ncols, figsize=(width, h * nrows + 0.3 * legend_rows + 0.5),
                                          squeeze=False, layout="constrained", **kw)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.legend(handles=handles, loc="outside lower center", ncols=legend_cols, frameon=False)
    return fig, axes


def _title(ax, text: str) -> None:
    """A panel title wrapped to its panel's width (at 10 pt, about 13 characters an inch), so
    that neighbouring titles do not run into each other."""
    ncols = ax.get_subplotspec().get_gridspec().ncols
    fits = max(20, int(ax.figure.get_figwidth() / ncols * 0.85 * 13))  # less the axis labels' margin
    lines = [text]
    if len(text) > fits and ": " in text:  # what the panel is, then what it shows
        head, tail = text.split(": ", 1)
        lines = [head + ":", tail]
    ax.set_title("\n".join(textwrap.fill(line, fits, break_long_words=False) for line in lines), fontsize=10)


def _legend_cols(handles: Sequence[Line2D], width: float) -> int:
    """As many legend entries per row as fit the figure's width, so the legend wraps instead
    of running off the page."""
    longest_label = max((len(str(h.get_label())) for h in handles), default=10)
    per_entry = 0.6 + 0.075 * longest_label  # inches: the line sample plus the text
    return max(1, min(len(handles), int(width / per_entry)))


def _length_axis(ax: Axes, xs: Iterable[int]) -> bool:
    """Log x when every length is positive and they span a factor of 3 or more (lengths are
    usually doubled); ticks only at the lengths run, as plain numbers, so each one can be read."""
    ticks = sorted(set(int(x) for x in xs))
    log = len(ticks) > 1 and ticks[0] > 0 and ticks[-1] / ticks[0] >= 3
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    if len(ticks) == 1:
        ax.set_xlim(ticks[0] - 1, ticks[0] + 1)
    return log


def _log_y(ax: Axes) -> None:
    """Log y with plain numbers (0.2, 3) instead of 2×10⁻¹ when the axis spans few decades."""
    ax.set_yscale("log")
    ax.autoscale_view()
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 1e3:
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5) if hi / lo > 4 else (1, 1.5, 2, 3, 5, 7)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _jitter(x: np.ndarray, i: int, k: int, log: bool, xs: list[int]) -> np.ndarray:
    """Nudge series sideways so error bars at the same length do not hide each other."""
    if k < 2:
        return x
    off = (i - (k - 1) / 2) / max(k - 1, 1)
    if log:
        return x * 10 ** (0.03 * off)
    gaps = np.diff(sorted(set(xs)))
    return x + 0.08 * (gaps.min() if len(gaps) else 1) * off


def plot_metric_vs_length(summary: pd.DataFrame, runs: pd.DataFrame, path: Path,
                          info: Callable[[str], TaskInfo] = task_info) -> Path | None:
    """The headline figure: test metric vs length, a line per cell, clip as line style, error
    bars = the 95% t-interval of the mean over seeds (never below 0 for a metric that
    is not), the trivial baseline grey dashed; a log y axis where the values span decades."""
    s = summary[summary["n"] > 0]
    if s.empty:
        return None
    tasks = sorted(s["task"].unique())
    cells = sorted(s["cell"].unique(), key=cell_order)
    clips = sorted(s["clip"].unique(), key=clip_order)
    bases = {t: baseline_columns(summary[summary["task"] == t], info(t).short) for t in tasks}
    extra = ([Line2D([], [], color="silver", ls="--", lw=1.5, label="seasonal baseline")]
             if any(len(b) > 1 for b in bases.values()) else [])
    fig, axes = _grid(len(tasks), min(len(tasks), 3), 5.0, 3.7, legend_handles(cells, clips, extra=extra))
    series = [(c, k) for c in cells for k in clips]
    for ax, task in zip(axes.flat, tasks):
        ti, t, all_t = info(task), s[s["task"] == task], summary[summary["task"] == task]
        xs = sorted(all_t["x"].astype(int).unique())
        log = _length_axis(ax, xs)
        for i, (c, k) in enumerate(series):
            g = t[(t["cell"] == c) & (t["clip"] == k)].sort_values("x")
            if g.empty:
                continue
            x = _jitter(g["x"].astype(float).to_numpy(), i, len(series), log, xs)
            low = (g["mean"] - g["ci low"]).fillna(0).clip(lower=0)
            high = (g["ci high"] - g["mean"]).fillna(0).clip(lower=0)
            ax.errorbar(x, g["mean"], yerr=[low, high], color=color(c), ls=clip_style(k, clips),
                        marker="o", ms=4, lw=1.6, capsize=3)
        for j, b in enumerate(bases[task]):
            bl = all_t.groupby("x")[b].mean().dropna()
            if len(bl):
                ax.plot(bl.index.astype(float), bl.to_numpy(), color="grey" if j == 0 else "silver",
                        ls="--", lw=1.5, zorder=0)
        vals = pd.concat([t["mean"], t["ci low"], t["ci high"], *(all_t[b] for b in bases[task])]).dropna()
        if len(vals) and (vals > 0).all() and vals.max() / vals.min() > 30:
            _log_y(ax)
        _title(ax, f"{task}: {ti.metric} ({ti.better} is better)")
        ax.set_xlabel(length_label(task, runs) + (" (log scale)" if log else ""))
        ax.set_ylabel(ti.metric)
        ax.grid(alpha=0.3)
    fig.suptitle("Final test metric vs length (mean, 95% t-interval over seeds)", fontsize=11)
    return Path(figures.save(fig, path, dpi=DPI))


def plot_metric_vs_state_size(runs: pd.DataFrame, path: Path,
                              info: Callable[[str], TaskInfo] = task_info) -> Path | None:
    """Zoology's figure: a task's test metric against ``model/state_size`` (the floats its state
    carries, log x), a line per cell, error bars = the 95% t-interval of the mean over seeds, a
    panel per task and length; only where some cell of a panel has more than one state size (a
    study that varies the width: cells of one width differ in state size too, the LSTM's 2H against
    the GRU's H, without making a curve). Attention's state is its context, far to the right: a
    cell whose state is its context (:attr:`~rnnlab.cells.CellSpec.context_state`) is drawn dashed
    with open markers and legended as the ceiling the recurrent states are read against. The
    ``task`` column may name a problem, ``mqar (task.num_kv_pairs=8)``: its panels are its own."""
    done = runs[(runs["outcome"] == "finished") & runs["state_size"].notna()] if "state_size" in runs else runs[:0]
    panels = [(key, g) for key, g in done.groupby(["task", "seq_len"], sort=True)
              if g.groupby("cell")["state_size"].nunique().max() > 1]  # a cell at several widths
    if not panels:
        return None
    cells = sorted(pd.concat([g["cell"] for _, g in panels]).unique(), key=cell_order)
    handles = legend_handles(cells, [], baseline=True)
    for h in handles:
        if _is_ceiling(str(h.get_label())):
            h.set(ls=CEILING_STYLE, label=f"{h.get_label()} (the ceiling: its state is its context)")
    fig, axes = _grid(len(panels), min(len(panels), 3), 5.0, 3.7, handles)
    for ax, ((task, seq_len), g) in zip(axes.flat, panels):
        ti = info(task)
        for c in cells:
            rows = []
            for size, gs in g[g["cell"] == c].groupby("state_size"):
                if ti.metric in gs:
                    iv = stats.mean_ci(gs[ti.metric].astype(float))
                    rows.append((float(size), iv.mean, iv.low, iv.high))
            if not rows:
                continue
            x, m, lo, hi = (np.array(v, dtype=float) for v in zip(*rows))
            yerr = [np.nan_to_num(m - lo).clip(min=0), np.nan_to_num(hi - m).clip(min=0)]
            ceiling = {"ls": CEILING_STYLE, "mfc": "white"} if _is_ceiling(c) else {}
            ax.errorbar(x, m, yerr=yerr, color=color(c), marker="o", ms=4, lw=1.6, capsize=3, **ceiling)
        short = ti.short
        if f"baseline/{short}" in g and g[f"baseline/{short}"].notna().any():
            ax.axhline(float(g[f"baseline/{short}"].mean()), color="grey", ls="--", lw=1.5, zorder=0)
        ax.set_xscale("log")
        _title(ax, f"{task}, {length_label(task, runs)}={seq_len}: {ti.metric}")
        ax.set_xlabel("state size (floats per sequence, log scale)")
        ax.set_ylabel(ti.metric)
        ax.grid(alpha=0.3)
    fig.suptitle("Final test metric vs state size (mean, 95% t-interval over seeds)", fontsize=11)
    return Path(figures.save(fig, path, dpi=DPI))


def _is_ceiling(cell: str) -> bool:
    """A cell whose state is its whole context (attention): the ceiling of a state-size figure."""
    spec = SPECS.get(base(cell))
    return bool(spec and spec.context_state)


def _mean_curve(h: pd.DataFrame, geometric: bool = False) -> pd.Series:
    """Mean over runs at each step (geometric for quantities drawn on a log axis)."""
    piv = h.pivot_table(index="step", columns="run_id", values="value", aggfunc="last")
    piv = piv.where(np.isfinite(piv))
    if geometric:
        return np.exp(np.log(piv.where(piv > 0)).mean(axis=1))
    return piv.mean(axis=1)


def _limits_from(values: pd.Series, log: bool) -> tuple[float, float] | None:
    """y limits that fit the finished runs, so one diverged run does not flatten them."""
    v = values[np.isfinite(values) & ((values > 0) if log else True)]
    if v.empty:
        return None
    lo, hi = float(v.min()), float(v.max())
    if log:
        return lo / 1.5, hi * 1.5
    pad = 0.08 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-12)
    return lo - pad, hi + pad


def plot_training_curves(runs: pd.DataFrame, hist: pd.DataFrame, path: Path) -> Path | None:
    """train/loss and grad_norm/pre_clip (log y) against step at each task's longest length:
    the mean over finished seeds thick, every run thin, a diverged run ending in a cross (on the
    top edge when it left the finished runs' scale)."""
    xmax = longest(runs)
    sel = runs[at_longest(runs) & runs["outcome"].isin(COMPLETED)]
    h = hist.merge(sel[["run_id", "task", "cell", "clip", "outcome"]], on="run_id") if len(hist) else hist
    if h.empty:
        return None
    quantities = [("train/loss", "train/loss", False), ("grad_norm/pre_clip", "grad norm before clipping", True)]
    tasks = sorted(h["task"].unique())
    cells = sorted(h["cell"].unique(), key=cell_order)
    clips = sorted(h["clip"].unique(), key=clip_order)
    extra = [Line2D([], [], color="black", lw=0.7, alpha=0.5, label="single run"),
             Line2D([], [], color="black", lw=2, label="mean of finished seeds")]
    if (h["outcome"] == "diverged").any():
        extra.append(Line2D([], [], color="black", marker="x", ls="", mew=2, label="diverged run: last step"))
    fig, axes = _grid(len(tasks) * 2, 2, 5.4, 3.1, legend_handles(cells, clips, baseline=False, extra=extra))
    for row, task in enumerate(tasks):
        for col, (key, label, logy) in enumerate(quantities):
            ax = axes[row, col]
            q = h[(h["task"] == task) & (h["key"] == key)]
            limits = _limits_from(q.loc[q["outcome"] == "finished", "value"], logy)
            for (c, k), g in q.groupby(["cell", "clip"]):
                style = dict(color=color(c), ls=clip_style(k, clips))
                for _, r in g.groupby("run_id"):
                    r = r.sort_values("step")
                    r = r[np.isfinite(r["value"]) & ((r["value"] > 0) if logy else True)]
                    ax.plot(r["step"], r["value"], lw=0.7, alpha=0.35, **style)
                    if len(r) and (r["outcome"] == "diverged").any():
                        x, y = r["step"].iloc[-1], r["value"].iloc[-1]
                        mark = dict(marker="x", ms=7, mew=2, color=color(c))
                        if limits and y > limits[1]:  # off the scale: drawn just inside the top edge
                            ax.plot(x, 0.96, transform=blended_transform_factory(ax.transData, ax.transAxes), **mark)
                        else:
                            ax.plot(x, y, **mark)
                done = g[g["outcome"] == "finished"]
                if len(done):
                    m = _mean_curve(done, geometric=logy).dropna()
                    ax.plot(m.index, m.to_numpy(), lw=2, **style)
            if limits:
                ax.set_ylim(*limits)
            if logy:
                _log_y(ax)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _title(ax, f"{task} ({length_label(task, runs)} = {xmax[task]}): {label}")
            ax.set(xlabel="training step", ylabel=key + (" (log)" if logy else ""))
            ax.grid(alpha=0.3)
    fig.suptitle("Training curves at the longest length of each task", fontsize=11)
    return Path(figures.save(fig, path, dpi=DPI))


def plot_grad_flow(runs: pd.DataFrame, profiles: pd.DataFrame, path: Path) -> Path | None:
    """Normalised ‖∂L/∂x_t‖ against the distance from the readout (log y) at the last probed
    step: one row per task at its longest length, the cells side by side on a shared y axis;
    each run thin, the geometric mean over seeds thick, clip as line style."""
    if profiles.empty:
        return None
    p = profiles.merge(runs[["run_id", "task", "cell", "clip", "x", "threshold"]], on="run_id")
    if p.empty:
        return None
    tasks = sorted(p["task"].unique())
    cells = sorted(p["cell"].unique(), key=cell_order)
    clips = sorted(p["clip"].unique(), key=clip_order)
    extra = [Line2D([], [], color="grey", lw=0.8, ls="--", label="horizon threshold"),
             Line2D([], [], color="black", lw=0.7, alpha=0.5, label="single run"),
             Line2D([], [], color="black", lw=2, label="geometric mean of seeds")]
    fig, axes = _grid(len(tasks) * len(cells), len(cells), 4.0, 3.1,
                      legend_handles(cells, clips, baseline=False, extra=extra), sharey="row")
    for row, task in enumerate(tasks):
        t = p[p["task"] == task]
        thr = t["threshold"].dropna()
        for col, c in enumerate(cells):
            ax = axes[row, col]
            g = t[t["cell"] == c]
            if not len(g):  # a cell that logged no profile here: said in words, not an empty axis
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{task}: {c}\nno profile logged", ha="center", va="center",
                        transform=ax.transAxes, fontsize=10, color="grey")
                continue
            for k, gk in g.groupby("clip"):
                style = dict(color=color(c), ls=clip_style(k, clips))
                for _, r in gk.groupby("run_id"):
                    r = r.sort_values("distance_from_readout")
                    ax.plot(r["distance_from_readout"], r["norm"], lw=0.7, alpha=0.35, **style)
                m = gk.assign(log=np.log(gk["norm"])).groupby("distance_from_readout")["log"].mean()
                ax.plot(m.index, np.exp(m.to_numpy()), lw=2, **style)
            if len(thr):
                ax.axhline(float(thr.iloc[0]), color="grey", lw=0.8, ls="--", zorder=0)
            ax.set_yscale("log")
            _title(ax, f"{task}: {c} (step {int(g['step'].max())})")
            ax.set_xlabel("distance from the readout (steps)")
            if col == 0:
                ax.set_ylabel(f"{length_label(task, runs)} = {int(t['x'].iloc[0])}\n‖∂L/∂x_t‖ / max (log)")
            ax.grid(alpha=0.3)
    fig.suptitle("Gradient through time at the last probe, longest length (0 = the readout)", fontsize=11)
    return Path(figures.save(fig, path, dpi=DPI))



def plot_loss_by_position(runs: pd.DataFrame, curves: pd.DataFrame, path: Path) -> Path | None:
    """Test bits per character at each window position, the mean over seeds, in half-octave
    bins of position: a panel per window length (task x length), a line per cell, clip (and
    size) as line style."""
    if curves.empty:
        return None
    c = curves.merge(runs[["run_id", "task", "cell", "clip", "x"]], on="run_id")
    if c.empty:
        return None
    panels = sorted({(t, int(x)) for t, x in zip(c["task"], c["x"])})
    cells = sorted(c["cell"].unique(), key=cell_order)
    clips = sorted(c["clip"].unique(), key=clip_order)
    fig, axes = _grid(len(panels), min(len(panels), 3), 5.0, 3.5, legend_handles(cells, clips, baseline=False))
    for ax, (task, x) in zip(axes.flat, panels):
        t = c[(c["task"] == task) & (c["x"] == x)]
        for (cell, clip), g in sorted(t.groupby(["cell", "clip"]), key=lambda kv: (cell_order(kv[0][0]), kv[0][1])):
            m = _half_octaves(g.groupby("position")["bpc"].mean())
            ax.plot(m.index, m.to_numpy(), color=color(cell), ls=clip_style(clip, clips), lw=1.5, marker="o", ms=3)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        _title(ax, f"{task}: {length_label(task, runs)} = {x}")
        ax.set_xlabel("position in the window = characters of context (log scale)")
        ax.set_ylabel("test bits per character")
        ax.grid(alpha=0.3)
    fig.suptitle("Loss by position in the BPTT window (mean over seeds)", fontsize=11)
    return Path(figures.save(fig, path, dpi=DPI))


def _half_octaves(curve: pd.Series) -> pd.Series:
    """The per-position curve averaged over half-octave bins of position (1, 2, 3, 4-5, 6-7,
    8-10, ...), drawn at each bin's geometric centre: a window's test characters are few per
    position, and the noise is the text's, not the cell's."""
    pos = curve.index.to_numpy(dtype=float)
    edges = np.unique(np.round(2 ** (np.arange(0, 2 * np.log2(pos.max()) + 2) / 2)))
    bins = np.digitize(pos, edges)
    grouped = pd.Series(curve.to_numpy(), index=bins).groupby(level=0)
    centres = pd.Series(pos, index=bins).groupby(level=0).apply(lambda p: float(np.exp(np.log(p).mean())))
    return pd.Series(grouped.mean().to_numpy(), index=centres.to_numpy())


FORECAST_POINTS = 300  # test windows drawn per panel: a few periods of the series, readable


def plot_forecasts(best: pd.DataFrame, predictions: pd.DataFrame, path: Path) -> Path | None:
    """Actual vs predicted on the first test windows for the best run of each cell: a row per
    task (series), a column per cell, the same stretch of the series across a row; the
    prediction at the horizon's last step, against the actual value at that step."""
    if predictions.empty or best.empty:
        return None
    p = predictions.merge(best[["run_id", "task", "cell"]], on="run_id")
    if p.empty:
        return None
    tasks = sorted(p["task"].unique())
    cells = sorted(p["cell"].unique(), key=cell_order)
    assign_colors(cells)
    handles = [Line2D([], [], color="black", lw=1.2, label="actual"),
               *(Line2D([], [], color=color(c), lw=1.2, label=f"{c}: predicted") for c in cells)]
    fig, axes = _grid(len(tasks) * len(cells), len(cells), 4.6, 3.0, handles, sharey="row")
    for row, task in enumerate(tasks):
        ti = task_info(task)
        t = p[p["task"] == task]
        start = t.groupby("cell")["index"].min().max()  # a longer lookback starts later: one span per row
        for col, cell in enumerate(cells):
            ax = axes[row, col]
            g = t[(t["cell"] == cell) & (t["index"] >= start)].sort_values("index").head(FORECAST_POINTS)
            if g.empty:
                ax.set_visible(False)
                continue
            h = max(int(k.rsplit("+", 1)[1]) for k in g.columns if k.startswith("predicted_t+"))
            at = g["index"] + h - 1
            ax.plot(at, g[f"actual_t+{h}"], color="black", lw=1.2)
            ax.plot(at, g[f"predicted_t+{h}"], color=color(cell), lw=1.1, alpha=0.9)
            r = best[best["run_id"] == g["run_id"].iloc[0]].iloc[0]
            ax.set_title(f"{task}\n{cell}, {length_label(task, best)}={int(r['x'])}, seed {int(r['seed'])}: "
                         f"{ti.metric} {r[ti.metric]:.3g}", fontsize=9)
            ax.set_xlabel(f"position in the series (test split), t+{h}")
            ax.grid(alpha=0.3)
    fig.suptitle("Actual vs predicted, the best run of each cell", fontsize=11)
    return Path(figures.save(fig, path, dpi=DPI))
