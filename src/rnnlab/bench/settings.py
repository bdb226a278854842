"""What the benchmark measures and at what size, in one place, so that a quick run and a full
run differ only in their :class:`Settings`, never in code."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from rnnlab.config import FUSED_CELLS

TASKS = ("adding", "char_lm")
TARGET_HARNESS_RATIO = 0.95  # harness tokens/s >= 95% of the bare loop's
TARGET_DIAG_OVERHEAD = 0.10  # diagnostics add <= 10% to the fit time
TARGET_SWEEP_EFFICIENCY = 0.8  # bare training time / (sweep wall x jobs)
TARGET_RUN_FIXED_S = 1.0  # seconds a sweep's run costs beyond its training steps (warm worker)
BUSY_LOAD_PER_CORE = 0.375  # a load average above this per core at start: timings are contended (0.75 on 2)
PRESET_SWEEP = "2x1"  # conf/experiment/long_range.yaml: n_jobs=${cores:}, threads=1 (the warm launcher)


@dataclass(frozen=True)
class Settings:
    quick: bool = False
    threads: int = 1
    cells: tuple[str, ...] = FUSED_CELLS  # fused vs reference, roofline: the kernels PyTorch fuses
    tasks: tuple[str, ...] = TASKS
    seq_lens: tuple[int, ...] = (50, 200)
    batch_size: int = 64
    hidden_size: int = 128
    embed_dim: int = 64
    steps: int = 30  # timed steps per measurement (sections 1-3), at least...
    min_window_s: float = 1.5  # ...this long (estimated from the warm-up) for cheap configurations
    max_steps_factor: int = 4  # but at most this many times ``steps``
    warmup: int = 5  # untimed steps before them
    repeats: int = 3  # interleaved repeats per side; medians are reported (3: one slowed run drops out)
    ref_steps: int = 12  # section 3
    # Section 3b: the modern cells' parallel scan vs their step-by-step form, and the fused cells
    scan_seq_lens: tuple[int, ...] = (100, 400, 1000)
    scan_hiddens: tuple[int, ...] = (64, 128)
    scan_batch: int = 32
    scan_steps: int = 3
    # ... and on a GPU, at Feng et al.'s batch and lengths (their Figure 1: 512 to 4096, batch 64)
    gpu_scan_seq_lens: tuple[int, ...] = (512, 1024, 4096)
    gpu_scan_hiddens: tuple[int, ...] = (128,)
    gpu_scan_batch: int = 64
    fixed_steps: int = 100  # section 1b, the per-step cost of a toy model
    diag_cells: tuple[str, ...] = FUSED_CELLS  # the fused cells' twin replay is what costs
    diag_task: str = "char_lm"
    diag_seq_len: int = 50
    diag_steps: int = 200  # with the default val_check_interval (100): two validations
    diag_val_interval: int | None = None  # None: the config's default
    diag_repeats: int = 1
    # Section 5: 6 runs of make sweep's own size (long_range preset: 300 steps, batch 32,
    # hidden 64), at T=100. Much shorter runs answer another question: per-process start-up
    # costs dominate them, which favours one job with more threads.
    sweep_runs: tuple[str, ...] = ("cell=rnn,lstm,gru", "seed=0,1")
    sweep_overrides: tuple[str, ...] = ("task=adding", "seq_len=100", "batch_size=32",
                                        "cell.hidden_size=64", "trainer.max_steps=300",
                                        "trainer.val_check_interval=100")
    sweep_repeats: int = 1  # each layout once (1x2 then 2x1); more alternate the order
    memory_overrides: tuple[str, ...] = ("trainer.max_steps=40", "trainer.val_check_interval=20")
    # Section 5b: sweep efficiency, on the sweep above at 2 jobs x 1 thread ("six_runs", timed
    # once: section 5 runs that very command) and on these, `make sweep` itself.
    efficiency_jobs: int = 2
    efficiency_cases: tuple[tuple[str, tuple[str, ...]], ...] = (("long_range", ("+experiment=long_range",)),)
    efficiency_steps: int = 60  # timed bare steps per run configuration
    # Section 5c: one run of the 6-run sweep's configuration (sweep_overrides), phase by phase.
    breakdown_cell: str = "lstm"
    breakdown_repeats: int = 2
    # task, seq_len, batch, hidden, embed, layers: the LSTM run whose bare loop measures scaling
    efficiency_scaling_config: tuple[str, ...] = ("adding", "100", "32", "64", "64", "1")
    sgemm_n: int = 2048
    extra: tuple[str, ...] = ()  # overrides added to every harness run (quick: tiny + sync logging)
    rate_gflops: float = 0.0  # training FLOP rate measured at the warm-up (sizes the windows)

    @classmethod
    def full(cls, steps: int | None = None, threads: int | None = None) -> Settings:
        s = cls(threads=threads or torch.get_num_threads())
        if steps:
            s = replace(s, steps=steps, ref_steps=max(3, steps * 2 // 5))
        return s

    @classmethod
    def tiny(cls, steps: int | None = None, threads: int | None = None) -> Settings:
        """Every section at toy sizes, for a smoke test: the numbers mean nothing.

        MLflow's asynchronous logging waits up to a second at every flush (three per run),
        which would dominate runs this short, so quick mode logs synchronously."""
        sync = ("tracking.async_logging=false",)
        return cls(
            quick=True, threads=threads or torch.get_num_threads(), seq_lens=(8,),
            batch_size=8, hidden_size=16, embed_dim=8, steps=steps or 3, min_window_s=0.0,
            warmup=1, repeats=1,
            ref_steps=2, fixed_steps=5, scan_seq_lens=(16,), scan_hiddens=(8,), scan_batch=4, scan_steps=1,
            gpu_scan_seq_lens=(16,), gpu_scan_hiddens=(8,), gpu_scan_batch=4,
            diag_cells=("lstm",), diag_seq_len=8, diag_steps=6, diag_val_interval=3,
            sweep_runs=("cell=lstm,gru",),
            sweep_overrides=("task=adding", "seq_len=8", "batch_size=8", "cell.hidden_size=8",
                             "trainer.max_steps=3", "trainer.val_check_interval=3",
                             "task.val_size=16", "task.test_size=16", "trainer.log_every_n_steps=1", *sync),
            sweep_repeats=1,
            efficiency_cases=(
                ("long_range", ("+experiment=long_range", "hydra.sweeper.params.task=adding",
                                "hydra.sweeper.params.seq_len=8", "hydra.sweeper.params.seed=0",
                                "hydra.sweeper.params.cell=lstm", "trainer.max_steps=3",
                                "trainer.val_check_interval=3", "task.val_size=16", "task.test_size=16", *sync)),),
            efficiency_steps=3, breakdown_repeats=1, efficiency_scaling_config=("adding", "8", "8", "8", "8", "1"),
            memory_overrides=("trainer.max_steps=4", "trainer.val_check_interval=2", "seq_len=16",
                              "batch_size=8", "trainer.limit_val_batches=2",
                              "trainer.limit_test_batches=2", *sync),
            sgemm_n=256, extra=("trainer.limit_val_batches=2", *sync))

    def sweep_command(self, threads: int) -> tuple[str, ...]:
        """Section 5's sweep as a user types it, less ``hydra.launcher.n_jobs``."""
        return ("hydra/launcher=warm", f"threads={threads}", *self.sweep_runs, *self.sweep_overrides)

    @property
    def efficiency_sweeps(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Section 5b's cases: section 5's sweep at one thread per job, then ``efficiency_cases``."""
        return (("six_runs", self.sweep_command(1)), *self.efficiency_cases)

    @property
    def sweep_size(self) -> int:
        """Runs in one sweep: the product of the comma lists in ``sweep_runs``."""
        return math.prod(len(o.split("=", 1)[1].split(",")) for o in self.sweep_runs)
