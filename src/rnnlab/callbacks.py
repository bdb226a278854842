"""Lightning callbacks rnnlab adds to every run, and the profiler its Trainer gets."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.utilities.exceptions import SIGTERMException

from rnnlab.interrupts import Requests, read_stop

_NO_CONTEXT = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    """Lightning's default profiler at a fraction of its cost per hook.

    Lightning wraps every hook it calls (each callback's, the module's, the strategy's; about
    a hundred per training step) in ``profiler.profile(name)``, which for the default
    ``PassThroughProfiler`` still builds and runs a generator-based context manager. This one
    hands back one shared no-op context. ``+trainer.profiler=simple`` (or ``advanced``,
    ``pytorch``) still profiles: it replaces this one."""

    def profile(self, action_name: str):
        return _NO_CONTEXT


class FlushedCheckpoint(ModelCheckpoint):
    """``last.ckpt``: at an epoch's end, at most every ``min_interval_s`` of training, and never
    ahead of the tracking store.

    Never ahead: before it is written, every metric logged so far is in the store (``flush``
    raises if the store stopped taking them). A resumed run replays from its checkpoint and
    skips the steps the store already holds; if the checkpoint could be newer than the store,
    the points in between (still buffered by asynchronous logging when the process died or the
    server went away) would be lost for good. The step's own metrics are logged before the
    checkpoint is saved (see ``RecurrentModel.training_step``); its validation, which runs
    after, is flushed when it ends.

    At most every ``min_interval_s``: a checkpoint and its flush cost tens of milliseconds,
    which at every 100-step epoch of a small model was most of a sweep's per-run overhead. A
    crash loses at most that much training plus an epoch; 0 saves at every ``every_n_train_steps``.
    An interrupt loses nothing: :class:`StopAtStep` saves the step it stopped at.

    Write, then rename: the checkpoint goes to ``last.ckpt.partial`` and replaces ``last.ckpt``
    only once complete, so a kill or a second Ctrl-C in the middle of a save leaves the
    previous ``last.ckpt`` whole (Lightning writes the file in place).
    """

    def __init__(self, flush: Callable[[], None], min_interval_s: float = 0.0,
                 steps_per_save: Callable[[], int] | None = None, **kwargs):
        super().__init__(**({"every_n_train_steps": 1} if steps_per_save else {}) | kwargs)
        self._flush = flush
        self.min_interval_s = min_interval_s
        self._steps_per_save = steps_per_save
        self._saved_t = time.monotonic()
        self._saved_step: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # ``steps_per_save`` (an epoch's steps, times n): read once the processes are up, since
        # under DDP a rank's epoch is its share of the batches; before Lightning restores this
        # callback's state, whose key holds the cadence.
        if self._steps_per_save is not None:
            self._every_n_train_steps = self._steps_per_save()
        super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_t = time.monotonic()  # the first checkpoint after min_interval_s of training
        super().on_train_start(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Under DDP every rank must decide alike (saving waits on a barrier): each rank's clock
        # would not, so there the interval is not applied.
        if trainer.world_size > 1 or time.monotonic() - self._saved_t >= self.min_interval_s:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @property
    def saved_step(self) -> int | None:
        """The training step of the last checkpoint this process wrote, if any."""
        return self._saved_step

    def save_now(self, trainer: pl.Trainer) -> None:
        """``last.ckpt`` at this step, whatever the interval (an interrupt is stopping the run)."""
        assert self.dirpath is not None
        self._save_checkpoint(trainer, os.path.join(self.dirpath, f"{self.filename}{self.FILE_EXTENSION}"))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if trainer.is_global_zero:
            self._flush()
        partial = filepath + ".partial"
        super()._save_checkpoint(trainer, partial)  # rank 0 writes; every rank waits for it
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath
        self._saved_t, self._saved_step = time.monotonic(), trainer.global_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.is_global_zero and not trainer.sanity_checking and trainer.state.fn == "fit"
                and self._saved_step == trainer.global_step):  # the checkpoint of this very step
            self._flush()
        super().on_validation_end(trainer, pl_module)


class StopAtStep(Callback):
    """Ctrl-C and SIGTERM end training at a step boundary, with that step saved.

    During training, either signal only records the request (in place of Lightning's own
    SIGTERM handling, which stops at the next batch of a validation too, and without a
    checkpoint). At the end of the step under way, after every other callback's bookkeeping
    of that step, ``last.ckpt`` is written with its state, and training stops as Lightning
    stops for either signal (``KeyboardInterrupt``, ``SIGTERMException``); :mod:`rnnlab.run`
    then ends the run KILLED and prints the command that resumes it. A request that arrives
    during a validation is served when the validation ends; one during the last validation
    stops the run before its test. A second signal stops at once, even in the middle of the
    save, which then leaves the previous ``last.ckpt`` (see :class:`FlushedCheckpoint`).

    Signals reach the main thread only, and under DDP every rank would have to agree on the
    step; elsewhere (a run in a worker thread, ``trainer=ddp_cpu``) the signals act as before,
    and under DDP a sweep's stop file is not read.

    In a sweep, ``stop_file`` is how the rest of the sweep asks: a signal that reached the
    launching process or another job (see :mod:`rnnlab.interrupts`) counts as this run's first.
    """

    SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}
    STOP_FILE_EVERY_S = 1.0

    def __init__(self, last: FlushedCheckpoint, recorder: StopRecorder, stop_file: Path | None = None) -> None:
        self.last, self.recorder, self.stop_file = last, recorder, stop_file
        self.requested: str | None = None  # "SIGINT" | "SIGTERM"
        self._signals = Requests()
        self._checked_at = -math.inf
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS.values()}
        if trainer.world_size > 1:  # each rank would read the file at its own time, and stop alone
            self.stop_file = None

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._signals.note(name):  # a second request: stop now, saved or not
            self._raise(name)
        self.requested = self.requested or name

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.requested is None and self.stop_file is not None:
            now = time.monotonic()  # a stat per step is slow on a network file system: one a second
            if now - self._checked_at >= self.STOP_FILE_EVERY_S:
                self._checked_at = now
                self.requested = read_stop(self.stop_file)
        if self.requested is None:
            return
        self.last.save_now(trainer)
        self.recorder.saved_step = trainer.global_step
        self._raise(self.requested)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.requested is not None:  # during the last validation: no test
            self._raise(self.requested)
        self._uninstall()

    def _raise(self, signame: str) -> None:
        self._uninstall()
        if signame == "SIGINT":
            raise KeyboardInterrupt
        raise SIGTERMException

    def _uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)  # type: ignore[arg-type]
        self._previous = {}


class ValidateAtLastStep(Callback):
    """Every run validates at its last step, whatever ``val_check_interval`` is.

    Lightning validates every ``val_check_interval`` steps, so a run whose ``max_steps`` is not
    a multiple of it ends with unvalidated steps, and a run shorter than one interval has no
    ``val/*`` metric, no best checkpoint and nothing to test. Lightning also validates on any
    step where ``should_stop`` is set (as early stopping does); setting it on the last step
    makes that step a validation step, and costs nothing when it already is one."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class SolveWatch(Callback):
    """``steps_to_solve``: the first training step whose validation skill (``val/skill``: 1 =
    perfect, 0 = the trivial baseline) reaches ``threshold``; its resolution is the validation
    interval. With ``early_stop``, the run ends once it has been solved for ``patience``
    validations in a row, so that a study spends its budget where the answer is still open;
    its final metrics still come from the best checkpoint."""

    def __init__(self, threshold: float, patience: int, early_stop: bool) -> None:
        self.threshold, self.patience, self.early_stop = threshold, patience, early_stop
        self.solved_at: int | None = None
        self.streak = 0
        self.stopped = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        skill = trainer.callback_metrics.get("val/skill")
        if trainer.sanity_checking or trainer.state.fn != "fit" or skill is None:
            return
        if float(skill) < self.threshold:
            self.streak = 0
            return
        self.streak += 1
        if self.solved_at is None:
            self.solved_at = trainer.global_step
            if trainer.logger is not None and trainer.is_global_zero:
                trainer.logger.log_metrics({"steps_to_solve": float(self.solved_at)}, step=self.solved_at)
        if self.early_stop and self.streak >= self.patience:
            trainer.should_stop = self.stopped = True

    def state_dict(self) -> dict:
        return {"solved_at": self.solved_at, "streak": self.streak}

    def load_state_dict(self, state_dict: dict) -> None:
        self.solved_at, self.streak = state_dict["solved_at"], state_dict["streak"]


class StopRecorder(Callback):
    """Remembers what interrupted ``fit`` or ``test``: Lightning turns Ctrl-C into
    ``sys.exit(1)``, and the caller needs to tell that from a real failure."""

    def __init__(self) -> None:
        self.exception: BaseException | None = None
        self.saved_step: int | None = None  # the step StopAtStep saved before stopping

    def on_exception(self, trainer, pl_module, exception):
        self.exception = exception


class TokensPerSecond(Callback):
    """Logs ``perf/tokens_per_s``: sequence steps trained per wall-clock second, averaged over
    each logging interval (so it includes the optimizer, logging and data time, not just the
    kernels). Counting happens on the host from batch shapes: no device sync."""

    def __init__(self) -> None:
        self._tokens = 0
        self._t0: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._tokens += pl_module.task.tokens(batch)
        if trainer.global_step % trainer.log_every_n_steps == 0 and self._t0 is not None:
            now = time.perf_counter()
            if trainer.logger is not None:  # straight to the logger: before a checkpoint of this step
                trainer.logger.log_metrics({"perf/tokens_per_s": self._tokens / max(now - self._t0, 1e-9)},
                                           step=trainer.global_step - 1)
            self._tokens, self._t0 = 0, now

    def on_validation_start(self, trainer, pl_module):
        self._t0 = None  # validation time is not training time
        self._tokens = 0
