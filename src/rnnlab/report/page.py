"""REPORT.md itself: the header, the sections in order with the figures' captions, the regenerate
command, and the human-written discussion kept across regenerations. :func:`render` is a pure
function of a :class:`Context`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from rnnlab import stats
from rnnlab.report.frames import BUDGET, solve_threshold, solved
from rnnlab.report.labels import base, cell_order, clip_order, length_label
from rnnlab.report.observations import observations
from rnnlab.report.source import DATA
from rnnlab.report.store import ReportError
from rnnlab.report.tables import (
    clip_table,
    critical_table,
    inside_table,
    literature_table,
    metric_table,
    paired_table,
    plural,
    throughput_table,
    values_text,
)
from rnnlab.report.taskinfo import TaskInfo, task_info
from rnnlab.tasks.registry import find

FIGURES = ("metric_vs_length.png", "metric_vs_state_size.png", "training_curves.png", "grad_flow.png",
           "loss_by_position.png", "forecasts.png")
# drawn only where the data is: the tasks that log it, a study that varies the state size
TASK_FIGURES = ("metric_vs_state_size.png", "loss_by_position.png", "forecasts.png")
# The data CSVs the task figures draw, logged by the tasks whose class says so (Task.report_data)
POSITION_DATA = "data/loss_by_pos.csv"  # the loss at each window position: loss_by_position.png
FORECAST_DATA = "data/forecast_test.csv"  # actual and predicted values: forecasts.png


def logs_data(tasks: pd.Series, data: str) -> pd.Series:
    """Which of ``tasks`` (labels, variants allowed) log the data CSV ``data``."""
    def logs(task: str) -> bool:
        cls = find(base(task))
        return cls is not None and cls.report_data == data
    return tasks.map(logs).astype(bool)


DISCUSSION_START = "<!-- discussion: start (text between these markers is kept when the report is regenerated) -->"
DISCUSSION_END = "<!-- discussion: end -->"


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
    saved: bool = False  # the runs are (or are being written) as data beside the page: ``data/``
    home: Path | None = None  # the study's folder the page speaks of (default out_dir): a check writes elsewhere

    @property
    def folder(self) -> Path | None:
        return self.home or self.out_dir


def regenerate_command(experiment: str, sweep_id: str | None, out_dir: Path | None = None,
                       saved: bool = False) -> str:
    """The command that rewrites this page: from the study's data beside it when it has some,
    else ``make report`` with the preset that names the experiment (and the output folder when
    it is not the preset's own), else ``src/report.py``."""
    if saved and out_dir is not None:
        return f"python src/report.py --from {_relative(out_dir)}"
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
            ["data", f"[`data/`]({DATA}/): every run's params, tags and final metrics, and the histories and "
                     f"artifacts drawn here (Parquet); `make open-study EXP={_relative(ctx.folder).split('/')[-1]}` "
                     "opens them in `mlflow ui`" if ctx.saved and ctx.folder is not None else
                     "the MLflow store only (not exported beside this page)"]]
    selection = (f"the runs of sweep `{ctx.sweep_id}`" if ctx.sweep_id else
                 "all runs of the experiment, the most recent finished or diverged run of each "
                 "(task, cell, length, clip, seed)")
    return "\n".join([
        f"# Report: experiment `{ctx.experiment}`", "",
        f"Generated {ctx.generated:%Y-%m-%d %H:%M} UTC by `src/report.py` from {selection}. "
        "Regenerate (this rewrites everything outside the Discussion markers):", "",
        "```bash", regenerate_command(ctx.experiment, ctx.sweep_id, ctx.folder, ctx.saved), "```", "",
        *(f"- **{k}**: {v}" for k, v in rows)])


def render(ctx: Context, info: Callable[[str], TaskInfo] = task_info) -> str:
    """REPORT.md: header, metric tables, figures, throughput, computed observations, and the
    discussion placeholder (or the discussion carried over from the previous version).

    Rendered twice: every verdict of the page is one family (:class:`stats.Family`), so the
    first pass gathers the comparisons, and the second prints their Holm-adjusted p-values."""
    family = stats.Family()
    _page(ctx, info, family)
    family.close()
    return _page(ctx, info, family)


def _page(ctx: Context, info: Callable[[str], TaskInfo], family: stats.Family) -> str:
    return "\n".join([header(ctx), "", *_metrics(ctx, info, family), "", *_figures(ctx), *_inside(ctx), "",
                      *_throughput(ctx), "", *_discussion(ctx, info, family)])


def docs_link(out_dir: Path | None, page: str) -> str:
    """A link from the report's folder to a page of ``docs/`` (plain text outside the repo)."""
    import os

    from rnnlab import paths

    target = paths.repo_root() / "docs" / page
    if out_dir is not None:
        try:
            Path(out_dir).resolve().relative_to(paths.repo_root())
        except ValueError:
            return f"`docs/{page}` in rnnlab"
        return f"[docs/{page}]({os.path.relpath(target, Path(out_dir).resolve())})"
    return f"[docs/{page}](docs/{page})"


def method(family: stats.Family, out_dir: Path | None = None) -> str:
    """How the page's verdicts are made, with the size of its family."""
    return (f"Intervals are the {stats.METHOD}. Every difference is tested by the {stats.TEST}: this page makes "
            f"{family.size} comparison{'' if family.size == 1 else 's'}, and Holm's method "
            f"keeps the chance that any of its *established* verdicts is a false positive at "
            f"{stats.ALPHA:.0%} (the rule and its calibration: {docs_link(out_dir, 'statistics.md')}). A difference is "
            f"established when its adjusted p is below {stats.ALPHA:g}; one that is not shows the seeds a follow-up "
            f"testing it alone would need for {stats.POWER:.0%} power, the observed difference taken as true.")


def _metrics(ctx: Context, info: Callable[[str], TaskInfo], family: stats.Family) -> list[str]:
    """Per task: the final test metric, critical lengths, paired differences, clipping, literature."""
    parts = ["## Final test metric", "",
             f"The mean over the seeds that finished with its interval ({stats.METHOD}); "
             "`n` = finished seeds. "
             "Diverged runs count only in `diverged` (diverged / finished+diverged). `baseline` is "
             "the task's trivial strategy scored on the run's own test set (`baseline/*`).",
             "",
             f"Critical length: the longest length that at least half the seeds solve within the budget "
             f"(a run is solved when its validation skill reached {solve_threshold(ctx.runs)}: `steps_to_solve`). "
             "Paired differences use the seeds both finished.", "", method(family, ctx.folder)]
    for task in sorted(ctx.runs["task"].unique()):
        ti = info(task)
        note = "" if ti.known else " (task class not found: ranked by test/loss, lower is better)"
        parts += ["", f"### {task}: `{ti.metric}`, {ti.better} is better{note}", "",
                  metric_table(ctx.summary, task, ctx.runs, info)]
        critical, paired = critical_table(ctx.runs, task), paired_table(ctx.runs, task, info, family)
        at_all = ctx.runs[ctx.runs["task"] == task]
        if critical and solved(at_all).any():
            parts += ["", f"**{task}: solved seeds and critical length** (in brackets: the median "
                      f"`steps_to_solve` of the seeds that solved)", "", critical]
        elif critical:  # a table of zeros would read as a result; the threshold is the finding
            parts += ["", f"**{task}: critical length**: no run reached val/skill {solve_threshold(at_all)} at any "
                      f"{length_label(task, ctx.runs)}, so none is defined (the table of solved seeds is left out)."]
        if paired:
            parts += ["", f"**{task}: paired differences between cells**", "", paired]
        clipping = clip_table(ctx.runs, task, info, family)
        if clipping:
            parts += ["", f"**{task}: what clipping changes** (paired by seed; solved: seeds that solved "
                      f"with each clip value)", "", clipping]
        published = literature_table(ctx.summary, ctx.runs, task, info)
        if published:
            parts += ["", f"**{task}: ours vs literature**", "", published]
    return parts


FIGURE_TEXT = [  # (file, title, caption), in the order the page shows them
    ("metric_vs_length.png", "Final test metric vs length",
     "One line per cell, line style = clip, error bars = the 95% t-interval of the mean over seeds, "
     "grey dashed = trivial baseline; log y where the values span decades."),
    ("metric_vs_state_size.png", "Final test metric vs state size",
     "Zoology's figure: the test metric against `model/state_size`, the floats of state a cell carries "
     "per sequence (log x; attention's is its whole context, seq_len × 2 × width per layer), a line per "
     "cell, error bars = the 95% t-interval of the mean over seeds, grey dashed = trivial baseline; a "
     "panel per task and length where a cell was run at more than one state size."),
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


def _figures(ctx: Context) -> list[str]:
    parts = ["## Figures"]
    for name, title, caption in FIGURE_TEXT:
        if ctx.figures.get(name):
            parts += ["", f"### {title}", "", caption, "", f"![{title}]({name})"]
        elif name not in TASK_FIGURES:  # a task's own figure is absent where no run is of that task
            parts += ["", f"### {title}", "", "_No data for this figure._"]
    return parts


def _inside(ctx: Context) -> list[str]:
    """What the diagnostics read inside each cell (horizons, gates, |λ|); nothing when none did."""
    inside = {task: inside_table(ctx.runs, task) for task in sorted(ctx.runs["task"].unique())}
    if not any(inside.values()):
        return []
    parts = ["", "## Inside the cells", "",
             "What the diagnostics read at each finished run's last validation, the mean over seeds: "
             "the input-gradient horizon (`grad_flow/horizon`: the farthest distance from the readout, "
             "in steps, at which ‖∂L/∂x_t‖ is still 1% of its maximum), the same for ‖∂L/∂h_t‖ inside the "
             "cell (`grad_flow/hidden_horizon`), the mean gates, and the LRU's eigenvalue moduli |λ| "
             "(a state channel keeps |λ|^t of its value after t steps: 0.99 keeps 37% after 100). The "
             "update gate z has opposite meanings: the GRU's z is the share of the old state kept "
             "(PyTorch's convention), the minGRU's the share of the new candidate written (Feng et al.'s); "
             "the minLSTM's forget gate is the normalised f' = f / (f + i). A run that stopped once solved "
             "read these at that step."]
    for task, table in inside.items():
        if table:
            parts += ["", f"**{task}**", "", table]
    return parts


def _throughput(ctx: Context) -> list[str]:
    parts = ["## Training throughput", "",
             "tokens/s = the median of each finished run's `perf/tokens_per_s` history, averaged "
             "over runs (seeds, clip values); measured on whatever machine ran each job, with "
             "whatever else ran beside it."]
    for task in sorted(ctx.runs["task"].unique()):
        if (ctx.throughput["task"] == task).any():
            parts += ["", f"**{task}**", "", throughput_table(ctx.throughput, task, ctx.runs)]
        else:
            parts += ["", f"**{task}**: no throughput history."]
    return parts


def _discussion(ctx: Context, info: Callable[[str], TaskInfo], family: stats.Family) -> list[str]:
    """The computed observations, then the hand-written discussion kept across regenerations."""
    return ["## Discussion", "",
            "### Computed observations", "",
            "Generated from the numbers above; not interpretation.", "",
            *observations(ctx.summary, ctx.runs, info, family), "",
            "### Discussion", "", DISCUSSION_START,
            ctx.discussion.strip("\n") or "_To be written: what the numbers above show, and what they do not._",
            DISCUSSION_END, ""]


def check_out_dir(out_dir: Path, experiment: str) -> None:
    """Refuse to write over another experiment's report: its discussion would be kept under
    this experiment's tables (``make sweep && make report`` writing a smoke grid over a study)."""
    path = out_dir / "REPORT.md"
    if not path.exists():
        return
    head = path.read_text().split("\n", 5)[:5]  # the title, perhaps under a one-paragraph notice
    match = next((m for line in head if (m := re.fullmatch(r"# Report: experiment `(.+)`", line.strip()))), None)
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
    return "" if body.startswith(("_To be written", "_(discussion: written by hand")) else body  # placeholders
