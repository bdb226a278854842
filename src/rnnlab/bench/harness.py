"""The harness side of a comparison: :func:`rnnlab.run.train` itself, on the config Hydra would
compose for ``src/train.py``, so that whatever the harness does by default is what is measured."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from rnnlab import paths
from rnnlab.bench.settings import Settings
from rnnlab.bench.timing import StepTimer, TimedTrainer


def compose(overrides: Sequence[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(paths.config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def base_overrides(s: Settings, cell: str, task: str, seq_len: int) -> list[str]:
    """What both sides of a comparison share, so that they build the same model and batches."""
    return [f"cell={cell}", f"task={task}", f"seq_len={seq_len}", f"batch_size={s.batch_size}",
            f"cell.hidden_size={s.hidden_size}", f"model.embed_dim={s.embed_dim}",
            f"threads={s.threads}"]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's and rnnlab's progress lines would bury the benchmark's own output."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@dataclass(frozen=True)
class Store:
    """The throwaway MLflow store (and folders) every training run of the benchmark uses, so
    that none of them lands in the user's store."""

    dir: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.dir / 'harness.db'}"

    @property
    def artifacts(self) -> Path:
        return self.dir / "mlruns"

    def fresh_db(self, name: str) -> str:
        """A copy of an empty, already-migrated store, so no subprocess pays the schema cost."""
        template = self.dir / "template.db"
        if not template.exists():
            from mlflow import MlflowClient

            MlflowClient(f"sqlite:///{template}").search_experiments(max_results=1)
        path = self.dir / f"{name}.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"


def harness_run(s: Settings, store: Store, cell: str, task: str, seq_len: int, steps: int,
                warmup: int, extra: tuple[str, ...] = (), accelerator: str = "cpu") -> dict[str, float]:
    """One :func:`rnnlab.run.train`: tokens/s over the timed window, the fit's wall time and
    the time spent in the diagnostics callback."""
    from rnnlab.run import train

    with tempfile.TemporaryDirectory(dir=store.dir) as tmp:
        report = Path(tmp) / "timer.json"
        cfg = compose([*base_overrides(s, cell, task, seq_len),
                       f"trainer.max_steps={warmup + steps + 1}", f"trainer.accelerator={accelerator}",
                       *TimedTrainer.overrides(warmup, steps, report), "trainer.limit_test_batches=1",
                       f"tracking.uri={store.uri}", f"tracking.artifact_root={store.artifacts}",
                       "tracking.experiment=bench_harness", *s.extra, *extra])
        with quiet():
            summary = train(cfg)
        if summary is None:
            raise RuntimeError("the harness run returned no summary (a DDP worker?)")
        if summary.status != "FINISHED":
            raise RuntimeError(f"harness run {summary.run_name} ended {summary.status}")
        t = StepTimer.load(report)
    torch.set_num_threads(s.threads)  # whatever the run did, the next measurement gets the same
    if t.fit_s is None:
        raise RuntimeError("the harness run's fit was never timed")
    return {"tokens_per_s": t.tokens_per_s, "train_s": t.train_s, "fit_s": t.fit_s,
            "val_s": t.val_s, "diag_s": t.diag_s, "tokens": t.tokens,
            "cpu_s_per_step": t.cpu_s_per_step}
