"""FLOPs of the benchmark's configurations and of the machine, for the roofline (section 2)
and for sizing measurements before they run. The closed forms are in :mod:`rnnlab.cells.params`;
this module only maps configurations onto them."""

from __future__ import annotations

import math
import statistics
import time
from typing import TYPE_CHECKING, Any

import torch

from rnnlab.bench.settings import Settings
from rnnlab.bench.timing import synchronize
from rnnlab.cells.params import train_step_flops

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from rnnlab.tasks.base import Task


def model_step_flops(cfg: DictConfig, task: Task) -> int:
    """:func:`~rnnlab.cells.params.train_step_flops` for a composed config and its built task."""
    return train_step_flops(cfg.cell.name, cfg.batch_size, cfg.seq_len, cfg.cell.hidden_size,
                            cfg.model.embed_dim, task.input_size, task.output_size,
                            task.input_kind, task.readout, cfg.cell.num_layers)


def task_shape(task: str) -> dict[str, Any]:
    """Input/output sizes, input kind and readout of a task, for FLOP estimates before it is
    built: what its class declares (:meth:`rnnlab.tasks.base.Task.flop_shape`)."""
    from rnnlab.tasks.registry import task_class

    return task_class(task).flop_shape()


def step_flops(s: Settings, cell: str, task: str, seq_len: int) -> int:
    """One training step of the benchmark's shapes, known before anything is built."""
    return train_step_flops(cell, s.batch_size, seq_len, s.hidden_size, s.embed_dim, **task_shape(task))


def timed_steps(s: Settings, cell: str, task: str, seq_len: int, base: int | None = None) -> int:
    """``base`` steps (default ``s.steps``), or more for a cheap configuration, whose window
    would otherwise be too short to time reliably: enough to last about ``s.min_window_s`` at
    the warm-up's FLOP rate, capped at ``s.max_steps_factor`` × ``base``."""
    base = base or s.steps
    if not s.min_window_s or not s.rate_gflops:
        return base
    step_s = step_flops(s, cell, task, seq_len) / (s.rate_gflops * 1e9)
    return int(min(base * s.max_steps_factor, max(base, math.ceil(s.min_window_s / step_s))))


def sgemm_gflops(n: int, device: str = "cpu", repeats: int = 5) -> dict[str, float]:
    """The roofline's ceiling: float32 ``torch.mm`` of n x n matrices, median of ``repeats``.
    Deterministic algorithms are switched off meanwhile because a GPU harness run leaves them
    on process-wide, and the ceiling should be the fastest kernel."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        for _ in range(2):
            torch.mm(a, b)
        times = []
        for _ in range(repeats):
            synchronize(dev)
            t = time.perf_counter()
            torch.mm(a, b)
            synchronize(dev)
            times.append(time.perf_counter() - t)
    finally:
        torch.use_deterministic_algorithms(det)
    return {"n": n, "gflops": 2 * n ** 3 / statistics.median(times) / 1e9,
            "best_gflops": 2 * n ** 3 / min(times) / 1e9}

