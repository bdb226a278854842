"""One benchmark run from start to end: the warm-up that measures what the estimate needs,
the sections, and the files."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from rnnlab.bench import fixed_costs
from rnnlab.bench.bare_loop import bare
from rnnlab.bench.harness import Store, harness_run
from rnnlab.bench.output import check_targets, write
from rnnlab.bench.processes import measure_imports
from rnnlab.bench.sections import Bench, Costs, estimate_seconds, run_sections, select
from rnnlab.bench.settings import PRESET_SWEEP, TARGET_DIAG_OVERHEAD, TARGET_HARNESS_RATIO, Settings


def machine(threads: int) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import mlflow

    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "logical_cpus": os.cpu_count(),
            "threads": threads, "torch": torch.__version__, "lightning": pl.__version__,
            "mlflow": mlflow.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "mkldnn": torch.backends.mkldnn.is_available(),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS", ""),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "loadavg_start": round(os.getloadavg()[0], 2)}


def _configure_logging() -> None:
    import mlflow  # noqa: F401  (it sets its own log level on import: import first, then quiet it)

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric",
                 "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


@contextlib.contextmanager
def _temp_root(work: Path) -> Iterator[None]:
    """Send ``tempfile``'s default folder to ``work`` meanwhile: a harness run outside Hydra puts
    its checkpoints in a fresh temporary folder, and they should go when the benchmark's do."""
    old = tempfile.tempdir
    tempfile.tempdir = str(work)
    try:
        yield
    finally:
        tempfile.tempdir = old


def warm_up(s: Settings, store: Store) -> tuple[Costs, dict[str, float]]:
    """Pay the first-call costs (imports, the store's schema, oneDNN) outside every measurement,
    and measure on the way what the estimate needs. Also returns the import-only process."""
    cell, task, T = s.cells[0], s.tasks[-1], s.seq_lens[0]
    harness_run(s, store, cell, task, T, 2, 1)  # first: imports, schema, first-call costs
    warm = bare(s, "lstm", "char_lm", T, max(2, s.steps // 5), 1)
    rate = warm["flops_per_step"] * warm["tokens_per_s"] / (s.batch_size * T) / 1e9
    t = time.perf_counter()
    harness_run(s, store, cell, task, T, 2, 1)  # second: what one more run costs, fixed
    per_run_s = time.perf_counter() - t
    imports = measure_imports(store)
    return Costs(gflops=rate, per_run_s=per_run_s, per_process_s=imports["wall_s"] + 1.0), imports


def run(s: Settings, out: Path, tracking_uri: str | None, keep: bool = False,
        log: Callable[[str], None] = print, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run every section with settings ``s`` (or those named in ``only`` and those they need,
    in their usual order: a GPU lent for minutes measures its own section and nothing else); write
    ``out/results.{md,json}``; log to MLflow at ``tracking_uri`` (None: do not log). Returns
    the results."""
    sections = select(only)
    t_all = time.perf_counter()
    _configure_logging()
    torch.set_num_threads(s.threads)
    info = machine(s.threads)
    work = Path(tempfile.mkdtemp(prefix="rnnlab-bench-"))
    store = Store(work)
    try:
        with _temp_root(work):
            log(f"rnnlab bench{' --quick' if s.quick else ''}: {info['cpu']}, {info['cores']} cores, "
                f"torch {info['torch']}, {s.threads} threads, load average {info['loadavg_start']}")
            costs, imports = warm_up(s, store)
            s = replace(s, rate_gflops=costs.gflops)
            estimates = estimate_seconds(s, costs, sections)
            est = sum(estimates.values()) + (time.perf_counter() - t_all)
            log(f"estimated duration: ~{est:.0f} s (training at ~{costs.gflops:.1f} GFLOP/s, "
                f"~{costs.per_run_s:.1f} s fixed cost per harness run)")
            done, took = run_sections(Bench(s, store, log, imports), sections)
            info["loadavg_end"] = round(os.getloadavg()[0], 2)
            settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()}
            res: dict[str, Any] = {
                "machine": info, "settings": settings,
                "duration": {"estimated_s": est, "actual_s": time.perf_counter() - t_all, "sections_s": took,
                             "sections_estimated_s": estimates, "costs": asdict(costs)},
                **done,
                "targets": {"harness_ratio_min": TARGET_HARNESS_RATIO,
                            "diagnostics_overhead_max": TARGET_DIAG_OVERHEAD,
                            "sweep_preset": PRESET_SWEEP,
                            "sweep_fixed_max_s": fixed_costs.TARGET_SWEEP_FIXED_S,
                            "warm_first_step_max_s": fixed_costs.TARGET_WARM_FIRST_STEP_S}}
            res["warnings"] = check_targets(res)
            res["duration"]["actual_s"] = time.perf_counter() - t_all
            write(res, out, tracking_uri)
            return res
    finally:
        if keep:
            log(f"kept the benchmark's working folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
