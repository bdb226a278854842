"""What the harness costs over hand-written PyTorch, measured in one process and one run.

``python src/bench.py`` runs the sections of :data:`~rnnlab.bench.sections.SECTIONS`, writes
``results.md`` and ``results.json`` and logs them to MLflow (experiment ``bench``). The point is
to catch the harness getting slower than the loop anyone would write by hand, and to know where
its time goes; every number that matters is therefore a ratio of two things measured in the
same process, interleaved, so that a shared or throttled machine moves both sides alike.

The sections: harness vs bare loop (and where the harness's time per step goes), roofline,
fused vs reference cells, diagnostics cost, sweep parallelism, memory, and the GPU when there
is one. What they measure and what the columns mean: ``experiments/bench/README.md``; the
numbers: ``experiments/bench/results.md``.

Modules: :mod:`~rnnlab.bench.settings` (sizes and targets), :mod:`~rnnlab.bench.flops`
(FLOPs of a configuration, sgemm ceiling), :mod:`~rnnlab.bench.timing` (the timed trainer,
interleaving), :mod:`~rnnlab.bench.harness` and :mod:`~rnnlab.bench.bare_loop` (the two sides),
:mod:`~rnnlab.bench.processes` (whole-process measurements), :mod:`~rnnlab.bench.sections`,
:mod:`~rnnlab.bench.output` and :mod:`~rnnlab.bench.runner` (one run, end to end).
"""

from rnnlab.bench.bare_loop import bare, bare_run
from rnnlab.bench.flops import model_step_flops, sgemm_gflops, task_shape, timed_steps
from rnnlab.bench.harness import Store, compose, harness_run
from rnnlab.bench.output import check_targets, log_to_mlflow, to_markdown
from rnnlab.bench.runner import machine, run
from rnnlab.bench.sections import SECTIONS, Costs, Section, estimate_seconds, select
from rnnlab.bench.settings import PRESET_SWEEP, TARGET_DIAG_OVERHEAD, TARGET_HARNESS_RATIO, TASKS, Settings
from rnnlab.bench.timing import StepTimer, TimedTrainer, interleave
from rnnlab.cells.params import forward_flops, train_step_flops

__all__ = [
    "PRESET_SWEEP", "SECTIONS", "TARGET_DIAG_OVERHEAD", "TARGET_HARNESS_RATIO", "TASKS", "Costs", "Section",
    "Settings", "StepTimer", "Store", "TimedTrainer", "bare", "bare_run", "check_targets", "compose",
    "estimate_seconds", "forward_flops", "harness_run", "interleave", "log_to_mlflow", "machine",
    "model_step_flops", "run", "select", "sgemm_gflops", "task_shape", "timed_steps", "to_markdown", "train_step_flops",
]
