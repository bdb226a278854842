"""The MLflow side of a tuning sweep: one parent run per arm's study, named by what it tunes,
with its trials and re-seed runs as children (``tune_role`` = trial | reseed, ``tune_trial`` =
the trial number).

A parent holds what the MLflow UI cannot get from the Optuna store: the best value and
parameters, and the counts of trials done, diverged, failed and pruned, logged by trials done
so that ``tune/best_value`` draws the best-so-far curve. Its status is the sweep's: FINISHED,
KILLED or FAILED.
"""

from __future__ import annotations

import json
import time

from omegaconf import DictConfig

from rnnlab import runs, tracking
from rnnlab.tune import space as spaces
from rnnlab.tune import store
from rnnlab.tune.arms import Arm, Settings, task_of


class Parents:
    """The experiment a tuning sweep writes to, and its arms' parent runs in it."""

    def __init__(self, config: DictConfig, settings: Settings, task_name: str):
        from mlflow import MlflowClient

        self.config, self.settings = config, settings
        self.uri = tracking.tracking_uri(config.tracking)
        self.client = MlflowClient(self.uri)
        self.client.search_experiments(max_results=1)  # creates the schema, once, here
        self.experiment = runs.experiment_name(config, task_name)
        self.experiment_id = tracking.get_or_create_experiment(self.client, self.experiment,
                                                               tracking.artifact_root(config.tracking))

    def parent(self, arm: Arm, storage: str) -> str:
        """The MLflow parent run of the arm's study: found again on a rerun, else created."""
        s = self.settings
        name = store.study_name(s, arm)
        found = self.client.search_runs([self.experiment_id], f"tags.{runs.TUNE_STUDY} = '{name}'",
                                        max_results=1)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        title = f"tune-{s.name} {arm.title}: {spaces.describe(arm.space)} x {s.n_trials}"
        run = self.client.create_run(self.experiment_id, run_name=title[:250], tags={
            runs.SWEEP: "true", runs.TUNE_STUDY: name, runs.COMMAND: tracking.command_line(), **tracking.git_info(),
            runs.SWEEP_PARAMS: json.dumps(dict(o.split("=", 1) for o in arm.overrides)),
            runs.MAIN_METRIC: arm.main_metric, runs.METRIC_MODE: arm.mode,
            runs.TUNE_SPACE: json.dumps({k: str(v) for k, v in s.written_space(arm.cfg.cell.name).items()}),
            runs.CELL: arm.cfg.cell.name, runs.TASK: task_of(arm.cfg).name, runs.SEQ_LEN: str(arm.cfg.seq_len)})
        run_id = run.info.run_id
        from mlflow.entities import Param

        self.client.set_tag(run_id, runs.SWEEP_ID, run_id)
        self.client.log_batch(run_id, params=[
            Param("tune.trials", str(s.n_trials)), Param("tune.sampler", s.sampler_name),
            Param("tune.seed", str(s.seed_shown)), Param("tune.reseeds", str(s.reseed_seeds)),
            Param("tune.storage", storage), Param("tune.study", name)])
        return run_id

    def log_progress(self, arm: Arm) -> None:
        """The study's counts, and its best value so far, at its number of trials done."""
        counts = store.counts(arm.study)
        done = counts["trials_done"]
        metrics = {f"tune/{k}": float(v) for k, v in counts.items()}
        if counts["completed"]:
            metrics["tune/best_value"] = float(arm.study.best_value)
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(arm.parent_id, metrics=[Metric(k, v, now, done) for k, v in metrics.items()])

    def record_best(self, arm: Arm, best) -> None:
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
        reseeds = self.settings.reseed_seeds
        print(f"[tune {store.study_name(self.settings, arm)}] best {arm.main_metric} {best.value:.4g} "
              f"(trial {best.number}): " + " ".join(spaces.override(k, v) for k, v in best.params.items())
              + (f"; re-run on seeds {reseeds}" if reseeds else ""), flush=True)

    def end(self, arms: list[Arm], status: str) -> None:
        """Every parent ends with the sweep's status and its last counts; a finished sweep
        that re-seeded also gets the MLflow UI's view comparing the tuned arms."""
        for arm in arms:
            if not arm.parent_id:
                continue
            try:
                self.log_progress(arm)
                if arm.reseeds:
                    from mlflow.entities import Metric

                    now = int(time.time() * 1000)
                    self.client.log_batch(arm.parent_id, metrics=[
                        Metric(f"tune/reseeds_{k}", float(v), now, 0) for k, v in arm.reseeds.items()])
                self.client.set_terminated(arm.parent_id, status)
            except Exception as e:  # the studies' state is in the Optuna store either way
                print(f"tune: could not end parent run {arm.parent_id} ({type(e).__name__}: {e})", flush=True)
        if arms and all(a.parent_id for a in arms):
            ui = tracking.ui_base(self.config.tracking)
            print(f"tune {status}: {len(arms)} studies in experiment '{self.experiment}' "
                  f"(MLflow): {tracking.experiment_url(ui, self.experiment_id)}", flush=True)
            if status == "FINISHED" and any(arm.reseeds for arm in arms):
                from rnnlab import views

                try:
                    key = views.for_tuning(self.client, self.experiment_id, self.settings.name)
                except Exception as e:  # the studies stand without their view
                    print(f"tune: no comparison view in the MLflow UI ({type(e).__name__}: {e})", flush=True)
                else:
                    print(f"compare the tuned cells (their re-seed runs, grouped by cell): "
                          f"{views.url(ui, self.experiment_id, key)}", flush=True)
