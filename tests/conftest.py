"""Shared fixtures: every test trains into its own throwaway MLflow store and output dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# Small and fast; any test can add or override keys.
TINY = ["cell.hidden_size=16", "batch_size=8", "seq_len=20", "trainer.max_steps=6",
        "trainer.val_check_interval=3", "trainer.log_every_n_steps=2",
        "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2", "model.embed_dim=8"]


class Store:
    """A fresh sqlite MLflow store plus artifact and output dirs under ``tmp_path``."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path
        self.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        self.client = MlflowClient(self.uri)
        self._n = 0

    def overrides(self) -> list[str]:
        self._n += 1
        return [f"hydra.run.dir={self.dir / f'out{self._n}'}",
                f"tracking.artifact_root={self.dir / 'mlruns'}"]

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri, "PYTHONUNBUFFERED": "1", **extra}
        env.pop("RNNLAB_ROOT", None)
        return env

    def train(self, *overrides: str, tiny: bool = True, check: bool = True, timeout: int = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``python src/train.py`` exactly as a user would; return the finished process."""
        flags, rest, args = [], [], list(overrides)  # flags (-m, --config-path X) go first
        while args:
            a = args.pop(0)
            if a.startswith("-"):
                flags.append(a)
                if a in ("--config-path", "--config-name", "-cp", "-cn") and args:
                    flags.append(args.pop(0))
            else:
                rest.append(a)
        overrides = tuple(rest)
        cmd = [sys.executable, str(ROOT / "src" / "train.py"), *flags, *(TINY if tiny else []),
               *self.overrides(), *overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**self.env(), **(env or {})}, cwd=self.dir)
        if check and proc.returncode != 0:
            raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        return proc

    def runs(self, experiment: str | None = None):
        exps = self.client.search_experiments()
        ids = [e.experiment_id for e in exps if experiment is None or e.name == experiment]
        return self.client.search_runs(ids) if ids else []

    def only_run(self, experiment: str | None = None):
        runs = self.runs(experiment)
        assert len(runs) == 1, f"expected one run, found {len(runs)}"
        return runs[0]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path)


def compose(*overrides: str):
    """The config Hydra would build for these overrides, without running anything."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    import rnnlab.paths  # noqa: F401  (registers the config resolvers)

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))
