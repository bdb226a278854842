"""Rerunning a tuning command continues it, whatever stopped it.

Finished trials are not redone (they are in the Optuna store). A trial a killed process left
RUNNING is asked again with the same parameters, and its MLflow run, ended KILLED here,
continues from its checkpoint as a sweep's unfinished job does. A trial that Ctrl-C or SIGTERM
stopped stays RUNNING for the same reason: the sweep stops after its batch (every job saved,
see :mod:`rnnlab.interrupts`). Re-seed runs that already have a result are not launched again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf

from rnnlab import runs
from rnnlab.interrupts import Stopped, stopped_by
from rnnlab.multirun import OUTCOME_FILE
from rnnlab.tune.arms import Arm
from rnnlab.tune.parents import Parents


def reask_stale(parents: Parents, arm: Arm) -> None:
    """Each trial of the arm's study left RUNNING by a process that is gone: asked again with
    its parameters (the old one marked stale, not counted), its MLflow run ended KILLED."""
    from optuna.trial import TrialState

    study = arm.study
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.enqueue_trial(trial.params, user_attrs={"asked_again_for": trial.number})
        study._storage.set_trial_user_attr(trial._trial_id, "stale", True)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        _end_orphans(parents, arm, trial.number)


def _end_orphans(parents: Parents, arm: Arm, number: int) -> None:
    """The MLflow run of a trial whose process was killed (SIGKILL leaves it RUNNING) ends
    KILLED; asked again with the same parameters, the trial continues it from its
    checkpoint if it has one (as a sweep continues an unfinished job)."""
    query = (f"tags.{runs.SWEEP_ID} = '{arm.parent_id}' and tags.{runs.TUNE_TRIAL} = '{number}' "
             f"and attributes.status = 'RUNNING'")
    for run in parents.client.search_runs([parents.experiment_id], query):
        parents.client.set_tag(run.info.run_id, runs.STATUS_REASON, "interrupted")
        parents.client.set_terminated(run.info.run_id, "KILLED")


def was_stopped(rets: list[JobReturn]) -> bool:
    """Whether a stop request ended (or kept from starting) any of a trial's jobs: such a
    trial is not told, so that it stays RUNNING and is asked again on resume."""
    return any(outcome(r).get("outcome") in ("interrupted", "not_started") for r in rets)


def already_run(loader, config: DictConfig, parents: Parents, overrides: list[str]) -> bool:
    """A re-seed run of this exact configuration has a result (a rerun of the command):
    not launched again, as a sweep's job would skip it, without a worker's start-up."""
    cfg = loader.load_sweep_config(config, overrides)
    job = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])  # as the job sees it
    return runs.completed(parents.client, parents.experiment, runs.config_hash(job)) is not None


def stop_if_asked() -> None:
    """After a batch that Ctrl-C or SIGTERM stopped (every job saved, see rnnlab.sweep): the
    study stops KILLED; its interrupted trials stay RUNNING, to be asked again on resume."""
    if stopped_by() is not None:
        raise Stopped


def outcome(ret: JobReturn) -> dict[str, Any]:
    """How a job ended (``outcome.json`` in its output dir: see rnnlab.multirun.record_outcome)."""
    if ret.hydra_cfg is None:
        return {}
    path = Path(ret.hydra_cfg.hydra.runtime.output_dir) / OUTCOME_FILE
    return json.loads(path.read_text()) if path.exists() else {}
