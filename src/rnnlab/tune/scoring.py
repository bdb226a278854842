"""What a trial scores, told to its study once its runs have ended.

A trial's value is its best validation value of the task's main metric, read from the MLflow
store (so a trial whose run was resumed, or skipped as already done, scores the same); with
several tuning seeds, the mean over its runs. A diverged run scores the worst value: the worse
of the task's trivial baseline (``baseline/<metric>``, skill 0) and the worst finite value of
the arm's trials so far, so that divergence ranks last without stopping the study. A trial
whose job failed is a failed trial (not asked again).
"""

from __future__ import annotations

import math

from hydra.core.utils import JobReturn, JobStatus

from rnnlab import runs
from rnnlab.runs import metric_name
from rnnlab.tune import space as spaces
from rnnlab.tune import store
from rnnlab.tune.arms import Arm, Settings
from rnnlab.tune.parents import Parents
from rnnlab.tune.resume import outcome as outcome_of


def tell(parents: Parents, settings: Settings, arm: Arm, trial, rets: list[JobReturn]) -> None:
    """The trial's value from its runs, one per tuning seed: the mean of each run's best
    validation value (a diverged run's: the worst value)."""
    from optuna.trial import TrialState

    outcomes = [outcome_of(r) for r in rets]
    ids = [o["run_id"] for o in outcomes if o.get("run_id")]
    shown = " ".join(spaces.override(k, v) for k, v in trial.params.items())
    head = f"[tune {store.study_name(settings, arm)}] trial {trial.number}: {shown}"
    if ids:
        trial.set_user_attr("run_id", ids[0] if len(settings.seeds) == 1 else ids)
    _retag(parents, arm, trial.number, ids)
    for ret, outcome in zip(rets, outcomes):
        if ret.status != JobStatus.COMPLETED or outcome.get("outcome") not in ("finished", "diverged", "skipped"):
            detail = outcome.get("detail") or (repr(ret._return_value) if ret.status == JobStatus.FAILED else "")
            trial.set_user_attr("error", str(detail)[:1000])
            arm.study.tell(trial, state=TrialState.FAIL)
            print(f"{head} -> FAILED ({str(detail)[:200]})", flush=True)
            return
    values: dict[int, float] = {}
    diverged_seeds = []
    for seed, outcome in zip(settings.seeds, outcomes):
        run = parents.client.get_run(outcome["run_id"])
        diverged = run.data.tags.get(runs.DIVERGED) == "true"
        value = None if diverged else best_validation(parents.client, run.info.run_id, arm)
        if value is None or not math.isfinite(value):
            diverged, value = True, worst(arm, run)
        values[seed] = value
        if diverged:
            diverged_seeds.append(seed)
    value = sum(values.values()) / len(values)
    trial.set_user_attr("diverged", bool(diverged_seeds))
    if len(settings.seeds) > 1:
        trial.set_user_attr("values", {str(k): v for k, v in values.items()})
        trial.set_user_attr("diverged_seeds", diverged_seeds)
    arm.study.tell(trial, value)
    best = arm.study.best_value
    each = f" (mean of seeds {', '.join(f'{k}: {v:.4g}' for k, v in values.items())})" if len(values) > 1 else ""
    div = ""
    if diverged_seeds:
        div = (" (diverged: the worst value)" if len(values) == 1
               else f" (diverged on seed {', '.join(map(str, diverged_seeds))}: the worst value there)")
    print(f"{head} -> {arm.main_metric} {value:.4g}{each}{div} | best {best:.4g} | "
          f"{store.done(arm.study)}/{settings.n_trials} done", flush=True)


def best_validation(client, run_id: str, arm: Arm) -> float | None:
    """The best finite value the run logged of the arm's main metric; None if it logged none."""
    values = [m.value for m in client.get_metric_history(run_id, arm.main_metric) if math.isfinite(m.value)]
    if not values:
        return None
    return min(values) if arm.mode == "min" else max(values)


def worst(arm: Arm, run) -> float:
    """A diverged trial's value: the worse of the trivial baseline and the arm's worst."""
    from optuna.trial import TrialState

    key = metric_name(arm.main_metric)
    candidates = [t.value for t in arm.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.value is not None and math.isfinite(t.value)]
    baseline = run.data.metrics.get(f"baseline/{key}")
    if baseline is not None:
        candidates.append(baseline)
    if not candidates:
        return 1e300 if arm.mode == "min" else -1e300
    return max(candidates) if arm.mode == "min" else min(candidates)


def _retag(parents: Parents, arm: Arm, number: int, ids: list[str]) -> None:
    """A trial asked again after a stop has a new number, and its runs may be the stopped
    trial's (continued, or skipped as already done): such a run takes the new number, so that
    its ``tune_trial`` tag names the trial it scores. A run whose tag names a completed trial
    (another trial that drew the same configuration) keeps it."""
    from optuna.trial import TrialState

    told = {str(t.number) for t in arm.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    for run_id in ids:
        tag = parents.client.get_run(run_id).data.tags.get(runs.TUNE_TRIAL)
        if tag != str(number) and tag not in told:
            parents.client.set_tag(run_id, runs.TUNE_TRIAL, str(number))
