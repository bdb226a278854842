"""Train one configuration end to end: validate, build, track, fit, test, report.

:func:`train` reads as its steps. The order matters: everything that can reject the command
line (config values, data paths, ``seq_len`` longer than the data, a full disk) runs before
the MLflow run exists; once the run exists, every way out of :func:`train` gives it a final
status: FINISHED, FAILED (diverged, or an error, as tags), or KILLED (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from rnnlab import config, interrupts, multirun, runs, tracking
from rnnlab.callbacks import (
    FlushedCheckpoint,
    NoProfiler,
    SolveWatch,
    StopAtStep,
    StopRecorder,
    TokensPerSecond,
    ValidateAtLastStep,
)
from rnnlab.cells import spec
from rnnlab.cells.params import hidden_for_budget
from rnnlab.console import PlainProgress, StepProgressBar, silence_known_noise
from rnnlab.diagnostics import GradientFlow
from rnnlab.model import RecurrentModel
from rnnlab.tasks.base import Task
from rnnlab.tasks.batching import alone, shard


def fmt_metric(value: float) -> str:
    """A metric for people: 4 decimals in the usual range, 3 significant digits outside it
    (a solved adding run's ``2.4e-05``, not ``0.0000``)."""
    return f"{value:.4f}" if value == 0 or 1e-2 <= abs(value) < 1e4 else f"{value:.3g}"


@dataclass
class Summary:
    """What a run ended with; ``skipped`` when a sweep found the configuration already done."""

    run_id: str
    run_name: str
    experiment: str
    status: str  # FINISHED | FAILED
    main_metric: str
    val: float | None
    test: float | None
    diverged: bool
    diverged_at_step: int | None
    tracking_uri: str
    skipped: bool = False
    summary_line: str | None = None  # one line against the baseline, also the run's MLflow description
    url: str | None = None  # the run's page in the MLflow UI

    @property
    def outcome(self) -> str:
        return "skipped" if self.skipped else "diverged" if self.diverged else "finished"

    def lines(self) -> list[str]:
        metric = runs.metric_name(self.main_metric)
        if self.skipped:
            return [f"[{self.run_name}] skipped: already {self.status} as MLflow run {self.run_id} "
                    f"in experiment '{self.experiment}' (sweep.rerun=true runs it again)"]
        if self.diverged:
            head = (f"DIVERGED at step {self.diverged_at_step}: non-finite loss or gradient; "
                    f"run marked FAILED (diverged=true)")
        else:
            shown = [(self.main_metric, self.val), (f"test/{metric}", self.test)]
            head = " | ".join(f"{k} = {fmt_metric(v)}" for k, v in shown if v is not None)
        return [f"[{self.run_name}] {head}",
                *([self.summary_line] if self.summary_line else []),
                f"MLflow run {self.run_id} in experiment '{self.experiment}' ({self.status})"
                + (f": {self.url}" if self.url else ""),
                f"see it: {tracking.ui_command(self.tracking_uri)}"]


def summary_line(cfg: DictConfig, task: Task, test_value: float | None, baselines: dict[str, float],
                 skill: float | None, diverged_at: int | None) -> str:
    """``GRU, adding, T=50, clip 1.0: test/mse 0.0140 vs baseline 0.1670 (skill 0.92)``."""
    head = f"{cfg.cell.name.upper()}, {task.name}, T={cfg.seq_len}, clip {runs.clip_label(cfg.clip)}"
    if diverged_at is not None:
        return f"{head}: DIVERGED at step {diverged_at} (non-finite loss or gradient)"
    if test_value is None:
        return f"{head}: no test result"
    key = runs.metric_name(task.main_metric)
    text = f"{head}: test/{key} {fmt_metric(test_value)}"
    if key in baselines:
        text += f" vs baseline {fmt_metric(baselines[key])}"
    return text + (f" (skill {skill:.2f})" if skill is not None else "")


@dataclass
class Start:
    """Where a run starts: a new MLflow run, or ``run_id`` continued from ``checkpoint``; in a
    DDP worker process (rank > 0), rank 0's run and checkpoint dir."""

    run_id: str | None = None
    checkpoint: str | None = None
    ddp_ckpt_dir: str | None = None


def train(cfg: DictConfig) -> Summary | None:
    """Train, test and track one configuration. None in a DDP worker process: rank 0 reports."""
    _configure_process(cfg)
    tracking.preflight(cfg.tracking)  # an unusable store fails now, not after an hour of training
    digest, in_sweep = runs.config_hash(cfg), multirun.sweep_context()
    if in_sweep is not None and not cfg.sweep.rerun:
        done = _completed(cfg, digest)
        if done is not None:
            return done
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task(cfg)  # loads and checks the data: may raise ConfigError
    _apply_param_budget(cfg, task)
    model = build_model(cfg, task, run_name(cfg, task.name))
    start = _choose_start(cfg, digest, task.name, in_sweep is not None)
    _require_space(cfg, model, start)
    run = _open_run(cfg, task, digest, in_sweep, start)
    if start.ddp_ckpt_dir is not None:  # a worker: train and test its shard; rank 0 reports
        _fit_and_test(cfg, task, model, run, start, StopRecorder())
        return None
    stop = StopRecorder()
    previous = interrupts.raise_on_sigterm()
    try:
        run.set_tags(runs.process_tags())  # a resumed run's process is a new one
        if in_sweep is not None or cfg.get("resume") is True:
            _end_orphans(run, digest)
        return _fit_and_test(cfg, task, model, run, start, stop)
    except BaseException as e:
        instead = _ended_abnormally(run, e, stop)
        if instead is e:
            raise
        raise instead from e
    finally:
        interrupts.restore_signals(previous)


def _configure_process(cfg: DictConfig) -> None:
    config.validate(cfg)
    silence_known_noise()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # cuDNN/cuBLAS need this for deterministic results; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def build_task(cfg: DictConfig) -> Task:
    try:
        return instantiate(cfg.task, _convert_="all")
    except InstantiationException as e:  # surface the task's own ConfigError, not Hydra's wrapper
        if isinstance(e.__cause__, config.ConfigError):
            raise e.__cause__ from None
        raise


def build_model(cfg: DictConfig, task: Task, label: str) -> RecurrentModel:
    return RecurrentModel(
        task=task,
        cell=config.plain(cfg.cell),
        optim=config.plain(cfg.optim),
        clip=cfg.clip,
        embed_dim=cfg.model.embed_dim,
        max_steps=cfg.trainer.max_steps,
        run_label=label,
    )


def _apply_param_budget(cfg: DictConfig, task: Task) -> None:
    """``model.param_budget=N``: each cell gets the hidden size that makes the model N
    parameters (within 2%), so that cells compare at equal capacity. The chosen size is then
    the config's ``cell.hidden_size``, logged with the runs's params and ``model/n_params``."""
    budget = cfg.model.get("param_budget")
    if not budget:
        return
    try:
        cfg.cell.hidden_size = hidden_for_budget(budget, cfg.cell.name, task.input_kind, task.input_size,
                                                 cfg.model.embed_dim, cfg.cell.num_layers, task.output_size)
    except ValueError as e:
        raise config.ConfigError("model.param_budget", budget, str(e)) from None


def run_name(cfg: DictConfig, task_name: str) -> str:
    """Built from what varies across a sweep, e.g. ``lstm-char_lm-T100-clip1.0-s0``."""
    if cfg.tracking.get("run_name"):
        return str(cfg.tracking.run_name)
    impl = "" if cfg.cell.get("impl", "fused") == "fused" else f"-{cfg.cell.impl}"
    return f"{cfg.cell.name}{impl}-{task_name}-T{cfg.seq_len}-clip{runs.clip_label(cfg.clip)}-s{cfg.seed}"


def _completed(cfg: DictConfig, digest: str) -> Summary | None:
    """In a sweep: the Summary of an earlier run of this configuration that has a result."""
    task_cls: type[Task] = get_class(cfg.task._target_)
    experiment = runs.experiment_name(cfg, task_cls.name)
    uri = tracking.tracking_uri(cfg.tracking)
    done = runs.completed(MlflowClient(uri), experiment, digest)
    if done is None:
        return None
    return Summary(run_id=done.info.run_id, run_name=done.info.run_name, experiment=experiment,
                   status=done.info.status, main_metric=task_cls.main_metric,
                   val=done.data.metrics.get(task_cls.main_metric), test=None,
                   diverged=done.data.tags.get(runs.DIVERGED) == "true", diverged_at_step=None,
                   tracking_uri=uri, skipped=True)


def _choose_start(cfg: DictConfig, digest: str, task_name: str, in_sweep: bool) -> Start:
    """Per ``resume``: null/false = a new run (except in a sweep, which continues an unfinished
    run of the same configuration when it has a checkpoint), true = the latest unfinished run
    of this configuration, a run id = that run, which must be of this same configuration."""
    ddp = _ddp_parent_state()
    if ddp is not None:
        return Start(run_id=ddp["run_id"], checkpoint=ddp["last_ckpt"], ddp_ckpt_dir=ddp["ckpt_dir"])
    wanted = cfg.get("resume")
    if wanted in (None, False) and not in_sweep:
        return Start()
    uri = tracking.tracking_uri(cfg.tracking)
    client = MlflowClient(uri)
    if isinstance(wanted, str):
        return Start(*runs.named(client, wanted, digest, uri))
    found = runs.resumable(client, runs.experiment_name(cfg, task_name), digest)
    if found is None and wanted is True:
        print("resume=true: no unfinished run of this configuration has a checkpoint; starting a new run",
              flush=True)
    return Start(*found) if found else Start()


def _end_orphans(run: tracking.Run, digest: str) -> None:
    """A sweep (or ``resume=true``) runs each configuration once: another run of it still RUNNING
    whose process is gone (:func:`rnnlab.runs.is_orphan`: a session's end, SIGKILL) is ended
    KILLED here (:func:`rnnlab.runs.end_orphans`), so that no store keeps a run RUNNING forever.
    One whose process lives (a parallel job, another machine still logging) is left alone."""
    others = (r for r in runs.with_config(run.client, run.experiment_name, digest) if r.info.run_id != run.id)
    try:
        n = runs.end_orphans(run.client, others, run.id)
    except Exception as e:  # housekeeping: it must not stop the run it was done for
        print(f"could not check this configuration's earlier runs for orphans ({type(e).__name__}: {e})", flush=True)
        return
    if n:
        print(f"ended KILLED {n} earlier run(s) of this configuration that a killed process left RUNNING "
              f"(tag {runs.STATUS_REASON}=orphaned)", flush=True)


def _require_space(cfg: DictConfig, model: RecurrentModel, start: Start) -> None:
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    where = os.path.dirname(start.checkpoint) if start.checkpoint else (_hydra_dir() or tempfile.gettempdir())
    tracking.require_space(cfg.tracking, n_bytes, where)


def _open_run(cfg: DictConfig, task: Task, digest: str, in_sweep: dict | None, start: Start) -> tracking.Run:
    parent = (in_sweep or {}).get("parent_run_id")
    job = OmegaConf.select(cfg, "tune.job", default=None) or {}
    if job.get("parent"):  # a tuning study's trial or re-seed run: a child of its arm's parent
        parent = str(job["parent"])
        tune_tags = {runs.TUNE_ROLE: job.get("role"), runs.TUNE_TRIAL: job.get("trial")}
    else:
        tune_tags = {}
    tags = {**runs.identity_tags(cfg, task.name), runs.CONFIG_HASH: digest, runs.MAIN_METRIC: task.main_metric,
            runs.METRIC_MODE: task.mode, runs.COMMAND: tracking.command_line(),
            runs.CODE_HASH: tracking.code_hash(), **tracking.git_info(),
            **({runs.PARENT: parent, runs.SWEEP_ID: parent} if parent else {}), **tune_tags}
    worker = start.ddp_ckpt_dir is not None
    return tracking.Run(cfg.tracking, runs.experiment_name(cfg, task.name), run_name(cfg, task.name), tags,
                        resume_id=None if worker else start.run_id, attach_id=start.run_id if worker else None)


def _checkpoint_dir(cfg: DictConfig, task: Task, model: RecurrentModel, run: tracking.Run, start: Start) -> str:
    """Where this run's checkpoints go; a new run logs its config and baselines on the way."""
    if start.ddp_ckpt_dir is not None:
        return start.ddp_ckpt_dir
    if run.resumed:
        assert start.checkpoint is not None, "a resumed run continues from a checkpoint"
        return os.path.dirname(start.checkpoint)
    n_params = sum(p.numel() for p in model.parameters())
    run.log_config(cfg, {**config.comparable(cfg), "model/n_params": n_params, **model_sizes(model, task),
                         **task.describe()})
    run.set_tags({**tracking.env_versions(), **tracking.machine(cuda=_uses_cuda(cfg))})  # tags, not params
    run.log_metrics({f"baseline/{k}": v for k, v in task.baselines().items()})
    hydra_dir = _hydra_dir()
    ckpt_dir = tempfile.mkdtemp(prefix=f"rnnlab-{run.id}-") if hydra_dir is None else \
        os.path.join(hydra_dir, "checkpoints", run.id)
    run.set_tags({runs.CHECKPOINT_DIR: os.path.abspath(ckpt_dir)})
    return ckpt_dir


def _note_resumed_elsewhere(cfg: DictConfig, run: tracking.Run, started: dict[str, str]) -> None:
    """A resume in a process unlike the first (other code, packages or processor) is marked on
    the run's tags (:func:`rnnlab.tracking.resumed_elsewhere`) and said on the console: the
    run continues, but its numbers are no longer those of one code on one machine."""
    now = {runs.CODE_HASH: tracking.code_hash(), **tracking.env_versions(), **tracking.machine(cuda=_uses_cuda(cfg))}
    changed = tracking.resumed_elsewhere(started, now)
    if changed:
        run.set_tags(changed)
        print("resuming in a process unlike the one that started this run (its numbers may differ from an "
              "uninterrupted run's; the tags say so): " + "; ".join(f"{k}: {v}" for k, v in changed.items()),
              flush=True)


def _check_world_size(cfg: DictConfig, run: tracking.Run, world: int, started: dict[str, str]) -> None:
    """A checkpoint continues only in as many processes as wrote it: each rank's sampler saved
    its own place in its own shard of the epoch, and stateful char_lm cut the text into
    world × batch_size streams. The config fixes the count unless ``trainer.devices`` leaves it
    to the machine (``auto``, ``-1``), so a new run tags it (``world_size``) and a resume is
    checked against it. A run from before the tag is neither checked nor tagged: its count is
    not known."""
    if not run.resumed:
        run.set_tags({runs.WORLD_SIZE: world})
        return
    wrote = started.get(runs.WORLD_SIZE)
    if wrote is not None and int(wrote) != world:
        raise config.ConfigError("trainer.devices", cfg.trainer.devices,
                                 f"this run's checkpoint was written by {wrote} processes and continues only in "
                                 f"{wrote} (here {world}): resume it where this setting gives {wrote}, or start "
                                 f"it afresh by deleting its checkpoints ({run.checkpoint_dir}), which a sweep "
                                 "would otherwise resume from")


def model_sizes(model: RecurrentModel, task: Task) -> dict[str, int]:
    """What the model's recurrence costs: ``model/state_size``, the floats of state one sequence
    carries from step to step over all layers (its spec's :meth:`~rnnlab.cells.CellSpec.state_size`;
    for a cell whose state is its context, at the task's ``steps``), and ``model/step_flops``, the
    recurrent stack's matmul FLOPs per step of one sequence (its spec's ``step_flops``, every layer)."""
    s, rnn = spec(model.cell_name), model.rnn
    h, layers = int(getattr(rnn, "hidden_size")), int(getattr(rnn, "num_layers"))  # noqa: B009  (nn.Module's __getattr__ is typed as tensors)
    e = int(model.hparams["embed_dim"])
    flops = s.step_flops(e, h) + (layers - 1) * s.step_flops(h, h)
    return {"model/state_size": s.state_size(h, layers, seq_len=task.steps), "model/step_flops": flops}


def length_test_metrics(task: Task, model: RecurrentModel) -> dict[str, float]:
    """The trained model scored at each of the task's other lengths (``Task.length_tests``):
    ``test/L<n>/<metric>``, ``baseline/L<n>/<metric>`` and ``test/L<n>/skill``. Run on rank 0
    alone, outside the Trainer: the whole test set at that length, unsharded."""
    out: dict[str, float] = {}
    for n, other in task.length_tests().items():
        with alone():
            values = model.evaluate(other)
        base = other.baselines()
        out.update({f"test/L{n}/{k}": v for k, v in values.items()})
        out.update({f"baseline/L{n}/{k}": v for k, v in base.items()})
        main = runs.metric_name(task.main_metric)
        skill = other.skill(values[main], base) if main in values else None
        if skill is not None:
            out[f"test/L{n}/skill"] = skill
    return out


def _steps_per_save(task: Task, every_n_epochs: int) -> Callable[[], int]:
    """``last.ckpt``'s cadence, read in its callback's setup, once the processes are up: under
    DDP a rank's epoch is its share of the batches. There the evaluation loaders are built too,
    so that a split too small to give every rank a batch is refused before training rather
    than at its first validation, or after training at the test."""
    def steps() -> int:
        if shard()[1] > 1:
            task.val_dataloader(), task.test_dataloader()
        return every_n_epochs * len(task.train_dataloader())
    return steps


def _callbacks(cfg: DictConfig, task: Task, run: tracking.Run, ckpt_dir: str,
               stop: StopRecorder) -> tuple[ModelCheckpoint, list[Callback]]:
    """The callbacks of a run, and among them the one that keeps the best checkpoint."""
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=task.main_metric,
                           mode=task.mode, auto_insert_metric_name=False)
    # "last" on the last batch of every n-th epoch: the data order depends only on (seed,
    # epoch), so a run resumed from there sees exactly the batches an uninterrupted run sees.
    last = FlushedCheckpoint(run.flush, cfg.checkpoint.get("min_interval_s", 0.0), dirpath=ckpt_dir,
                             filename="last", save_top_k=1, enable_version_counter=False,
                             steps_per_save=_steps_per_save(task, cfg.checkpoint.every_n_epochs))
    solve = SolveWatch(cfg.solve.threshold, cfg.solve.patience, bool(cfg.solve.early_stop))
    callbacks: list[Callback] = [best, last, ValidateAtLastStep(), TokensPerSecond(), stop, solve]
    if run.resumed:
        callbacks.append(_BestFromStore(best, run, task))
    if cfg.diagnostics.enabled:
        d = cfg.diagnostics
        callbacks.append(GradientFlow(every_n_val=d.every_n_val, probe_size=d.probe_size,
                                      last_k=d.last_k, threshold=d.threshold))
    callbacks.append(StepProgressBar() if interactive() else PlainProgress())
    callbacks.append(StopAtStep(last, stop, interrupts.stop_file()))  # after the others: the step's state is complete
    return best, callbacks


def _fit_and_test(cfg: DictConfig, task: Task, model: RecurrentModel, run: tracking.Run, start: Start,
                  stop: StopRecorder) -> Summary | None:
    ckpt_dir = run.checkpoint_dir = _checkpoint_dir(cfg, task, model, run, start)
    best, callbacks = _callbacks(cfg, task, run, ckpt_dir, stop)
    profiler = {} if cfg.trainer.get("profiler") else {"profiler": NoProfiler()}
    # use_distributed_sampler=False: rnnlab's samplers shard by rank themselves under DDP
    # (rnnlab.tasks.batching); Lightning's would wrap them and shard again. Passed here, not set
    # in conf/trainer, whose every key is part of every run's config_hash.
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=run.logger, callbacks=callbacks,
                                      enable_progress_bar=interactive(), deterministic=_deterministic(cfg),
                                      use_distributed_sampler=False, **profiler)
    if start.ddp_ckpt_dir is None:  # rank 0 (or the only process), before any worker starts
        started = run.client.get_run(run.id).data.tags if run.resumed else {}  # the tags before this process
        _check_world_size(cfg, run, trainer.world_size, started)
        if run.resumed:  # once it is sure to continue: a refused resume computed nothing
            _note_resumed_elsewhere(cfg, run, started)
    os.environ[DDP_STATE] = json.dumps({"run_id": run.id, "ckpt_dir": ckpt_dir, "last_ckpt": start.checkpoint})
    trainer.fit(model, datamodule=task, ckpt_path=start.checkpoint, weights_only=True)
    diverged = model.diverged_at is not None
    test_value = None
    if not diverged:  # collective under DDP: every rank tests its shard
        # the path itself: "best" makes Lightning warn that there are two ModelCheckpoints
        trainer.test(model, datamodule=task, ckpt_path=best.best_model_path or None,
                     verbose=False, weights_only=True)
        test_value = _value(trainer.callback_metrics, runs.on_split(task.main_metric, "test"))
    if not trainer.is_global_zero:
        return None
    return _finalize(cfg, task, model, run, best, trainer, test_value)


def _finalize(cfg: DictConfig, task: Task, model: RecurrentModel, run: tracking.Run, best: ModelCheckpoint,
              trainer: pl.Trainer, test_value: float | None) -> Summary:
    """Rank 0, after testing: the last metrics and artifacts, the summary line, the status."""
    diverged = model.diverged_at is not None
    baselines = task.baselines()
    skill = None if diverged or test_value is None else task.skill(test_value, baselines)
    if not diverged and test_value is not None:
        run.log_metrics(length_test_metrics(task, model), step=trainer.global_step)
    run.log_metrics({"grad_norm/max": model.guard.max_seen,
                     "grad_norm/nonfinite_steps": float(model.guard.nonfinite_steps),
                     **({"test/skill": skill} if skill is not None else {})}, step=trainer.global_step)
    line = summary_line(cfg, task, test_value, baselines, skill, model.diverged_at)
    if not diverged:
        with tempfile.TemporaryDirectory() as tmp:
            for path in task.log_artifacts(model, "test", tmp):
                run.log_artifact(path, "plots" if path.endswith(".png") else "data")
        if cfg.tracking.get("log_checkpoint", True) and best.best_model_path:
            run.log_artifact(best.best_model_path, "checkpoints")
    solved = next(c for c in trainer.callbacks if isinstance(c, SolveWatch))  # type: ignore[attr-defined]
    stop_reason = "diverged" if diverged else "solved" if solved.stopped else "max_steps"
    run.set_tags({runs.DIVERGED: str(diverged).lower(), runs.STATUS_REASON: "diverged" if diverged else "ok",
                  runs.STOP_REASON: stop_reason,
                  runs.NOTE: line,
                  **({runs.DIVERGED_AT: model.diverged_at, runs.LAST_GRAD_NORM: model.guard.last_norm}
                     if diverged else {})})
    status = "FAILED" if diverged else "FINISHED"
    run.end(status)
    val = float(best.best_model_score) if best.best_model_score is not None else \
        _value(trainer.callback_metrics, task.main_metric)
    return Summary(run_id=run.id, run_name=run.name, experiment=run.experiment_name, status=status,
                   main_metric=task.main_metric, val=val, test=test_value, diverged=diverged,
                   diverged_at_step=model.diverged_at, tracking_uri=run.uri, summary_line=line, url=run.url)


def _ended_abnormally(run: tracking.Run, e: BaseException, stop: StopRecorder) -> BaseException:
    """Give the run its final status after ``e`` stopped it; return what to raise instead."""
    if not run.reachable():  # nothing can be written there; the checkpoints stay
        return run.lost(e)
    signame = interrupts.signal_of(e, stop.exception)
    try:
        if signame is not None:
            run.set_tags({runs.STATUS_REASON: "interrupted", runs.STOPPED_BY: signame})
            run.end("KILLED")
        else:
            run.set_tags({runs.STATUS_REASON: "error", runs.ERROR: f"{type(e).__name__}: {e}"[:5000]})
            run.end("FAILED")
    except Exception:
        return run.lost(e)
    if isinstance(e, tracking.TrackingLost):  # a write was refused: say how to continue
        return run.lost(e)
    if signame is None:
        return e
    last = os.path.join(run.checkpoint_dir, "last.ckpt") if run.checkpoint_dir else None
    return interrupts.Interrupted(signame, run.id, last if last and os.path.exists(last) else None, stop.saved_step)


class _BestFromStore(Callback):
    """On resume, reconcile the best checkpoint with what the first process did.

    ``last.ckpt`` is written on an epoch's last batch, before that step's validation; if the
    process died after that validation, its score (and best.ckpt on disk) are newer than the
    best-model state inside ``last.ckpt``. The store's validation history has it.
    """

    def __init__(self, checkpoint: ModelCheckpoint, run: tracking.Run, task: Task):
        self.checkpoint, self.run, self.task = checkpoint, run, task

    def on_train_start(self, trainer, pl_module):
        c = self.checkpoint
        path = os.path.join(c.dirpath, "best.ckpt")
        history = self.run.client.get_metric_history(self.run.id, self.task.main_metric)
        if not history or not os.path.exists(path):
            return
        pick = min if self.task.mode == "min" else max
        best = pick(m.value for m in history)
        if c.best_model_score is None or pick(best, float(c.best_model_score)) != float(c.best_model_score):
            score = torch.tensor(best)
            c.best_k_models = {path: score}
            c.kth_best_model_path = c.best_model_path = path
            c.kth_value = c.best_model_score = score


DDP_STATE = "RNNLAB_DDP_PARENT"


def _ddp_parent_state() -> dict | None:
    """Lightning's DDP launcher re-runs this script for ranks > 0 with the parent's
    environment; rank 0 leaves its run id and checkpoint dir there (see _fit_and_test)."""
    if os.environ.get("LOCAL_RANK", "0") == "0" or DDP_STATE not in os.environ:
        return None
    return json.loads(os.environ[DDP_STATE])


def interactive() -> bool:
    return sys.stdout.isatty() and not os.environ.get("CI")


def _uses_cuda(cfg: DictConfig) -> bool:
    return cfg.trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def _deterministic(cfg: DictConfig) -> bool:
    """``trainer.deterministic``, where null means: only if the run will use a GPU."""
    if cfg.trainer.get("deterministic") is not None:
        return bool(cfg.trainer.deterministic)
    return _uses_cuda(cfg)


def _value(metrics, key) -> float | None:
    v = metrics.get(key)
    return None if v is None else float(v)


def _hydra_dir() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None
