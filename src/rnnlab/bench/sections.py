"""The benchmark's sections, as one list: each knows how to run and how long it will take, so
that the duration printed before the run is the sum over the very sections that then run.

Every ratio compares two things measured in the same process, interleaved, so that a shared or
throttled machine moves both sides alike. Measured numbers: ``experiments/bench/results.md``;
what each column means: ``experiments/bench/README.md``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from types import MappingProxyType
from typing import Any

import torch

from rnnlab.bench import breakdown, efficiency, fixed_costs, scan
from rnnlab.bench.bare_loop import bare
from rnnlab.bench.flops import sgemm_gflops, step_flops, task_shape, timed_steps
from rnnlab.bench.harness import Store, harness_run
from rnnlab.bench.processes import child_env, run_measured, train_cmd
from rnnlab.bench.settings import PRESET_SWEEP, Settings
from rnnlab.bench.timing import interleave, median
from rnnlab.cells.params import train_step_flops
from rnnlab.config import MODERN_CELLS

Row = dict[str, Any]
Results = dict[str, Any]
Log = Callable[[str], None]

NO_STEP_LOGGING = ("trainer.log_every_n_steps=1000000",)
# Rough factors for the estimate only: how much slower the reference cells train than the fused
# ones, and how much validation adds to a fit with diagnostics.
REFERENCE_SLOWDOWN = 1.3
VALIDATION_SHARE = 1.1


@dataclass(frozen=True)
class Bench:
    """What every section measures with."""

    s: Settings
    store: Store
    log: Log
    imports: dict[str, float]  # a process that only imports (section 6's floor)
    sweeps: list[efficiency.TimedSweep] = field(default_factory=list)  # timed so far, for 5b to price


@dataclass(frozen=True)
class Costs:
    """What the warm-up measured, from which each section estimates its own duration."""

    gflops: float  # training FLOP rate
    per_run_s: float  # fixed cost of one harness run, beyond its steps
    per_process_s: float  # starting a process that imports everything

    def train_s(self, flops_per_step: float, steps: float) -> float:
        return steps * flops_per_step / (self.gflops * 1e9)


def _always() -> bool:
    return True


def _nothing() -> Any:
    return None


def _free(s: Settings, c: Costs) -> float:
    return 0.0


@dataclass(frozen=True)
class Section:
    key: str  # its entry in results.json
    title: str  # its progress line
    measure: Callable[[Bench, Results], Any]  # given the results of the sections before it
    estimate: Callable[[Settings, Costs], float] = _free  # seconds
    applies: Callable[[], bool] = _always
    absent: Callable[[], Any] = _nothing  # the result when it does not apply
    needs: tuple[str, ...] = ()  # sections whose results it reads

    def run(self, b: Bench, done: Results) -> Any:
        if not self.applies():
            return self.absent()
        b.log(self.title)
        return self.measure(b, done)


# -- 1. harness vs bare loop (and the GPU section: the same comparison on CUDA) --------------
@dataclass(frozen=True)
class Pair:
    cell: str
    task: str
    seq_len: int
    steps: int
    harness: list[dict[str, float]]
    bare: list[dict[str, float]]

    @property
    def ratio(self) -> float:
        return median(self.harness) / median(self.bare)


def _configs(s: Settings) -> Iterator[tuple[str, int, str]]:
    for task in s.tasks:
        for seq_len in s.seq_lens:
            for cell in s.cells:
                yield task, seq_len, cell


def harness_vs_bare(b: Bench, steps: Callable[[str, str, int], int], device: str = "cpu",
                    width: int = 9) -> Iterator[Pair]:
    """Every configuration, harness and bare loop interleaved, on ``device`` ("cpu", "cuda")."""
    s = b.s
    for task, seq_len, cell in _configs(s):
        n = steps(cell, task, seq_len)
        h, r = interleave(
            s.repeats,
            partial(harness_run, b.s, b.store, cell, task, seq_len, n, s.warmup,
                    accelerator="gpu" if device == "cuda" else "cpu"),
            partial(bare, s, cell, task, seq_len, n, s.warmup, device=device))
        p = Pair(cell, task, seq_len, n, h, r)
        b.log(f"  {cell:4} {task:7} T={seq_len:<4} harness {median(h):>{width},.0f} tok/s  "
              f"bare {median(r):>{width},.0f} tok/s  ratio {p.ratio:.3f}")
        yield p


def measure_harness(b: Bench, done: Results) -> list[Row]:
    return [{"cell": p.cell, "task": p.task, "seq_len": p.seq_len, "steps": p.steps,
             "harness_tokens_per_s": median(p.harness), "bare_tokens_per_s": median(p.bare),
             "ratio": p.ratio, "flops_per_step": p.bare[0]["flops_per_step"],
             "harness_runs": [r["tokens_per_s"] for r in p.harness],
             "bare_runs": [r["tokens_per_s"] for r in p.bare]}
            for p in harness_vs_bare(b, partial(timed_steps, b.s))]


def estimate_harness(s: Settings, c: Costs) -> float:
    total = 0.0
    for task, T, cell in _configs(s):
        n = (timed_steps(s, cell, task, T) + s.warmup + 1) * s.repeats
        total += 2 * c.train_s(step_flops(s, cell, task, T), n) + s.repeats * c.per_run_s
    return total


def measure_gpu(b: Bench, done: Results) -> Row:
    """Section 1 on CUDA (a GPU step is milliseconds, so ``max_steps_factor`` times the timed
    steps), then section 3b on CUDA at ``gpu_scan_*``: where Feng et al. measured their speed-ups."""
    s = b.s
    peak = sgemm_gflops(4096 if not s.quick else 512, "cuda")
    rows = [{"cell": p.cell, "task": p.task, "seq_len": p.seq_len, "steps": p.steps,
             "harness_tokens_per_s": median(p.harness), "bare_tokens_per_s": median(p.bare),
             "ratio": p.ratio,
             "bare_fraction_of_peak": p.bare[0]["flops_per_step"] / (s.batch_size * p.seq_len)
             * median(p.bare) / 1e9 / peak["gflops"]}
            for p in harness_vs_bare(b, lambda cell, task, seq_len: s.steps * s.max_steps_factor, "cuda",
                                     width=11)]
    b.log("  3b on the GPU")
    scans = scan.measure(s.gpu_scan_seq_lens, s.gpu_scan_hiddens, s.gpu_scan_batch, s.scan_steps, s.repeats,
                         b.log, device="cuda")
    return {"available": True, "device": torch.cuda.get_device_name(0), "sgemm": peak, "rows": rows,
            "scan": scans}


def estimate_gpu(s: Settings, c: Costs) -> float:
    """The harness runs' fixed cost (their steps take milliseconds) and the step-by-step scans,
    which launch a few kernels per time step: about 20 µs each, forward and backward."""
    if not torch.cuda.is_available():
        return 0.0
    runs = len(list(_configs(s))) * s.repeats * (c.per_run_s + 1.0)
    scans = sum(len(MODERN_CELLS) * (s.scan_steps + 1) * s.repeats * T * 30 * 20e-6
                for T in s.gpu_scan_seq_lens for _ in s.gpu_scan_hiddens)
    return runs + scans


def no_gpu() -> Row:
    return {"available": False}


# -- 1b. where the harness's time per step goes ---------------------------------------------
@dataclass(frozen=True)
class Case:
    cell: str
    task: str
    seq_len: int
    steps: int
    batch_size: int
    hidden_size: int
    embed_dim: int
    shape: tuple[str, ...]  # overrides for a shape other than the settings'

    def flops_per_step(self) -> int:
        return train_step_flops(self.cell, self.batch_size, self.seq_len, self.hidden_size, self.embed_dim,
                                **task_shape(self.task))


def attribution_cases(s: Settings) -> list[Case]:
    """The cheapest real configuration, where per-step costs weigh most, and a toy model whose
    compute is next to nothing, so that what remains is the fixed cost per step."""
    T = min(s.seq_lens)
    real = Case("rnn", "adding", T, timed_steps(s, "rnn", "adding", T), s.batch_size, s.hidden_size,
                s.embed_dim, ())
    toy = ("cell.hidden_size=8", "model.embed_dim=8", "batch_size=8")
    return [real, Case("rnn", "adding", 4, s.fixed_steps, 8, 8, 8, toy)]


def measure_attribution(b: Bench, done: Results) -> list[Row]:
    """In ms per step: the harness as is, the harness without its logging steps
    (``log_every_n_steps`` beyond the run: no metric leaves the LightningModule, no grad-norm
    logging) and the bare loop, which splits the harness's overhead into logging and the rest."""
    s = b.s
    rows: list[Row] = []
    for c in attribution_cases(s):
        run = partial(harness_run, s, b.store, c.cell, c.task, c.seq_len, c.steps, s.warmup)
        sides = {"harness": partial(run, extra=c.shape),
                 "harness_no_step_logging": partial(run, extra=(*c.shape, *NO_STEP_LOGGING)),
                 "bare": partial(bare, s, c.cell, c.task, c.seq_len, c.steps, s.warmup, extra=c.shape)}
        runs = dict(zip(sides, interleave(s.repeats, *sides.values())))
        ms = {k: 1000 * c.batch_size * c.seq_len / median(v) for k, v in runs.items()}
        row: Row = {"cell": c.cell, "task": c.task, "seq_len": c.seq_len, "batch_size": c.batch_size,
               "hidden_size": c.hidden_size,
               **{f"{k}_ms_per_step": v for k, v in ms.items()},
               **{f"{k}_cpu_ms_per_step": 1000 * median(v, "cpu_s_per_step") for k, v in runs.items()}}
        rows.append(row)
        b.log(f"  {c.cell} {c.task} T={c.seq_len} B={c.batch_size} H={c.hidden_size}: harness "
              f"{ms['harness']:.2f} ms/step, without logging steps {ms['harness_no_step_logging']:.2f}, "
              f"bare {ms['bare']:.2f}")
    return rows


def estimate_attribution(s: Settings, costs: Costs) -> float:
    # three sides, two of them harness runs
    return sum(s.repeats * (3 * costs.train_s(c.flops_per_step(), c.steps + s.warmup + 1) + 2 * costs.per_run_s)
               for c in attribution_cases(s))


# -- 2. roofline ----------------------------------------------------------------------------
def measure_roofline(b: Bench, done: Results) -> Row:
    peak = sgemm_gflops(b.s.sgemm_n)
    b.log(f"  sgemm {b.s.sgemm_n}²: {peak['gflops']:.1f} GFLOP/s")
    rows: list[Row] = []
    for r in done["harness_vs_bare"]:
        per_token = r["flops_per_step"] / (b.s.batch_size * r["seq_len"])
        bare_gf = per_token * r["bare_tokens_per_s"] / 1e9
        harness_gf = per_token * r["harness_tokens_per_s"] / 1e9
        rows.append({"cell": r["cell"], "task": r["task"], "seq_len": r["seq_len"],
                     "gflop_per_step": r["flops_per_step"] / 1e9,
                     "bare_gflops": bare_gf, "harness_gflops": harness_gf,
                     "bare_fraction_of_peak": bare_gf / peak["gflops"],
                     "harness_fraction_of_peak": harness_gf / peak["gflops"]})
    return {"sgemm": peak, "rows": rows}


# -- 3. fused vs reference cells ------------------------------------------------------------
def measure_reference(b: Bench, done: Results) -> list[Row]:
    s = b.s
    rows: list[Row] = []
    for seq_len in s.seq_lens:
        for cell in s.cells:
            n = timed_steps(s, cell, "adding", seq_len, s.ref_steps)
            f, r = interleave(
                s.repeats,
                partial(bare, s, cell, "adding", seq_len, n, s.warmup),
                partial(bare, s, cell, "adding", seq_len, n, s.warmup, extra=("cell.impl=reference",)))
            row: Row = {"cell": cell, "task": "adding", "seq_len": seq_len, "steps": n,
                   "fused_tokens_per_s": median(f), "reference_tokens_per_s": median(r),
                   "fused_over_reference": median(f) / median(r)}
            rows.append(row)
            b.log(f"  {cell:4} T={seq_len:<4} fused {row['fused_tokens_per_s']:>9,.0f} tok/s  reference "
                  f"{row['reference_tokens_per_s']:>9,.0f} tok/s  fused/reference {row['fused_over_reference']:.2f}")
    return rows


def estimate_reference(s: Settings, c: Costs) -> float:
    total = 0.0
    for T in s.seq_lens:
        for cell in s.cells:
            n = timed_steps(s, cell, "adding", T, s.ref_steps)
            total += c.train_s(step_flops(s, cell, "adding", T), (n + s.warmup) * s.repeats) * (1 + REFERENCE_SLOWDOWN)
    return total


# -- 3b. the modern cells: parallel scan vs step by step ------------------------------------
def measure_scan(b: Bench, done: Results) -> list[Row]:
    s = b.s
    return scan.measure(s.scan_seq_lens, s.scan_hiddens, s.scan_batch, s.scan_steps, s.repeats, b.log)


def estimate_scan(s: Settings, c: Costs) -> float:
    # the sequential forms dominate: about 0.5 ms per step of B x H per cell on this CPU, fwd + bwd
    return sum(3 * 2 * (s.scan_steps + 1) * s.repeats * T * 5e-4 * (1 + s.scan_batch * h / 4096)
               for T in s.scan_seq_lens for h in s.scan_hiddens)


# -- 4. diagnostics cost --------------------------------------------------------------------
def measure_diagnostics(b: Bench, done: Results) -> list[Row]:
    s = b.s
    rows: list[Row] = []
    interval = () if s.diag_val_interval is None else (f"trainer.val_check_interval={s.diag_val_interval}",)
    for i, cell in enumerate(s.diag_cells):
        # the timing window is irrelevant here (it covers all but the last step): fit_s counts
        run = partial(harness_run, s, b.store, cell, s.diag_task, s.diag_seq_len, s.diag_steps - 1, 0)
        on_ = partial(run, extra=(*interval, "diagnostics.enabled=true"))
        off_ = partial(run, extra=(*interval, "diagnostics.enabled=false"))
        if i % 2 == 0:  # alternate which side goes first from one cell to the next
            on, off = interleave(s.diag_repeats, on_, off_)
        else:
            off, on = interleave(s.diag_repeats, off_, on_)
        fit_on, fit_off = median(on, "fit_s"), median(off, "fit_s")
        row: Row = {"cell": cell, "task": s.diag_task, "seq_len": s.diag_seq_len, "steps": s.diag_steps,
               "fit_s_on": fit_on, "fit_s_off": fit_off, "on_over_off": fit_on / fit_off,
               "diag_hooks_s": median(on, "diag_s"),
               "diag_share_of_fit": median(on, "diag_s") / fit_off}
        rows.append(row)
        b.log(f"  {cell:4} fit on {fit_on:.2f} s  off {fit_off:.2f} s  (+{100 * (fit_on / fit_off - 1):.1f}%)  "
              f"time in diagnostics hooks {row['diag_hooks_s']:.2f} s ({100 * row['diag_share_of_fit']:.1f}%)")
    return rows


def estimate_diagnostics(s: Settings, c: Costs) -> float:
    return sum(2 * s.diag_repeats * (c.train_s(step_flops(s, cell, s.diag_task, s.diag_seq_len),
                                               s.diag_steps * VALIDATION_SHARE) + c.per_run_s)
               for cell in s.diag_cells)


# -- 5. sweep parallelism -------------------------------------------------------------------
SWEEP_LAYOUTS: Mapping[str, tuple[int, int]] = MappingProxyType({"1x2": (1, 2), "2x1": (2, 1)})  # jobs x threads


def measure_sweep(b: Bench, done: Results) -> Row:
    s = b.s
    walls: dict[str, list[float]] = {m: [] for m in SWEEP_LAYOUTS}
    k = 0
    for r in range(s.sweep_repeats):
        for mode in (("1x2", "2x1") if r % 2 == 0 else ("2x1", "1x2")):
            jobs, threads = SWEEP_LAYOUTS[mode]
            k += 1
            sweep = efficiency.time_sweep(b.store, f"sweep{k}-{mode}", s.sweep_command(threads), jobs)
            b.sweeps.append(sweep)
            walls[mode].append(sweep.wall_s)
            b.log(f"  {mode} ({jobs} job{'s' if jobs > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}): "
                  f"{sweep.wall_s:.1f} s")
    med = {m: statistics.median(v) for m, v in walls.items()}
    faster = min(med, key=lambda m: med[m])
    return {"runs": s.sweep_size, "overrides": [*s.sweep_runs, *s.sweep_overrides],
            "wall_s_1x2": med["1x2"], "wall_s_2x1": med["2x1"],
            "walls_1x2": walls["1x2"], "walls_2x1": walls["2x1"],
            "speedup_2x1_over_1x2": med["1x2"] / med["2x1"], "faster": faster,
            "preset": PRESET_SWEEP, "preset_is_faster": faster == PRESET_SWEEP}


def _sweep_run(s: Settings, cell: str) -> tuple[int, int]:
    """FLOPs per step and steps of one run of section 5's sweep (its overrides)."""
    sw = {k: v for k, _, v in (o.partition("=") for o in s.sweep_overrides)}
    flops = train_step_flops(cell, int(sw["batch_size"]), int(sw["seq_len"]), int(sw["cell.hidden_size"]),
                             s.embed_dim, **task_shape("adding"))
    return flops, int(sw["trainer.max_steps"])


def estimate_sweep(s: Settings, c: Costs) -> float:
    n_runs = s.sweep_size
    flops, max_steps = _sweep_run(s, "lstm")
    steps_s = n_runs * c.train_s(flops, max_steps) * s.threads  # one thread per run at worst
    one_job = c.per_process_s + n_runs * c.per_run_s + steps_s
    two_jobs = 2.5 * c.per_process_s + n_runs / 2 * c.per_run_s + steps_s / 2  # 3 processes import
    return s.sweep_repeats * (one_job + two_jobs)


# -- 5b. sweep efficiency ------------------------------------------------------------------
def measure_sweep_efficiency(b: Bench, done: Results) -> Row:
    return efficiency.measure_efficiency(b.s, b.store, b.log, b.sweeps)


def estimate_sweep_efficiency(s: Settings, c: Costs) -> float:
    """Each sweep's bare training at one job per core, its runs' fixed costs and its imports;
    then the bare side (a few steps per configuration) and the scaling check."""
    total = 0.0
    for _, overrides in s.efficiency_sweeps:
        n_runs, per_run = efficiency.grid_size(overrides)
        flops = train_step_flops("lstm", per_run["batch_size"], per_run["seq_len"], per_run["hidden_size"],
                                 s.embed_dim, **task_shape("adding"))
        total += 12 * c.train_s(flops, s.efficiency_steps + s.warmup)
        if overrides != s.sweep_command(1):  # section 5 timed that one
            total += (n_runs * (c.train_s(flops, per_run["max_steps"]) + c.per_run_s) / s.efficiency_jobs
                      + 2 * c.per_process_s)
    return total + 3 * c.per_process_s


# -- 5c. one run, phase by phase ----------------------------------------------------------
def measure_breakdown(b: Bench, done: Results) -> Row:
    return breakdown.measure(b.s, b.store, b.log)


def estimate_breakdown(s: Settings, c: Costs) -> float:
    """A warm-up run, then each repeat's run and its bare loop (steps, then one evaluation)."""
    steps_s = c.train_s(*_sweep_run(s, s.breakdown_cell)) * s.threads  # one thread
    return (1 + s.breakdown_repeats) * (c.per_run_s + steps_s) + s.breakdown_repeats * steps_s


# -- 5d. fixed costs ------------------------------------------------------------------------
def measure_fixed_costs(b: Bench, done: Results) -> Row:
    return fixed_costs.measure(b.s, b.store, b.log, b.sweeps)


def estimate_fixed_costs(s: Settings, c: Costs) -> float:
    """Five importing processes, a cold run, the small sweep on Hydra's joblib launcher (on the
    warm one it is section 5's 2x1 sweep, read again), and both sweeps' bare side."""
    n_runs = s.sweep_size
    flops, max_steps = _sweep_run(s, "lstm")
    steps_s = n_runs * c.train_s(flops, max_steps) * s.threads
    one_sweep = 3 * c.per_process_s + n_runs / 2 * c.per_run_s + steps_s / 2
    return 6 * c.per_process_s + c.per_run_s + one_sweep + 12 * c.train_s(flops, s.efficiency_steps + s.warmup)


# -- 6. memory ------------------------------------------------------------------------------
def measure_memory(b: Bench, done: Results) -> Row:
    s, store = b.s, b.store
    run = run_measured(
        train_cmd(*s.memory_overrides, f"hydra.run.dir={store.dir / 'memory-run'}",
                  f"tracking.artifact_root={store.artifacts}", "tracking.experiment=bench_memory"),
        child_env(store.fresh_db("memory")), store.dir, store.dir / "memory.log")
    b.log(f"  default run: peak RSS {run['max_rss_mib']:.0f} MiB ({run['wall_s']:.1f} s); "
          f"imports alone: {b.imports['max_rss_mib']:.0f} MiB")
    return {"command": "python src/train.py " + " ".join(s.memory_overrides),
            "peak_rss_mib": run["max_rss_mib"], "wall_s": run["wall_s"],
            "imports_peak_rss_mib": b.imports["max_rss_mib"]}


def estimate_memory(s: Settings, c: Costs) -> float:
    return c.per_process_s + c.per_run_s


SECTIONS = (
    Section("harness_vs_bare", "1. harness vs bare loop", measure_harness, estimate_harness),
    Section("attribution", "1b. where the harness's time per step goes", measure_attribution,
            estimate_attribution),
    Section("roofline", "2. roofline", measure_roofline, needs=("harness_vs_bare",)),
    Section("fused_vs_reference", "3. fused vs reference cells", measure_reference, estimate_reference),
    Section("scan", "3b. modern cells: parallel scan vs step by step, and the fused cells", measure_scan,
            estimate_scan),
    Section("diagnostics", "4. diagnostics cost", measure_diagnostics, estimate_diagnostics),
    Section("sweep", "5. sweep parallelism", measure_sweep, estimate_sweep),
    Section("sweep_efficiency", "5b. sweep efficiency", measure_sweep_efficiency, estimate_sweep_efficiency,
            needs=("sweep",)),  # prices section 5's 2x1 sweep rather than running it again
    Section("run_breakdown", "5c. one run, phase by phase", measure_breakdown, estimate_breakdown),
    Section("fixed_costs", "5d. fixed costs: imports, first step, the small sweep's phases", measure_fixed_costs,
            estimate_fixed_costs, needs=("sweep",)),  # reads section 5's 2x1 sweep as its warm-launcher sweep
    Section("memory", "6. memory", measure_memory, estimate_memory),
    Section("gpu", "GPU", measure_gpu, estimate_gpu, applies=torch.cuda.is_available, absent=no_gpu),
)


def select(keys: tuple[str, ...] = ()) -> tuple[Section, ...]:
    """The sections named (all when none is), with those they need, in their usual order.
    Raises ValueError naming an unknown key and the valid ones."""
    by_key = {sec.key: sec for sec in SECTIONS}
    bad = [k for k in keys if k not in by_key]
    if bad:
        raise ValueError(f"unknown section {', '.join(map(repr, bad))}; valid: {', '.join(by_key)}")
    wanted, more = set(), set(keys or by_key)
    while more:  # and what those need, and so on
        wanted |= more
        more = {need for k in more for need in by_key[k].needs} - wanted
    return tuple(sec for sec in SECTIONS if sec.key in wanted)


def estimate_seconds(s: Settings, costs: Costs, sections: tuple[Section, ...] = SECTIONS) -> dict[str, float]:
    """Each section's own estimate, with windows sized at the measured FLOP rate (recorded
    beside the seconds each took: the estimates' constants are calibrated from that)."""
    s = replace(s, rate_gflops=costs.gflops)
    return {sec.key: sec.estimate(s, costs) for sec in sections}


def run_sections(b: Bench, sections: tuple[Section, ...] = SECTIONS) -> tuple[Results, dict[str, float]]:
    """Each section's results, and the seconds each took (to check the estimate against)."""
    done: Results = {}
    took: dict[str, float] = {}
    for sec in sections:
        t = time.perf_counter()
        done[sec.key] = sec.run(b, done)
        took[sec.key] = time.perf_counter() - t
    return done, took
