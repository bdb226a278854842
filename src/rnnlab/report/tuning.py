"""The tuned report: does a comparison's verdict survive tuning each arm with the same budget?

For a tuning experiment (``make tune EXP=<preset>``; see :mod:`rnnlab.tune.study`), from its
MLflow runs and Optuna studies:

* the tuned arms: each arm's best configuration and its test metric over the re-seed runs
  (mean and 95% t-interval), beside the arm's default configuration re-run on the
  same seeds (a plain sweep into the same experiment: runs with no ``tune_role``), and their
  paired difference;
* the cells compared, default and tuned: every pair's paired difference and verdict under
  both, and whether tuning changed it;
* for a task with a solve threshold, the seeds that solved, default and tuned;
* the expected best validation score against the number of trials (Tang et al. 2020's
  unbiased estimator of Dodge et al. 2019's curve), with its spread;
* hyperparameter importance per arm (Optuna's PED-ANOVA, Watanabe et al. 2023), and each
  arm's trials against its most important hyperparameter (a log axis for a log-sampled one).

Statistics are :mod:`rnnlab.stats`'s: paired t-tests, every verdict of the page Holm-adjusted together.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from rnnlab import figures, paths, stats
from rnnlab import runs as tags
from rnnlab.report.page import DISCUSSION_END, DISCUSSION_START, check_out_dir, kept_discussion, method
from rnnlab.report.source import DATA, RUNS, STUDY, public
from rnnlab.report.store import ReportError
from rnnlab.report.tables import TEST_HEADER, alone, fmt, fmt_mean_ci, md_table, test_cells
from rnnlab.runs import on_split
from rnnlab.tune.expected import expected_best

TRIALS = "trials.parquet"  # a tuning study's Optuna trials, beside its runs in data/
TRIALS_SHOWN = (1, 2, 3, 5, 10, 20, 50)  # columns of the expected-best table (those <= N)


@dataclass
class ArmResult:
    """One arm of a tuning experiment, as the report reads it."""

    cell: str
    seq_len: int
    study: str
    parent_id: str
    main_metric: str
    mode: str
    storage: str
    space: dict[str, str]
    best_params: dict[str, str] = field(default_factory=dict)
    best_trial: int | None = None
    best_value: float | None = None
    trial_values: list[float] = field(default_factory=list)  # every finished trial's value (diverged: worst)
    trials: list[dict] = field(default_factory=list)  # {params, value, diverged}
    n_trials: int = 0
    n_diverged: int = 0
    n_failed: int = 0
    tuned: dict[int, float] = field(default_factory=dict)  # seed -> test metric of the re-seed runs
    default: dict[int, float] = field(default_factory=dict)  # seed -> test metric of the default arm
    tuned_solved: dict[int, bool] = field(default_factory=dict)
    default_solved: dict[int, bool] = field(default_factory=dict)
    stops_once_solved: bool = False  # its runs had solve.early_stop: solving is what they were for
    importance: dict[str, float] = field(default_factory=dict)
    source: str = ""  # the tuning experiment it came from
    task: str = ""
    code_hashes: set[str] = field(default_factory=set)  # of its trial, re-seed and default runs
    fixed: dict[str, str] = field(default_factory=dict)  # what its trials held fixed: budget, sizes, sampler

    @property
    def label(self) -> str:
        return f"{self.cell} T={self.seq_len}"

    @property
    def test_metric(self) -> str:
        return on_split(self.main_metric, "test")


def is_tuned(tracking_uri: str, experiment: str) -> bool:
    """Whether ``experiment`` holds tuning studies (runs tagged ``tune_study``)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return exp is not None and bool(client.search_runs([exp.experiment_id], f"tags.{tags.TUNE_STUDY} LIKE '%'",
                                                       max_results=1))


def load(tracking_uri: str, experiment: str) -> list[ArmResult]:
    """The arms of ``experiment`` in an MLflow store, with their trials, re-seed and default runs."""
    import optuna
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(f"no experiment '{experiment}' in {tracking_uri}")
    everything = client.search_runs([exp.experiment_id], max_results=50_000)
    return _arms(experiment, everything, lambda arm: optuna.load_study(study_name=arm.study, storage=arm.storage))


def load_saved(folder: Path) -> list[ArmResult]:
    """The arms of a committed tuning study, from its data folder (see :func:`export`)."""
    data = Path(folder) / DATA
    if not (data / TRIALS).is_file():
        raise ReportError(f"{folder}: no tuning data ({DATA}/{TRIALS})")
    meta = json.loads((data / STUDY).read_text()) if (data / STUDY).is_file() else {}
    everything = [_as_run(r) for r in pd.read_parquet(data / RUNS).to_dict("records")]
    trials = pd.read_parquet(data / TRIALS)
    return _arms(meta.get("experiment") or Path(folder).name, everything,
                 lambda arm: _study(arm.study, trials[trials["study"] == arm.study]))


def export_(tracking_uri: str, experiment: str, folder: Path, complete: bool = True) -> list[Path]:
    """Write a tuning experiment's runs and its Optuna trials to ``folder/data/``, so that
    :func:`load_saved` reads the same arms :func:`load` does (``complete=False``: a snapshot
    of a study still running)."""
    import mlflow
    import optuna
    from optuna.distributions import distribution_to_json

    arms = load(tracking_uri, experiment)
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=50_000, output_format="pandas")
    rows = []
    for arm in arms:
        for t in optuna.load_study(study_name=arm.study, storage=arm.storage).get_trials(deepcopy=False):
            rows.append({"study": arm.study, "number": t.number, "state": t.state.name, "value": t.value,
                         "params": json.dumps(t.params),  # in the study's order: the page lists them so
                         "distributions": json.dumps({k: distribution_to_json(d) for k, d in t.distributions.items()},
                                                     sort_keys=True),
                         "user_attrs": json.dumps(t.user_attrs, sort_keys=True, default=str),
                         "start": t.datetime_start, "complete": t.datetime_complete})
    data = Path(folder) / DATA
    data.mkdir(parents=True, exist_ok=True)
    runs = public(runs)
    runs.to_parquet(data / RUNS, index=False, compression="zstd")
    pd.DataFrame(rows).to_parquet(data / TRIALS, index=False, compression="zstd")
    meta = {"experiment": experiment, "sweep_id": None, "complete": complete}
    (data / STUDY).write_text(json.dumps(meta, indent=1) + "\n")
    return [data / RUNS, data / TRIALS, data / STUDY]


def _as_run(row: dict):
    """A row of ``search_runs``' frame as the few fields of an MLflow ``Run`` the report reads."""
    from types import SimpleNamespace

    def part(prefix: str, numeric: bool = False) -> dict:
        items = ((k[len(prefix):], v) for k, v in row.items() if k.startswith(prefix))
        return {k: float(v) for k, v in items if v is not None and v == v} if numeric else \
            {k: str(v) for k, v in items if v is not None and v == v}

    start = row.get("start_time")
    start_ms = int(pd.Timestamp(start).value // 1_000_000) if start is not None and not pd.isna(start) else 0
    return SimpleNamespace(info=SimpleNamespace(run_id=row["run_id"], status=row["status"], start_time=start_ms),
                           data=SimpleNamespace(tags=part("tags."), params=part("params."),
                                                metrics=part("metrics.", numeric=True)))


def _study(name: str, trials: pd.DataFrame):
    """An in-memory Optuna study holding the saved trials, numbered as they were."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(study_name=name)
    for t in trials.sort_values("number").to_dict("records"):
        state = TrialState[t["state"]]
        done = state == TrialState.COMPLETE
        study.add_trial(create_trial(
            state=state, value=float(t["value"]) if done else None, params=json.loads(t["params"]),
            distributions={k: json_to_distribution(v) for k, v in json.loads(t["distributions"]).items()},
            user_attrs=json.loads(t["user_attrs"])))
    return study


def _arms(experiment: str, everything: list, open_study) -> list[ArmResult]:
    """The arms among an experiment's runs: one per tuning study's parent run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parents = [r for r in everything if r.data.tags.get(tags.TUNE_STUDY)]
    if not parents:
        raise ReportError(f"experiment '{experiment}' holds no tuning study (make tune EXP=<preset>)")
    arms = []
    for p in parents:
        t = p.data.tags
        arm = ArmResult(cell=t[tags.CELL], seq_len=int(t[tags.SEQ_LEN]), study=t[tags.TUNE_STUDY],
                        parent_id=p.info.run_id, main_metric=t[tags.MAIN_METRIC], mode=t[tags.METRIC_MODE],
                        storage=p.data.params["tune.storage"], space=json.loads(t.get(tags.TUNE_SPACE, "{}")),
                        source=experiment, task=t.get(tags.TASK, ""))
        _read_study(arm, open_study(arm))
        kids = [r for r in everything if r.data.tags.get(tags.PARENT) == arm.parent_id]
        arm.fixed = _fixed(arm, p, kids)
        for r in kids:
            if tags.CODE_HASH in r.data.tags:
                arm.code_hashes.add(r.data.tags[tags.CODE_HASH])
            if r.data.tags.get(tags.TUNE_ROLE) == "reseed" and tags.is_result(r):
                arm.tuned[int(r.data.tags[tags.SEED])] = _test(r, arm)
                arm.tuned_solved[int(r.data.tags[tags.SEED])] = "steps_to_solve" in r.data.metrics
                arm.stops_once_solved |= r.data.params.get("solve.early_stop") == "True"
        for r in _default_arm(arm, everything):
            seed = int(r.data.tags[tags.SEED])
            arm.default[seed] = _test(r, arm)
            arm.default_solved[seed] = "steps_to_solve" in r.data.metrics
            arm.stops_once_solved |= r.data.params.get("solve.early_stop") == "True"
            if tags.CODE_HASH in r.data.tags:
                arm.code_hashes.add(r.data.tags[tags.CODE_HASH])
        arms.append(arm)
    return sorted(arms, key=lambda a: (a.seq_len, _cell_rank(a.cell)))


# What a tuning's trials hold fixed that a comparison must share (beyond the task): the budget
# they train at, and how the search was run. A cell's own architecture (its layers and width,
# e.g. the LRU's two blocks beside one layer of minGRU) is not among them: the parameter budget
# is what the cells share.
FIXED = ("trainer.max_steps", "batch_size", "model.param_budget", "optim.name", "solve.threshold",
         "tune.sampler", "tune.trials", "tune.seed")


def _fixed(arm: ArmResult, parent, kids: list) -> dict[str, str]:
    trial = next((r for r in kids if r.data.tags.get(tags.TUNE_ROLE) == "trial"), None)
    params = {**(trial.data.params if trial else {}), **parent.data.params}
    return {k: params[k] for k in FIXED if k in params and k not in arm.space}


def load_all(sources: list[tuple[str, str]]) -> list[ArmResult]:
    """The arms of several tuning experiments (``(experiment, tracking_uri)``, possibly in
    other stores), as one comparison. They must be of one task, tuned and trained alike (the
    settings in :data:`FIXED`), and each cell must come from one source (its lengths too)."""
    twice = [f"'{e}' ({u})" for e, u in dict.fromkeys(sources) if sources.count((e, u)) > 1]
    if twice:
        raise ReportError(f"{', '.join(twice)} given twice: each tuning joins once")
    arms = []
    for experiment, uri in sources:
        for a in load(uri, experiment):
            a.source = _source(experiment, uri, sources)
            arms.append(a)
    for what, values in (("tasks", {a.task for a in arms}), ("metrics", {a.main_metric for a in arms})):
        if len(values) > 1:
            raise ReportError(f"the tuning experiments are of different {what} ({', '.join(sorted(values))}): "
                              "only arms of one task compare")
    differ = {k: {a.fixed.get(k) for a in arms} for k in FIXED}
    differ = {k: v for k, v in differ.items() if len(v) > 1}
    if differ:
        raise ReportError("the tuning experiments were not run alike: " + "; ".join(
            f"{k} is {', '.join(sorted(f'{v}' for v in vs))}" for k, vs in differ.items()))
    source_of: dict[str, str] = {}
    for a in arms:
        if source_of.setdefault(a.cell, a.source) != a.source:
            raise ReportError(f"cell {a.cell} is in both '{source_of[a.cell]}' and '{a.source}': leave one out "
                              "(a cell's arms come from one tuning)")
    return sorted(arms, key=lambda a: (a.seq_len, _cell_rank(a.cell)))


def _source(experiment: str, uri: str, sources: list[tuple[str, str]]) -> str:
    """A source's name in the report: its experiment, with its store where names repeat."""
    return experiment if len({e for e, _ in sources}) == len(sources) else f"{experiment}@{uri}"


def _default_arm(arm: ArmResult, everything: list) -> list:
    """The untuned configuration's runs (a plain sweep's jobs in the tuning's experiment, of
    the arm's cell and length), the newest result per seed. They must be one configuration on
    several seeds: runs that differ in anything else would mix into one arm unseen."""
    runs = [r for r in everything if tags.TUNE_ROLE not in r.data.tags and r.data.tags.get(tags.SWEEP) != "true"
            and r.data.tags.get(tags.CELL) == arm.cell and r.data.tags.get(tags.SEQ_LEN) == str(arm.seq_len)
            and tags.is_result(r)]
    newest = {}  # a rerun of a seed replaces the earlier run (after a code change that added a param, say)
    for r in sorted(runs, key=lambda r: r.info.start_time):
        newest[r.data.tags[tags.SEED]] = r
    runs = list(newest.values())
    configs = {json.dumps({k: v for k, v in r.data.params.items() if k != "seed"}, sort_keys=True) for r in runs}
    if len(configs) > 1:
        params = [json.loads(c) for c in configs]
        differ = sorted(k for k in set().union(*params) if len({p.get(k) for p in params}) > 1)
        raise ReportError(f"the default arm of {arm.label} mixes {len(configs)} configurations (they differ in "
                          f"{', '.join(differ)}): keep one untuned configuration per cell and length in the "
                          "tuning's experiment")
    return runs


def _test(run, arm: ArmResult) -> float:
    """A run's test metric; a diverged run's is NaN (it has none), counted apart."""
    return float(run.data.metrics.get(arm.test_metric, math.nan))


def _cell_rank(cell: str) -> tuple[int, str]:
    from rnnlab.config import CELLS

    return (CELLS.index(cell) if cell in CELLS else len(CELLS), cell)


def _read_study(arm: ArmResult, study) -> None:
    """Trial values, best configuration and importance from the arm's Optuna study."""
    from optuna.trial import TrialState

    # a running trial is not done yet; a stale one was asked again
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    done = [t for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get("stale")]
    finished = [t for t in done if t.state == TrialState.COMPLETE and t.value is not None]
    arm.n_trials = len(done)
    arm.n_failed = sum(t.state == TrialState.FAIL for t in done)
    arm.n_diverged = sum(bool(t.user_attrs.get("diverged")) for t in finished)
    arm.trials = [{"params": t.params, "value": t.value, "diverged": bool(t.user_attrs.get("diverged"))}
                  for t in finished]
    arm.trial_values = [float(t.value) for t in finished]
    if finished:
        best = study.best_trial
        arm.best_trial, arm.best_value = best.number, float(best.value)
        arm.best_params = {k: _show(v) for k, v in best.params.items()}
    if len(finished) >= 2 and len({json.dumps(t.params, sort_keys=True, default=str) for t in finished}) >= 2:
        arm.importance = _importance(study)


def _importance(study) -> dict[str, float]:
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


def _most_important(arm: ArmResult) -> str:
    return max(arm.importance, key=lambda k: arm.importance[k])


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# -- tables ---------------------------------------------------------------------------------

def _fmt_ci(values: dict[int, float]) -> str:
    finite = [values[s] for s in sorted(values) if math.isfinite(values[s])]
    ci = stats.mean_ci(finite)
    text = fmt_mean_ci(ci.mean, ci.low, ci.high, ci.n)
    lost = len(values) - len(finite)
    return text + (f" ({lost} diverged)" if lost else "") if values else "—"


def _diff(a: dict[int, float], b: dict[int, float]) -> stats.Interval:
    return stats.paired_difference({s: v for s, v in a.items() if math.isfinite(v)},
                                   {s: v for s, v in b.items() if math.isfinite(v)})


def _fmt_diff(d: stats.Interval) -> str:
    return fmt_mean_ci(d.mean, d.low, d.high, d.n)


def tuned_table(arms: list[ArmResult], family: stats.Family | None = None) -> str:
    """Each arm tuned against its default, paired by seed (alone, its rows are their own family)."""
    if family is None:
        return alone(lambda f: tuned_table(arms, f)) or ""
    metric = arms[0].test_metric
    rows = []
    for a in arms:
        best = ", ".join(f"{k} {v}" for k, v in a.best_params.items()) or "—"
        d = _diff(a.tuned, a.default)
        rows.append([a.cell, str(a.seq_len), f"{best} (trial {a.best_trial})", fmt(a.best_value),
                     f"{a.n_trials} ({a.n_diverged} diverged, {a.n_failed} failed)", _fmt_ci(a.tuned),
                     _fmt_ci(a.default), *test_cells(d, family, ("tuned", a.source, a.cell, a.seq_len), a.mode,
                                                     ("tuned", "default"))])
    return md_table(["cell", "T", "best configuration (trial)", "val, tuning seed", "trials",
                     f"tuned: {metric}", f"default: {metric}", "tuned − default", *TEST_HEADER], rows,
                    right=[3, 5, 6, 7, 8, 9, 11])


def _verdict(d: stats.Interval, family: stats.Family, key: tuple, mode: str, names: tuple[str, str]) -> str:
    """The verdict with its adjusted p, and for one not established the seeds a follow-up needs."""
    family.record(key, d)
    p = family.adjusted(key)
    v = stats.verdict(d, p, mode, names)
    if v == "not established":
        return f"not established (p = {stats.fmt_p(p)}; 80% power: {stats.power_text(d)} seeds)"
    return v if d.n < stats.MIN_SEEDS else f"{v}, p = {stats.fmt_p(p)}"


def cells_table(arms: list[ArmResult], family: stats.Family | None = None) -> str:
    """Every pair of cells at each length: the verdict with default and with tuned settings."""
    if family is None:
        return alone(lambda f: cells_table(arms, f)) or ""
    if all(len({a.cell for a in arms if a.seq_len == T}) < 2 for T in {a.seq_len for a in arms}):
        return "One cell at each length: no pair of cells to compare (the arms' own verdicts are above)."
    rows = []
    for T in sorted({a.seq_len for a in arms}):
        at = [a for a in arms if a.seq_len == T]
        for a, b in combinations(at, 2):
            d_default, d_tuned = _diff(a.default, b.default), _diff(a.tuned, b.tuned)
            pair = (a.cell, b.cell)
            v_default = _verdict(d_default, family, stats.Family.key(("default", T), pair), a.mode, pair)
            v_tuned = _verdict(d_tuned, family, stats.Family.key(("tuned", T), pair), a.mode, pair)
            if min(d_default.n, d_tuned.n) < stats.MIN_SEEDS:  # a side with no verdict cannot change one
                changed = "—"
            else:
                changed = "**yes**" if _winner(v_default) != _winner(v_tuned) else "no"
            rows.append([str(T), f"{a.cell} − {b.cell}", _fmt_diff(d_default), v_default, _fmt_diff(d_tuned),
                         v_tuned, changed])
    return md_table(["T", "difference", "default", "verdict, default", "tuned", "verdict, tuned",
                     "verdict changed"], rows, right=[2, 4])


def _winner(verdict: str) -> str:
    return verdict.split()[0] if "(established)" in verdict else "none"


def ranking(arms: list[ArmResult], which: str) -> str:
    """``gru < rnn < lstm`` by mean test metric, best first, per length."""
    parts = []
    for T in sorted({a.seq_len for a in arms}):
        at = [(np.nanmean(list(getattr(a, which).values())) if getattr(a, which) else math.nan, a.cell)
              for a in arms if a.seq_len == T]
        at = [x for x in at if math.isfinite(x[0])]
        reverse = arms[0].mode == "max"
        order = [c for _, c in sorted(at, reverse=reverse)]
        shown = (" > " if reverse else " < ").join(order) if order else "no finished runs yet"
        parts.append(f"T={T}: {shown}")
    return "; ".join(parts)


def solved_table(arms: list[ArmResult]) -> str | None:
    """Seeds that solved (val/skill reached the threshold), default and tuned, and the
    critical length of each cell under both."""
    if not any(a.stops_once_solved or any(a.tuned_solved.values()) or any(a.default_solved.values())
               for a in arms):  # a task no run is meant to solve (char_lm: skill 0.9 over the unigram
        return None             # baseline is out of reach); a probe's 0/5 is a finding

    rows = [[a.cell, str(a.seq_len), f"{sum(a.default_solved.values())}/{len(a.default_solved)}",
             f"{sum(a.tuned_solved.values())}/{len(a.tuned_solved)}"] for a in arms]
    table = md_table(["cell", "T", "solved, default", "solved, tuned"], rows)
    lines = []
    for cell in sorted({a.cell for a in arms}, key=_cell_rank):
        mine = [a for a in arms if a.cell == cell]
        crit = {w: stats.critical_length({a.seq_len: list(getattr(a, f"{w}_solved").values()) for a in mine})
                for w in ("default", "tuned")}
        lines.append(f"- {cell}: critical length {crit['default'] or 'below the lengths run'} by default, "
                     f"{crit['tuned'] or 'below the lengths run'} tuned")
    return table + "\n\nCritical length (the longest length at least half the seeds solve):\n\n" + "\n".join(lines)


def expected_table(arms: list[ArmResult]) -> str:
    n_max = max((len(a.trial_values) for a in arms), default=0)
    shown = [n for n in TRIALS_SHOWN if n < n_max] + ([n_max] if n_max else [])
    rows = []
    for a in arms:
        if not a.trial_values:
            continue
        mean, std = expected_best(a.trial_values, a.mode)
        rows.append([a.label, *(f"{fmt(mean[n - 1])} ± {fmt(std[n - 1], 2)}" if n <= len(mean) else "—"
                                for n in shown)])
    return md_table(["arm", *(f"n = {n}" for n in shown)], rows, right=range(1, len(shown) + 1))


def importance_table(arms: list[ArmResult]) -> str:
    keys = list(dict.fromkeys(k for a in arms for k in a.space))
    rows = [[a.label, *(f"{a.importance[k]:.2f}" if k in a.importance else "—" for k in keys),
             _most_important(a) if a.importance else "—"] for a in arms]
    return md_table(["arm", *keys, "most important"], rows, right=range(1, len(keys) + 1))


# -- figures --------------------------------------------------------------------------------

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
        key = _most_important(a)
        xs = [t["params"].get(key) for t in a.trials]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        labels = sorted({_show(x) for x in xs}) if not numeric else []
        x = np.array(xs, dtype=float) if numeric else np.array([labels.index(_show(v)) for v in xs], dtype=float)
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


# -- the page -------------------------------------------------------------------------------

def build(experiment: str, tracking_uri: str, out_dir: Path, code: str = "",
          also: list[tuple[str, str]] | None = None, export: bool = False) -> Path:
    """Write ``out_dir/REPORT.md`` and its figures; keep the discussion already there.
    ``also``: other tuning experiments ``(experiment, tracking_uri)`` whose arms join the
    comparison (cells tuned by another preset, in another store). ``export``: the runs and
    trials are also written beside it (``out_dir/data/``), from which :func:`build_saved`
    writes the same page."""
    if export and also:
        raise ReportError("--export writes one tuning experiment's data; a joined report (--with) is not exported")
    sources = [(experiment, tracking_uri), *(also or [])]
    arms = load_all(sources)
    if export:
        export_(tracking_uri, experiment, out_dir)
        regenerate = f"python src/report.py --from {_relative(out_dir)}"
    else:
        store = "" if tracking_uri == paths.default_tracking_uri() else f" --tracking-uri {tracking_uri}"
        regenerate = f"python src/report.py --experiment {experiment}{store}" + "".join(
            f" --with {e}@{u}" for e, u in sources[1:])
    return _write(arms, sources, out_dir, regenerate + code, saved=export)


def build_saved(folder: Path, out_dir: Path | None = None) -> Path:
    """The tuned report of a committed tuning study, from its data alone."""
    arms = load_saved(folder)
    out = out_dir or folder
    return _write(arms, [(arms[0].source, "")], out, f"python src/report.py --from {_relative(folder)}", saved=True,
                  home=folder)


def _relative(path: Path) -> str:
    p = Path(path).resolve()
    try:
        return str(p.relative_to(paths.repo_root()))
    except ValueError:
        return str(path)


def _write(arms: list[ArmResult], sources: list[tuple[str, str]], out_dir: Path, regenerate: str,
           saved: bool, home: Path | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    check_out_dir(out_dir, sources[0][0])
    report = out_dir / "REPORT.md"
    discussion = kept_discussion(report)
    drawn = {Path(p).name for p in (plot_expected(arms, out_dir / "expected_best.png"),
                                    plot_importance(arms, out_dir / "importance.png")) if p}
    family = stats.Family()  # every verdict of the page, adjusted together: gathered, then printed
    _comparison(arms, family)
    family.close()
    lines = [*_header(arms, sources, regenerate, family, home or out_dir, saved), *_comparison(arms, family),
             *_search(arms, drawn), DISCUSSION_START,
             discussion or "_(discussion: written by hand, kept when the report is regenerated)_",
             DISCUSSION_END, ""]
    report.write_text("\n".join(lines))
    return report


def _header(arms: list[ArmResult], sources: list[tuple[str, str]], regenerate: str, family: stats.Family,
            out_dir: Path | None = None, saved: bool = False) -> list[str]:
    """Title, how to regenerate, and what was tuned how: arms, space, trials, what is compared."""
    (experiment, _), a0 = sources[0], arms[0]
    common = {k: v for k, v in a0.space.items() if all(a.space.get(k) == v for a in arms)}
    space = ", ".join(f"`{k}: {v}`" for k, v in common.items())
    extra = {(k, v): list(dict.fromkeys(a.cell for a in arms if a.space.get(k) == v))
             for a in arms for k, v in a.space.items() if k not in common}
    data = ([f"- **data**: [`data/`]({DATA}/): every run's params, tags and final metrics, and every trial of "
             "the Optuna studies (Parquet)"] if saved else [])
    return [
        f"# Report: experiment `{experiment}`", "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `src/report.py`.", "",
        f"Each arm tuned with the same budget, then compared on fresh seeds. Regenerate: `{regenerate}`.", "",
        f"- **arms**: {len(arms)} ({', '.join(a.label for a in arms)}), one Optuna study each "
        f"({', '.join(f'`{study}: <arm>`' for study in _studies(arms))})",
        *_sources_lines(arms, sources),
        f"- **search space** (the same for every arm): {space}"
        + (f"; by cell: {', '.join(f'`{k}: {v}` ({chr(44).join(c)})' for (k, v), c in extra.items())}"
           if extra else ""),
        f"- **trials**: {', '.join(f'{a.label} {a.n_trials}' for a in arms)}; {_scoring(a0)}; a diverged "
        f"run scores the worse of the trivial baseline and the arm's worst",
        f"- **compared on**: `{a0.test_metric}` of the best configuration re-run on seeds "
        f"{_seeds(arms, 'tuned')} (tuned), and of the preset's default configuration on seeds "
        f"{_seeds(arms, 'default')} (default)",
        f"- **statistics**: {method(family, out_dir)}", *data, ""]


def _comparison(arms: list[ArmResult], family: stats.Family) -> list[str]:
    """Each arm tuned against its default, the cells against each other, and solved seeds."""
    lines = ["## Tuned arms", "", tuned_table(arms, family), "", "## The cells compared, default and tuned", ""]
    if len({a.cell for a in arms}) > 1:
        lines += [f"Ranking by mean, default: {ranking(arms, 'default')}. Tuned: {ranking(arms, 'tuned')}.", ""]
    lines += [cells_table(arms, family), ""]
    solved = solved_table(arms)
    return lines + (["## Solved seeds, default and tuned", "", solved, ""] if solved else [])


def _search(arms: list[ArmResult], drawn: set[str]) -> list[str]:
    """What the search itself shows: the expected best against trials, and what mattered
    (each figure linked if it was drawn: ``drawn`` holds their file names)."""
    return [
        "## Expected best validation score against the number of trials", "",
        "What a researcher would have found with only n of the N random-search trials: the mean over all "
        "subsets of n distinct trials of the best validation score among them (Tang et al. 2020's unbiased "
        "estimator of the curve of Dodge et al. 2019), ± its standard deviation over those subsets.", "",
        expected_table(arms), "",
        *(["![expected best](expected_best.png)", ""] if "expected_best.png" in drawn else []),
        "## Hyperparameter importance", "",
        "PED-ANOVA (Watanabe et al. 2023, `optuna.importance.PedAnovaImportanceEvaluator`): how far each "
        "hyperparameter's distribution among the top 10% of an arm's trials departs from its distribution "
        "over all of them; normalised to sum to 1 per arm. With 12-20 trials the top 10% is two trials: read "
        "it with the scatter below.", "",
        importance_table(arms), "",
        *(["![importance](importance.png)", ""] if "importance.png" in drawn else [])]


def _studies(arms: list[ArmResult]) -> list[str]:
    """The study name prefix of each source, in order."""
    return list(dict.fromkeys(a.study.split(":")[0] for a in arms))


def _sources_lines(arms: list[ArmResult], sources: list[tuple[str, str]]) -> list[str]:
    """Where the arms of a joined report come from, and whether they ran the same code."""
    if len(sources) == 1:
        return []
    parts = []
    for experiment, uri in sources:
        mine = [a for a in arms if a.source == _source(experiment, uri, sources)]
        hashes = sorted({h for a in mine for h in a.code_hashes})
        parts.append(f"`{experiment}` ({', '.join(dict.fromkeys(a.cell for a in mine))}; code hash "
                     f"{', '.join(f'`{h}`' for h in hashes) or 'unknown'}; `{uri}`)")
    lines = [f"- **sources**: {'; '.join(parts)}"]
    versions = {h for a in arms for h in a.code_hashes}
    if len(versions) > 1:
        lines.append(f"- **code**: the arms ran {len(versions)} versions of the code. The comparison assumes the "
                     "changes between them move none of these numbers; where that matters, rerun one seed of an "
                     "arm at the other version and compare")
    return lines


def _scoring(arm: ArmResult) -> str:
    """How a trial was scored: on one tuning seed, or the mean over several (``tune.seed``)."""
    seeds = str(arm.fixed.get("tune.seed", "0")).strip("[]").replace(" ", "").split(",")
    if len(seeds) == 1:
        return f"random search on the tuning seed {seeds[0]}; a trial scores its best `{arm.main_metric}`"
    return (f"random search on the tuning seeds {', '.join(seeds)}; a trial scores the mean over them of each "
            f"run's best `{arm.main_metric}`")


def _seeds(arms: list[ArmResult], which: str) -> str:
    """The seeds the arms' tuned (or default) runs share, and any arm that has others."""
    of = {a.label: tuple(sorted(getattr(a, which))) for a in arms}
    common = max(set(of.values()), key=lambda seeds: (list(of.values()).count(seeds), seeds))
    text = ", ".join(map(str, common)) if common else "none yet"
    others = [f"{label}: {', '.join(map(str, seeds)) or 'none yet'}" for label, seeds in of.items() if seeds != common]
    return text + (f" (except {'; '.join(others)})" if others else "")
