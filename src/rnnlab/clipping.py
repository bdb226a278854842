"""Gradient clipping with a divergence guard, and the statistics a run logs about it.

Kept out of the model so that it can be tested on plain parameters, without a Trainer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class GradientGuard:
    """Clip by global 2-norm (``max_norm=None``: measure only), and refuse a non-finite
    gradient: its ``.grad`` are dropped, so the optimizer skips every parameter and the
    weights stay those of the last good step.

    ``clip_grad_norm_`` scales by ``min(1, max_norm / (norm + 1e-6))``, so the norm after
    clipping is that factor times the norm before; no second pass over the gradients.
    """

    def __init__(self, max_norm: float | None):
        self.max_norm = max_norm
        self.max_seen = 0.0  # largest finite pre-clip norm so far
        self.nonfinite_steps: float = 0
        self.last_norm: float | None = None
        self._clipped = 0  # clipped steps in the current logging window
        self._steps = 0
        self._window: dict[str, float] = {}

    def step(self, parameters: Iterable[nn.Parameter]) -> bool:
        """Clip the gradients in place; False if they were non-finite (and are now dropped)."""
        params = parameters if isinstance(parameters, list) else list(parameters)
        limit = self.max_norm if self.max_norm is not None else math.inf
        pre = torch.nn.utils.clip_grad_norm_(params, limit)
        # One host sync per step, on purpose: a non-finite gradient must stop the run before
        # the optimizer writes NaN into the weights. The rest is arithmetic on that float.
        self.last_norm = norm = float(pre)
        if not math.isfinite(norm):
            self.nonfinite_steps += 1
            for p in params:
                p.grad = None
            return False
        self.max_seen = max(self.max_seen, norm)
        scale = min(1.0, limit / (norm + 1e-6))
        self._clipped += scale < 1.0
        self._steps += 1
        self._window = {"grad_norm/pre_clip": norm, "grad_norm/post_clip": norm * scale}
        return True

    def metrics(self) -> dict[str, float]:
        """The latest step's norms and the fraction of clipped steps since the last call."""
        out = {**self._window, "clip/active": self._clipped / max(self._steps, 1),
               "grad_norm/max": self.max_seen, "grad_norm/nonfinite_steps": float(self.nonfinite_steps)}
        self._clipped, self._steps = 0, 0
        return out

    def state_dict(self) -> dict[str, float]:
        return {"grad_norm_max": self.max_seen, "nonfinite_steps": self.nonfinite_steps}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.max_seen, self.nonfinite_steps = state["grad_norm_max"], state["nonfinite_steps"]
