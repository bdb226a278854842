"""The arms of tuning experiments, read from an MLflow store and its Optuna studies.

An arm is one study's parent run (see :mod:`rnnlab.tune.parents`): its trials' values and
best configuration come from the Optuna study; its tuned runs are the parent's re-seed
children; its default runs are a plain sweep's jobs of the same cell and length in the same
experiment. Several tuning experiments join one comparison only if they were run alike.
"""

from __future__ import annotations

import json
import math
import re

from rnnlab import runs as tags
from rnnlab.report.store import ReportError
from rnnlab.report.tuning import compute, problems
from rnnlab.report.tuning.arms import ArmResult, cell_rank, show
from rnnlab.report.tuning.statistics import importance


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
    return from_runs(experiment, everything, lambda arm: optuna.load_study(study_name=arm.study, storage=arm.storage))


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
    other stores), as one page. Arms of one problem (:mod:`~rnnlab.report.tuning.problems`: one
    task and its settings) compare, so they must be tuned and trained alike (the settings in
    :data:`FIXED`), and each cell of a problem must come from one source (its lengths too);
    arms of different problems are compared with none of each other's, so need neither."""
    twice = [f"'{e}' ({u})" for e, u in dict.fromkeys(sources) if sources.count((e, u)) > 1]
    if twice:
        raise ReportError(f"{', '.join(twice)} given twice: each tuning joins once")
    arms = []
    for experiment, uri in sources:
        for a in load(uri, experiment):
            a.source = source_name(experiment, uri, sources)
            arms.append(a)
    for problem in problems.group(arms):  # arms of other tasks or task settings are compared with none of these
        mine = problem.arms
        differ = {k: {a.fixed.get(k) for a in mine} for k in FIXED}
        differ = {k: v for k, v in differ.items() if len(v) > 1}
        if differ:
            raise ReportError("the tuning experiments were not run alike: " + "; ".join(
                f"{k} is {', '.join(sorted(f'{v}' for v in vs))}" for k, vs in differ.items()))
        source_of: dict[str, str] = {}
        for a in mine:
            if source_of.setdefault(a.cell, a.source) != a.source:
                raise ReportError(f"cell {a.cell} is in both '{source_of[a.cell]}' and '{a.source}': leave one out "
                                  "(a cell's arms come from one tuning)")
    return sorted(arms, key=lambda a: (a.seq_len, cell_rank(a.cell)))


def source_name(experiment: str, uri: str, sources: list[tuple[str, str]]) -> str:
    """A source's name in the report: its experiment, with its store where names repeat."""
    return experiment if len({e for e, _ in sources}) == len(sources) else f"{experiment}@{uri}"


def from_runs(experiment: str, everything: list, open_study) -> list[ArmResult]:
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
                        source=experiment, task=t.get(tags.TASK, ""),
                        overrides={str(k): str(v) for k, v in json.loads(t.get(tags.SWEEP_PARAMS, "{}")).items()})
        _read_study(arm, open_study(arm))
        kids = [r for r in everything if r.data.tags.get(tags.PARENT) == arm.parent_id]
        arm.fixed = _fixed(arm, p, kids)
        arm.task_settings = _task_settings(kids)
        arm.compute = compute.of_trials([r for r in kids if r.data.tags.get(tags.TUNE_ROLE) == "trial"])
        for r in kids:
            if tags.CODE_HASH in r.data.tags:
                arm.code_hashes.add(r.data.tags[tags.CODE_HASH])
            if r.data.tags.get(tags.TUNE_ROLE) == "reseed" and tags.is_result(r):
                arm.tuned[int(r.data.tags[tags.SEED])] = _test(r, arm)
                arm.tuned_solved[int(r.data.tags[tags.SEED])] = "steps_to_solve" in r.data.metrics
                arm.stops_once_solved |= r.data.params.get("solve.early_stop") == "True"
        _read_size(arm, [r for r in kids if r.data.tags.get(tags.TUNE_ROLE) == "reseed" and tags.is_result(r)])
        for r in _default_arm(arm, everything):
            seed = int(r.data.tags[tags.SEED])
            arm.default[seed] = _test(r, arm)
            arm.default_solved[seed] = "steps_to_solve" in r.data.metrics
            arm.stops_once_solved |= r.data.params.get("solve.early_stop") == "True"
            if tags.CODE_HASH in r.data.tags:
                arm.code_hashes.add(r.data.tags[tags.CODE_HASH])
        arms.append(arm)
    return sorted(arms, key=lambda a: (a.seq_len, cell_rank(a.cell)))


def _task_settings(kids: list) -> dict[str, str]:
    """The task's settings its runs were given (their ``task.*`` params but the length, which an
    arm holds apart): with the task, what problem the arm is (:mod:`~rnnlab.report.tuning.problems`)."""
    run = next((r for r in kids if any(k.startswith("task.") for k in r.data.params)), None)
    return {k: v for k, v in sorted(run.data.params.items()) if k.startswith("task.") and k != problems.LENGTH} \
        if run else {}


def _read_size(arm: ArmResult, reseeds: list) -> None:
    """The state size its re-seed runs carried, the trivial baseline of its test metric, and
    both at the longer lengths they were also tested at (``test/L<n>/<metric>``)."""
    sizes = {r.data.params["model/state_size"] for r in reseeds if "model/state_size" in r.data.params}
    arm.state_size = float(sizes.pop()) if len(sizes) == 1 else None
    name = tags.metric_name(arm.test_metric)
    arm.baseline = _mean_of(reseeds, f"baseline/{name}")
    at = re.compile(rf"^test/L(\d+)/{re.escape(name)}$")
    lengths = sorted({int(m[1]) for r in reseeds for k in r.data.metrics if (m := at.match(k))})
    for n in lengths:
        arm.longer[n] = {int(r.data.tags[tags.SEED]): float(r.data.metrics.get(f"test/L{n}/{name}", math.nan))
                         for r in reseeds}
        base = _mean_of(reseeds, f"baseline/L{n}/{name}")
        if base is not None:
            arm.longer_baseline[n] = base


def _mean_of(reseeds: list, metric: str) -> float | None:
    values = [r.data.metrics[metric] for r in reseeds if metric in r.data.metrics]
    return sum(values) / len(values) if values else None


def _default_arm(arm: ArmResult, everything: list) -> list:
    """The untuned configuration's runs (a plain sweep's jobs in the tuning's experiment, of
    the arm's task, cell, length and other swept values), the newest result per seed. They must
    be one configuration on several seeds: runs that differ in anything else would mix into one
    arm unseen."""
    swept = {k: v for k, v in arm.overrides.items() if k not in ("cell", "seq_len")}
    runs = [r for r in everything if tags.TUNE_ROLE not in r.data.tags and r.data.tags.get(tags.SWEEP) != "true"
            and r.data.tags.get(tags.CELL) == arm.cell and r.data.tags.get(tags.SEQ_LEN) == str(arm.seq_len)
            and (not arm.task or r.data.tags.get(tags.TASK, arm.task) == arm.task)
            and all(r.data.params.get(k, v) == v for k, v in swept.items()) and tags.is_result(r)]
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
        arm.best_params = {k: show(v) for k, v in best.params.items()}
    if len(finished) >= 2 and len({json.dumps(t.params, sort_keys=True, default=str) for t in finished}) >= 2:
        arm.importance = importance(study)
