"""MLflow tracking: one run per training job, owned by rnnlab from creation to final status.

rnnlab creates the run itself (after the config and data have been validated, so a bad
command line never leaves a run behind), hands its id to Lightning's ``MLFlowLogger`` for
metrics, and sets the final status itself: FINISHED, or FAILED with the reason as tags.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Param, RunTag
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import MLFlowLogger

from rnnlab import paths


def tracking_uri(cfg: DictConfig) -> str:
    return cfg.tracking.get("uri") or paths.default_tracking_uri()


def artifact_root(cfg: DictConfig) -> str | None:
    """Where new experiments keep artifacts; None lets a tracking server use its own store."""
    root = cfg.tracking.get("artifact_root")
    if root:
        return Path(root).resolve().as_uri()
    return None if tracking_uri(cfg).startswith(("http://", "https://")) else paths.default_artifact_root()


def preflight(cfg: DictConfig) -> None:
    """Fail before training, with one clear line, when the tracking store or the artifact
    directory cannot be written or the tracking server cannot be reached."""
    from rnnlab.config import ConfigError

    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as e:
            raise ConfigError("tracking.uri", uri, f"cannot reach the MLflow server ({type(e).__name__}); "
                              "start it (make server) or unset MLFLOW_TRACKING_URI") from None
        return
    if uri.startswith("sqlite:///"):
        _require_writable("tracking.uri", uri, Path(uri[len("sqlite:///"):]).parent)
    elif uri.startswith("file:") or "://" not in uri:
        _require_writable("tracking.uri", uri, Path(uri.removeprefix("file://")))
    _require_writable("tracking.artifact_root", cfg.tracking.get("artifact_root") or str(paths.repo_root() / "mlruns"),
                      Path(artifact_root(cfg).removeprefix("file://")))


def _require_writable(key: str, value: str, directory: Path) -> None:
    from rnnlab.config import ConfigError

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".rnnlab-write-check-"):
            pass
    except OSError as e:
        raise ConfigError(key, value, f"cannot write to {directory} ({e.strerror})") from None


def run_name(cfg: DictConfig, task_name: str) -> str:
    """Built from what varies across a sweep, e.g. ``lstm-char_lm-T100-clip1.0-s0``."""
    if cfg.tracking.get("run_name"):
        return str(cfg.tracking.run_name)
    impl = "" if cfg.cell.get("impl", "fused") == "fused" else f"-{cfg.cell.impl}"
    clip = "none" if cfg.clip is None else f"{float(cfg.clip):g}"
    if clip != "none" and "." not in clip and "e" not in clip:
        clip += ".0"
    return f"{cfg.cell.name}{impl}-{task_name}-T{cfg.seq_len}-clip{clip}-s{cfg.seed}"


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str) -> str:
    """Experiment id for ``name``; tolerant of another process creating it at the same time."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@functools.lru_cache(maxsize=1)
def git_info() -> dict[str, str]:
    """The commit of the code this process runs: read once, at the first run of the process,
    so that a sweep's long-lived worker processes do not report a HEAD that moved on since
    they loaded their code."""
    root = paths.repo_root()
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        commit = head.stdout.strip() if head.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit or "unknown", "git_dirty": str(bool(dirty)).lower()}


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


class RunLogger(MLFlowLogger):
    """Lightning's MLflow logger on a run rnnlab owns: ``finalize`` leaves the status alone (Lightning finalizes after ``fit`` and again after
    ``test``; the run is only finished when rnnlab says so).

    ``logged_until`` (key -> last step already in the store) makes a resumed run continue each
    metric's history without duplicates: the steps replayed between the checkpoint and the
    moment the first process died are dropped instead of logged twice. Replayed steps are
    bit-identical on CPU, so nothing is lost either; and because what counts is what reached
    the store, points still queued by async logging when the process died are simply logged
    by the replay.
    """

    def __init__(self, *args, logged_until: dict[str, int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.logged_until = logged_until or {}

    def log_metrics(self, metrics, step=None) -> None:
        if self.logged_until:
            s = step or 0
            metrics = {k: v for k, v in metrics.items() if s > self.logged_until.get(k, -1)}
            if not metrics:
                return
        super().log_metrics(metrics, step)

    def finalize(self, status: str = "success") -> None:
        """Nothing: pending async writes are flushed once, when rnnlab ends the run (each
        flush waits up to a second for MLflow's queue thread)."""


class Run:
    """An MLflow run for one training job: a new one, or (``resume_id``) one being resumed."""

    def __init__(self, cfg: DictConfig, task_name: str, tags: dict[str, str], resume_id: str | None = None,
                 attach_id: str | None = None):
        """``attach_id``: a DDP worker process (rank > 0) uses rank 0's run and writes nothing."""
        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(self.uri)
        mlflow.set_tracking_uri(self.uri)
        self.experiment_name = cfg.tracking.get("experiment") or task_name
        self.experiment_id = get_or_create_experiment(self.client, self.experiment_name, artifact_root(cfg))
        self.name = run_name(cfg, task_name)
        self.resumed = resume_id is not None
        logged_until: dict[str, int] = {}
        if attach_id is not None:
            self.id = attach_id
        elif resume_id is None:
            all_tags = {"mlflow.runName": self.name, "mlflow.source.name": "src/train.py", **tags}
            self.id = self.client.create_run(self.experiment_id, run_name=self.name,
                                             tags={k: str(v) for k, v in all_tags.items()}).info.run_id
        else:
            self.id = resume_id
            previous = self.client.get_run(resume_id)
            for key in previous.data.metrics:
                logged_until[key] = max(m.step for m in self.client.get_metric_history(resume_id, key))
            self.client.update_run(resume_id, status="RUNNING")
            self.set_tags({"resume_count": int(previous.data.tags.get("resume_count", 0)) + 1})
        self.logger = RunLogger(experiment_name=self.experiment_name, tracking_uri=self.uri,
                                run_id=self.id, synchronous=not cfg.tracking.get("async_logging", True),
                                logged_until=logged_until)

    def log_config(self, cfg: DictConfig, extra_params: dict[str, Any]) -> None:
        """The whole resolved config as flattened params (cut at MLflow's limit) and as a file."""
        resolved = OmegaConf.to_container(cfg, resolve=True)
        params = {**flatten(resolved), **extra_params}
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # log_batch takes at most 100 params a call
            self.client.log_batch(self.id, params=items[i:i + 100])
        self.client.log_text(self.id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.logger.log_metrics(metrics, step)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.id, path, artifact_path)

    def end(self, status: str) -> None:
        mlflow.flush_async_logging()  # the one flush of the run: every point is in the store
        self.client.set_terminated(self.id, status)


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


def ui_command(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        return f"mlflow ui --backend-store-uri {uri}   (or: make ui)"
    return f"open {uri}" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"


def env_versions() -> dict[str, str]:
    import hydra
    import numpy
    import pytorch_lightning
    import torch

    return {"version/torch": torch.__version__, "version/lightning": pytorch_lightning.__version__,
            "version/hydra": hydra.__version__, "version/mlflow": mlflow.__version__,
            "version/numpy": numpy.__version__, "version/python": sys.version.split()[0]}
