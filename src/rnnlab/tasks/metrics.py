"""Metrics of a task that torchmetrics does not have: a quantity per position (the loss at each
step of a window), and accuracy binned by an integer per target (where recall breaks)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


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
