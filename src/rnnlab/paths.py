"""Where rnnlab keeps things on disk.

Everything is anchored at the repository root (the folder holding ``conf/``), never at the
current or Hydra's working directory, so that ``mlflow ui`` started from the repo root sees
every run no matter where a job ran.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def repo_root() -> Path:
    """The repository root: ``$RNNLAB_ROOT`` if set, else the checkout this package lives in."""
    env = os.environ.get("RNNLAB_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    return repo_root() / "conf"


def default_tracking_uri() -> str:
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str | None = None) -> str:
    """Artifacts live beside the store they belong to: ``mlruns/`` in the folder of a sqlite
    store (the repo's ``mlruns/`` for the default one), so that a store moved or made elsewhere
    (``MLFLOW_TRACKING_URI=sqlite:////elsewhere/mlflow.db``) keeps its artifacts with it."""
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
    return (repo_root() / "mlruns").as_uri()


def register_resolvers() -> None:
    """``${root:}`` (the repo root), ``${cores:}`` (CPU cores) and ``${add:a,b}`` (a sum, so a
    preset can tie one swept value to another: sentiment's ``seq_len`` grows with
    ``task.distance``) for the configs. Done at import, so that every process that composes or
    unpickles a config has them, including joblib's worker processes."""
    OmegaConf.register_new_resolver("root", lambda: str(repo_root()), replace=True)
    OmegaConf.register_new_resolver("cores", lambda: len(os.sched_getaffinity(0)), replace=True)
    OmegaConf.register_new_resolver("add", lambda *xs: sum(xs), replace=True)


register_resolvers()
