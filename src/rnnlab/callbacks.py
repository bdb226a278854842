"""Lightning callbacks rnnlab adds to every run."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class TokensPerSecond(Callback):
    """Logs ``perf/tokens_per_s``: sequence steps trained per wall-clock second, averaged over
    each logging interval (so it includes the optimizer, logging and data time, not just the
    kernels). Counting happens on the host from batch shapes: no device sync."""

    def __init__(self):
        self._tokens = 0
        self._t0: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._tokens += pl_module.task.tokens(batch)
        if trainer.global_step % trainer.log_every_n_steps == 0 and self._t0 is not None:
            now = time.perf_counter()
            pl_module.log("perf/tokens_per_s", self._tokens / max(now - self._t0, 1e-9))
            self._tokens, self._t0 = 0, now

    def on_validation_start(self, trainer, pl_module):
        self._t0 = None  # validation time is not training time
        self._tokens = 0


class PlainProgress(Callback):
    """One line per validation, for logs and CI where a live progress bar is noise."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module):
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        shown = " | ".join(f"{k} {float(v):.4g}" for k, v in sorted(m.items()) if k.startswith(("val/", "train/loss")))
        print(f"step {trainer.global_step:>6} | {shown}", flush=True)
