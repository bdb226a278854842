"""Tuning as a sweep: every arm tuned with the same budget, then re-run on fresh seeds.

An arm is one point of the preset's grid (``cell=gru seq_len=200``). Each arm gets its own
Optuna study of ``tune.trials`` trials over the same search space (``tune.space``, plus what
exists for its cell alone, ``tune.cell_space.<cell>``), sampled by the same sampler with the
same seeds: with the random sampler, trial k of every arm draws the same shared values, so
the arms are compared on common random numbers. Trials are ordinary rnnlab runs, launched in
batches of the launcher's ``n_jobs`` through the configured Hydra launcher (joblib here,
submitit or Ray for scale-out), arms interleaved so that the batches stay full.

What a trial scores is its best validation value of the task's main metric, read from the
MLflow store (so a trial whose run was resumed, or skipped as already done, scores the same).
A diverged run scores the worst value: the worse of the task's trivial baseline
(``baseline/<metric>``, skill 0) and the worst finite value of the arm's trials so far. It
never stops the study. A trial whose job failed is a failed trial (not re-asked).

``tune.seed`` is one tuning seed or a list of them. With several, a trial is one run per seed
and scores the mean of their values: on a task with a sharp solved/unsolved transition (adding)
one seed's trials can all fail, and the search then ranks noise (experiments/tune_adding).

Then the best configuration of each arm is re-run on ``tune.reseeds`` (seeds other than the
tuning seed): tuned on validation, compared on those runs' test metrics.

MLflow: one parent run per arm's study, named by what it tunes, with its trials and re-seed
runs as children (``tune_role`` = trial | reseed, ``tune_trial`` = the trial number). The
parent holds the best value and parameters and the counts of trials done, diverged, failed
and pruned; ``tune/best_value`` by trials done draws the best-so-far curve.

Persistence: the studies live in an Optuna RDB store (``tune.storage``; by default
``optuna.db`` beside the MLflow store). Rerunning the same command continues every study:
finished trials are not redone; a trial left running by a killed process is asked again
with the same parameters, and its MLflow run continues from its checkpoint; re-seed runs
already FINISHED are skipped.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from rnnlab import runs, tracking
from rnnlab.config import ConfigError
from rnnlab.interrupts import Stopped, stopped_by
from rnnlab.multirun import OUTCOME_FILE
from rnnlab.runs import metric_name
from rnnlab.tune import space as spaces

SAMPLERS = ("random", "tpe")
ROLE_TRIAL, ROLE_RESEED = "trial", "reseed"
DONE_STATES = ("COMPLETE", "PRUNED", "FAIL")


@dataclass
class Arm:
    """One point of the grid and its study."""

    label: str  # "cell=gru seq_len=200"
    overrides: list[str]
    cfg: DictConfig  # the arm's composed config (without sampled values)
    space: dict[str, Any]  # key -> optuna distribution
    main_metric: str = ""
    mode: str = "min"
    study: Any = None
    parent_id: str = ""
    reseeds: dict[str, int] = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        """``gru-T200``: what its trial runs are named after (``gru-T200-trial3``, ``-best-s1``)."""
        others = [o.replace("=", "") for o in self.overrides if o.split("=", 1)[0] not in ("cell", "seq_len")]
        return "-".join([self.cfg.cell.name, f"T{self.cfg.seq_len}", *others])

    @property
    def title(self) -> str:
        """``gru T=200``: the arm as its parent run's name shows it."""
        shown = [f"{self.cfg.cell.name}", f"T={self.cfg.seq_len}"]
        shown += [o for o in self.overrides if o.split("=", 1)[0] not in ("cell", "seq_len")]
        return " ".join(shown)


class Tuner:
    """Runs the tuning sweep of ``config`` (see the module's docstring)."""

    def __init__(self, config: DictConfig, launcher, config_loader, params: dict[str, str], arguments: list[str]):
        self.config, self.launcher, self.loader = config, launcher, config_loader
        self.params, self.arguments = params, arguments
        self.t = config.get("tune") or OmegaConf.create({})
        self.name = str(self.t.get("name") or "tune")
        self.n_trials = int(self.t.get("trials", 20))
        self.sampler_name = str(self.t.get("sampler", "random"))
        seed = self.t.get("seed", 0)
        self.seeds = [int(x) for x in seed] if OmegaConf.is_list(seed) or isinstance(seed, list) else [int(seed)]
        self.seed = self.seeds[0] if self.seeds else 0  # what seeds the sampler
        self.reseed_seeds = [int(s) for s in (self.t.get("reseeds") or [])]
        n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=1)
        self.batch_size = max(1, int(n_jobs if n_jobs and n_jobs > 0 else 1))
        self.job_idx = 0
        self.arms: list[Arm] = []

    # -- the whole sweep -------------------------------------------------------------------
    def run(self) -> list[JobReturn]:
        try:
            self._check_settings()
            grid, fixed = self._grid()
            self.fixed = fixed
            self.arms = [self._arm(label, overrides) for label, overrides in grid]
        except ConfigError as e:  # one line, exit 2, and nothing created
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # the launcher's three lines per batch repeat what the tuner prints in one
        logging.getLogger("hydra_plugins.hydra_joblib_launcher").setLevel(logging.WARNING)
        uri = tracking.tracking_uri(self.config.tracking)
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        self.client.search_experiments(max_results=1)  # creates the schema, once, here
        self.experiment = runs.experiment_name(self.config, _task(self.arms[0].cfg).name)
        self.experiment_id = tracking.get_or_create_experiment(self.client, self.experiment,
                                                               tracking.artifact_root(self.config.tracking))
        self.storage = self._storage(uri)
        returns: list[JobReturn] = []
        try:
            for arm in self.arms:
                arm.parent_id = self._parent(arm)
                arm.study = self._study(arm)
            print(f"tune {self.name}: {len(self.arms)} arms x {self.n_trials} trials of {self.sampler_name} search "
                  f"over {spaces.describe(self.arms[0].space)}; studies in {self.storage}", flush=True)
            returns += self._tune()
            returns += self._reseed()
        except BaseException as e:
            self._end("KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED")
            raise
        self._end("FINISHED")
        return returns

    def _check_settings(self) -> None:
        if self.sampler_name not in SAMPLERS:
            raise ConfigError("tune.sampler", self.sampler_name, f"one of {', '.join(SAMPLERS)}")
        if self.n_trials < 1:
            raise ConfigError("tune.trials", self.n_trials, "a positive number of trials per arm")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("tune.seed", list(self.seeds), "a seed, or a list of distinct seeds")
        if set(self.seeds) & set(self.reseed_seeds):
            raise ConfigError("tune.reseeds", list(self.reseed_seeds), f"seeds other than the tuning seeds "
                              f"{', '.join(map(str, self.seeds))} (the comparison is on fresh seeds)")
        if not self.t.get("space"):
            raise ConfigError("tune.space", None, "a search space, e.g. {optim.lr: 'tag(log, interval(3e-4, 3e-2))'}")
        for cell in self.t.get("cell_space") or {}:
            if cell not in _cells():
                raise ConfigError(f"tune.cell_space.{cell}", cell, f"a cell: {', '.join(_cells())}")

    def _grid(self) -> tuple[list[tuple[str, list[str]]], list[str]]:
        """The arms (label, their overrides) and the overrides every job shares."""
        parser = OverridesParser.create(config_loader=self.loader)
        written = [f"{k}={v}" for k, v in self.params.items()] + list(self.arguments)
        axes: dict[str, list[str]] = {}
        fixed: dict[str, str] = {}
        for o in parser.parse_overrides(written):
            key = o.get_key_element()
            if o.is_sweep_override():
                if not o.is_discrete_sweep():
                    raise ConfigError(key, o.input_line, "the arms are a grid of choices (cell=rnn,gru); "
                                      "search spaces go in tune.space")
                axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
                fixed.pop(key, None)
            elif key in self.params:  # an arm axis given one value (cell=gru): an axis of one arm
                axes[key] = [f"{key}={o.get_value_element_as_str()}"]
                fixed.pop(key, None)
            else:
                fixed[key] = f"{key}={o.get_value_element_as_str()}"
                axes.pop(key, None)
        import itertools

        grid = [(" ".join(combo), list(combo)) for combo in itertools.product(*axes.values())] or [("all", [])]
        return grid, list(fixed.values())

    def _arm(self, label: str, overrides: list[str]) -> Arm:
        cfg = self.loader.load_sweep_config(self.config, [*overrides, *self.fixed])
        space = dict(self.t.space)
        extra = (self.t.get("cell_space") or {}).get(cfg.cell.name) or {}
        space.update(extra)
        where = {k: (f"tune.cell_space.{cfg.cell.name}" if k in extra else "tune.space") for k in space}
        dists = {}
        for key, text in space.items():
            dists.update(spaces.distributions({key: text}, where[key]))
        for key in space:
            spaces.check_keys(key, cfg, label, where[key])
        task_cls = _task(cfg)
        return Arm(label, overrides, cfg, dists, task_cls.main_metric, task_cls.mode)

    # -- stores ----------------------------------------------------------------------------
    def _storage(self, mlflow_uri: str) -> str:
        if self.t.get("storage"):
            return str(self.t.storage)
        if mlflow_uri.startswith("sqlite:///"):
            return "sqlite:///" + str(Path(mlflow_uri.removeprefix("sqlite:///")).with_name("optuna.db"))
        from rnnlab import paths

        return f"sqlite:///{paths.repo_root() / 'optuna.db'}"

    def study_name(self, arm: Arm) -> str:
        return f"{self.name}: {arm.label}"

    def _study(self, arm: Arm):
        """The arm's study, created or continued; a trial a killed process left running is
        asked again with its parameters."""
        import optuna
        from optuna.trial import TrialState

        study = optuna.create_study(study_name=self.study_name(arm), storage=self.storage,
                                    direction="minimize" if arm.mode == "min" else "maximize", load_if_exists=True)
        signature = {"space": {k: repr(v) for k, v in arm.space.items()}, "sampler": self.sampler_name,
                     "seed": self.seed if len(self.seeds) == 1 else self.seeds, "metric": arm.main_metric}
        before = study.user_attrs.get("signature")
        if before is None:
            study.set_user_attr("signature", signature)
        elif before != signature:
            raise SystemExit(f"error: study '{self.study_name(arm)}' in {self.storage} was made with another search "
                             f"space, sampler or seed ({before}); set tune.name to start a new study")
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.enqueue_trial(trial.params, user_attrs={"asked_again_for": trial.number})
            study._storage.set_trial_user_attr(trial._trial_id, "stale", True)
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            self._end_orphans(arm, trial.number)
        return study

    def _end_orphans(self, arm: Arm, number: int) -> None:
        """The MLflow run of a trial whose process was killed (SIGKILL leaves it RUNNING) ends
        KILLED; asked again with the same parameters, the trial continues it from its
        checkpoint if it has one (as a sweep continues an unfinished job)."""
        query = (f"tags.{runs.SWEEP_ID} = '{arm.parent_id}' and tags.{runs.TUNE_TRIAL} = '{number}' "
                 f"and attributes.status = 'RUNNING'")
        for run in self.client.search_runs([self.experiment_id], query):
            self.client.set_tag(run.info.run_id, runs.STATUS_REASON, "interrupted")
            self.client.set_terminated(run.info.run_id, "KILLED")

    def _parent(self, arm: Arm) -> str:
        """The MLflow parent run of the arm's study: found again on a rerun, else created."""
        name = self.study_name(arm)
        found = self.client.search_runs([self.experiment_id], f"tags.{runs.TUNE_STUDY} = '{name}'",
                                        max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        title = f"tune-{self.name} {arm.title}: {spaces.describe(arm.space)} x {self.n_trials}"
        run = self.client.create_run(self.experiment_id, run_name=title[:250], tags={
            runs.SWEEP: "true", runs.TUNE_STUDY: name, runs.COMMAND: tracking.command_line(), **tracking.git_info(),
            runs.SWEEP_PARAMS: json.dumps(dict(o.split("=", 1) for o in arm.overrides)),
            runs.MAIN_METRIC: arm.main_metric, runs.METRIC_MODE: arm.mode,
            runs.TUNE_SPACE: json.dumps({k: str(v) for k, v in self._written_space(arm).items()}),
            runs.CELL: arm.cfg.cell.name, runs.TASK: _task(arm.cfg).name, runs.SEQ_LEN: str(arm.cfg.seq_len)})
        run_id = run.info.run_id
        from mlflow.entities import Param

        self.client.set_tag(run_id, runs.SWEEP_ID, run_id)
        self.client.log_batch(run_id, params=[
            Param("tune.trials", str(self.n_trials)), Param("tune.sampler", self.sampler_name),
            Param("tune.seed", str(self.seed if len(self.seeds) == 1 else self.seeds)),
            Param("tune.reseeds", str(self.reseed_seeds)),
            Param("tune.storage", self.storage), Param("tune.study", name)])
        return run_id

    def _written_space(self, arm: Arm) -> dict[str, str]:
        space = dict(self.t.space)
        space.update((self.t.get("cell_space") or {}).get(arm.cfg.cell.name) or {})
        return space

    # -- trials ----------------------------------------------------------------------------
    def _tune(self) -> list[JobReturn]:
        returns: list[JobReturn] = []
        per_trial = len(self.seeds)  # a trial is one run per tuning seed
        per_batch = max(1, self.batch_size // per_trial)  # whole trials; at least one, however many seeds
        while True:
            wanted = {arm.label: self.n_trials - _done(arm.study) for arm in self.arms}
            batch: list[tuple[Arm, Any]] = []
            while len(batch) < per_batch and any(v > 0 for v in wanted.values()):
                # the arm furthest behind first: a study stopped half-way has every arm half done
                arm = max(self.arms, key=lambda a: (wanted[a.label], -self.arms.index(a)))
                batch.append((arm, self._ask(arm)))
                wanted[arm.label] -= 1
            if not batch:
                return returns
            jobs = [self._trial_overrides(arm, trial, seed) for arm, trial in batch for seed in self.seeds]
            print(f"tune {self.name}: trials " + ", ".join(f"{arm.label} #{trial.number}" for arm, trial in batch),
                  flush=True)
            results = self.launcher.launch(jobs, initial_job_idx=self.job_idx)
            self.job_idx += len(jobs)
            for i, (arm, trial) in enumerate(batch):
                rets = list(results[i * per_trial:(i + 1) * per_trial])
                stopped = any(_outcome(r).get("outcome") in ("interrupted", "not_started") for r in rets)
                if not stopped:  # a stopped trial stays RUNNING, to be asked again on resume
                    self._tell(arm, trial, rets)
            for arm in {a.label: a for a, _ in batch}.values():
                self._log_progress(arm)
            returns += list(results)
            _stop_if_asked()

    def _sampler(self, n: int):
        """A sampler seeded by (seed, trial number): the same draws for trial n of every arm,
        and of a study resumed in another process (Optuna does not store a sampler's state)."""
        import optuna

        seed = self.seed * 1_000_003 + n
        if self.sampler_name == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    def _ask(self, arm: Arm):
        arm.study.sampler = self._sampler(len(arm.study.get_trials(deepcopy=False)))
        return arm.study.ask(arm.space)

    def _trial_overrides(self, arm: Arm, trial, seed: int) -> list[str]:
        name = f"{arm.run_name}-trial{trial.number}" + (f"-s{seed}" if len(self.seeds) > 1 else "")
        return [*arm.overrides, *self.fixed, *(spaces.override(k, v) for k, v in trial.params.items()),
                f"seed={seed}", f"++tune.job.parent={arm.parent_id}", f"++tune.job.role={ROLE_TRIAL}",
                f"++tune.job.trial={trial.number}", f"++tracking.run_name={name}"]

    def _tell(self, arm: Arm, trial, rets: list[JobReturn]) -> None:
        """The trial's value from its runs, one per tuning seed: the mean of each run's best
        validation value (a diverged run's: the worst value)."""
        from optuna.trial import TrialState

        outcomes = [_outcome(r) for r in rets]
        ids = [o["run_id"] for o in outcomes if o.get("run_id")]
        shown = " ".join(spaces.override(k, v) for k, v in trial.params.items())
        head = f"[tune {self.study_name(arm)}] trial {trial.number}: {shown}"
        if ids:
            trial.set_user_attr("run_id", ids[0] if len(self.seeds) == 1 else ids)
        for ret, outcome in zip(rets, outcomes):
            if ret.status != JobStatus.COMPLETED or outcome.get("outcome") not in ("finished", "diverged", "skipped"):
                detail = outcome.get("detail") or (repr(ret._return_value) if ret.status == JobStatus.FAILED else "")
                trial.set_user_attr("error", str(detail)[:1000])
                arm.study.tell(trial, state=TrialState.FAIL)
                print(f"{head} -> FAILED ({str(detail)[:200]})", flush=True)
                return
        values: dict[int, float] = {}
        diverged_seeds = []
        for seed, outcome in zip(self.seeds, outcomes):
            run = self.client.get_run(outcome["run_id"])
            diverged = run.data.tags.get(runs.DIVERGED) == "true"
            value = None if diverged else self._best_validation(run.info.run_id, arm)
            if value is None or not math.isfinite(value):
                diverged, value = True, self._worst(arm, run)
            values[seed] = value
            if diverged:
                diverged_seeds.append(seed)
        value = sum(values.values()) / len(values)
        trial.set_user_attr("diverged", bool(diverged_seeds))
        if len(self.seeds) > 1:
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
              f"{_done(arm.study)}/{self.n_trials} done", flush=True)

    def _best_validation(self, run_id: str, arm: Arm) -> float | None:
        values = [m.value for m in self.client.get_metric_history(run_id, arm.main_metric) if math.isfinite(m.value)]
        if not values:
            return None
        return min(values) if arm.mode == "min" else max(values)

    def _worst(self, arm: Arm, run) -> float:
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

    def _log_progress(self, arm: Arm) -> None:
        counts = _counts(arm.study)
        done = counts["trials_done"]
        metrics = {f"tune/{k}": float(v) for k, v in counts.items()}
        if counts["completed"]:
            metrics["tune/best_value"] = float(arm.study.best_value)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(arm.parent_id, metrics=[Metric(k, v, now, done) for k, v in metrics.items()])

    # -- re-seeding the best ---------------------------------------------------------------
    def _reseed(self) -> list[JobReturn]:
        jobs: list[tuple[Arm, int, list[str]]] = []
        for arm in self.arms:
            if not _counts(arm.study)["completed"]:
                print(f"[tune {self.study_name(arm)}] no trial finished: nothing to re-seed", flush=True)
                continue
            best = arm.study.best_trial
            self._record_best(arm, best)
            for s in self.reseed_seeds:
                job = [*arm.overrides, *self.fixed, *(spaces.override(k, v) for k, v in best.params.items()),
                       f"seed={s}", f"++tune.job.parent={arm.parent_id}", f"++tune.job.role={ROLE_RESEED}",
                       f"++tune.job.trial={best.number}", f"++tracking.run_name={arm.run_name}-best-s{s}"]
                if self._already_run(job):
                    arm.reseeds["skipped"] = arm.reseeds.get("skipped", 0) + 1
                else:
                    jobs.append((arm, s, job))
        returns: list[JobReturn] = []
        for i in range(0, len(jobs), self.batch_size):
            chunk = jobs[i:i + self.batch_size]
            print(f"tune {self.name}: re-seeding " + ", ".join(f"{arm.label} seed={s}" for arm, s, _ in chunk),
                  flush=True)
            results = self.launcher.launch([j for _, _, j in chunk], initial_job_idx=self.job_idx)
            self.job_idx += len(chunk)
            for (arm, _, _), ret in zip(chunk, results):
                outcome = _outcome(ret).get("outcome", "failed") if ret.status == JobStatus.COMPLETED else "failed"
                arm.reseeds[outcome] = arm.reseeds.get(outcome, 0) + 1
            returns += list(results)
            _stop_if_asked()
        return returns

    def _already_run(self, overrides: list[str]) -> bool:
        """A re-seed run of this exact configuration has a result (a rerun of the command):
        not launched again, as a sweep's job would skip it, without a worker's start-up."""
        cfg = self.loader.load_sweep_config(self.config, overrides)
        job = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])  # as the job sees it
        return runs.completed(self.client, self.experiment, runs.config_hash(job)) is not None

    def _record_best(self, arm: Arm, best) -> None:
        """The best value and parameters on the parent: params when first known, tags after
        (MLflow keeps a param's first value; a study given more trials may find another)."""
        from mlflow.entities import Param, RunTag
        from mlflow.exceptions import MlflowException

        values = {f"best.{k}": str(v) for k, v in best.params.items()}
        values["best.trial"] = str(best.number)
        try:
            self.client.log_batch(arm.parent_id, params=[Param(k, v) for k, v in values.items()])
        except MlflowException:
            pass
        self.client.log_batch(arm.parent_id, tags=[RunTag(f"tune.{k}", v) for k, v in values.items()])
        print(f"[tune {self.study_name(arm)}] best {arm.main_metric} {best.value:.4g} (trial {best.number}): "
              + " ".join(spaces.override(k, v) for k, v in best.params.items())
              + (f"; re-run on seeds {self.reseed_seeds}" if self.reseed_seeds else ""), flush=True)

    def _end(self, status: str) -> None:
        for arm in self.arms:
            if not arm.parent_id:
                continue
            try:
                self._log_progress(arm)
                if arm.reseeds:
                    from mlflow.entities import Metric

                    now = int(time.time() * 1000)
                    self.client.log_batch(arm.parent_id, metrics=[
                        Metric(f"tune/reseeds_{k}", float(v), now, 0) for k, v in arm.reseeds.items()])
                self.client.set_terminated(arm.parent_id, status)
            except Exception as e:  # the studies' state is in the Optuna store either way
                print(f"tune: could not end parent run {arm.parent_id} ({type(e).__name__}: {e})", flush=True)
        if self.arms and all(a.parent_id for a in self.arms):
            ui = tracking.ui_base(self.config.tracking)
            print(f"tune {status}: {len(self.arms)} studies in experiment '{self.experiment}' "
                  f"(MLflow): {tracking.experiment_url(ui, self.experiment_id)}", flush=True)
            if status == "FINISHED" and any(arm.reseeds for arm in self.arms):
                from rnnlab import views

                try:
                    key = views.for_tuning(self.client, self.experiment_id, self.name)
                except Exception as e:  # the studies stand without their view
                    print(f"tune: no comparison view in the MLflow UI ({type(e).__name__}: {e})", flush=True)
                else:
                    print(f"compare the tuned cells (their re-seed runs, grouped by cell): "
                          f"{views.url(ui, self.experiment_id, key)}", flush=True)


def _done(study) -> int:
    return _counts(study)["trials_done"]


def _counts(study) -> dict[str, int]:
    """Trials done (completed, pruned or failed; not those asked again), and of them how many
    diverged, failed and were pruned."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("stale")]
    state = [t.state.name for t in trials]
    diverged = sum(1 for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("diverged"))
    return {"trials_done": sum(s in DONE_STATES for s in state), "completed": state.count("COMPLETE"),
            "diverged": diverged, "failed": state.count("FAIL"), "pruned": state.count("PRUNED")}


def _stop_if_asked() -> None:
    """After a batch that Ctrl-C or SIGTERM stopped (every job saved, see rnnlab.sweep): the
    study stops KILLED; its interrupted trials stay RUNNING, to be asked again on resume."""
    if stopped_by() is not None:
        raise Stopped


def _outcome(ret: JobReturn) -> dict[str, Any]:
    """How a job ended (``outcome.json`` in its output dir: see rnnlab.multirun.record_outcome)."""
    if ret.hydra_cfg is None:
        return {}
    path = Path(ret.hydra_cfg.hydra.runtime.output_dir) / OUTCOME_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _task(cfg: DictConfig):
    """The arm's task class (its name, main metric and mode), without building its data."""
    from rnnlab.tasks.base import Task

    cls: type[Task] = get_class(cfg.task._target_)
    return cls


def _cells() -> tuple[str, ...]:
    from rnnlab.config import CELLS

    return tuple(CELLS)
