"""Train one configuration end to end: validate, build, track, fit, test, report.

The order matters: everything that can reject the command line (config values, data paths,
``seq_len`` longer than the data) runs before the MLflow run exists; once the run exists,
every way out of this function gives it a final status.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar

from rnnlab import config, sweep, tracking
from rnnlab.callbacks import FlushedCheckpoint, PlainProgress, TokensPerSecond
from rnnlab.diagnostics import GradientFlow
from rnnlab.model import RecurrentModel
from rnnlab.tasks.base import Task


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
    worker: bool = False  # a DDP process of rank > 0: rank 0 prints the summary

    def lines(self) -> list[str]:
        if self.worker:
            return []
        metric = self.main_metric.split("/", 1)[1]
        if self.skipped:
            return [f"[{self.run_name}] skipped: already {self.status} as MLflow run {self.run_id} "
                    f"in experiment '{self.experiment}' (sweep.rerun=true runs it again)"]
        if self.diverged:
            head = (f"DIVERGED at step {self.diverged_at_step}: non-finite loss or gradient; "
                    f"run marked FAILED (diverged=true)")
        else:
            head = f"{self.main_metric} = {self.val:.4f}" + (
                f" | test/{metric} = {self.test:.4f}" if self.test is not None else "")
        return [f"[{self.run_name}] {head}",
                f"MLflow run {self.run_id} in experiment '{self.experiment}' ({self.status})",
                f"see it: {tracking.ui_command(self.tracking_uri)}"]


def interactive() -> bool:
    return sys.stdout.isatty() and not os.environ.get("CI")


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
        cell=OmegaConf.to_container(cfg.cell, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        clip=cfg.clip,
        embed_dim=cfg.model.embed_dim,
        max_steps=cfg.trainer.max_steps,
        run_label=label,
    )


def train(cfg: DictConfig) -> Summary:
    config.validate(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # cuDNN/cuBLAS need this for deterministic results; harmless on CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    tracking.preflight(cfg)  # an unusable store fails now, not after an hour of training
    digest = sweep.config_hash(cfg)
    in_sweep = sweep.sweep_context()
    if in_sweep is not None and not cfg.sweep.rerun:
        done = _already_done(cfg, digest)
        if done is not None:
            return done
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task(cfg)  # loads and checks the data: may raise ConfigError
    label = tracking.run_name(cfg, task.name)
    model = build_model(cfg, task, label)

    ddp = _ddp_parent_state()  # set in a DDP worker: rank 0's run and checkpoint to use
    resume_id, last_ckpt = (None, ddp["last_ckpt"]) if ddp else find_resumable(cfg, digest, task.name, in_sweep is not None)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    tracking.require_space(cfg, n_bytes, os.path.dirname(last_ckpt) if last_ckpt else
                           (_hydra_dir() or tempfile.gettempdir()))
    sweep_tags = {"mlflow.parentRunId": in_sweep["parent_run_id"], "sweep_id": in_sweep["parent_run_id"]} \
        if in_sweep and in_sweep.get("parent_run_id") else {}
    run = tracking.Run(cfg, task.name, resume_id=resume_id, attach_id=ddp["run_id"] if ddp else None, tags={
        "cell": cfg.cell.name, "task": task.name, "seq_len": cfg.seq_len, "clip": cfg.clip,
        "seed": cfg.seed, "config_hash": digest, "command": tracking.command_line(),
        **tracking.git_info(), **sweep_tags,
    })
    if ddp:  # a worker: train and test its shard; rank 0 reports
        return _fit_and_test(cfg, task, model, run, last_ckpt, ckpt_dir=ddp["ckpt_dir"])
    try:
        return _fit_and_test(cfg, task, model, run, last_ckpt)
    except BaseException as e:
        if not run.reachable():  # nothing can be written there; the checkpoints stay
            raise run.lost(e) from e
        try:
            run.set_tags({"error": f"{type(e).__name__}: {e}"[:5000]})
            run.end("FAILED" if not isinstance(e, KeyboardInterrupt) else "KILLED")
        except Exception:
            raise run.lost(e) from e
        if isinstance(e, tracking.TrackingLost):  # a write was refused: say how to continue
            raise run.lost(e) from e
        raise


def find_resumable(cfg: DictConfig, digest: str, task_name: str, in_sweep: bool) -> tuple[str | None, str | None]:
    """The run to continue and its last checkpoint, per ``resume``: null/false = a new run
    (except in a sweep, which continues an unfinished run of the same configuration when it
    has a checkpoint), true = the latest unfinished run of this configuration, a run id = that
    run, which must have been made with this same configuration."""
    from mlflow import MlflowClient

    wanted = cfg.get("resume")
    if wanted in (None, False) and not in_sweep:
        return None, None
    client = MlflowClient(tracking.tracking_uri(cfg))
    if isinstance(wanted, str):
        try:
            run = client.get_run(wanted)
        except Exception:
            raise config.ConfigError("resume", wanted, f"no such run in {tracking.tracking_uri(cfg)}") from None
        if run.data.tags.get("config_hash") != digest:
            raise config.ConfigError("resume", wanted, "that run was made with another configuration "
                                     "(resume with the same overrides it was started with)")
        ckpt = _last_checkpoint(run)
        if ckpt is None:
            raise config.ConfigError("resume", wanted, "that run has no checkpoint to resume from")
        return wanted, ckpt
    exp = client.get_experiment_by_name(sweep.experiment_name(cfg, task_name))
    if exp is None:
        return None, None
    for run in client.search_runs([exp.experiment_id], f"tags.config_hash = '{digest}'",
                                  order_by=["attributes.start_time DESC"]):
        if run.info.status == "FINISHED" or run.data.tags.get("diverged") == "true":
            continue
        ckpt = _last_checkpoint(run)
        if ckpt is not None:
            return run.info.run_id, ckpt
    if wanted is True:
        print("resume=true: no unfinished run of this configuration has a checkpoint; starting a new run",
              flush=True)
    return None, None


def _last_checkpoint(run) -> str | None:
    directory = run.data.tags.get("checkpoint_dir")
    path = os.path.join(directory, "last.ckpt") if directory else None
    return path if path and os.path.exists(path) else None


DDP_STATE = "RNNLAB_DDP_PARENT"


def _ddp_parent_state() -> dict | None:
    """Lightning's DDP launcher re-runs this script for ranks > 0 with the parent's
    environment; rank 0 leaves its run id and checkpoint dir there (see _fit_and_test)."""
    if os.environ.get("LOCAL_RANK", "0") == "0" or DDP_STATE not in os.environ:
        return None
    return json.loads(os.environ[DDP_STATE])


def _fit_and_test(cfg: DictConfig, task: Task, model: RecurrentModel, run: tracking.Run,
                  last_ckpt: str | None = None, ckpt_dir: str | None = None) -> Summary:
    if ckpt_dir is not None:
        pass  # a DDP worker
    elif run.resumed:
        ckpt_dir = os.path.dirname(last_ckpt)
    else:
        n_params = sum(p.numel() for p in model.parameters())
        run.log_config(cfg, {"model/n_params": n_params, **task.describe(), **tracking.env_versions()})
        run.log_metrics({f"baseline/{k}": v for k, v in task.baselines().items()})
        ckpt_dir = tempfile.mkdtemp(prefix=f"rnnlab-{run.id}-") if _hydra_dir() is None else \
            os.path.join(_hydra_dir(), "checkpoints", run.id)
        run.set_tags({"checkpoint_dir": os.path.abspath(ckpt_dir)})
    run.checkpoint_dir = ckpt_dir

    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=task.main_metric,
                                 mode=task.mode, auto_insert_metric_name=False)
    # "last" on the last batch of every n-th epoch: the data order depends only on (seed,
    # epoch), so a run resumed from there sees exactly the batches an uninterrupted run sees.
    steps_per_epoch = len(task.train_dataloader())
    last = FlushedCheckpoint(run.flush, dirpath=ckpt_dir, filename="last", save_top_k=1,
                             enable_version_counter=False,
                             every_n_train_steps=cfg.checkpoint.every_n_epochs * steps_per_epoch)
    callbacks = [checkpoint, last, TokensPerSecond()]
    if run.resumed:
        callbacks.append(_BestFromStore(checkpoint, run, task))
    if cfg.diagnostics.enabled:
        d = cfg.diagnostics
        callbacks.append(GradientFlow(every_n_val=d.every_n_val, probe_size=d.probe_size,
                                      last_k=d.last_k, threshold=d.threshold))
    callbacks.append(RichProgressBar() if interactive() else PlainProgress())
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=run.logger, callbacks=callbacks,
                                      enable_progress_bar=interactive(), deterministic=_deterministic(cfg))
    os.environ[DDP_STATE] = json.dumps({"run_id": run.id, "ckpt_dir": ckpt_dir, "last_ckpt": last_ckpt})
    trainer.fit(model, datamodule=task, ckpt_path=last_ckpt, weights_only=True)

    diverged = model.diverged_at is not None
    test_value = None
    if not diverged:  # collective under DDP: every rank tests its shard
        ckpt = "best" if checkpoint.best_model_path else None
        trainer.test(model, datamodule=task, ckpt_path=ckpt, verbose=False, weights_only=True)
        test_value = _value(trainer.callback_metrics, "test/" + task.main_metric.split("/", 1)[1])
    if not trainer.is_global_zero:  # a DDP worker: rank 0 reports
        return Summary(run_id=run.id, run_name=run.name, experiment=run.experiment_name, status="RUNNING",
                       main_metric=task.main_metric, val=None, test=test_value, diverged=diverged,
                       diverged_at_step=model.diverged_at, tracking_uri=run.uri, worker=True)
    run.log_metrics({"grad_norm/max": model.grad_norm_max,
                     "grad_norm/nonfinite_steps": float(model.nonfinite_steps)}, step=trainer.global_step)
    if not diverged:
        with tempfile.TemporaryDirectory() as tmp:
            for path in task.log_artifacts(model, "test", tmp):
                run.log_artifact(path, "plots" if path.endswith(".png") else "data")
        if cfg.tracking.get("log_checkpoint", True) and checkpoint.best_model_path:
            run.log_artifact(checkpoint.best_model_path, "checkpoints")

    val_value = checkpoint.best_model_score
    run.set_tags({"diverged": str(diverged).lower(), "status_reason": "diverged" if diverged else "ok",
                  **({"diverged_at_step": model.diverged_at, "last_grad_norm": model.last_grad_norm}
                     if diverged else {})})
    status = "FAILED" if diverged else "FINISHED"
    run.end(status)
    return Summary(run_id=run.id, run_name=run.name, experiment=run.experiment_name, status=status,
                   main_metric=task.main_metric,
                   val=float(val_value) if val_value is not None else _value(trainer.callback_metrics, task.main_metric),
                   test=test_value, diverged=diverged, diverged_at_step=model.diverged_at,
                   tracking_uri=run.uri)


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


def _already_done(cfg: DictConfig, digest: str) -> Summary | None:
    from mlflow import MlflowClient

    task_cls = get_class(cfg.task._target_)
    experiment = sweep.experiment_name(cfg, task_cls.name)
    uri = tracking.tracking_uri(cfg)
    done = sweep.completed_run(MlflowClient(uri), experiment, digest)
    if done is None:
        return None
    metric = done.data.metrics
    return Summary(run_id=done.info.run_id, run_name=done.info.run_name, experiment=experiment,
                   status=done.info.status, main_metric=task_cls.main_metric,
                   val=metric.get(task_cls.main_metric), test=None,
                   diverged=done.data.tags.get("diverged") == "true", diverged_at_step=None,
                   tracking_uri=uri, skipped=True)


def _deterministic(cfg: DictConfig) -> bool:
    """``trainer.deterministic``, where null means: only if the run will use a GPU."""
    if cfg.trainer.get("deterministic") is not None:
        return bool(cfg.trainer.deterministic)
    return cfg.trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def _value(metrics, key) -> float | None:
    v = metrics.get(key)
    return None if v is None else float(v)


def _hydra_dir() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None


