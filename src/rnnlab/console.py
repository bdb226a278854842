"""What a run prints: progress in a terminal and in logs, and none of the libraries' noise."""

from __future__ import annotations

import logging
import time
import warnings

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, RichProgressBar

PROGRESS_EVERY_S = 30.0  # a plain progress line at least this often...
PROGRESS_LINES = 10  # ...and about this many over a run


def silence_known_noise() -> None:
    """Drop, narrowly, what every run printed and no user can act on: Lightning's advert for
    its cloud logger (an INFO record) and torch's deprecation of ``LeafSpec``, which Lightning's
    own pytree code triggers; and ModelCheckpoint's 17-line warning, under manual optimisation,
    that ``last.ckpt`` holds the weights after the step's update: that is the state a resume
    needs (the optimizer's state matches it), as under automatic optimisation; and its warning
    that the checkpoint directory is not empty, which it is exactly when a run resumes (each
    run has a directory of its own, named by its run id). Everything else from these loggers
    and warnings still shows."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Using ModelCheckpoint with manual optimization and "
                            r"every_n_train_steps, but no pre-optimization state was saved")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropTip) for f in logger.filters):
        logger.addFilter(_DropTip())


class _DropTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "try installing [litlogger]" not in record.getMessage()


def _clock(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}"


class PlainProgress(Callback):
    """Progress for logs and CI, where a live bar is noise: ``step 120/400 | 41.2 steps/s |
    ETA 0:00:07 | train/loss 0.15`` about ``PROGRESS_LINES`` times a run and at least every
    ``PROGRESS_EVERY_S``, and one line per validation (``step    200 | val/...``)."""

    def __init__(self) -> None:
        self._t0 = self._last_t = 0.0
        self._first_step = self._last_step = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = self._last_t = time.perf_counter()
        self._first_step = self._last_step = trainer.global_step  # a resumed run starts mid-way

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, total, now = trainer.global_step, trainer.max_steps, time.perf_counter()
        every = max(1, total // PROGRESS_LINES)
        if step >= total or (step - self._last_step < every and now - self._last_t < PROGRESS_EVERY_S):
            return
        rate = (step - self._first_step) / max(now - self._t0, 1e-9)
        eta = f" | ETA {_clock((total - step) / rate)}" if rate > 0 else ""
        loss = _last_loss(pl_module)
        shown = f" | train/loss {loss:.4g}" if loss is not None else ""
        print(f"step {step:>6}/{total} | {rate:.1f} steps/s{eta}{shown}", flush=True)
        self._last_step, self._last_t = step, now

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        loss = _last_loss(pl_module)
        if loss is not None:
            m["train/loss"] = loss
        shown = " | ".join(f"{k} {v:.4g}" for k, v in sorted(m.items()))
        print(f"step {trainer.global_step:>6} | {shown}", flush=True)


def _last_loss(pl_module: pl.LightningModule) -> float | None:
    """The model's last training loss (``RecurrentModel.last_loss``; not ``self.log``-ged)."""
    loss = getattr(pl_module, "last_loss", None)
    return None if loss is None else float(loss)


class StepProgressBar(RichProgressBar):
    """Rich's bar, counted in training steps out of ``max_steps``: Lightning's counts the
    batches of an epoch and reads ``Epoch 0/-2`` in a run budgeted in steps."""

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps

    def _get_train_description(self, current_epoch: int) -> str:
        return "train (steps)"

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        loss = _last_loss(pl_module)
        return metrics if loss is None else {**metrics, "train/loss": f"{loss:.4g}"}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
