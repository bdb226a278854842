"""What the harness costs over hand-written PyTorch, measured in one process and one run.

``python src/bench.py`` (see ``experiments/bench/README.md``) runs six sections and writes
``results.md`` and ``results.json``; every number that matters is a ratio of two things
measured in the same process, interleaved, so that a shared or throttled machine moves both
sides alike:

1. **harness vs bare loop**: tokens/s of :func:`rnnlab.run.train` (Lightning, MLflow logging,
   callbacks and diagnostics as configured by default) against a plain loop over the same
   model, weights and batches (Adam, ``clip_grad_norm_``, nothing else). The harness is timed
   by a callback over a window of steps after a warm-up, validation excluded;
2. **roofline**: the FLOPs of one training step (:func:`train_step_flops`) over its time,
   against a large sgemm measured in the same run;
3. **fused vs reference cells** (``cell.impl``), bare loop;
4. **diagnostics cost**: the whole ``trainer.fit`` with diagnostics on (their default
   interval) and off;
5. **sweep parallelism**: four short runs as 1 job x 2 threads and as 2 jobs x 1 thread,
   through ``src/train.py -m`` and the joblib launcher;
6. **memory**: peak RSS of a default ``src/train.py`` run.

If CUDA is available, a GPU section adds tokens/s of the fused (cuDNN) cells. Results are also
logged as an MLflow run in experiment ``bench``. Training runs made by the benchmark itself go
to a throwaway store in a temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from rnnlab import paths
from rnnlab.cells.params import GATE_BLOCKS
from rnnlab.config import CELLS

TASKS = ("adding", "char_lm")
TARGET_HARNESS_RATIO = 0.95  # harness tokens/s >= 95% of the bare loop's
TARGET_DIAG_OVERHEAD = 0.10  # diagnostics add <= 10% to the fit time
PRESET_SWEEP = "2x1"  # conf/experiment/long_range.yaml: n_jobs=${cores:} (2 here), threads=1


# -- FLOPs ----------------------------------------------------------------------------------
def forward_flops(cell: str, batch: int, seq_len: int, hidden_size: int, embed_dim: int,
                  input_size: int, output_size: int, input_kind: str = "tokens",
                  readout: str = "seq", num_layers: int = 1) -> dict[str, int]:
    """Matmul FLOPs (multiply + add = 2) of one forward pass of :class:`RecurrentModel`.

    * encoder: an embedding lookup costs none; a linear projection of ``input_size`` real
      features costs ``2·B·T·input_size·E``;
    * recurrence: per layer and time step ``2·B·G·H·(I + H)`` with G = 1 (RNN), 3 (GRU),
      4 (LSTM) gate blocks and I = E for the first layer, H after it;
    * head: ``2·B·H·output_size`` per read position (T of them for ``readout="seq"``, else 1).

    Element-wise work (gates, losses, the optimizer) is not counted: it is memory-bound.
    """
    if cell not in GATE_BLOCKS:
        raise ValueError(f"unknown cell {cell!r}; valid: {', '.join(GATE_BLOCKS)}")
    B, T, H, E, G = batch, seq_len, hidden_size, embed_dim, GATE_BLOCKS[cell]
    encoder = 0 if input_kind == "tokens" else 2 * B * T * input_size * E
    recurrence = sum(2 * B * T * G * H * ((E if k == 0 else H) + H) for k in range(num_layers))
    head = 2 * B * (T if readout == "seq" else 1) * H * output_size
    return {"encoder": encoder, "recurrence": recurrence, "head": head,
            "forward": encoder + recurrence + head}


def train_step_flops(*args, **kwargs) -> int:
    """FLOPs of one training step: forward + backward ≈ 3 × the forward's matmul FLOPs
    (backward computes the gradient w.r.t. both the input and the weights of every matmul)."""
    return 3 * forward_flops(*args, **kwargs)["forward"]


def model_step_flops(cfg, task) -> int:
    """:func:`train_step_flops` for a composed config and its built task."""
    return train_step_flops(cfg.cell.name, cfg.batch_size, cfg.seq_len, cfg.cell.hidden_size,
                            cfg.model.embed_dim, task.input_size, task.output_size,
                            task.input_kind, task.readout, cfg.cell.num_layers)


def task_shape(task: str, vocab: int = 65) -> dict[str, Any]:
    """Input/output sizes and readout of a task, for FLOP estimates before it is built
    (char-LM's vocabulary is about 65 characters on the default corpus)."""
    if task == "char_lm":
        return {"input_size": vocab, "output_size": vocab, "input_kind": "tokens", "readout": "seq"}
    return {"input_size": 2, "output_size": 1, "input_kind": "real", "readout": "last"}


# -- settings -------------------------------------------------------------------------------
@dataclass
class Settings:
    quick: bool = False
    threads: int = 1
    cells: tuple[str, ...] = CELLS
    tasks: tuple[str, ...] = TASKS
    seq_lens: tuple[int, ...] = (50, 200)
    batch_size: int = 64
    hidden_size: int = 128
    embed_dim: int = 64
    steps: int = 30  # timed steps per measurement (sections 1-3), at least...
    min_window_s: float = 1.5  # ...this long (estimated from the warm-up) for cheap configurations
    max_steps_factor: int = 4  # but at most this many times ``steps``
    warmup: int = 5  # untimed steps before them
    repeats: int = 2  # interleaved repeats per side; medians are reported
    ref_steps: int = 12  # section 3
    fixed_steps: int = 100  # section 1b, the per-step cost of a toy model
    diag_cells: tuple[str, ...] = CELLS
    diag_task: str = "char_lm"
    diag_seq_len: int = 50
    diag_steps: int = 200  # with the default val_check_interval (100): two validations
    diag_val_interval: int | None = None  # None: the config's default
    diag_repeats: int = 1
    # Section 5: 6 runs of make sweep's own size (long_range preset: 300 steps, batch 32,
    # hidden 64), at T=100. Shorter runs mislead: with 60 steps, 1 job x 2 threads won by 20%
    # (per-process costs dominate); with the preset's 300, 2 jobs x 1 thread win by 26%.
    sweep_runs: tuple[str, ...] = ("cell=rnn,lstm,gru", "seed=0,1")
    sweep_overrides: tuple[str, ...] = ("task=adding", "seq_len=100", "batch_size=32",
                                        "cell.hidden_size=64", "trainer.max_steps=300",
                                        "trainer.val_check_interval=100")
    sweep_repeats: int = 1  # each layout once (1x2 then 2x1); more alternate the order
    memory_overrides: tuple[str, ...] = ("trainer.max_steps=40", "trainer.val_check_interval=20")
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
            ref_steps=2, fixed_steps=5, diag_cells=("lstm",), diag_seq_len=8, diag_steps=6, diag_val_interval=3,
            sweep_runs=("cell=lstm,gru",),
            sweep_overrides=("task=adding", "seq_len=8", "batch_size=8", "cell.hidden_size=8",
                             "trainer.max_steps=3", "trainer.val_check_interval=3",
                             "task.val_size=16", "task.test_size=16", *sync),
            sweep_repeats=1,
            memory_overrides=("trainer.max_steps=4", "trainer.val_check_interval=2", "seq_len=16",
                              "batch_size=8", "trainer.limit_val_batches=2",
                              "trainer.limit_test_batches=2", *sync),
            sgemm_n=256, extra=("trainer.limit_val_batches=2", *sync))


# -- config and harness plumbing ------------------------------------------------------------
def compose(overrides: list[str]):
    """The config Hydra would build for these overrides (as ``src/train.py`` would)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(paths.config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


class StepTimer(Callback):
    """Times a window of training steps inside ``trainer.fit``, validation excluded.

    The window runs from the start of step ``warmup`` to the start of step ``warmup + steps``,
    so it holds ``steps`` whole steps and everything between them (data loading, optimizer,
    logging, every callback). Validation that falls inside is timed and subtracted. Added
    last, so its validation hooks run after the checkpoint callback's (which count as
    validation)."""

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

    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def _in_window(self) -> bool:
        return self.t_start is not None and self.t_end is None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.batches == self.warmup:
            self.t_start = self._now(pl_module)
            self.cpu_start = time.process_time()
        elif self.batches == self.warmup + self.steps:
            self.t_end = self._now(pl_module)
            self.cpu_end = time.process_time()
        self.batches += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._in_window():
            self.tokens += pl_module.task.tokens(batch)

    def on_validation_start(self, trainer, pl_module):
        if self._in_window():
            self._val_t0, self._val_cpu0 = time.perf_counter(), time.process_time()

    def on_validation_end(self, trainer, pl_module):
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


_timer_args: dict[str, int] = {"warmup": 0, "steps": 1}
_last_timer: list[StepTimer] = []


class TimedTrainer(pl.Trainer):
    """``pl.Trainer`` plus a :class:`StepTimer`; selected with ``trainer._target_``, so
    everything else in :func:`rnnlab.run.train` runs unchanged. Also times the whole ``fit``
    and the diagnostics callback's hooks."""

    def __init__(self, *args, callbacks=None, **kwargs):
        self.bench_timer = StepTimer(**_timer_args)
        callbacks = list(callbacks or [])
        from rnnlab.diagnostics import GradientFlow

        for cb in callbacks:
            if isinstance(cb, GradientFlow):
                for hook in ("on_fit_start", "on_validation_epoch_end", "on_fit_end"):
                    setattr(cb, hook, self._timed(getattr(cb, hook)))
        super().__init__(*args, callbacks=[*callbacks, self.bench_timer], **kwargs)
        _last_timer[:] = [self.bench_timer]

    def _timed(self, fn: Callable) -> Callable:
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.bench_timer.diag_s += time.perf_counter() - t
        return wrapper

    def fit(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return super().fit(*args, **kwargs)
        finally:
            self.bench_timer.fit_s = time.perf_counter() - t


@dataclass
class Store:
    """The throwaway MLflow store (and folders) every training run of the benchmark uses."""

    dir: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.dir / 'harness.db'}"

    @property
    def artifacts(self) -> Path:
        return self.dir / "mlruns"

    def fresh_db(self, name: str) -> str:
        """A copy of an empty, already-migrated store, so no subprocess pays the schema cost."""
        template = self.dir / "template.db"
        if not template.exists():
            from mlflow import MlflowClient

            MlflowClient(f"sqlite:///{template}").search_experiments(max_results=1)
        path = self.dir / f"{name}.db"
        shutil.copy(template, path)
        return f"sqlite:///{path}"


def timed_steps(s: Settings, cell: str, task: str, seq_len: int, base: int | None = None) -> int:
    """``base`` steps (default ``s.steps``), or more for a cheap configuration, so that the timed
    window lasts about ``s.min_window_s`` at the warm-up's FLOP rate (capped)."""
    base = base or s.steps
    if not s.min_window_s or not s.rate_gflops:
        return base
    step_s = train_step_flops(cell, s.batch_size, seq_len, s.hidden_size, s.embed_dim,
                              **task_shape(task)) / (s.rate_gflops * 1e9)
    return int(min(base * s.max_steps_factor, max(base, math.ceil(s.min_window_s / step_s))))


def base_overrides(s: Settings, cell: str, task: str, seq_len: int) -> list[str]:
    return [f"cell={cell}", f"task={task}", f"seq_len={seq_len}", f"batch_size={s.batch_size}",
            f"cell.hidden_size={s.hidden_size}", f"model.embed_dim={s.embed_dim}",
            f"threads={s.threads}"]


@contextlib.contextmanager
def _quiet():
    """Lightning's and rnnlab's progress lines would bury the benchmark's own output."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def harness_run(s: Settings, store: Store, cell: str, task: str, seq_len: int, steps: int,
                warmup: int, extra: tuple[str, ...] = (), accelerator: str = "cpu") -> dict[str, float]:
    """One :func:`rnnlab.run.train` on a composed config: tokens/s over the timed window, the
    fit's wall time and the time spent in the diagnostics callback."""
    from rnnlab.run import train

    cfg = compose([*base_overrides(s, cell, task, seq_len),
                   f"trainer.max_steps={warmup + steps + 1}", f"trainer.accelerator={accelerator}",
                   "trainer._target_=rnnlab.bench.TimedTrainer", "trainer.limit_test_batches=1",
                   f"tracking.uri={store.uri}", f"tracking.artifact_root={store.artifacts}",
                   "tracking.experiment=bench_harness", *s.extra, *extra])
    _timer_args.update(warmup=warmup, steps=steps)
    _last_timer.clear()
    with _quiet():
        summary = train(cfg)
    if summary.status != "FINISHED":
        raise RuntimeError(f"harness run {summary.run_name} ended {summary.status}")
    t = _last_timer[0]
    torch.set_num_threads(s.threads)  # whatever the run did, the next measurement gets the same
    return {"tokens_per_s": t.tokens / t.train_s, "train_s": t.train_s, "fit_s": t.fit_s,
            "val_s": t.val_s, "diag_s": t.diag_s, "tokens": t.tokens,
            "cpu_s_per_step": (t.cpu_end - t.cpu_start - t.val_cpu_s) / steps}


def _batches(task):
    """The task's training batches, epoch after epoch, as Lightning would draw them."""
    epoch = 0
    while True:
        loader = task.train_dataloader()
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def bare_run(cfg, steps: int, warmup: int, device: str = "cpu") -> dict[str, float]:
    """The hand-written loop: same model class and initial weights as the harness (same seed,
    same builders), same batches; Adam, ``clip_grad_norm_``, no logging, no checks. Runs with
    PyTorch's default flags (a harness run on a GPU turns deterministic algorithms on process-wide)."""
    from rnnlab.run import build_model, build_task

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task(cfg)
    model = build_model(cfg, task, "bare").to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = torch.backends.cudnn.benchmark = False
    tokens, t0, cpu0 = 0, 0.0, 0.0
    try:
        batches = _batches(task)
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                t0, cpu0 = time.perf_counter(), time.process_time()
            batch = {k: v.to(dev, non_blocking=True) for k, v in next(batches).items()}
            out, _ = model(batch)
            loss = task.loss(out, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            if i >= warmup:
                tokens += task.tokens(batch)
        sync()
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        torch.use_deterministic_algorithms(flags[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1], flags[2]
    return {"tokens_per_s": tokens / dt, "train_s": dt, "tokens": tokens, "cpu_s_per_step": cpu / steps,
            "flops_per_step": model_step_flops(cfg, task)}


def bare(s: Settings, cell: str, task: str, seq_len: int, steps: int, warmup: int,
         extra: tuple[str, ...] = (), device: str = "cpu") -> dict[str, float]:
    cfg = compose([*base_overrides(s, cell, task, seq_len), *s.extra, *extra])
    torch.set_num_threads(s.threads)
    with _quiet():
        return bare_run(cfg, steps, warmup, device)


def _med(runs: list[dict], key: str = "tokens_per_s") -> float:
    return statistics.median(r[key] for r in runs)


def interleave(repeats: int, a: Callable[[], dict], b: Callable[[], dict]) -> tuple[list, list]:
    """Run a and b ``repeats`` times each, alternating which goes first (a b, b a, a b...)."""
    ra, rb = [], []
    for r in range(repeats):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            (ra if which == 0 else rb).append((a if which == 0 else b)())
    return ra, rb


# -- sections -------------------------------------------------------------------------------
def section_harness(s: Settings, store: Store, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for task in s.tasks:
        for seq_len in s.seq_lens:
            for cell in s.cells:
                n = timed_steps(s, cell, task, seq_len)
                h, b = interleave(
                    s.repeats,
                    partial(harness_run, s, store, cell, task, seq_len, n, s.warmup),
                    partial(bare, s, cell, task, seq_len, n, s.warmup))
                row = {"cell": cell, "task": task, "seq_len": seq_len, "steps": n,
                       "harness_tokens_per_s": _med(h), "bare_tokens_per_s": _med(b),
                       "ratio": _med(h) / _med(b), "flops_per_step": b[0]["flops_per_step"],
                       "harness_runs": [r["tokens_per_s"] for r in h],
                       "bare_runs": [r["tokens_per_s"] for r in b]}
                rows.append(row)
                log(f"  {cell:4} {task:7} T={seq_len:<4} harness {row['harness_tokens_per_s']:>9,.0f} "
                    f"tok/s  bare {row['bare_tokens_per_s']:>9,.0f} tok/s  ratio {row['ratio']:.3f}")
    return rows


NO_STEP_LOGGING = ("trainer.log_every_n_steps=1000000",)
TOY = ("cell.hidden_size=8", "model.embed_dim=8", "batch_size=8")


def section_attribution(s: Settings, store: Store, log: Callable[[str], None]) -> list[dict]:
    """Where the harness's extra time per step goes, in ms per step: the harness as is, the
    harness without its logging steps (``log_every_n_steps`` beyond the run: no metric leaves
    the LightningModule, no grad-norm logging), and the bare loop; on the cheapest real
    configuration, where per-step costs weigh most, and on a toy model (B=8, H=8, T=4) whose
    compute is next to nothing, so that what remains is the fixed cost per step."""
    cases = [("rnn", "adding", min(s.seq_lens), timed_steps(s, "rnn", "adding", min(s.seq_lens)), (),
              s.batch_size),
             ("rnn", "adding", 4, s.fixed_steps, TOY, 8)]
    rows = []
    for cell, task, T, steps, shape, B in cases:
        sides = {
            "harness": partial(harness_run, s, store, cell, task, T, steps, s.warmup, extra=shape),
            "harness_no_step_logging": partial(harness_run, s, store, cell, task, T, steps, s.warmup,
                                               extra=(*shape, *NO_STEP_LOGGING)),
            "bare": partial(bare, s, cell, task, T, steps, s.warmup, extra=shape),
        }
        runs: dict[str, list] = {k: [] for k in sides}
        for r in range(s.repeats):
            for k in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                runs[k].append(sides[k]())
        ms = {k: 1000 * B * T / _med(v) for k, v in runs.items()}
        row = {"cell": cell, "task": task, "seq_len": T, "batch_size": B,
               "hidden_size": 8 if shape else s.hidden_size,
               **{f"{k}_ms_per_step": v for k, v in ms.items()},
               **{f"{k}_cpu_ms_per_step": 1000 * _med(v, "cpu_s_per_step") for k, v in runs.items()}}
        rows.append(row)
        log(f"  {cell} {task} T={T} B={B} H={row['hidden_size']}: harness {ms['harness']:.2f} ms/step, "
            f"without logging steps {ms['harness_no_step_logging']:.2f}, bare {ms['bare']:.2f}")
    return rows


def sgemm_gflops(n: int, device: str = "cpu", repeats: int = 5) -> dict[str, float]:
    """Peak-ish float32 matmul throughput: median of ``repeats`` n x n ``torch.mm``."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    det = torch.are_deterministic_algorithms_enabled()  # left on by a GPU harness run
    torch.use_deterministic_algorithms(False)
    try:
        for _ in range(2):
            torch.mm(a, b)
        times = []
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            torch.mm(a, b)
            sync()
            times.append(time.perf_counter() - t)
    finally:
        torch.use_deterministic_algorithms(det)
    return {"n": n, "gflops": 2 * n ** 3 / statistics.median(times) / 1e9,
            "best_gflops": 2 * n ** 3 / min(times) / 1e9}


def section_roofline(s: Settings, harness_rows: list[dict], peak: dict) -> dict:
    rows = []
    for r in harness_rows:
        per_token = r["flops_per_step"] / (s.batch_size * r["seq_len"])
        bare_gf = per_token * r["bare_tokens_per_s"] / 1e9
        harness_gf = per_token * r["harness_tokens_per_s"] / 1e9
        rows.append({"cell": r["cell"], "task": r["task"], "seq_len": r["seq_len"],
                     "gflop_per_step": r["flops_per_step"] / 1e9,
                     "bare_gflops": bare_gf, "harness_gflops": harness_gf,
                     "bare_fraction_of_peak": bare_gf / peak["gflops"],
                     "harness_fraction_of_peak": harness_gf / peak["gflops"]})
    return {"sgemm": peak, "rows": rows}


def section_reference(s: Settings, log: Callable[[str], None]) -> list[dict]:
    rows = []
    for seq_len in s.seq_lens:
        for cell in s.cells:
            n = timed_steps(s, cell, "adding", seq_len, s.ref_steps)
            f, r = interleave(
                s.repeats,
                partial(bare, s, cell, "adding", seq_len, n, s.warmup),
                partial(bare, s, cell, "adding", seq_len, n, s.warmup, extra=("cell.impl=reference",)))
            row = {"cell": cell, "task": "adding", "seq_len": seq_len, "steps": n,
                   "fused_tokens_per_s": _med(f), "reference_tokens_per_s": _med(r),
                   "fused_over_reference": _med(f) / _med(r)}
            rows.append(row)
            log(f"  {cell:4} T={seq_len:<4} fused {row['fused_tokens_per_s']:>9,.0f} tok/s  reference "
                f"{row['reference_tokens_per_s']:>9,.0f} tok/s  fused/reference {row['fused_over_reference']:.2f}")
    return rows


def section_diagnostics(s: Settings, store: Store, log: Callable[[str], None]) -> list[dict]:
    rows = []
    interval = () if s.diag_val_interval is None else (f"trainer.val_check_interval={s.diag_val_interval}",)
    for i, cell in enumerate(s.diag_cells):
        # the timing window is irrelevant here (it covers all but the last step): fit_s counts
        run = partial(harness_run, s, store, cell, s.diag_task, s.diag_seq_len, s.diag_steps - 1, 0)
        on_ = partial(run, extra=(*interval, "diagnostics.enabled=true"))
        off_ = partial(run, extra=(*interval, "diagnostics.enabled=false"))
        if i % 2 == 0:  # alternate which side goes first from one cell to the next
            on, off = interleave(s.diag_repeats, on_, off_)
        else:
            off, on = interleave(s.diag_repeats, off_, on_)
        fit_on, fit_off = _med(on, "fit_s"), _med(off, "fit_s")
        row = {"cell": cell, "task": s.diag_task, "seq_len": s.diag_seq_len, "steps": s.diag_steps,
               "fit_s_on": fit_on, "fit_s_off": fit_off, "on_over_off": fit_on / fit_off,
               "diag_hooks_s": _med(on, "diag_s"),
               "diag_share_of_fit": _med(on, "diag_s") / fit_off}
        rows.append(row)
        log(f"  {cell:4} fit on {fit_on:.2f} s  off {fit_off:.2f} s  (+{100 * (fit_on / fit_off - 1):.1f}%)  "
            f"time in diagnostics hooks {row['diag_hooks_s']:.2f} s ({100 * row['diag_share_of_fit']:.1f}%)")
    return rows


# Runs ``argv[2:]`` and writes the child's ru_maxrss (KiB) to ``argv[1]``. A small process in
# between, because a child forked (or vforked) straight from the benchmark starts with the
# benchmark's own high-water RSS, which Linux then reports as the child's.
_LAUNCHER = ("import os, subprocess, sys\n"
             "p = subprocess.Popen(sys.argv[2:])\n"
             "_, status, usage = os.wait4(p.pid, 0)\n"
             "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
             "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path,
                 timeout: float = 900) -> dict[str, float]:
    """Run ``cmd``; its wall time and peak RSS (``ru_maxrss`` from ``wait4``: the largest of the
    process and the descendants it waited for, e.g. joblib's workers)."""
    rss_path = log_path.with_suffix(".maxrss")
    with log_path.open("w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(rss_path), *cmd], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise RuntimeError(f"command timed out after {timeout:.0f} s: {' '.join(cmd)}") from None
        wall = time.perf_counter() - t
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"command failed ({rc}): {' '.join(cmd)}\n{tail}")
    return {"wall_s": wall, "max_rss_mib": int(rss_path.read_text()) / 1024}


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, str(paths.repo_root() / "src" / "train.py"), *args]


def _child_env(uri: str) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    env.pop("RNNLAB_ROOT", None)
    return env


def section_sweep(s: Settings, store: Store, log: Callable[[str], None]) -> dict:
    modes = {"1x2": (1, 2), "2x1": (2, 1)}  # jobs x threads
    walls: dict[str, list[float]] = {m: [] for m in modes}
    k = 0
    for r in range(s.sweep_repeats):
        for mode in (("1x2", "2x1") if r % 2 == 0 else ("2x1", "1x2")):
            jobs, threads = modes[mode]
            k += 1
            out = store.dir / f"sweep{k}"
            cmd = _train_cmd("-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
                             f"threads={threads}", *s.sweep_runs, *s.sweep_overrides,
                             f"hydra.sweep.dir={out}", f"tracking.artifact_root={store.artifacts}",
                             "tracking.experiment=bench_sweep", "sweep.name=bench")
            res = run_measured(cmd, _child_env(store.fresh_db(f"sweep{k}")), store.dir,
                               store.dir / f"sweep{k}.log")
            walls[mode].append(res["wall_s"])
            log(f"  {mode} ({jobs} job{'s' if jobs > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}): "
                f"{res['wall_s']:.1f} s")
    med = {m: statistics.median(v) for m, v in walls.items()}
    faster = min(med, key=med.get)
    n_runs = math.prod(len(o.split("=", 1)[1].split(",")) for o in s.sweep_runs)
    return {"runs": n_runs, "overrides": [*s.sweep_runs, *s.sweep_overrides],
            "wall_s_1x2": med["1x2"], "wall_s_2x1": med["2x1"],
            "walls_1x2": walls["1x2"], "walls_2x1": walls["2x1"],
            "speedup_2x1_over_1x2": med["1x2"] / med["2x1"], "faster": faster,
            "preset": PRESET_SWEEP, "preset_is_faster": faster == PRESET_SWEEP}


def measure_imports(store: Store) -> dict[str, float]:
    """A process that only imports what a run needs: its wall time and peak RSS."""
    return run_measured([sys.executable, "-c", "import torch, pytorch_lightning, mlflow, rnnlab.run"],
                        _child_env(store.fresh_db("imports")), store.dir, store.dir / "imports.log")


def section_memory(s: Settings, store: Store, log: Callable[[str], None], imports: dict) -> dict:
    run = run_measured(
        _train_cmd(*s.memory_overrides, f"hydra.run.dir={store.dir / 'memory-run'}",
                   f"tracking.artifact_root={store.artifacts}", "tracking.experiment=bench_memory"),
        _child_env(store.fresh_db("memory")), store.dir, store.dir / "memory.log")
    log(f"  default run: peak RSS {run['max_rss_mib']:.0f} MiB ({run['wall_s']:.1f} s); "
        f"imports alone: {imports['max_rss_mib']:.0f} MiB")
    return {"command": "python src/train.py " + " ".join(s.memory_overrides),
            "peak_rss_mib": run["max_rss_mib"], "wall_s": run["wall_s"],
            "imports_peak_rss_mib": imports["max_rss_mib"]}


def section_gpu(s: Settings, store: Store, log: Callable[[str], None]) -> dict:
    if not torch.cuda.is_available():
        return {"available": False}
    peak = sgemm_gflops(4096 if not s.quick else 512, "cuda")
    rows = []
    for task in s.tasks:
        for seq_len in s.seq_lens:
            for cell in s.cells:
                h, b = interleave(
                    s.repeats,
                    partial(harness_run, s, store, cell, task, seq_len, s.steps, s.warmup, accelerator="gpu"),
                    partial(bare, s, cell, task, seq_len, s.steps, s.warmup, device="cuda"))
                per_token = b[0]["flops_per_step"] / (s.batch_size * seq_len)
                row = {"cell": cell, "task": task, "seq_len": seq_len,
                       "harness_tokens_per_s": _med(h), "bare_tokens_per_s": _med(b),
                       "ratio": _med(h) / _med(b),
                       "bare_fraction_of_peak": per_token * _med(b) / 1e9 / peak["gflops"]}
                rows.append(row)
                log(f"  {cell:4} {task:7} T={seq_len:<4} harness {row['harness_tokens_per_s']:>11,.0f} tok/s  "
                    f"bare {row['bare_tokens_per_s']:>11,.0f} tok/s  ratio {row['ratio']:.3f}")
    return {"available": True, "device": torch.cuda.get_device_name(0), "sgemm": peak, "rows": rows}


# -- machine, estimate, report --------------------------------------------------------------
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


def estimate_seconds(s: Settings, gflops: float, per_run_s: float, per_process_s: float) -> float:
    """Rough duration from a measured training FLOP rate and fixed costs per run and process."""
    s = replace(s, rate_gflops=gflops)

    def steps_s(cell, task, seq_len, steps, impl_factor=1.0):
        f = train_step_flops(cell, s.batch_size, seq_len, s.hidden_size, s.embed_dim, **task_shape(task))
        return steps * f / (gflops * 1e9) * impl_factor

    total = 0.0
    for task in s.tasks:
        for T in s.seq_lens:
            for cell in s.cells:
                n = (timed_steps(s, cell, task, T) + s.warmup + 1) * s.repeats
                total += 2 * steps_s(cell, task, T, n) + s.repeats * per_run_s
    for T in s.seq_lens:
        for cell in s.cells:
            n = timed_steps(s, cell, "adding", T, s.ref_steps)
            total += steps_s(cell, "adding", T, (n + s.warmup) * s.repeats, 1 + 1.3)
    for cell in s.diag_cells:
        total += 2 * s.diag_repeats * (steps_s(cell, s.diag_task, s.diag_seq_len, s.diag_steps * 1.1) + per_run_s)
    T = min(s.seq_lens)
    n = timed_steps(s, "rnn", "adding", T)
    total += s.repeats * (3 * steps_s("rnn", "adding", T, n + s.warmup + 1) + 4 * per_run_s)
    sw = dict(o.split("=", 1) for o in s.sweep_overrides)
    n_runs = math.prod(len(o.split("=", 1)[1].split(",")) for o in s.sweep_runs)
    sweep_flops = n_runs * int(sw["trainer.max_steps"]) * train_step_flops(
        "lstm", int(sw["batch_size"]), int(sw["seq_len"]), int(sw["cell.hidden_size"]), s.embed_dim, 2, 1,
        "real", "last")
    sweep_steps = sweep_flops / (gflops * 1e9) * s.threads  # one thread per run at worst
    one_job = per_process_s + n_runs * per_run_s + sweep_steps
    two_jobs = 2.5 * per_process_s + n_runs / 2 * per_run_s + sweep_steps / 2  # 3 processes import
    total += s.sweep_repeats * (one_job + two_jobs)
    total += per_process_s + per_run_s  # memory
    return total


def to_markdown(res: dict) -> str:
    m, st = res["machine"], res["settings"]
    L = [f"# rnnlab benchmark{' (quick: toy sizes, the numbers mean nothing)' if st['quick'] else ''}",
         "",
         f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads), "
         f"Lightning {m['lightning']}, MLflow {m['mlflow']}, Python {m['python']}; "
         f"load average at start {m['loadavg_start']}. "
         f"Duration {res['duration']['actual_s']:.0f} s (estimated {res['duration']['estimated_s']:.0f} s).",
         f"Shapes: batch {st['batch_size']}, hidden {st['hidden_size']}, embed {st['embed_dim']}; "
         f"{st['warmup']} warm-up + at least {st['steps']} timed steps, {st['repeats']} interleaved "
         f"repeats per side (medians).", ""]
    if res.get("warnings"):
        L += [f"**WARNING: {w}**" for w in res["warnings"]] + [""]
    L += ["## 1. Harness vs bare loop (tokens/s, CPU)", "",
          f"Target: harness/bare >= {TARGET_HARNESS_RATIO}.", "",
          "| cell | task | T | timed steps | harness tok/s | bare tok/s | harness/bare |",
          "|---|---|---|---|---|---|---|"]
    for r in res["harness_vs_bare"]:
        L.append(f"| {r['cell']} | {r['task']} | {r['seq_len']} | {r['steps']} | {r['harness_tokens_per_s']:,.0f} | "
                 f"{r['bare_tokens_per_s']:,.0f} | {r['ratio']:.3f} |")
    L += ["", "Validation is excluded: any that falls inside the timed window is timed and subtracted. "
          "Diagnostics run at validation, so their cost is in section 4.", "",
          "### 1b. Where the harness's time per step goes (ms per step, medians)", "",
          "\"no logging steps\": `trainer.log_every_n_steps` beyond the run, so no metric is sent and "
          "no gradient norm is logged; `train/loss` is still passed to `self.log` every step.", "",
          "| config | harness | harness, no logging steps | bare | harness - bare |", "|---|---|---|---|---|"]
    for r in res["attribution"]:
        L.append(f"| {r['cell']} {r['task']} T={r['seq_len']} B={r['batch_size']} H={r['hidden_size']} | "
                 f"{r['harness_ms_per_step']:.2f} | {r['harness_no_step_logging_ms_per_step']:.2f} | "
                 f"{r['bare_ms_per_step']:.2f} | {r['harness_ms_per_step'] - r['bare_ms_per_step']:+.2f} |")
    rf = res["roofline"]
    L += ["", f"## 2. Roofline (sgemm {rf['sgemm']['n']}² float32: {rf['sgemm']['gflops']:.1f} GFLOP/s)", "",
          "| cell | task | T | GFLOP/step | bare GFLOP/s | bare % of sgemm | harness % of sgemm |",
          "|---|---|---|---|---|---|---|"]
    for r in rf["rows"]:
        L.append(f"| {r['cell']} | {r['task']} | {r['seq_len']} | {r['gflop_per_step']:.3f} | "
                 f"{r['bare_gflops']:.1f} | {100 * r['bare_fraction_of_peak']:.1f}% | "
                 f"{100 * r['harness_fraction_of_peak']:.1f}% |")
    L += ["", "## 3. Fused vs reference cells (bare loop, adding)", "",
          "| cell | T | timed steps | fused tok/s | reference tok/s | fused/reference |",
          "|---|---|---|---|---|---|"]
    for r in res["fused_vs_reference"]:
        L.append(f"| {r['cell']} | {r['seq_len']} | {r['steps']} | {r['fused_tokens_per_s']:,.0f} | "
                 f"{r['reference_tokens_per_s']:,.0f} | {r['fused_over_reference']:.2f} |")
    L += ["", f"## 4. Diagnostics cost (whole trainer.fit; target <= +{100 * TARGET_DIAG_OVERHEAD:.0f}%)", "",
          "| cell | task | T | steps | fit on (s) | fit off (s) | on/off | in diagnostics hooks |",
          "|---|---|---|---|---|---|---|---|"]
    for r in res["diagnostics"]:
        L.append(f"| {r['cell']} | {r['task']} | {r['seq_len']} | {r['steps']} | {r['fit_s_on']:.2f} | "
                 f"{r['fit_s_off']:.2f} | {r['on_over_off']:.3f} | {r['diag_hooks_s']:.2f} s "
                 f"({100 * r['diag_share_of_fit']:.1f}%) |")
    sw = res["sweep"]
    L += ["", f"## 5. Sweep parallelism ({sw['runs']} runs: {' '.join(sw['overrides'])})", "",
          "| layout | wall (s, median) | runs |", "|---|---|---|",
          f"| 1 job x 2 threads | {sw['wall_s_1x2']:.1f} | {', '.join(f'{w:.1f}' for w in sw['walls_1x2'])} |",
          f"| 2 jobs x 1 thread (preset) | {sw['wall_s_2x1']:.1f} | {', '.join(f'{w:.1f}' for w in sw['walls_2x1'])} |",
          "", f"Faster: **{sw['faster']}** ({sw['speedup_2x1_over_1x2']:.2f}x = 1x2 wall / 2x1 wall)"
          + ("" if sw["preset_is_faster"] else " — **the preset default (2 jobs x 1 thread) is NOT the faster one**")]
    mem = res["memory"]
    L += ["", "## 6. Memory", "",
          f"Peak RSS of `{mem['command']}`: **{mem['peak_rss_mib']:.0f} MiB** "
          f"(importing torch, Lightning, MLflow and rnnlab alone: {mem['imports_peak_rss_mib']:.0f} MiB)."]
    gpu = res["gpu"]
    L += ["", "## GPU (fused cells, cuDNN)", ""]
    if not gpu.get("available"):
        L.append("No CUDA device: skipped.")
    else:
        L += [f"{gpu['device']}; sgemm {gpu['sgemm']['n']}²: {gpu['sgemm']['gflops']:.0f} GFLOP/s.", "",
              "| cell | task | T | harness tok/s | bare tok/s | harness/bare | bare % of sgemm |",
              "|---|---|---|---|---|---|---|"]
        for r in gpu["rows"]:
            L.append(f"| {r['cell']} | {r['task']} | {r['seq_len']} | {r['harness_tokens_per_s']:,.0f} | "
                     f"{r['bare_tokens_per_s']:,.0f} | {r['ratio']:.3f} | {100 * r['bare_fraction_of_peak']:.2f}% |")
    return "\n".join(L) + "\n"


def check_targets(res: dict) -> list[str]:
    warn = []
    low = [r for r in res["harness_vs_bare"] if r["ratio"] < TARGET_HARNESS_RATIO]
    if low:
        warn.append(f"harness/bare below {TARGET_HARNESS_RATIO} for {len(low)} of "
                    f"{len(res['harness_vs_bare'])} configurations: " + ", ".join(
                        f"{r['cell']}/{r['task']}/T{r['seq_len']} {r['ratio']:.3f}" for r in low))
    high = [r for r in res["diagnostics"] if r["on_over_off"] > 1 + TARGET_DIAG_OVERHEAD]
    if high:
        warn.append("diagnostics add more than {:.0f}% to the fit: ".format(100 * TARGET_DIAG_OVERHEAD) + ", ".join(
            f"{r['cell']} +{100 * (r['on_over_off'] - 1):.1f}%" for r in high))
    if not res["sweep"]["preset_is_faster"]:
        warn.append("SWEEP PRESET IS NOT THE FASTER LAYOUT: 2 jobs x 1 thread took "
                    f"{res['sweep']['wall_s_2x1']:.1f} s, 1 job x 2 threads {res['sweep']['wall_s_1x2']:.1f} s; "
                    "conf/experiment/long_range.yaml's n_jobs=${cores:} threads=1 should change")
    if res["machine"]["loadavg_start"] > 0.75:
        warn.append(f"the machine was busy (load average {res['machine']['loadavg_start']} at start on "
                    f"{res['machine']['cores']} cores): timings are contended")
    return warn


def log_to_mlflow(res: dict, uri: str, files: list[Path]) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from rnnlab import tracking

    client = MlflowClient(uri)
    if uri == paths.default_tracking_uri():
        artifacts = paths.default_artifact_root()
    elif uri.startswith("sqlite:///"):
        artifacts = (Path(uri[len("sqlite:///"):]).parent / "mlruns").resolve().as_uri()
    else:
        artifacts = None
    exp_id = tracking.get_or_create_experiment(client, "bench", artifacts)
    st = res["settings"]
    run = client.create_run(exp_id, run_name=f"bench-{'quick' if st['quick'] else 'full'}-"
                            f"{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"quick": str(st["quick"]).lower(), **tracking.git_info(),
                                  "warnings": " | ".join(res["warnings"])[:5000] or "none"})
    rid = run.info.run_id
    params = {**{f"machine.{k}": v for k, v in res["machine"].items()},
              **{f"settings.{k}": v for k, v in st.items()}}
    now = int(time.time() * 1000)
    metrics = {"duration_s": res["duration"]["actual_s"]}
    for r in res["harness_vs_bare"]:
        metrics[f"harness_ratio/{r['cell']}_{r['task']}_T{r['seq_len']}"] = r["ratio"]
    metrics["harness_ratio/median"] = statistics.median(r["ratio"] for r in res["harness_vs_bare"])
    metrics["harness_ratio/min"] = min(r["ratio"] for r in res["harness_vs_bare"])
    metrics["roofline/sgemm_gflops"] = res["roofline"]["sgemm"]["gflops"]
    for r in res["roofline"]["rows"]:
        metrics[f"roofline/bare_fraction/{r['cell']}_{r['task']}_T{r['seq_len']}"] = r["bare_fraction_of_peak"]
    for r in res["fused_vs_reference"]:
        metrics[f"fused_over_reference/{r['cell']}_T{r['seq_len']}"] = r["fused_over_reference"]
    for r in res["diagnostics"]:
        metrics[f"diagnostics/on_over_off/{r['cell']}"] = r["on_over_off"]
        metrics[f"diagnostics/hooks_share/{r['cell']}"] = r["diag_share_of_fit"]
    sw = res["sweep"]
    metrics.update({"sweep/wall_s_1x2": sw["wall_s_1x2"], "sweep/wall_s_2x1": sw["wall_s_2x1"],
                    "sweep/speedup_2x1_over_1x2": sw["speedup_2x1_over_1x2"],
                    "memory/peak_rss_mib": res["memory"]["peak_rss_mib"]})
    if res["gpu"].get("available"):
        for r in res["gpu"]["rows"]:
            metrics[f"gpu/harness_ratio/{r['cell']}_{r['task']}_T{r['seq_len']}"] = r["ratio"]
            metrics[f"gpu/bare_tokens_per_s/{r['cell']}_{r['task']}_T{r['seq_len']}"] = r["bare_tokens_per_s"]
    client.log_batch(rid, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, len(items), 500):
        client.log_batch(rid, metrics=items[i:i + 500])
    for f in files:
        client.log_artifact(rid, str(f))
    client.set_terminated(rid, "FINISHED")
    return rid


def _configure_logging() -> None:
    import mlflow  # noqa: F401  (it sets its own log level on import: import first, then quiet it)

    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric",
                 "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def run(s: Settings, out: Path, tracking_uri: str | None, keep: bool = False,
        log: Callable[[str], None] = print) -> dict:
    """Run every section with settings ``s``; write ``out/results.{md,json}``; log to MLflow
    at ``tracking_uri`` (None: do not log). Returns the results."""
    t_all = time.perf_counter()
    _configure_logging()
    torch.set_num_threads(s.threads)
    info = machine(s.threads)
    work = Path(tempfile.mkdtemp(prefix="rnnlab-bench-"))
    old_tempdir = tempfile.tempdir
    tempfile.tempdir = str(work)  # the harness's checkpoint folders land here and go with it
    store = Store(work)
    try:
        log(f"rnnlab bench{' --quick' if s.quick else ''}: {info['cpu']}, {info['cores']} cores, "
            f"torch {info['torch']}, {s.threads} threads, load average {info['loadavg_start']}")
        # Warm-up: imports, the store's schema, oneDNN, one harness run and one bare loop.
        cell, task, T = s.cells[0], s.tasks[-1], s.seq_lens[0]
        harness_run(s, store, cell, task, T, 2, 1)  # first: imports, schema, first-call costs
        warm = bare(s, "lstm", "char_lm", T, max(2, s.steps // 5), 1)
        rate = warm["flops_per_step"] * warm["tokens_per_s"] / (s.batch_size * T) / 1e9
        t = time.perf_counter()
        harness_run(s, store, cell, task, T, 2, 1)  # second: what one more run costs, fixed
        per_run_s = time.perf_counter() - t
        imports = measure_imports(store)  # for section 6, and what a process start costs
        s = replace(s, rate_gflops=rate)
        est = estimate_seconds(s, rate, per_run_s, per_process_s=imports["wall_s"] + 1.0) \
            + (time.perf_counter() - t_all)
        log(f"estimated duration: ~{est:.0f} s (training at ~{rate:.1f} GFLOP/s, "
            f"~{per_run_s:.1f} s fixed cost per harness run)")

        log("1. harness vs bare loop")
        harness_rows = section_harness(s, store, log)
        log("1b. where the harness's time per step goes")
        attribution = section_attribution(s, store, log)
        log("2. roofline")
        peak = sgemm_gflops(s.sgemm_n)
        log(f"  sgemm {s.sgemm_n}²: {peak['gflops']:.1f} GFLOP/s")
        roof = section_roofline(s, harness_rows, peak)
        log("3. fused vs reference cells")
        ref_rows = section_reference(s, log)
        log("4. diagnostics cost")
        diag_rows = section_diagnostics(s, store, log)
        log("5. sweep parallelism")
        sweep_res = section_sweep(s, store, log)
        log("6. memory")
        mem = section_memory(s, store, log, imports)
        gpu = {"available": False}
        if torch.cuda.is_available():
            log("GPU")
            gpu = section_gpu(s, store, log)
        info["loadavg_end"] = round(os.getloadavg()[0], 2)
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()}
        res = {"machine": info, "settings": settings,
               "duration": {"estimated_s": est, "actual_s": time.perf_counter() - t_all},
               "harness_vs_bare": harness_rows, "attribution": attribution, "roofline": roof, "fused_vs_reference": ref_rows,
               "diagnostics": diag_rows, "sweep": sweep_res, "memory": mem, "gpu": gpu,
               "targets": {"harness_ratio_min": TARGET_HARNESS_RATIO,
                           "diagnostics_overhead_max": TARGET_DIAG_OVERHEAD,
                           "sweep_preset": PRESET_SWEEP}}
        res["warnings"] = check_targets(res)
        out.mkdir(parents=True, exist_ok=True)
        md, js = out / "results.md", out / "results.json"
        res["duration"]["actual_s"] = time.perf_counter() - t_all
        md.write_text(to_markdown(res))
        js.write_text(json.dumps(res, indent=2) + "\n")
        if tracking_uri:
            res["mlflow_run_id"] = log_to_mlflow(res, tracking_uri, [md, js])
            js.write_text(json.dumps(res, indent=2) + "\n")
        return res
    finally:
        tempfile.tempdir = old_tempdir
        if keep:
            log(f"kept the benchmark's working folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
