"""Clocks for the harness side of a comparison, and the interleaving that makes a comparison
fair on a shared machine.

The harness is timed from inside ``trainer.fit`` (a callback) rather than around it, so that
set-up, validation and testing, which the bare loop does not do, stay out of its window.
:class:`TimedTrainer` is how the callback gets in without changing :func:`rnnlab.run.train`:
it is selected with ``trainer._target_``, receives the window as ``trainer.timer_*`` config
keys, and hands its readings back through a file, since ``train`` returns only a summary.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

if TYPE_CHECKING:
    from rnnlab.tasks.base import Task

R = TypeVar("R")


@contextlib.contextmanager
def default_flags() -> Iterator[None]:
    """PyTorch's default algorithm flags meanwhile: a harness run on a GPU turns deterministic
    algorithms on process-wide, and a bare measurement after it should not pay for them."""
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(flags[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1], flags[2]


def synchronize(dev: torch.device) -> None:
    """Wait for the device: CUDA kernels run asynchronously, so a clock read without this
    would time their launch, not their work."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class StepTimer(Callback):
    """Times a window of training steps inside ``trainer.fit``, validation excluded.

    The window runs from the start of step ``warmup`` to the start of step ``warmup + steps``,
    so it holds ``steps`` whole steps and everything between them (data loading, optimizer,
    logging, every callback): what a user waits for, step after step. Validation that falls
    inside is timed and subtracted, because the bare loop has none. Added last, so its
    validation hooks run after the checkpoint callback's (which count as validation).

    On CPU it also keeps every step's duration (``step_s``, steps with a validation left
    out): their median is what the comparison uses, because a neighbour's burst on a shared
    machine lengthens a few steps, and shifts a window's mean, but hardly moves a median.
    On a GPU steps are not timed one by one: that would need a sync per step."""

    # What :meth:`save` writes and :meth:`load` reads back: the raw readings.
    READINGS = ("batches", "tokens", "t_start", "t_end", "cpu_start", "cpu_end", "val_s", "val_cpu_s",
                "fit_s", "diag_s", "step_s")

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.batches = 0
        self.tokens = 0
        self.t_start: float | None = None
        self.t_end: float | None = None
        self.cpu_start = self.cpu_end = 0.0  # process CPU time: less sensitive to contention
        self.val_s = 0.0
        self.val_cpu_s = 0.0
        self._val_t0: float | None = None
        self._val_cpu0 = 0.0
        self.fit_s: float | None = None
        self.diag_s = 0.0  # time spent in the GradientFlow callback's hooks, whole fit
        self.step_s: list[float] = []  # CPU only: each whole step's duration in the window
        self._step_t0: float | None = None

    @staticmethod
    def _now(pl_module: pl.LightningModule) -> float:
        synchronize(pl_module.device)
        return time.perf_counter()

    def _in_window(self) -> bool:
        return self.t_start is not None and self.t_end is None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        first, last = self.batches == self.warmup, self.batches == self.warmup + self.steps
        per_step = pl_module.device.type == "cpu" and self.warmup <= self.batches <= self.warmup + self.steps
        if first or last or per_step:
            now = self._now(pl_module)
            if first:
                self.t_start, self.cpu_start = now, time.process_time()
            elif last:
                self.t_end, self.cpu_end = now, time.process_time()
            if per_step:
                if self._step_t0 is not None:
                    self.step_s.append(now - self._step_t0)
                self._step_t0 = now
        self.batches += 1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._in_window():
            self.tokens += cast("Task", pl_module.task).tokens(batch)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._in_window():
            self._val_t0, self._val_cpu0 = time.perf_counter(), time.process_time()
            self._step_t0 = None  # the step this validation follows is not a training step's length

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._val_t0 is not None:
            self.val_s += time.perf_counter() - self._val_t0
            self.val_cpu_s += time.process_time() - self._val_cpu0
            self._val_t0 = None

    @property
    def train_s(self) -> float:
        if self.t_start is None or self.t_end is None:
            raise RuntimeError(f"the timing window never closed: {self.batches} steps ran, "
                               f"{self.warmup + self.steps + 1} needed")
        return self.t_end - self.t_start - self.val_s

    @property
    def tokens_per_s(self) -> float:
        """Tokens per second at the median step (CPU), else over the window."""
        if self.step_s:
            return self.tokens / self.steps / statistics.median(self.step_s)
        return self.tokens / self.train_s

    @property
    def cpu_s_per_step(self) -> float:
        return (self.cpu_end - self.cpu_start - self.val_cpu_s) / self.steps

    def save(self, path: Path) -> None:
        readings = {k: getattr(self, k) for k in self.READINGS}
        path.write_text(json.dumps({"warmup": self.warmup, "steps": self.steps, **readings}))

    @classmethod
    def load(cls, path: Path) -> StepTimer:
        saved = json.loads(path.read_text())
        timer = cls(saved.pop("warmup"), saved.pop("steps"))
        for k in cls.READINGS:
            setattr(timer, k, saved[k])
        return timer


class TimedTrainer(pl.Trainer):
    """``pl.Trainer`` plus a :class:`StepTimer` over ``timer_steps`` steps after ``timer_warmup``;
    it also times the whole ``fit`` and the diagnostics callback's hooks, and saves the readings
    to ``timer_report`` when ``fit`` ends, however it ends."""

    def __init__(self, *args: Any, timer_warmup: int, timer_steps: int, timer_report: str,
                 callbacks: Sequence[Callback] | None = None, **kwargs: Any):
        self.bench_timer = StepTimer(timer_warmup, timer_steps)
        self.timer_report = Path(timer_report)
        callbacks = list(callbacks or [])
        from rnnlab.diagnostics import GradientFlow

        for cb in callbacks:
            if isinstance(cb, GradientFlow):
                for hook in ("on_fit_start", "on_validation_epoch_end", "on_fit_end"):
                    setattr(cb, hook, self._timed(getattr(cb, hook)))
        super().__init__(*args, callbacks=[*callbacks, self.bench_timer], **kwargs)

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.bench_timer.diag_s += time.perf_counter() - t
        return wrapper

    def fit(self, *args: Any, **kwargs: Any) -> None:
        t = time.perf_counter()
        try:
            return super().fit(*args, **kwargs)
        finally:
            self.bench_timer.fit_s = time.perf_counter() - t
            self.bench_timer.save(self.timer_report)

    @classmethod
    def overrides(cls, warmup: int, steps: int, report: Path) -> list[str]:
        """The config overrides that make :func:`rnnlab.run.train` use this trainer."""
        return [f"trainer._target_={cls.__module__}.{cls.__qualname__}", f"+trainer.timer_warmup={warmup}",
                f"+trainer.timer_steps={steps}", f"+trainer.timer_report={report}"]


def interleave(repeats: int, *sides: Callable[[], R]) -> tuple[list[R], ...]:
    """Run every side ``repeats`` times, reversing the order on every other round (a b, b a,
    a b...), so that a machine that speeds up or slows down over time favours no side.
    Returns each side's results, in the order the sides were given."""
    results: list[list[R]] = [[] for _ in sides]
    for r in range(repeats):
        order = range(len(sides)) if r % 2 == 0 else reversed(range(len(sides)))
        for k in order:
            results[k].append(sides[k]())
    return tuple(results)


def median(runs: Sequence[Mapping[str, Any]], key: str = "tokens_per_s") -> float:
    return statistics.median(r[key] for r in runs)
