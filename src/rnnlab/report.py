"""The comparison report of an experiment: MLflow runs -> one tidy table -> REPORT.md + figures.

A sweep leaves dozens of runs in MLflow; the question they answer (which cell copes with which
dependency length, and what clipping changes) needs them side by side, averaged over seeds, next
to each task's trivial baseline. This module builds that page, in small steps that each take
and return plain pandas objects, so everything but the loading is tested without MLflow:

1. :func:`load_runs`: ``mlflow.search_runs`` on the experiment (optionally one sweep);
2. :func:`tidy`: one row per run with typed columns (cell, task, seq_len, clip, seed, outcome,
   budget, every metric), the sweep's parent run dropped;
3. :func:`select_runs`: one run per (task, cell, seq_len, distance, clip, seed): the most
   recent one that finished or diverged, so a rerun supersedes an old run;
4. :func:`summarise`: per cell x length x clip x size (equal hidden size, or equal parameter
   budget), the mean over seeds of every test metric with its 95% bootstrap interval, the
   baseline and the diverged fraction; then solved seeds and critical lengths, paired
   differences between cells and the published numbers beside ours (:mod:`rnnlab.literature`);
5. :func:`throughput`, :func:`last_profiles` and :func:`render` for the page; the figures are
   drawn by :mod:`rnnlab.report_figures` from the same frames.

The headline metric of a task is the test version of its class's ``main_metric`` (imported
from ``rnnlab.tasks.<name>``, not copied here), so a new task needs no change in this file.
The page states numbers only: its "Discussion" section is left to people, with computed
observations as a starting point, and text written between the discussion markers survives a
regeneration.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rnnlab import literature, stats
from rnnlab import runs as runs_tags
from rnnlab.config import CELLS

if TYPE_CHECKING:
    from mlflow.entities import Run

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# A run is one seed of one configuration; a group is the seeds of one configuration.
GROUP = ["task", "cell", "seq_len", "distance", "clip", "size"]
KEY = [*GROUP, "seed"]
CELL_ORDER = CELLS
EXTRA_METRICS = {"copy": ("acc",)}  # shown beside the headline metric (copy: loss is the headline)
LENGTH_LABELS = {"forecast": "lookback seq_len"}
SOLVE_THRESHOLD = 0.9  # solve.threshold's default: what counts as solved for runs without steps_to_solve
COMPLETED = ("finished", "diverged")  # outcomes that are results (a diverged run is one)
BUDGET = {"trainer.max_steps": "max_steps", "cell.hidden_size": "hidden_size", "batch_size": "batch_size"}
FIGURES = ("metric_vs_length.png", "training_curves.png", "grad_flow.png", "loss_by_position.png",
           "forecasts.png")
TASK_FIGURES = ("loss_by_position.png", "forecasts.png")  # drawn only for the tasks below
POSITION_TASKS = ("char_lm",)  # tasks that log data/loss_by_pos.csv: the loss at each window position
FORECAST_TASKS = ("forecast",)  # tasks that log data/forecast_test.csv: actual and predicted values
# A task or cell parameter that a report's runs vary splits the task into separate problems (a
# forecast series) or the cell into separate arms (the LSTM's forget-gate bias): the label then
# names it, ``forecast (series=seattle_temps)``, ``lstm (forget_bias=0)``. Not these: they are
# the length, the seed and the sizing, which have columns of their own.
NOT_VARIANTS = {"task._target_", "task.seq_len", "task.batch_size", "task.seed", "task.distance",
                "cell.name", "cell.hidden_size"}
# Parameters that mean something for one value of another only (forecast: tau and length are
# Mackey-Glass's): elsewhere they are left out of the label.
ONLY_FOR = {"task.tau": ("task.series", "mackey_glass"), "task.length": ("task.series", "mackey_glass")}
DISCUSSION_START = "<!-- discussion: start (text between these markers is kept when the report is regenerated) -->"
DISCUSSION_END = "<!-- discussion: end -->"


class ReportError(Exception):
    """A problem the user must fix (unknown experiment, no runs): one line, no traceback."""


# -- what each task is judged by -----------------------------------------------------------

@dataclass(frozen=True)
class TaskInfo:
    """How a task's runs are ranked: its headline test metric, the direction, extra columns."""

    name: str
    metric: str  # e.g. "test/mse": the test version of the task class's main_metric
    mode: str  # "min" | "max"
    extras: tuple[str, ...] = ()  # more test metrics shown beside the headline, e.g. ("test/acc",)
    known: bool = True  # False: no task class found, defaults used

    @property
    def short(self) -> str:
        return self.metric.split("/", 1)[1]

    @property
    def better(self) -> str:
        return "lower" if self.mode == "min" else "higher"


_TOLD: dict[str, tuple[str, str]] = {}  # task -> (main metric, mode), as the runs' tags say


def remember_tasks(raw: pd.DataFrame) -> None:
    """What the runs say about their tasks (``main_metric``, ``metric_mode`` tags): with it,
    :func:`task_info` needs no import of the task classes, which pulls in Lightning (seconds at
    the end of every sweep)."""
    cols = [f"tags.{k}" for k in ("task", runs_tags.MAIN_METRIC, runs_tags.METRIC_MODE)]
    if all(c in raw.columns for c in cols):
        for task, metric, mode in raw[cols].dropna().drop_duplicates().itertuples(index=False):
            _TOLD[task] = (metric, mode)


def _info(name: str, main_metric: str, mode: str) -> TaskInfo:
    metric = "test/" + main_metric.split("/", 1)[1]
    extras = tuple(f"test/{m}" for m in EXTRA_METRICS.get(name, ()) if f"test/{m}" != metric)
    return TaskInfo(name, metric, mode, extras)


def task_info(name: str) -> TaskInfo:
    """The headline metric and mode the runs were selected on, so the report ranks them exactly
    as model selection did: from the runs' tags, else from the task class in
    ``rnnlab.tasks.<name>``; an unknown task falls back to test/loss. ``name`` may be a label
    with a variant, ``forecast (series=seattle_temps)``."""
    name = base(name)
    if name in _TOLD:
        return _info(name, *_TOLD[name])
    return _task_info_from_code(name)


@cache
def _task_info_from_code(name: str) -> TaskInfo:
    from rnnlab.tasks.base import Task

    try:
        module = importlib.import_module(f"rnnlab.tasks.{name}")
    except ImportError:
        return TaskInfo(name, "test/loss", "min", known=False)
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Task) and getattr(obj, "name", None) == name:
            return _info(name, obj.main_metric, obj.mode)
    return TaskInfo(name, "test/loss", "min", known=False)


# -- loading -------------------------------------------------------------------------------

def check_store(tracking_uri: str) -> None:
    """A sqlite store must exist already: opening a mistyped path would create an empty one."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):])
        if not path.is_file():
            raise ReportError(f"no MLflow store at {path} (from --tracking-uri / MLFLOW_TRACKING_URI "
                              f"{tracking_uri}); train something first or point at the right file")


def find_experiment(client, name: str):
    """The experiment called ``name``; a ReportError naming the ones that exist otherwise."""
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"no experiment named '{name}' in {client.tracking_uri}; existing: "
                          + (", ".join(names) if names else "none"))
    return exp


def load_runs(tracking_uri: str, experiment: str, sweep_id: str | None = None) -> pd.DataFrame:
    """Every run of the experiment (or of one sweep) as ``mlflow.search_runs`` returns them."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = find_experiment(client, experiment)
    mlflow.set_tracking_uri(tracking_uri)
    flt = f"tags.sweep_id = '{sweep_id}'" if sweep_id else ""
    raw = mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=flt, output_format="pandas")
    return raw


def _col(raw: pd.DataFrame, name: str) -> pd.Series:
    return raw[name] if name in raw.columns else pd.Series(np.nan, index=raw.index, dtype=object)


def clip_label(value) -> str:
    """``"none"`` when clipping was off, else the value as the run names write it (``"1.0"``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    text = str(value).strip()
    if text.lower() in ("none", "null", "", "nan"):
        return "none"
    try:
        s = f"{float(text):g}"
    except ValueError:
        return text
    return s if any(c in s for c in ".en") else s + ".0"


def clip_order(label: str) -> tuple[int, float]:
    """Clipped values in increasing order, then no clipping."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, 0.0)


def cell_order(cell: str) -> tuple[int, str]:
    """rnn, lstm, gru (each cell's variants after it, by label), then unknown cells by name."""
    b = base(cell)
    return (CELL_ORDER.index(b), cell) if b in CELL_ORDER else (len(CELL_ORDER), cell)


def outcome(status: str, diverged: bool) -> str:
    """finished | diverged | failed | running: a diverged run is a result, a crash is not."""
    if diverged:
        return "diverged"
    if status == "FINISHED":
        return "finished"
    if status in ("RUNNING", "SCHEDULED"):
        return "running"
    return "failed"


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per training run, typed: tags and the budget params become columns, metrics keep
    their MLflow names (``test/mse``). Rows without a ``cell`` tag (a sweep's parent run) are
    dropped; ``x`` is the length the task varies: ``task.distance`` where the run has it
    (sentiment), else ``seq_len``."""
    num = lambda s: pd.to_numeric(s, errors="coerce")  # noqa: E731
    df = pd.DataFrame({
        "run_id": _col(raw, "run_id"),
        "run_name": _col(raw, "tags.mlflow.runName"),
        "status": _col(raw, "status"),
        "start_time": pd.to_datetime(_col(raw, "start_time"), utc=True),
        "cell": _col(raw, "tags.cell"),
        "task": _col(raw, "tags.task"),
        "seq_len": num(_col(raw, "tags.seq_len")).astype("Int64"),
        "distance": num(_col(raw, "params.task.distance")).astype("Int64"),
        "clip": _col(raw, "tags.clip").map(clip_label),
        "seed": num(_col(raw, "tags.seed")).astype("Int64"),
        "diverged": _col(raw, "tags.diverged").astype(str).str.lower().eq("true"),
        "is_sweep_parent": _col(raw, "tags.sweep").astype(str).str.lower().eq("true"),
        "sweep_id": _col(raw, "tags.sweep_id"),
        "git_commit": _col(raw, "tags.git_commit"),
        "git_dirty": _col(raw, "tags.git_dirty").astype(str).str.lower().eq("true"),
        "code_hash": _col(raw, f"tags.{runs_tags.CODE_HASH}"),
        "threshold": num(_col(raw, "params.diagnostics.threshold")),
        "size": size_label(num(_col(raw, "params.model.param_budget")), num(_col(raw, "params.cell.hidden_size"))),
        **{short: num(_col(raw, f"params.{p}")).astype("Int64") for p, short in BUDGET.items()},
    })
    df["task"] = variant_labels(raw, df["task"], "task")
    df["cell"] = variant_labels(raw, df["cell"], "cell")
    metrics = {c[len("metrics."):]: num(raw[c]) for c in raw.columns if c.startswith("metrics.")}
    df = pd.concat([df, pd.DataFrame(metrics, index=raw.index)], axis=1)
    df = df[df["cell"].notna() & ~df["is_sweep_parent"]].drop(columns="is_sweep_parent")
    df["outcome"] = [outcome(s, d) for s, d in zip(df["status"], df["diverged"])]
    df["x"] = df["distance"].where(df["distance"].notna(), df["seq_len"]).astype("Int64")
    return df.reset_index(drop=True)


def variant_labels(raw: pd.DataFrame, names: pd.Series, group: str) -> pd.Series:
    """``names`` (the task or cell of each run) with the ``params.<group>.*`` that vary among the
    runs of that name appended: ``lstm (forget_bias=0)``; unchanged where nothing varies."""
    cols = [c for c in raw.columns if c.startswith(f"params.{group}.") and c[len("params."):] not in NOT_VARIANTS]
    out = names.astype(object).copy()
    for name in names.dropna().unique():
        rows = names == name
        shown = {c: raw.loc[rows, c].map(_param_text) for c in cols}
        for c, v in shown.items():
            other = ONLY_FOR.get(c[len("params."):])
            if other is not None and f"params.{other[0]}" in raw:
                shown[c] = v.where(raw.loc[rows, f"params.{other[0]}"].astype(str) == other[1])
        varying = sorted(c for c, v in shown.items() if v.dropna().nunique() > 1)
        for i in names.index[rows]:
            parts = [f"{c.rsplit('.', 1)[1]}={shown[c][i]}" for c in varying if pd.notna(shown[c][i])]
            if parts:
                out[i] = f"{name} ({', '.join(parts)})"
    return out


def _param_text(value) -> str | None:
    """A param as a label shows it: numbers without trailing zeros (``0``, ``17``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value)
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def base(label: str) -> str:
    """The task or cell a label names, without its variant: ``lstm (forget_bias=0)`` -> ``lstm``."""
    return str(label).split(" (", 1)[0]


def size_label(budget: pd.Series, hidden: pd.Series) -> pd.Series:
    """How a run's model was sized: ``33,000 params`` (``model.param_budget``: every cell the
    same parameter count) or ``hidden 64`` (the same hidden size). Tables show it only when a
    report holds both, and compare cells only within one."""
    return pd.Series([f"{int(b):,} params" if pd.notna(b) else f"hidden {int(h)}" if pd.notna(h) else "—"
                      for b, h in zip(budget, hidden)], index=budget.index, dtype=object)


def sizes_vary(df: pd.DataFrame) -> bool:
    return "size" in df and df["size"].nunique() > 1


def as_figure_arms(df: pd.DataFrame) -> pd.DataFrame:
    """For the figures, whose line style is the clip value: where sizes vary, the style is
    clip and size together (``1.0, 33,000 params``)."""
    if not sizes_vary(df):
        return df
    return df.assign(clip=[f"{c}, {z}" for c, z in zip(df["clip"], df["size"])])


def select_runs(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One run per configuration and seed: the most recent that finished or diverged, else the
    most recent at all (so a configuration that only crashed is still counted as failed).
    Returns the kept runs and how many older ones they supersede."""
    if df.empty:
        return df, 0
    ranked = df.assign(_incomplete=~df["outcome"].isin(COMPLETED)).sort_values(
        ["_incomplete", "start_time"], ascending=[True, False], kind="stable")
    kept = ranked.drop_duplicates(subset=KEY, keep="first").drop(columns="_incomplete")
    return sort_rows(kept).reset_index(drop=True), len(df) - len(kept)


def sort_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Tables read cell by cell (rnn, lstm, gru), short to long, clipped before unclipped,
    equal hidden size before equal budget."""
    order = df.assign(_c=df["cell"].map(cell_order), _k=df["clip"].map(clip_order),
                      _z=df["size"].map(size_order) if "size" in df else 0)
    by = [c for c in ("task", "_c", "x", "seq_len", "_k", "_z", "seed") if c in order.columns]
    return order.sort_values(by, kind="stable").drop(columns=["_c", "_k", "_z"])


def size_order(label: str) -> tuple[int, float]:
    """Equal hidden size (the default sizing) first, then parameter budgets, small to large."""
    head, _, _ = str(label).partition(" params")
    try:
        return (1, float(head.replace(",", "")))
    except ValueError:
        return (0, 0.0)


# -- aggregation ---------------------------------------------------------------------------

def baseline_columns(df: pd.DataFrame, short: str) -> list[str]:
    """``baseline/<m>`` first, then variants such as forecast's ``baseline/seasonal_<m>``."""
    variants = sorted(c for c in df.columns if c.startswith("baseline/") and c.endswith(f"_{short}"))
    cols = [f"baseline/{short}", *variants]
    return [c for c in cols if c in df.columns and df[c].notna().any()]


def mean_std(values: pd.Series) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; NaN for one value) and count of the finite values."""
    v = pd.to_numeric(values, errors="coerce").astype(float)
    v = v[np.isfinite(v)]
    n = len(v)
    return (float(v.mean()) if n else math.nan, float(v.std(ddof=1)) if n > 1 else math.nan, n)


def summarise(runs: pd.DataFrame, info: Callable[[str], TaskInfo] = task_info) -> pd.DataFrame:
    """Per task x cell x length x clip: the headline test metric over the finished seeds
    (mean, std, n), the same for the extra metrics, the baselines (mean over the group's runs:
    they do not depend on the seed) and the outcome counts. Diverged runs count in
    ``n_diverged`` / ``n_runs`` and never in the mean."""
    rows = []
    for key, g in runs.groupby(GROUP, dropna=False, sort=False):
        ti = info(key[0])
        done = g[g["outcome"] == "finished"]
        row = dict(zip(GROUP, key), x=g["x"].iloc[0], metric=ti.metric)
        row["mean"], row["std"], row["n"] = mean_std(done[ti.metric]) if ti.metric in g else (math.nan, math.nan, 0)
        ci = stats.mean_ci(done[ti.metric]) if ti.metric in g else stats.Interval(math.nan, math.nan, math.nan, 0)
        row["ci low"], row["ci high"] = ci.low, ci.high
        for m in ti.extras:
            row[f"{m} mean"], row[f"{m} std"], row[f"{m} n"] = (
                mean_std(done[m]) if m in g else (math.nan, math.nan, 0))
            eci = stats.mean_ci(done[m]) if m in g else stats.Interval(math.nan, math.nan, math.nan, 0)
            row[f"{m} ci low"], row[f"{m} ci high"] = eci.low, eci.high
        for short in [ti.short, *(m.split("/", 1)[1] for m in ti.extras)]:
            for b in baseline_columns(g, short):
                row[b] = float(g[b].mean()) if g[b].notna().any() else math.nan
        row["n_diverged"] = int((g["outcome"] == "diverged").sum())
        row["n_runs"] = int(g["outcome"].isin(COMPLETED).sum())
        row["n_failed"] = int((g["outcome"] == "failed").sum())
        row["n_running"] = int((g["outcome"] == "running").sum())
        if "grad_flow/horizon" in g:
            h = stats.mean_ci(done["grad_flow/horizon"])
            row.update({"horizon mean": h.mean, "horizon ci low": h.low, "horizon ci high": h.high, "horizon n": h.n})
        row["per seed"] = sorted(float(v) for v in done[ti.metric] if math.isfinite(v)) if ti.metric in g else []
        rows.append(row)
    out = pd.DataFrame(rows)
    return sort_rows(out).reset_index(drop=True) if len(out) else out


def longest(df: pd.DataFrame) -> dict[str, int]:
    """The longest length (``x``) each task was run at: where the figures and observations look."""
    return {t: int(g["x"].max()) for t, g in df.groupby("task") if g["x"].notna().any()}


def at_longest(runs: pd.DataFrame) -> pd.Series:
    """True for the runs at their task's longest length."""
    xmax = longest(runs)
    return pd.Series([xmax.get(t) == x for t, x in zip(runs["task"], runs["x"])], index=runs.index, dtype=bool)


def throughput(runs: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """tokens/s per task x length x cell: the median of each finished run's
    ``perf/tokens_per_s`` history (robust to the first, warm-up interval), then the mean over
    runs (seeds, clip values, and a cell's variants such as its forget-gate bias, which cost
    the same)."""
    h = hist[hist["key"] == "perf/tokens_per_s"] if len(hist) else hist
    if h.empty:
        return pd.DataFrame(columns=["task", "x", "cell", "tokens_per_s", "n"])
    med = h.groupby("run_id")["value"].median().rename("median")
    done = runs[runs["outcome"] == "finished"].join(med, on="run_id").dropna(subset=["median"])
    done = done.assign(cell=done["cell"].map(base))
    out = (done.groupby(["task", "x", "cell"])["median"].agg(["mean", "count"]).reset_index()
           .rename(columns={"mean": "tokens_per_s", "count": "n"}))
    return out


def last_profiles(gf: pd.DataFrame) -> pd.DataFrame:
    """The gradient-through-time profile of each run at its last probed step (the trained
    model), normalised by its maximum so runs of different loss scales compare."""
    if gf.empty:
        return gf.assign(norm=pd.Series(dtype=float))
    last = gf[gf["step"] == gf.groupby("run_id")["step"].transform("max")].copy()
    peak = last.groupby("run_id")["grad_input_norm"].transform("max")
    last["norm"] = (last["grad_input_norm"] / peak.where(peak > 0)).clip(lower=1e-30)
    return last


# -- MLflow histories and artifacts --------------------------------------------------------

def fetch_histories(client, run_ids: Iterable[str], keys: Iterable[str]) -> pd.DataFrame:
    """Metric histories (``get_metric_history``) as a long frame: run_id, key, step, value."""
    rows = [(rid, k, m.step, m.value) for rid in run_ids for k in keys
            for m in client.get_metric_history(rid, k)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def fetch_csv(client, run_ids: Iterable[str], artifact: str) -> pd.DataFrame:
    """The CSV artifact ``artifact`` (e.g. ``data/loss_by_pos.csv``) of each run that has it, as
    one frame with a ``run_id`` column; runs without it (a diverged run, another task) are skipped."""
    folder = artifact.rsplit("/", 1)[0] if "/" in artifact else None
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for rid in run_ids:
            if not any(a.path == artifact for a in client.list_artifacts(rid, folder)):
                continue
            path = client.download_artifacts(rid, artifact, tmp)
            frames.append(pd.read_csv(path).assign(run_id=rid))
            os.remove(path)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id"])


def fetch_grad_flow(client, run_ids: Iterable[str]) -> pd.DataFrame:
    """``diagnostics/grad_flow.csv`` of each run that has it (a diverged run may not)."""
    cols = ["run_id", "step", "position", "distance_from_readout", "grad_input_norm", "grad_hidden_norm"]
    gf = fetch_csv(client, run_ids, "diagnostics/grad_flow.csv")
    return gf[cols] if len(gf) else pd.DataFrame(columns=cols)


def best_runs(runs: pd.DataFrame, info: Callable[[str], TaskInfo] = task_info) -> pd.DataFrame:
    """Per task x cell x size: the finished run with the best headline test metric, at any
    length and seed (the run whose forecasts a reader wants to see)."""
    rows = []
    for (task, _, _), g in runs[runs["outcome"] == "finished"].groupby(["task", "cell", "size"], sort=False):
        ti = info(task)
        if ti.metric not in g or g[ti.metric].isna().all():
            continue
        rows.append(g.loc[g[ti.metric].idxmin() if ti.mode == "min" else g[ti.metric].idxmax()])
    return sort_rows(pd.DataFrame(rows)).reset_index(drop=True) if rows else runs.iloc[:0]


# -- formatting ----------------------------------------------------------------------------

def fmt(v, digits: int = 4) -> str:
    """4 significant digits; an em dash for a missing value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
        return "—"
    return f"{float(v):.{digits}g}"


def fmt_mean_ci(mean: float, low: float, high: float, n: int) -> str:
    """``mean [low, high]``; just the mean for one seed, a dash for none."""
    if n == 0 or not math.isfinite(mean):
        return "—"
    return fmt(mean) if n < 2 or not math.isfinite(low) else f"{fmt(mean)} [{fmt(low, 3)}, {fmt(high, 3)}]"


def md_table(header: list[str], rows: list[list[str]], right: Iterable[int] = ()) -> str:
    right = set(right)
    sep = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def length_label(task: str, runs: pd.DataFrame) -> str:
    """What ``x`` is for this task: ``task.distance`` when its runs vary it, else seq_len."""
    if runs[runs["task"] == task]["distance"].notna().any():
        return "task.distance"
    return LENGTH_LABELS.get(base(task), "seq_len")


def values_text(values: Iterable, counts: bool = True) -> str:
    """Distinct values, with how many runs have each when there is more than one."""
    s = pd.Series(list(values)).dropna()
    if s.empty:
        return "—"
    vc = s.astype(str).value_counts()
    if len(vc) == 1 or not counts:
        return ", ".join(sorted(vc.index, key=_natural))
    return ", ".join(f"{v} ({vc[v]} runs)" for v in sorted(vc.index, key=_natural))


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _natural(s: str):
    try:
        return (0, float(s), "")
    except ValueError:
        return (1, 0.0, s)


# -- tables --------------------------------------------------------------------------------

def metric_table(summary: pd.DataFrame, task: str, runs: pd.DataFrame,
                 info: Callable[[str], TaskInfo] = task_info) -> str:
    """The final test metric per cell x length x clip (mean and 95% bootstrap CI over finished
    seeds, n), the baseline(s) beside it, and the diverged fraction (diverged / finished+diverged);
    extra metrics the same way."""
    s = summary[summary["task"] == task]
    ti = info(task)
    xl = length_label(task, runs)
    by_distance, sized = xl == "task.distance", sizes_vary(s)
    header = ["cell", xl, *(["seq_len"] if by_distance else []), "clip", *(["size"] if sized else []),
              f"{ti.metric} (mean [95% CI])", "n"]
    base = baseline_columns(s, ti.short)
    header += [b.replace("baseline/", "baseline ") if i else "baseline" for i, b in enumerate(base)]
    extra_base = {}
    for m in ti.extras:
        short = m.split("/", 1)[1]
        header.append(f"{m} (mean [95% CI])")
        extra_base[m] = baseline_columns(s, short)[:1]
        header += [f"baseline {short}" for _ in extra_base[m]]
    shown = [c for c in ("failed", "running") if len(s) and s[f"n_{c}"].sum()]  # only when there are any
    header += ["diverged", *shown]
    rows = []
    for _, r in s.iterrows():
        row = [r["cell"], str(r["x"]), *([str(r["seq_len"])] if by_distance else []), r["clip"],
               *([r["size"]] if sized else []), fmt_mean_ci(r["mean"], r["ci low"], r["ci high"], r["n"]),
               str(r["n"]), *(fmt(r[b]) for b in base)]
        for m in ti.extras:
            row.append(fmt_mean_ci(r[f"{m} mean"], r[f"{m} ci low"], r[f"{m} ci high"], r[f"{m} n"]))
            row += [fmt(r[b]) for b in extra_base[m]]
        row.append(f"{r['n_diverged']}/{r['n_runs']}")
        row += [str(r[f"n_{c}"]) for c in shown]
        rows.append(row)
    right = [i for i, h in enumerate(header) if h not in ("cell", "clip", "size")]
    return md_table(header, rows, right)


def solved(runs: pd.DataFrame) -> pd.Series:
    """Per run: solved within its budget, i.e. it logged ``steps_to_solve`` (its validation skill
    reached the threshold); runs made before that metric existed: ``test/skill`` >= 0.9. A
    diverged or failed run did not solve."""
    nothing = pd.Series(np.nan, index=runs.index)
    steps = runs["steps_to_solve"] if "steps_to_solve" in runs else nothing
    skill = runs["test/skill"] if "test/skill" in runs else nothing
    return (runs["outcome"] == "finished") & (steps.notna() | (skill >= SOLVE_THRESHOLD))


def solved_cell(outcomes: list[bool] | None, median_steps: float) -> str:
    """``3/5 (300)``: seeds that solved, of those that ran, and their median steps to solve."""
    if outcomes is None:
        return "-"
    return f"{sum(outcomes)}/{len(outcomes)}" + ("" if math.isnan(median_steps) else f" ({median_steps:.0f})")


def critical_table(runs: pd.DataFrame, task: str) -> str | None:
    """Per cell x clip: the critical length, and per length the seeds that solved / ran."""
    t = runs[(runs["task"] == task) & runs["outcome"].isin(COMPLETED)]
    if t.empty:
        return None
    t = t.assign(solved=solved(t))
    lengths = sorted(int(x) for x in t["x"].dropna().unique())
    sized = sizes_vary(t)
    header = ["cell", "clip", *(["size"] if sized else []), "critical length",
              *(f"{length_label(task, runs)}={x}" for x in lengths)]
    rows = []
    groups = sorted(t.groupby(["cell", "clip", "size"]),
                    key=lambda kv: (cell_order(kv[0][0]), clip_order(kv[0][1]), size_order(kv[0][2])))
    steps = t["steps_to_solve"] if "steps_to_solve" in t else pd.Series(np.nan, index=t.index)
    for (cell, clip, size), g in groups:
        per = {int(x): list(gx["solved"]) for x, gx in g.groupby("x")}
        median_steps = {int(x): steps[gx.index][gx["solved"]].median() for x, gx in g.groupby("x")}
        critical = stats.critical_length(per)
        rows.append([cell, clip, *([size] if sized else []), "none" if critical is None else str(critical),
                     *(solved_cell(per.get(x), median_steps.get(x, math.nan)) for x in lengths)])
    return md_table(header, rows, range(3 if sized else 2, len(header)))


def paired_table(runs: pd.DataFrame, task: str, info: Callable[[str], TaskInfo] = task_info) -> str | None:
    """Between every two cells at the same length and clip: the paired difference of the
    headline metric over the seeds both finished, its interval and what it establishes."""
    ti = info(task)
    t = runs[(runs["task"] == task) & (runs["outcome"] == "finished") & runs["seed"].notna()]
    rows = []
    sized = sizes_vary(t)
    groups = sorted(t.groupby(["x", "clip", "size"]),
                    key=lambda kv: (kv[0][0], clip_order(kv[0][1]), size_order(kv[0][2])))
    for (x, clip, size), g in groups:
        by_cell = {c: dict(zip(gc["seed"].astype(int), gc[ti.metric])) for c, gc in g.groupby("cell")}
        cells = sorted(by_cell, key=cell_order)
        for i, a in enumerate(cells):
            for b in cells[i + 1:]:
                diff = stats.paired_difference(by_cell[a], by_cell[b])
                rows.append([str(x), clip, *([size] if sized else []), f"{a} - {b}",
                             f"{fmt(diff.mean)} [{fmt(diff.low)}, {fmt(diff.high)}]",
                             str(diff.n), stats.verdict(diff, ti.mode, (a, b))])
    if not rows:
        return None
    header = [length_label(task, runs), "clip", *(["size"] if sized else []), "cells",
              f"{ti.metric} difference [95% CI]", "seeds", "verdict"]
    return md_table(header, rows, (0, 5 if sized else 4))


def clip_table(runs: pd.DataFrame, task: str, info: Callable[[str], TaskInfo] = task_info) -> str | None:
    """What clipping changes, the harness's second question: per cell and length, the paired
    difference between every two clip values over the seeds both finished (a seed fixes the
    init and the data for both), with the seeds each solved; None with one clip value."""
    ti = info(task)
    t = runs[(runs["task"] == task) & runs["outcome"].isin(COMPLETED) & runs["seed"].notna()]
    t = t.assign(solved=solved(t))
    rows = []
    sized = sizes_vary(t)
    groups = sorted(t.groupby(["cell", "x", "size"]),
                    key=lambda kv: (cell_order(kv[0][0]), kv[0][1], size_order(kv[0][2])))
    for (cell, x, size), g in groups:
        done = g[g["outcome"] == "finished"]
        by_clip = {c: dict(zip(gc["seed"].astype(int), gc[ti.metric])) for c, gc in done.groupby("clip")}
        clips = sorted(g["clip"].unique(), key=clip_order, reverse=True)  # none first: "none - 1.0"
        for i, a in enumerate(clips):
            for b in clips[i + 1:]:
                diff = stats.paired_difference(by_clip.get(a, {}), by_clip.get(b, {}))
                solved_txt = " vs ".join(f"{int(gc['solved'].sum())}/{len(gc)}"
                                         for gc in (g[g["clip"] == a], g[g["clip"] == b]))
                rows.append([cell, str(x), *([size] if sized else []), f"{a} - {b}",
                             f"{fmt(diff.mean)} [{fmt(diff.low)}, {fmt(diff.high)}]", str(diff.n),
                             solved_txt, stats.verdict(diff, ti.mode, (f"clip {a}", f"clip {b}"))])
    if not rows:
        return None
    header = ["cell", length_label(task, runs), *(["size"] if sized else []), "clip",
              f"{ti.metric} difference [95% CI]", "seeds", "solved", "verdict"]
    return md_table(header, rows, (1, 5 if sized else 4, 6 if sized else 5))


def literature_table(summary: pd.DataFrame, runs: pd.DataFrame, task: str,
                     info: Callable[[str], TaskInfo] = task_info) -> str | None:
    """Ours beside the published numbers for the same task and metric (:mod:`rnnlab.literature`):
    per cell, theirs and whether it solves the task by our rule, ours at our longest length with
    its interval, our solved seeds and critical length, and whether the two agree, or why they
    cannot be compared directly (a longer T there, a different corpus)."""
    ti = info(task)
    entries = [p for p in literature.PUBLISHED.get(base(task), []) if p.metric == ti.metric]
    t = runs[(runs["task"] == task) & runs["outcome"].isin(COMPLETED)]
    if not entries or t.empty:
        return None
    x_max = longest(t)[task]
    xl = length_label(task, runs)
    s = summary[(summary["task"] == task) & (summary["x"] == x_max)]
    t = t.assign(solved=solved(t))
    sized = sizes_vary(t)
    tables = []
    for p in entries:
        header = ["cell", "clip", *(["size"] if sized else []), f"theirs ({p.metric})", "solved there",
                  f"ours at {xl}={x_max} (mean [95% CI])", "solved here (seeds)", "our critical length", "agreement"]
        rows = []
        for _, r in s.iterrows():  # summarise's order: cell, clip, size
            if base(r["cell"]) not in p.values:
                continue
            theirs = p.values[base(r["cell"])]
            there = literature.solved(theirs, p.baseline, SOLVE_THRESHOLD)
            g = t[(t["cell"] == r["cell"]) & (t["clip"] == r["clip"]) & (t["size"] == r["size"])]
            here = g[g["x"] == x_max]
            critical = stats.critical_length({int(x): list(gx["solved"]) for x, gx in g.groupby("x")})
            ours_solved = critical is not None and critical >= x_max
            rows.append([r["cell"], r["clip"], *([r["size"]] if sized else []), fmt(theirs),
                         "—" if there is None else "yes" if there else "no",
                         fmt_mean_ci(r["mean"], r["ci low"], r["ci high"], r["n"]),
                         f"{int(here['solved'].sum())}/{len(here)}", "none" if critical is None else str(critical),
                         _agreement(there, ours_solved, p.length, x_max)])
        if rows:
            their_base = f" Their trivial baseline: {fmt(p.baseline)} ({p.baseline_note})." if p.baseline else ""
            tables.append(f"{p.source}, {p.where}: {p.setting}.{their_base}\n\n"
                          + md_table(header, rows, [i + sized for i in (2, 4, 5, 6)]))
    return "\n\n".join(tables) or None


def _agreement(there: bool | None, here: bool, their_length: int | None, our_length: int) -> str:
    if there is None:
        return "no baseline there: compare the order of the cells"
    lengths = "" if their_length in (None, our_length) else f" (their T = {their_length}, ours {our_length})"
    if there == here:
        return "agree" + lengths
    if here and their_length and their_length > our_length:
        return (f"solved here at T ≤ {our_length}, not there at T = {their_length}: not a contradiction, "
                "a longer T here would test it")
    return "differ" + lengths


def throughput_table(tp: pd.DataFrame, task: str, runs: pd.DataFrame) -> str:
    """tokens/s per length (rows) and cell (columns), with the number of runs averaged; with both
    gated cells, the GRU's speed relative to the LSTM's, which checks the common claim that the
    GRU, with three gate blocks to the LSTM's four, trains about 25% faster (that would read 1.25)."""
    t = tp[tp["task"] == task]
    cells = sorted(t["cell"].unique(), key=cell_order)
    gated = {"lstm", "gru"} <= set(cells)
    rows = []
    for x in sorted(t["x"].unique()):
        row = [str(x)]
        speed = {}
        for c in cells:
            hit = t[(t["x"] == x) & (t["cell"] == c)]
            if len(hit):
                speed[c] = float(hit["tokens_per_s"].iloc[0])
            row.append(f"{hit['tokens_per_s'].iloc[0]:,.0f} (n={hit['n'].iloc[0]})" if len(hit) else "—")
        if gated:
            row.append(f"{speed['gru'] / speed['lstm']:.2f}" if {"gru", "lstm"} <= set(speed) else "—")
        rows.append(row)
    header = [length_label(task, runs), *(f"{c} tokens/s" for c in cells), *(["gru / lstm speed"] if gated else [])]
    return md_table(header, rows, range(len(header)))


# -- computed observations -----------------------------------------------------------------

def against_baseline(mean: float, low: float, high: float, n: int, base: float, mode: str,
                     name: str = "the baseline") -> str:
    """Where the baseline lies against the mean's interval, and what that establishes."""
    if not math.isfinite(base):
        return f"no {name.removeprefix('the ')} logged"
    if n < 2 or not math.isfinite(low):
        return f"one seed: {'below' if mean < base else 'above'} {name}, nothing established"
    if n < stats.MIN_SEEDS:
        return (f"{n} seeds: {'below' if mean < base else 'above'} {name} on average, nothing "
                f"established (≥ {stats.MIN_SEEDS} seeds needed)")
    if low <= base <= high:
        return f"{name} lies inside the interval: not distinguishable from it"
    gain = (base - mean) if mode == "min" else (mean - base)
    rel = f" by {abs(gain) / abs(base):.1%} of it" if base != 0 else ""
    return f"{'better' if gain > 0 else 'worse'} than {name}{rel} (established: the interval excludes it)"


def baseline_name(column: str, first: bool) -> str:
    """``the baseline`` for the task's own, ``the seasonal baseline`` for ``baseline/seasonal_mse``."""
    return "the baseline" if first else f"the {column.split('/', 1)[1].rsplit('_', 1)[0]} baseline"


def observations(summary: pd.DataFrame, runs: pd.DataFrame,
                 info: Callable[[str], TaskInfo] = task_info) -> list[str]:
    """Facts computed from the runs, each claiming only what its interval supports: per task at
    its longest length, each cell x clip against the baseline (with every seed's value), which
    cell is best per clip value and against which rivals that is established (paired over
    seeds), the gradient horizon; then the task's divergence and failure counts."""
    out: list[str] = []
    for task, x_max in longest(runs).items():
        ti, xl = info(task), length_label(task, runs)
        s = summary[(summary["task"] == task) & (summary["x"] == x_max)]
        base_cols = baseline_columns(s, ti.short)
        base_txt = ", ".join(f"{c.replace('/', ' ')} = {fmt(s[c].dropna().iloc[0])}" for c in base_cols)
        base_txt = f"{base_txt} on the test set" if base_cols else "no baseline logged"
        at_x = runs[(runs["task"] == task) & (runs["x"] == x_max)]
        head = f"- **{task}** at the longest {xl} = {x_max} ({ti.metric}, {ti.better} is better; {base_txt}):"
        lines = [*_against_baseline(s, at_x, ti, base_cols), *_best_cells(s, at_x, ti), *_horizons(s, runs, task),
                 *_outcomes(summary[summary["task"] == task], runs, task, xl)]
        out.append("\n".join([head, *(f"  - {line}" for line in lines)]))
    return out


def _arm(r, sized: bool) -> str:
    return f"{r['cell']}, clip {r['clip']}" + (f", {r['size']}" if sized else "")


def _against_baseline(s: pd.DataFrame, runs: pd.DataFrame, ti: TaskInfo, base_cols: list[str]) -> list[str]:
    """Each arm against every baseline the task logs (forecast: persistence and seasonal-naive),
    so a cell that beats one baseline but not a harder one is never called better without both."""
    lines = []
    sized = sizes_vary(s)
    for _, r in s.iterrows():
        if r["n"] == 0:
            lines.append(f"{_arm(r, sized)}: no finished run ({r['n_diverged']} of {r['n_runs']} "
                         f"diverged, {r['n_failed']} failed, {r['n_running']} running).")
            continue
        g = runs[(runs["cell"] == r["cell"]) & (runs["clip"] == r["clip"]) & (runs["size"] == r["size"])
                 & runs["outcome"].isin(COMPLETED)]
        div = f"; {r['n_diverged']} of {r['n_runs']} runs diverged" if r["n_diverged"] else ""
        seeds = ", ".join(fmt(v, 3) for v in r["per seed"])
        verdict = "; ".join(
            against_baseline(r["mean"], r["ci low"], r["ci high"], r["n"], r.get(c, math.nan), ti.mode,
                             baseline_name(c, i == 0)) for i, c in enumerate(base_cols or [f"baseline/{ti.short}"]))
        lines.append(f"{_arm(r, sized)}: {fmt_mean_ci(r['mean'], r['ci low'], r['ci high'], r['n'])} "
                     f"(n={r['n']}; seeds: {seeds}), {verdict}; solved {int(solved(g).sum())} of {len(g)}{div}.")
    return lines


def _best_cells(s: pd.DataFrame, runs: pd.DataFrame, ti: TaskInfo) -> list[str]:
    """The best mean per clip value, and against which rivals the paired difference (same
    seeds) establishes it; a mean that is lowest by chance is called so."""
    lines = []
    done = runs[(runs["outcome"] == "finished") & runs["seed"].notna()]
    sized = sizes_vary(s)
    for clip, size in sorted({(c, z) for c, z in zip(s["clip"], s["size"])},
                             key=lambda k: (clip_order(k[0]), size_order(k[1]))):
        rivals = s[(s["clip"] == clip) & (s["size"] == size) & (s["n"] > 0)]
        if len(rivals) < 2:
            continue
        best = rivals.loc[rivals["mean"].idxmin() if ti.mode == "min" else rivals["mean"].idxmax()]
        at = done[(done["clip"] == clip) & (done["size"] == size)]
        per_seed = {c: dict(zip(g["seed"].astype(int), g[ti.metric])) for c, g in at.groupby("cell")}
        won: list[str] = []
        open_: list[str] = []
        for _, r in rivals.iterrows():
            if r["cell"] == best["cell"]:
                continue
            d = stats.paired_difference(per_seed.get(best["cell"], {}), per_seed.get(r["cell"], {}))
            text = f"{r['cell']} (difference {fmt(d.mean, 3)} [{fmt(d.low, 3)}, {fmt(d.high, 3)}], {d.n} seeds)"
            (won if d.established else open_).append(text)
        verdicts = ([f"established against {', '.join(won)}"] if won else []) + (
            [f"not established against {', '.join(open_)}"] if open_ else [])
        lines.append(f"{'lowest' if ti.mode == 'min' else 'highest'} mean {ti.metric} with clip {clip}"
                     f"{f', {size}' if sized else ''}: "
                     f"{best['cell']} ({fmt(best['mean'])}); " + "; ".join(verdicts) + ".")
    return lines


def _horizons(s: pd.DataFrame, runs: pd.DataFrame, task: str) -> list[str]:
    if "horizon n" not in s or not (s["horizon n"] > 0).any():
        return []
    thr = runs.loc[runs["task"] == task, "threshold"].dropna()
    share = f"{thr.iloc[0]:g}" if len(thr) else "the threshold"
    sized = sizes_vary(s)
    horizon = ("horizon mean", "horizon ci low", "horizon ci high", "horizon n")
    parts = "; ".join(f"{_arm(r, sized)} {fmt_mean_ci(*(r[k] for k in horizon))}"
                      for _, r in s[s["horizon n"] > 0].iterrows())
    return [f"grad_flow/horizon at the last probe (the farthest distance from the readout, in steps, at which "
            f"‖∂L/∂x_t‖ is still ≥ {share} × its maximum; the profile may dip below that nearer the readout, "
            f"so it is not a bound over all distances): {parts}."]


def _outcomes(t: pd.DataFrame, runs: pd.DataFrame, task: str, xl: str) -> list[str]:
    n_div, n_runs = int(t["n_diverged"].sum()), int(t["n_runs"].sum())
    if n_div:
        where = "; ".join(f"{r['cell']} clip {r['clip']} {xl}={r['x']}: {r['n_diverged']}/{r['n_runs']}"
                          for _, r in t[t["n_diverged"] > 0].iterrows())
        lines = [f"diverged: {n_div} of {n_runs} {task} runs ({where})."]
    else:
        lines = [f"diverged: none of the {n_runs} {task} runs."]
    for what in ("failed", "running"):
        names = runs.loc[(runs["task"] == task) & (runs["outcome"] == what), "run_name"]
        if len(names):
            lines.append(f"{what} (in no mean and no diverged fraction): {len(names)} ({', '.join(map(str, names))}).")
    return lines


# -- the page ------------------------------------------------------------------------------

@dataclass
class Context:
    """Everything :func:`render` writes, gathered so the page itself is a pure function."""

    experiment: str
    tracking_uri: str
    runs: pd.DataFrame  # the selected runs
    summary: pd.DataFrame
    throughput: pd.DataFrame
    figures: dict[str, Path | None]
    superseded: int = 0
    sweep_id: str | None = None
    parents: dict[str, str] = field(default_factory=dict)  # sweep id -> parent run name
    generated: datetime = field(default_factory=lambda: datetime.now(UTC))
    discussion: str = ""
    out_dir: Path | None = None  # where the page is written: the regenerate command names it


def regenerate_command(experiment: str, sweep_id: str | None, out_dir: Path | None = None) -> str:
    """The command that rewrites this page: ``make report`` with the preset that names the
    experiment (and the output folder when it is not the preset's own), else ``src/report.py``."""
    out = f" --out {_relative(out_dir)}" if out_dir is not None else ""
    if sweep_id:
        return f"python src/report.py --experiment {experiment} --sweep-id {sweep_id}{out}"
    preset = preset_for(experiment)
    if preset is None:
        return f"python src/report.py --experiment {experiment}{out}"
    default = Path("experiments") / preset
    where = "" if out_dir is None or _relative(out_dir) == str(default) else f" OUT={_relative(out_dir)}"
    return f"make report EXP={preset}{where}   # = python src/report.py --experiment {experiment}{out}"


def preset_for(experiment: str) -> str | None:
    """The sweep preset (``conf/experiment/<name>.yaml``) that sets ``tracking.experiment`` to
    this experiment itself (parts of a study inherit it and are not it), if there is one."""
    from omegaconf import OmegaConf

    from rnnlab import paths

    for f in sorted((paths.config_dir() / "experiment").glob("*.yaml")):
        cfg = OmegaConf.load(f)
        if OmegaConf.select(cfg, "tracking.experiment", default=None) == experiment:
            return f.stem
    return None


def _relative(path: Path | None) -> str:
    from rnnlab import paths

    p = Path(path).resolve() if path is not None else Path(".")
    try:
        return str(p.relative_to(paths.repo_root()))
    except ValueError:
        return str(p)


def header(ctx: Context) -> str:
    r = ctx.runs
    counts = r["outcome"].value_counts()
    runs_txt = (f"{len(r)}: {int(counts.get('finished', 0))} finished / {int(counts.get('diverged', 0))} "
                f"diverged / {int(counts.get('failed', 0))} failed"
                + (f" / {int(counts['running'])} still running" if counts.get("running", 0) else ""))
    if ctx.superseded:
        runs_txt += f" (plus {plural(ctx.superseded, 'older run')} of the same configuration and seed, superseded)"
    sweeps = r["sweep_id"].dropna().unique()
    sweep_txt = ", ".join(f"`{s}`" + (f" ({ctx.parents[s]})" if s in ctx.parents else "") for s in sweeps) or "none"
    if ctx.sweep_id is None and len(sweeps) and r["sweep_id"].isna().any():
        sweep_txt += f"; {plural(int(r['sweep_id'].isna().sum()), 'run')} outside any sweep"
    lengths = "; ".join(f"{t}: {length_label(t, r)} = {values_text(g['x'], counts=False)}"
                        for t, g in r.groupby("task"))
    budget = "; ".join(f"{p} = {values_text(r[c])}" for p, c in BUDGET.items())
    commit_txt = ", ".join(
        f"`{str(c)[:10]}` ({plural(len(g), 'run')}"
        + (f", {int(g['git_dirty'].sum())} with uncommitted changes" if g["git_dirty"].any() else "") + ")"
        for c, g in r.groupby(r["git_commit"].fillna("unknown")))
    hashes = r["code_hash"].fillna("none").value_counts()
    code_txt = (f"`{hashes.index[0]}` for every run" if len(hashes) == 1 and hashes.index[0] != "none" else
                ", ".join(f"`{h}` ({plural(int(n), 'run')})" for h, n in hashes.items())
                + ": the runs did not all run the same code")
    t0, t1 = r["start_time"].min(), r["start_time"].max()
    dates = f"{t0:%Y-%m-%d %H:%M} – {t1:%Y-%m-%d %H:%M} UTC" if pd.notna(t0) else "—"
    rows = [["runs", runs_txt], ["sweep(s)", sweep_txt],
            ["tasks", ", ".join(sorted(r["task"].unique()))],
            ["cells", ", ".join(sorted(r["cell"].unique(), key=cell_order))],
            ["lengths", lengths],
            ["clip", ", ".join(sorted(r["clip"].unique(), key=clip_order))],
            ["seeds", values_text(r["seed"], counts=False)],
            ["budget", budget], ["runs started", dates], ["git commit(s)", commit_txt],
            ["code hash", code_txt + " (a digest of every file under `src/` and `conf/`)"],
            ["MLflow store", f"`{ctx.tracking_uri}`"]]
    selection = (f"the runs of sweep `{ctx.sweep_id}`" if ctx.sweep_id else
                 "all runs of the experiment, the most recent finished or diverged run of each "
                 "(task, cell, length, clip, seed)")
    return "\n".join([
        f"# Report: experiment `{ctx.experiment}`", "",
        f"Generated {ctx.generated:%Y-%m-%d %H:%M} UTC by `src/report.py` from {selection}. "
        "Regenerate (this rewrites everything outside the Discussion markers):", "",
        "```bash", regenerate_command(ctx.experiment, ctx.sweep_id, ctx.out_dir), "```", "",
        *(f"- **{k}**: {v}" for k, v in rows)])


def render(ctx: Context, info: Callable[[str], TaskInfo] = task_info) -> str:
    """REPORT.md: header, metric tables, figures, throughput, computed observations, and the
    discussion placeholder (or the discussion carried over from the previous version)."""
    parts = [header(ctx), "", "## Final test metric", "",
             f"The mean over the seeds that finished with its interval ({stats.METHOD}); "
             "`n` = finished seeds. "
             "Diverged runs count only in `diverged` (diverged / finished+diverged). `baseline` is "
             "the task's trivial strategy scored on the run's own test set (`baseline/*`).",
             "",
             f"Critical length: the longest length that at least half the seeds solve within the budget "
             f"(a run is solved when its validation skill reached {SOLVE_THRESHOLD}: `steps_to_solve`). "
             f"Paired differences between cells use the seeds both finished; intervals are the "
             f"{stats.METHOD}, and a difference is established only when its interval excludes 0 "
             f"and rests on at least {stats.MIN_SEEDS} seeds (fewer make the bootstrap interval too narrow)."]
    for task in sorted(ctx.runs["task"].unique()):
        ti = info(task)
        note = "" if ti.known else " (task class not found: ranked by test/loss, lower is better)"
        parts += ["", f"### {task}: `{ti.metric}`, {ti.better} is better{note}", "",
                  metric_table(ctx.summary, task, ctx.runs, info)]
        critical, paired = critical_table(ctx.runs, task), paired_table(ctx.runs, task, info)
        at_all = ctx.runs[ctx.runs["task"] == task]
        if critical and solved(at_all).any():
            parts += ["", f"**{task}: solved seeds and critical length** (in brackets: the median "
                      f"`steps_to_solve` of the seeds that solved)", "", critical]
        elif critical:  # a table of zeros would read as a result; the threshold is the finding
            parts += ["", f"**{task}: critical length**: no run reached val/skill {SOLVE_THRESHOLD} at any "
                      f"{length_label(task, ctx.runs)}, so none is defined (the table of solved seeds is left out)."]
        if paired:
            parts += ["", f"**{task}: paired differences between cells**", "", paired]
        clipping = clip_table(ctx.runs, task, info)
        if clipping:
            parts += ["", f"**{task}: what clipping changes** (paired by seed; solved: seeds that solved "
                      f"with each clip value)", "", clipping]
        published = literature_table(ctx.summary, ctx.runs, task, info)
        if published:
            parts += ["", f"**{task}: ours vs literature**", "", published]
    fig_text = [
        ("metric_vs_length.png", "Final test metric vs length",
         "One line per cell, line style = clip, error bars = 95% bootstrap CI of the mean over seeds, "
         "grey dashed = trivial baseline; log y where the values span decades."),
        ("training_curves.png", "Training curves at the longest length",
         "train/loss and the global gradient norm before clipping (log y) against the step."),
        ("grad_flow.png", "Gradient through time at the longest length",
         "‖∂L/∂x_t‖ normalised by its maximum, against the distance from the readout, at the last "
         "probed step (`diagnostics/grad_flow.csv`); runs without the file (diverged) are absent, "
         "and values below 1e-30 (float underflow) are drawn at 1e-30."),
        ("loss_by_position.png", "Loss by position in the window",
         "Test bits per character at each position of the BPTT window (`data/loss_by_pos.csv`), "
         "the mean over finished seeds, a panel per window length: position p predicts its "
         "character from the p before it, so the curve shows how much a longer context helps each cell."),
        ("forecasts.png", "Actual vs predicted, the best run of each cell",
         "The best finished run of each cell (lowest test metric at any lookback and seed) on the "
         "first test windows (`data/forecast_test.csv`): the actual series and the prediction at "
         "the last step of the horizon, the hardest one."),
    ]
    parts += ["", "## Figures"]
    for name, title, caption in fig_text:
        if ctx.figures.get(name):
            parts += ["", f"### {title}", "", caption, "", f"![{title}]({name})"]
        elif name not in TASK_FIGURES:  # a task's own figure is absent where no run is of that task
            parts += ["", f"### {title}", "", "_No data for this figure._"]
    parts += ["", "## Training throughput", "",
              "tokens/s = the median of each finished run's `perf/tokens_per_s` history, averaged "
              "over runs (seeds, clip values); measured on whatever machine ran each job, with "
              "whatever else ran beside it."]
    for task in sorted(ctx.runs["task"].unique()):
        if (ctx.throughput["task"] == task).any():
            parts += ["", f"**{task}**", "", throughput_table(ctx.throughput, task, ctx.runs)]
        else:
            parts += ["", f"**{task}**: no throughput history."]
    parts += ["", "## Discussion", "",
              "### Computed observations", "",
              "Generated from the numbers above; not interpretation.", "",
              *observations(ctx.summary, ctx.runs, info), "",
              "### Discussion", "", DISCUSSION_START,
              ctx.discussion.strip("\n") or "_To be written: what the numbers above show, and what they do not._",
              DISCUSSION_END, ""]
    return "\n".join(parts)


def check_out_dir(out_dir: Path, experiment: str) -> None:
    """Refuse to write over another experiment's report: its discussion would be kept under
    this experiment's tables (``make sweep && make report`` writing a smoke grid over a study)."""
    path = out_dir / "REPORT.md"
    if not path.exists():
        return
    first = path.read_text().split("\n", 1)[0]
    match = re.fullmatch(r"# Report: experiment `(.+)`", first.strip())
    if match and match.group(1) != experiment:
        raise ReportError(f"{path} is the report of experiment '{match.group(1)}', not '{experiment}': "
                          f"its discussion would be kept under the tables of another experiment. Write "
                          f"this one elsewhere (--out, or OUT= for make report), or delete that folder first")


def kept_discussion(path: Path) -> str:
    """The human-written text between the discussion markers of an existing report."""
    if not path.exists():
        return ""
    text = path.read_text()
    if DISCUSSION_START not in text or DISCUSSION_END not in text:
        return ""
    body = text.split(DISCUSSION_START, 1)[1].split(DISCUSSION_END, 1)[0].strip("\n")
    return "" if body.startswith("_To be written") else body


# -- end to end ----------------------------------------------------------------------------

@dataclass
class Result:
    report: Path
    files: list[Path]
    n_runs: int
    logged_to: str | None  # the parent run the files were logged to
    notes: list[str]


def parent_text(run: Run) -> str:
    """A sweep parent as the header names it: its name and, once it ended, its wall time
    (what a study cost)."""
    if run.info.end_time is None or run.info.status == "RUNNING":
        return f"{run.info.run_name}, still running"
    seconds = (run.info.end_time - run.info.start_time) / 1000
    return f"{run.info.run_name}, {run.info.status}, wall time {seconds / 60:.1f} min"


def parent_runs(client, sweep_ids: Iterable[str]) -> dict[str, Run]:
    """The sweep parent runs that exist (id -> run)."""
    out: dict[str, Run] = {}
    for sid in sweep_ids:
        try:
            run = client.get_run(sid)
        except Exception:  # noqa: BLE001 - a deleted or foreign parent: report without it
            continue
        out[sid] = run
    return out


def build(experiment: str, tracking_uri: str, out_dir: Path, sweep_id: str | None = None,
          log_to_parent: bool = True) -> Result:
    """Load, aggregate, draw, write ``out_dir/REPORT.md`` and log it to the sweep's parent run."""
    from mlflow import MlflowClient

    # Imported here, not at the top: report_figures builds on this module's steps, and only
    # the end-to-end run needs matplotlib.
    from rnnlab import report_figures as draw

    check_store(tracking_uri)
    check_out_dir(out_dir, experiment)
    client = MlflowClient(tracking_uri)
    raw = load_runs(tracking_uri, experiment, sweep_id)
    remember_tasks(raw)
    runs, superseded = select_runs(tidy(raw))
    if runs.empty:
        what = f"sweep '{sweep_id}' of experiment '{experiment}'" if sweep_id else f"experiment '{experiment}'"
        raise ReportError(f"{what} has no training runs (runs with a 'cell' tag) in {tracking_uri}")
    summary = summarise(runs)
    hist = fetch_histories(client, runs.loc[runs["outcome"] == "finished", "run_id"], ["perf/tokens_per_s"])
    probed = runs.loc[at_longest(runs) & runs["outcome"].isin(COMPLETED), "run_id"]
    curves = fetch_histories(client, probed, ["train/loss", "grad_norm/pre_clip"])
    profiles = last_profiles(fetch_grad_flow(client, probed))
    finished = runs.loc[runs["outcome"] == "finished"]
    by_position = fetch_csv(client, finished.loc[finished["task"].map(base).isin(POSITION_TASKS), "run_id"],
                            "data/loss_by_pos.csv")
    best = best_runs(runs[runs["task"].map(base).isin(FORECAST_TASKS)])
    forecasts = fetch_csv(client, best["run_id"], "data/forecast_test.csv")

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:  # a figure this version cannot draw must not survive from an old one
        (out_dir / name).unlink(missing_ok=True)
    arms, arm_summary = as_figure_arms(runs), as_figure_arms(summary)
    figures = {
        "metric_vs_length.png": draw.plot_metric_vs_length(arm_summary, arms, out_dir / "metric_vs_length.png"),
        "training_curves.png": draw.plot_training_curves(arms, curves, out_dir / "training_curves.png"),
        "grad_flow.png": draw.plot_grad_flow(arms, profiles, out_dir / "grad_flow.png"),
        "loss_by_position.png": draw.plot_loss_by_position(arms, by_position, out_dir / "loss_by_position.png"),
        "forecasts.png": draw.plot_forecasts(best, forecasts, out_dir / "forecasts.png"),
    }
    sweeps = list(runs["sweep_id"].dropna().unique())
    parents = parent_runs(client, [sweep_id] if sweep_id else sweeps)
    report = out_dir / "REPORT.md"
    ctx = Context(experiment, tracking_uri, runs, summary, throughput(runs, hist), figures, superseded,
                  sweep_id, {s: parent_text(r) for s, r in parents.items()},
                  discussion=kept_discussion(report), out_dir=out_dir)
    report.write_text(render(ctx))
    files = [report, *(p for p in figures.values() if p)]

    notes, logged_to = [], None
    if log_to_parent and parents:
        # Several sweeps fed the report: it goes to the most recent one's parent.
        logged_to = max(parents, key=lambda s: parents[s].info.start_time)
        for f in files:
            client.log_artifact(logged_to, str(f), "report")
        if len(parents) > 1:
            notes.append(f"{len(parents)} sweeps contributed; logged to the most recent one's parent run")
    return Result(report, files, len(runs), logged_to, notes)
