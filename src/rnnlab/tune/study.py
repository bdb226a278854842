"""Tuning as a sweep: every arm tuned with the same budget, then re-run on fresh seeds.

An arm is one point of the preset's grid (``cell=gru seq_len=200``). Each arm gets its own
Optuna study of ``tune.trials`` trials over the same search space (``tune.space``, plus what
exists for its cell alone, ``tune.cell_space.<cell>``), sampled by the same sampler with the
same seeds: with the random sampler, the k-th configuration of every arm is the same draw of
the shared values (a trial stopped and asked again included), so the arms are compared on
common random numbers. Trials are ordinary rnnlab runs, launched in batches of whole trials
that fill the launcher's ``n_jobs`` through the configured Hydra launcher (joblib here,
submitit or Ray for scale-out), arms interleaved so that the batches stay full.

``tune.seed`` is one tuning seed or a list of them. With several, a trial is one run per seed
and scores the mean of their values: on a task with a sharp solved/unsolved transition (adding)
one seed's trials can all fail, and the search then ranks noise (experiments/tune_adding).

Then the best configuration of each arm is re-run on ``tune.reseeds`` (seeds other than the
tuning seed): tuned on validation, compared on those runs' test metrics.

:class:`Tuner` is the whole sweep, read top to bottom; Hydra reaches it through the sweeper
plugin (``hydra_plugins/rnnlab_tuner``). Each concern is a module of its own:

- :mod:`rnnlab.tune.arms`: the settings and the arms of the grid, checked before anything exists;
- :mod:`rnnlab.tune.store`: the Optuna studies, one per arm, and how a trial is asked and counted;
- :mod:`rnnlab.tune.scoring`: what a trial scores, from its runs in MLflow;
- :mod:`rnnlab.tune.parents`: the MLflow parent run of each study, its counts and best;
- :mod:`rnnlab.tune.resume`: rerunning the command continues the sweep.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from rnnlab.config import ConfigError
from rnnlab.tune import arms as arms_of
from rnnlab.tune import resume, scoring, store
from rnnlab.tune import space as spaces
from rnnlab.tune.arms import Arm, Settings
from rnnlab.tune.parents import Parents

ROLE_TRIAL, ROLE_RESEED = "trial", "reseed"


def trials_per_batch(workers: int, runs_per_trial: int) -> int:
    """Whole trials per launch: ``workers // runs_per_trial`` (at least one), or up to twice that
    where more keeps every worker busy to the launch's end. A launch waits for its slowest run,
    so 3 tuning seeds on 2 workers, one trial a launch, leave a quarter of the workers' time
    idle; two trials (6 runs) leave none. Not more: a sampler that learns (TPE) asks a launch's trials
    knowing none of their results."""
    base = max(1, workers // runs_per_trial)

    def filled(k: int) -> float:  # the share of the launch's worker slots that run something
        runs = k * runs_per_trial
        return runs / (math.ceil(runs / workers) * workers)

    return max(range(base, 2 * base + 1), key=lambda k: (filled(k), -k))


class Tuner:
    """Runs the tuning sweep of ``config`` (see the module's docstring)."""

    def __init__(self, config: DictConfig, launcher, config_loader, params: dict[str, str], arguments: list[str]):
        self.config, self.launcher, self.loader = config, launcher, config_loader
        self.params, self.arguments = params, arguments
        self.settings = Settings.of(config)
        self.job_idx = 0
        self.arms: list[Arm] = []

    def run(self) -> list[JobReturn]:
        s = self.settings
        try:
            s.check()
            grid, self.fixed = arms_of.grid(self.loader, self.params, self.arguments)
            self.arms = [arms_of.arm(self.loader, self.config, s, self.fixed, label, overrides)
                         for label, overrides in grid]
        except ConfigError as e:  # one line, exit 2, and nothing created
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # the launcher's three lines per batch repeat what the tuner prints in one
        logging.getLogger("hydra_plugins.hydra_joblib_launcher").setLevel(logging.WARNING)
        self.parents = Parents(self.config, s, arms_of.task_of(self.arms[0].cfg).name)
        self.storage = store.storage_uri(s, self.parents.uri)
        returns: list[JobReturn] = []
        try:
            for arm in self.arms:
                arm.parent_id = self.parents.parent(arm, self.storage)
                arm.study = store.open_study(s, self.storage, arm)
                resume.reask_stale(self.parents, arm)
            print(f"tune {s.name}: {len(self.arms)} arms x {s.n_trials} trials of {s.sampler_name} search "
                  f"over {spaces.describe(self.arms[0].space)}; studies in {self.storage}", flush=True)
            returns += self._tune()
            returns += self._reseed()
        except BaseException as e:
            self.parents.end(self.arms, "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED")
            raise
        self.parents.end(self.arms, "FINISHED")
        return returns

    def _tune(self) -> list[JobReturn]:
        """Every arm's trials, in batches that keep the launcher's workers busy."""
        s = self.settings
        returns: list[JobReturn] = []
        per_trial = len(s.seeds)  # a trial is one run per tuning seed
        per_batch = trials_per_batch(s.batch_size, per_trial)
        while True:
            wanted = {arm.label: s.n_trials - store.done(arm.study) for arm in self.arms}
            batch: list[tuple[Arm, Any]] = []
            while len(batch) < per_batch and any(v > 0 for v in wanted.values()):
                # the arm furthest behind first: a study stopped half-way has every arm half done
                arm = max(self.arms, key=lambda a: (wanted[a.label], -self.arms.index(a)))
                batch.append((arm, store.ask(s, arm)))
                wanted[arm.label] -= 1
            if not batch:
                return returns
            jobs = [self._job(arm, trial.params, seed, ROLE_TRIAL, trial.number, self._trial_name(arm, trial, seed))
                    for arm, trial in batch for seed in s.seeds]
            print(f"tune {s.name}: trials " + ", ".join(f"{arm.label} #{trial.number}" for arm, trial in batch),
                  flush=True)
            results = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
            self.job_idx += len(jobs)
            for i, (arm, trial) in enumerate(batch):
                rets = list(results[i * per_trial:(i + 1) * per_trial])
                if not resume.was_stopped(rets):  # a stopped trial stays RUNNING, to be asked again on resume
                    scoring.tell(self.parents, s, arm, trial, rets)
            for arm in {a.label: a for a, _ in batch}.values():
                self.parents.log_progress(arm)
            returns += list(results)
            resume.stop_if_asked()

    def _reseed(self) -> list[JobReturn]:
        """Each arm's best configuration on the fresh seeds, those not run already."""
        s = self.settings
        jobs: list[tuple[Arm, int, list[str]]] = []
        for arm in self.arms:
            if not store.counts(arm.study)["completed"]:
                print(f"[tune {store.study_name(s, arm)}] no trial finished: nothing to re-seed", flush=True)
                continue
            best = arm.study.best_trial
            self.parents.record_best(arm, best)
            for seed in s.reseed_seeds:
                job = self._job(arm, best.params, seed, ROLE_RESEED, best.number, f"{arm.run_name}-best-s{seed}")
                if resume.already_run(self.loader, self.config, self.parents, job):
                    arm.reseeds["skipped"] = arm.reseeds.get("skipped", 0) + 1
                else:
                    jobs.append((arm, seed, job))
        returns: list[JobReturn] = []
        for i in range(0, len(jobs), s.batch_size):
            chunk = jobs[i:i + s.batch_size]
            print(f"tune {s.name}: re-seeding " + ", ".join(f"{arm.label} seed={seed}" for arm, seed, _ in chunk),
                  flush=True)
            results = self.launcher.launch([j for _, _, j in chunk], initial_job_idx=self.job_idx)
            self.job_idx += len(chunk)
            for (arm, _, _), ret in zip(chunk, results):
                ended = resume.outcome(ret).get("outcome", "failed") if ret.status == JobStatus.COMPLETED else "failed"
                arm.reseeds[ended] = arm.reseeds.get(ended, 0) + 1
            returns += list(results)
            resume.stop_if_asked()
        return returns

    def _trial_name(self, arm: Arm, trial, seed: int) -> str:
        return f"{arm.run_name}-trial{trial.number}" + (f"-s{seed}" if len(self.settings.seeds) > 1 else "")

    def _job(self, arm: Arm, params: dict, seed: int, role: str, number: int, name: str) -> list[str]:
        """A run's overrides: the arm's, the shared ones, the sampled values and where it belongs."""
        return [*arm.overrides, *self.fixed, *(spaces.override(k, v) for k, v in params.items()),
                f"seed={seed}", f"++tune.job.parent={arm.parent_id}", f"++tune.job.role={role}",
                f"++tune.job.trial={number}", f"++tracking.run_name={name}"]
