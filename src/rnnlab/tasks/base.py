"""The interface every task shares (its batching: :mod:`rnnlab.tasks.batching`; metrics
torchmetrics lacks: :mod:`rnnlab.tasks.metrics`).

A task is a ``LightningDataModule`` that also tells the model how to read its data:

* ``input_kind`` / ``input_size``: ``"tokens"`` (an embedding over ``input_size`` ids) or
  ``"real"`` (a linear projection of ``input_size`` features);
* ``readout``: ``"seq"`` (a prediction at every step) or ``"last"``/``"mean"``/``"max"``
  (one prediction per sequence) and ``output_size``;
* ``loss`` and ``metrics``: the training objective and the torchmetrics it reports;
* ``main_metric`` / ``mode``: what model selection and sweep reports rank by;
* ``baselines``: the score of the trivial strategy, logged so every run says whether it
  learnt anything.

Batches are dicts of tensors (``x``, ``y`` and optionally ``mask``) sliced from tensors
already in memory: one indexing op per batch, no per-sample Python and no worker processes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection

from rnnlab.config import ConfigError
from rnnlab.runs import metric_name
from rnnlab.tasks.batching import tensor_loader

IGNORE_INDEX = -100  # a per-step integer target with this value is not scored (F.cross_entropy's default)


class Task(pl.LightningDataModule):
    """Base class of every task. Subclasses set the class attributes and implement the hooks."""

    name: str  # not a ClassVar: LightningDataModule declares `name` on its instances
    input_kind: ClassVar[str]  # "tokens" | "real"
    main_metric: ClassVar[str]  # e.g. "val/ppl"; the "val/" key, test uses "test/"
    mode: ClassVar[str]  # "min" | "max"
    readout: str = "last"  # "seq" | "last" | "mean" | "max"
    stateful: bool = False  # carry the hidden state across consecutive batches

    input_size: int
    output_size: int

    # -- what the report and the bench read, known before a task is built ------------------
    # (found by name through rnnlab.tasks.registry, so adding a task edits no list elsewhere)
    report_extras: ClassVar[tuple[str, ...]] = ()  # test metrics shown beside the headline, e.g. ("acc",)
    length_label: ClassVar[str] = "seq_len"  # what the report calls the swept length
    # A parameter that means something for one value of another only: the report's labels leave
    # it out elsewhere, e.g. {"task.tau": ("task.series", "mackey_glass")}.
    only_for: ClassVar[dict[str, tuple[str, str]]] = {}
    # The data CSV its runs log for the report's task figure, e.g. "data/loss_by_pos.csv".
    report_data: ClassVar[str | None] = None
    published: ClassVar[tuple[Any, ...]] = ()  # rnnlab.literature.Published entries beside its results

    @classmethod
    def flop_shape(cls) -> dict[str, Any]:
        """Input/output sizes, input kind and readout, for FLOP estimates before the task is
        built (the benchmark's sizing). A task whose sizes come from its data overrides it with
        nominal ones."""
        missing = [k for k in ("input_size", "output_size") if not hasattr(cls, k)]
        if missing:
            raise NotImplementedError(f"task {cls.name} sets {' and '.join(missing)} from its data: its "
                                      f"flop_shape() must give nominal ones")
        return {"input_size": cls.input_size, "output_size": cls.output_size,
                "input_kind": cls.input_kind, "readout": cls.readout}

    def __init__(self, seq_len: int, batch_size: int, seed: int):
        super().__init__()
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed

    # -- what the model needs ------------------------------------------------------------
    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        """Fresh metric objects for one stage; keys without the stage prefix."""
        raise NotImplementedError

    def update_metrics(self, metrics: MetricCollection, out: Tensor, batch: dict[str, Tensor],
                       loss: Tensor) -> None:
        raise NotImplementedError

    def compute_metrics(self, metrics: MetricCollection) -> dict[str, Tensor]:
        """The epoch's values; override to add derived ones (perplexity from the mean loss)."""
        return dict(metrics.compute())

    def baselines(self, split: str = "test") -> dict[str, float]:
        """Metrics of the trivial strategy on ``split``: the test split's are logged once under
        ``baseline/``, the validation split's give ``val/skill`` at each validation."""
        return {}

    def skill(self, test_value: float, baselines: dict[str, float]) -> float | None:
        """One number that compares runs across tasks and lengths: 1 = perfect, 0 = the
        trivial baseline, < 0 = worse. For a loss or error (``mode`` min) it is
        ``1 - value / baseline``; for an accuracy-like score (max) ``(value - base) / (1 - base)``.
        None when the task has no baseline for its main metric."""
        base = baselines.get(metric_name(self.main_metric))
        if base is None:
            return None
        if self.mode == "min":
            return 1 - test_value / base if base > 0 else None
        return (test_value - base) / (1 - base) if base < 1 else None

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Batches are dicts of tensors: moved directly (Lightning's generic walk over any
        collection costs, per step, a sizeable part of a small model's CPU step)."""
        if all(v.device == device for v in batch.values()):
            return batch
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    def target_positions(self, batch: dict[str, Tensor]) -> Tensor:
        """(T,) bool: the steps at which some sequence of ``batch`` has a scored target (per-step
        tasks). A step whose integer targets are all ``IGNORE_INDEX`` (cross-entropy's default
        ignore index) has none; the diagnostics read their end-of-sequence loss at the last
        steps that do, so a task with sparse targets is probed where it is scored."""
        y = batch["y"]
        if y.is_floating_point():
            return torch.ones(y.shape[1], dtype=torch.bool, device=y.device)
        return (y != IGNORE_INDEX).reshape(y.shape[0], y.shape[1], -1).any(2).any(0)

    @property
    def steps(self) -> int:
        """Steps of one sequence as the model reads it (``seq_len`` unless the task adds steps,
        as copy memory's recall does): the context a cell whose state is its context keeps."""
        return self.seq_len

    def tokens(self, batch: dict[str, Tensor]) -> int:
        """Sequence steps in a batch, for throughput."""
        x = batch["x"]
        return x.shape[0] * x.shape[1]

    def log_artifacts(self, model: pl.LightningModule, stage: str, out_dir) -> list[str]:
        """Write task-specific files (plots, CSVs) for ``stage`` into ``out_dir``; return paths."""
        return []

    def describe(self) -> dict[str, Any]:
        """Facts about the data worth logging as params (sizes, vocabulary...)."""
        return {}

    def length_tests(self) -> dict[int, Task]:
        """The task at other lengths than it trains at, by length: after testing, the run scores
        the trained model on each one's test set and logs ``test/L<length>/<metric>``, its
        baselines and skill (length extrapolation; see ``GeneratedTask.test_seq_len``)."""
        return {}

    # -- data: tasks that hold fixed tensors per split set ``self.fields`` -------------------
    fields: dict[str, dict[str, Tensor]]

    def train_dataloader(self):
        return self._loader(self.fields["train"], train=True)

    def val_dataloader(self):
        return self._loader(self.fields["val"], train=False)

    def test_dataloader(self):
        return self._loader(self.fields["test"], train=False)

    # -- helpers for subclasses ---------------------------------------------------------
    def _loader(self, fields: dict[str, Tensor], train: bool) -> DataLoader:
        return tensor_loader(fields, self.batch_size, shuffle=train and not self.stateful,
                             seed=self.seed, drop_last=train, evaluation=not train)

    @staticmethod
    def check(key: str, value: Any, ok: bool, valid: str) -> None:
        if not ok:
            raise ConfigError(key, value, valid)


class RegressionTask(Task):
    """Real-valued targets: MSE loss, and MSE/MAE metrics from torchmetrics."""

    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.mse_loss(out, batch["y"])

    def metrics(self) -> MetricCollection:
        return MetricCollection({"loss": MeanMetric(), "mse": MeanSquaredError(), "mae": MeanAbsoluteError()})

    def update_metrics(self, metrics, out, batch, loss):
        out = out.detach()
        metrics["loss"].update(loss.detach(), weight=len(out))
        metrics["mse"].update(out, batch["y"])
        metrics["mae"].update(out, batch["y"])
