"""The comparison report of an experiment: MLflow runs -> one tidy table -> REPORT.md + figures.

A sweep leaves dozens of runs in MLflow; the question they answer (which cell copes with which
dependency length, and what clipping changes) needs them side by side, averaged over seeds, next
to each task's trivial baseline. This package builds that page, in small steps that each take
and return plain pandas objects, so everything but the loading is tested without MLflow:

1. :func:`load_runs`: ``mlflow.search_runs`` on the experiment (optionally one sweep);
2. :func:`tidy`: one row per run with typed columns (cell, task, seq_len, clip, seed, outcome,
   budget, every metric), the sweep's parent run dropped;
3. :func:`select_runs`: one run per (task, cell, seq_len, distance, clip, seed): the most
   recent one that finished or diverged, so a rerun supersedes an old run;
4. :func:`summarise`: per cell x length x clip x size (equal hidden size, or equal parameter
   budget), the mean over seeds of every test metric with its 95% t-interval, the
   baseline and the diverged fraction; then solved seeds and critical lengths, paired
   differences between cells and the published numbers beside ours (:mod:`rnnlab.literature`);
5. :func:`throughput`, :func:`last_profiles` and :func:`render` for the page; the figures are
   drawn by :mod:`rnnlab.report.figures` from the same frames.

The headline metric of a task is the test version of its class's ``main_metric``; its extra
metrics, length label, figure data and published numbers are its class's too (found through
:mod:`rnnlab.tasks.registry`, not copied here), so a new task needs no change in this package.
The page states numbers only: its "Discussion" section is left to people, with computed
observations as a starting point, and text written between the discussion markers survives a
regeneration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rnnlab.report.frames import (
    BUDGET,
    COMPLETED,
    GROUP,
    KEY,
    SOLVE_THRESHOLD,
    at_longest,
    baseline_columns,
    best_runs,
    last_profiles,
    longest,
    mean_std,
    outcome,
    select_runs,
    solved,
    summarise,
    throughput,
    tidy,
)
from rnnlab.report.labels import (
    CELL_ORDER,
    NOT_VARIANTS,
    as_figure_arms,
    base,
    cell_order,
    clip_order,
    length_label,
    size_label,
    size_order,
    sizes_vary,
    sort_rows,
    variant_labels,
)
from rnnlab.report.labels import _param_text as _param_text
from rnnlab.report.observations import against_baseline, baseline_name, observations
from rnnlab.report.page import (
    DISCUSSION_END,
    DISCUSSION_START,
    FIGURES,
    FORECAST_DATA,
    POSITION_DATA,
    TASK_FIGURES,
    Context,
    check_out_dir,
    header,
    kept_discussion,
    logs_data,
    preset_for,
    regenerate_command,
    render,
)
from rnnlab.report.source import DATA, RUNS, Recorder, Saved, Store
from rnnlab.report.store import (
    ReportError,
    check_store,
    fetch_grad_flow,
    find_experiment,
    parent_text,
    parent_texts,
)
from rnnlab.report.tables import _agreement as _agreement
from rnnlab.report.tables import (
    clip_table,
    critical_table,
    fmt,
    fmt_mean_ci,
    inside_table,
    literature_table,
    md_table,
    metric_table,
    paired_table,
    plural,
    solved_cell,
    throughput_table,
    values_text,
)
from rnnlab.report.taskinfo import TaskInfo, remember_tasks, task_info
from rnnlab.report.taskinfo import _task_info_from_code as _task_info_from_code
from rnnlab.runs import clip_label

__all__ = ["BUDGET", "CELL_ORDER", "COMPLETED", "DATA", "DISCUSSION_END", "DISCUSSION_START",
           "FIGURES", "FORECAST_DATA", "GROUP", "KEY", "NOT_VARIANTS",
           "POSITION_DATA", "RUNS", "SOLVE_THRESHOLD", "TASK_FIGURES", "Context", "Recorder", "ReportError",
           "Result", "Saved", "Store", "TaskInfo", "against_baseline", "as_figure_arms", "at_longest", "base",
           "baseline_columns", "baseline_name", "best_runs", "build", "cell_order", "check_out_dir", "check_store",
           "clip_label", "clip_order", "clip_table", "critical_table", "fetch_grad_flow", "find_experiment", "fmt",
           "fmt_mean_ci", "header", "inside_table", "kept_discussion", "last_profiles", "length_label", "logs_data",
           "literature_table", "longest", "md_table", "mean_std", "metric_table", "observations", "outcome",
           "paired_table", "parent_text", "parent_texts", "plural", "preset_for", "regenerate_command",
           "remember_tasks", "render", "select_runs", "size_label", "size_order", "sizes_vary", "solved",
           "solved_cell", "sort_rows", "summarise", "task_info", "throughput", "throughput_table", "tidy",
           "values_text", "variant_labels"]


@dataclass
class Result:
    report: Path
    files: list[Path]
    n_runs: int
    logged_to: str | None  # the parent run the files were logged to
    notes: list[str]


def build(experiment: str, tracking_uri: str, out_dir: Path, sweep_id: str | None = None,
          log_to_parent: bool = True, export: bool = False, partial: bool = False) -> Result:
    """The report of an experiment in an MLflow store; with ``export``, its runs are also
    written beside it as the study's data (``out_dir/data/``: :mod:`rnnlab.report.source`),
    from which :func:`build_from` writes the same page. ``partial``: the study is still
    running; only its data is written (marked incomplete), and the page beside it is left."""
    import tempfile

    store = Store(tracking_uri, experiment, sweep_id)
    source = Recorder(store) if export or partial else store
    with tempfile.TemporaryDirectory() as scratch:
        page_dir = Path(scratch) if partial else out_dir
        result = build_from(source, page_dir, log_to_parent=log_to_parent and not partial, saved=export)
        if isinstance(source, Recorder):
            runs = select_runs(tidy(source.runs()))[0]
            done = runs[runs["outcome"].isin(COMPLETED)]
            data = source.save(out_dir, extra_histories=_view_histories(source, done), complete=not partial)
            result.files = data if partial else result.files + data
    return result


def _view_histories(source: Recorder, runs) -> object:
    """The histories the study's comparison views chart (its main metric and the gradient norm
    over steps), so the runs opened in ``mlflow ui`` draw them."""
    import pandas as pd

    raw = source.runs()
    main_of = dict(zip(raw["run_id"], raw.get("tags.main_metric", pd.Series(index=raw.index, dtype=object))))
    mains = runs["run_id"].map(main_of).fillna("val/loss")
    frames = [source.store.histories(g["run_id"], [main, "grad_norm/pre_clip"]) for main, g in runs.groupby(mains)]
    return pd.concat(frames, ignore_index=True) if frames else None


def build_from(source: Store | Recorder | Saved, out_dir: Path, log_to_parent: bool = False,
               saved: bool = False) -> Result:
    """Load, aggregate, draw, write ``out_dir/REPORT.md``, and log it to the sweep's parent run
    when the runs came from an MLflow store (``log_to_parent``)."""
    # Imported here, not at the top: only the end-to-end run needs matplotlib.
    from rnnlab.report import figures as draw

    experiment, sweep_id = source.experiment, source.sweep_id
    check_out_dir(out_dir, experiment)
    raw = source.runs()
    remember_tasks(raw)
    runs, superseded = select_runs(tidy(raw))
    if runs.empty:
        what = f"sweep '{sweep_id}' of experiment '{experiment}'" if sweep_id else f"experiment '{experiment}'"
        where = source.tracking_uri if isinstance(source, Store | Recorder) else source.folder
        raise ReportError(f"{what} has no training runs (runs with a 'cell' tag) in {where}")
    summary = summarise(runs)
    hist = source.histories(runs.loc[runs["outcome"] == "finished", "run_id"], ["perf/tokens_per_s"])
    probed = runs.loc[at_longest(runs) & runs["outcome"].isin(COMPLETED), "run_id"]
    curves = source.histories(probed, ["train/loss", "grad_norm/pre_clip"])
    profiles = last_profiles(fetch_grad_flow(source, probed))
    finished = runs.loc[runs["outcome"] == "finished"]
    by_position = source.csv(finished.loc[logs_data(finished["task"], POSITION_DATA), "run_id"], POSITION_DATA)
    best = best_runs(runs[logs_data(runs["task"], FORECAST_DATA)])
    forecasts = source.csv(best["run_id"], FORECAST_DATA)

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:  # a figure this version cannot draw must not survive from an old one
        (out_dir / name).unlink(missing_ok=True)
    arms, arm_summary = as_figure_arms(runs), as_figure_arms(summary)
    figures = {
        "metric_vs_length.png": draw.plot_metric_vs_length(arm_summary, arms, out_dir / "metric_vs_length.png"),
        "metric_vs_state_size.png": draw.plot_metric_vs_state_size(arms, out_dir / "metric_vs_state_size.png"),
        "training_curves.png": draw.plot_training_curves(arms, curves, out_dir / "training_curves.png"),
        "grad_flow.png": draw.plot_grad_flow(arms, profiles, out_dir / "grad_flow.png"),
        "loss_by_position.png": draw.plot_loss_by_position(arms, by_position, out_dir / "loss_by_position.png"),
        "forecasts.png": draw.plot_forecasts(best, forecasts, out_dir / "forecasts.png"),
    }
    sweeps = list(runs["sweep_id"].dropna().unique())
    parents = parent_texts(raw, [sweep_id] if sweep_id else sweeps)
    report = out_dir / "REPORT.md"
    ctx = Context(experiment, getattr(source, "tracking_uri", ""), runs, summary, throughput(runs, hist), figures,
                  superseded, sweep_id, parents, discussion=kept_discussion(report), out_dir=out_dir,
                  saved=saved or isinstance(source, Saved), home=source.folder if isinstance(source, Saved) else None)
    report.write_text(render(ctx))
    files = [report, *(p for p in figures.values() if p)]

    notes, logged_to = [], None
    if log_to_parent and parents and isinstance(source, Store | Recorder):
        # Several sweeps fed the report: it goes to the most recent one's parent.
        start = dict(zip(raw["run_id"], raw["start_time"]))
        logged_to = max(parents, key=lambda s: start[s])
        for f in files:
            source.client.log_artifact(logged_to, str(f), "report")
        if len(parents) > 1:
            notes.append(f"{len(parents)} sweeps contributed; logged to the most recent one's parent run")
    return Result(report, files, len(runs), logged_to, notes)
