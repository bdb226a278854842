"""The report's pandas steps: runs as one tidy frame, the run kept per configuration and seed,
the summary over seeds, throughput, gradient profiles, best runs and solved runs. Each takes
and returns plain frames, so all of it is tested without MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from rnnlab import runs as runs_tags
from rnnlab import stats
from rnnlab.report.labels import base, size_label, sort_rows, variant_labels
from rnnlab.report.taskinfo import TaskInfo, task_info
from rnnlab.runs import clip_label, metric_name

# A run is one seed of one configuration; a group is the seeds of one configuration.
GROUP = ["task", "cell", "seq_len", "distance", "clip", "size"]
KEY = [*GROUP, "seed"]
# What counts as solved is each run's own ``solve.threshold`` (conf/config.yaml); this is for
# runs logged before that param existed, at its value then.
SOLVE_THRESHOLD = 0.9
COMPLETED = ("finished", "diverged")  # outcomes that are results (a diverged run is one)
BUDGET = {"trainer.max_steps": "max_steps", "cell.hidden_size": "hidden_size", "batch_size": "batch_size"}


def _col(raw: pd.DataFrame, name: str) -> pd.Series:
    return raw[name] if name in raw.columns else pd.Series(np.nan, index=raw.index, dtype=object)


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
        "cell": _col(raw, f"tags.{runs_tags.CELL}"),
        "task": _col(raw, f"tags.{runs_tags.TASK}"),
        "seq_len": num(_col(raw, f"tags.{runs_tags.SEQ_LEN}")).astype("Int64"),
        "distance": num(_col(raw, "params.task.distance")).astype("Int64"),
        "clip": _col(raw, f"tags.{runs_tags.CLIP}").map(clip_label),
        "seed": num(_col(raw, f"tags.{runs_tags.SEED}")).astype("Int64"),
        "diverged": _col(raw, f"tags.{runs_tags.DIVERGED}").astype(str).str.lower().eq("true"),
        "is_sweep_parent": _col(raw, f"tags.{runs_tags.SWEEP}").astype(str).str.lower().eq("true"),
        "sweep_id": _col(raw, f"tags.{runs_tags.SWEEP_ID}"),
        "git_commit": _col(raw, "tags.git_commit"),
        "git_dirty": _col(raw, "tags.git_dirty").astype(str).str.lower().eq("true"),
        "code_hash": _col(raw, f"tags.{runs_tags.CODE_HASH}"),
        "threshold": num(_col(raw, "params.diagnostics.threshold")),
        "solve_threshold": num(_col(raw, "params.solve.threshold")).fillna(SOLVE_THRESHOLD),
        "size": size_label(num(_col(raw, "params.model.param_budget")), num(_col(raw, "params.cell.hidden_size"))),
        "state_size": num(_col(raw, "params.model/state_size")),
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
        for short in [ti.short, *(metric_name(m) for m in ti.extras)]:
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


def solved(runs: pd.DataFrame) -> pd.Series:
    """Per run: solved within its budget, i.e. it logged ``steps_to_solve`` (its validation skill
    reached its ``solve.threshold``); runs made before that metric existed: ``test/skill`` >=
    the threshold. A diverged or failed run did not solve."""
    nothing = pd.Series(np.nan, index=runs.index)
    steps = runs["steps_to_solve"] if "steps_to_solve" in runs else nothing
    skill = runs["test/skill"] if "test/skill" in runs else nothing
    threshold = runs["solve_threshold"] if "solve_threshold" in runs else SOLVE_THRESHOLD
    return (runs["outcome"] == "finished") & (steps.notna() | (skill >= threshold))


def solve_threshold(runs: pd.DataFrame) -> str:
    """The validation skill the runs count as solved, as the report states it: one value, or
    each value where runs differ (a comparison across thresholds is the reader's to judge)."""
    values = sorted(set(runs["solve_threshold"].dropna())) if "solve_threshold" in runs else []
    return " or ".join(f"{v:g}" for v in values) or f"{SOLVE_THRESHOLD:g}"
