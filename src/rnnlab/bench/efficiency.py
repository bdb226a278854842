"""Sweep efficiency: how much of a sweep's wall time is training, against a bare PyTorch loop.

    efficiency = sum over runs of (steps x bare ms/step) / (wall time x jobs)

The sweep is the user's own command (``src/train.py -m ...``), timed as a whole process: its
imports, its parent run, its workers and the end of the process all count; the comparison
report, drawn in the background after the process returned (``sweep.report=background``), does
not (the bench waits for it before it measures anything else). The bare side is
:func:`rnnlab.bench.bare_loop.bare_run` on each run's configuration, one process, one thread,
in this benchmark's process. What the difference is made of is read back from the store:

* ``runs``: the MLflow runs' own durations (start to end) beyond their steps at the bare
  rate, i.e. the harness's per-step overhead, validation and test, diagnostics, tracking;
* ``outside runs``: the rest of ``wall x jobs``: interpreter start and imports (the parent's,
  then each worker's once), Hydra's launcher, the parent run, the report, idle workers at the
  end of the grid.

A sweep also evaluates: every run validates ``max_steps / val_check_interval`` times and tests
once, on splits the preset sizes. A hand-written loop with the same schedule pays for those
forward passes too, so ``efficiency with evaluation`` adds them to the bare side
(:func:`rnnlab.bench.bare_loop.bare_eval`: forward and loss over each split, per run
configuration): what is left between it and 1 is the harness's own cost.

The machine's own parallel scaling is measured too: the bare loop alone, and in ``jobs``
processes at once. Two jobs sharing caches and memory bandwidth run each step slower than one,
which no harness can win back; ``efficiency / scaling`` is the efficiency against a bare loop
run with the same parallelism.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient

from rnnlab import runs
from rnnlab.bench.harness import Store, compose, quiet
from rnnlab.bench.processes import child_env, run_measured, train_cmd
from rnnlab.bench.settings import Settings

Row = dict[str, Any]
# The run params that fix a run's cost per step (the rest, e.g. the clip or the seed, do not).
COST_KEYS = ("cell.name", "task", "seq_len", "batch_size", "cell.hidden_size", "model.embed_dim",
             "cell.num_layers")


def _cost_key(run) -> tuple[str, ...]:
    return tuple(run.data.tags["task"] if k == "task" else run.data.params[k] for k in COST_KEYS)


def _overrides(key: tuple[str, ...]) -> list[str]:
    cell, task, seq_len, batch, hidden, embed, layers = key
    return [f"cell={cell}", f"task={task}", f"seq_len={seq_len}", f"batch_size={batch}",
            f"cell.hidden_size={hidden}", f"model.embed_dim={embed}", f"cell.num_layers={layers}", "threads=1"]


def bare_ms_per_step(key: tuple[str, ...], steps: int, warmup: int) -> float:
    """The bare loop's ms per step for one run configuration, one thread, in this process."""
    import torch

    from rnnlab.bench.bare_loop import bare_run

    torch.set_num_threads(1)
    with quiet():
        r = bare_run(compose(_overrides(key)), steps, warmup)
    return 1000 * r["train_s"] / steps


def bare_eval_s(key: tuple[str, ...]) -> dict[str, float]:
    """The bare loop's seconds for one pass over the val and the test split, one thread."""
    import torch

    from rnnlab.bench.bare_loop import bare_eval

    torch.set_num_threads(1)
    with quiet():
        return bare_eval(compose(_overrides(key)))


def _passes(client: MlflowClient, run) -> tuple[int, int]:
    """How many validations and tests a run made (its model-selection metric's history)."""
    main = run.data.tags.get(runs.MAIN_METRIC)
    n_val = len(client.get_metric_history(run.info.run_id, main)) if main else 0
    n_test = int(any(k.startswith("test/") for k in run.data.metrics))
    return n_val, n_test


def _bare_in_child(args: tuple[tuple[str, ...], int, int]) -> float:
    return bare_ms_per_step(*args)


def parallel_scaling(key: tuple[str, ...], jobs: int, steps: int, warmup: int) -> Row:
    """The bare loop's ms per step alone, then in ``jobs`` fresh processes at once."""
    alone = bare_ms_per_step(key, steps, warmup)
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:  # not fork: torch is running here
        pool.map(_bare_in_child, [(key, 2, 1)] * jobs)  # imports paid before the timed round
        together = pool.map(_bare_in_child, [(key, steps, warmup)] * jobs)
    return {"config": dict(zip(COST_KEYS, key)), "jobs": jobs, "alone_ms_per_step": alone,
            "parallel_ms_per_step": statistics.mean(together),
            "scaling": alone / statistics.mean(together)}


def _sweep_runs(uri: str, experiment: str) -> list[tuple[Any, int]]:
    """The sweep's runs, each with its last training step."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RuntimeError(f"the sweep logged no experiment {experiment!r}")
    found = client.search_runs([exp.experiment_id], max_results=5000)
    children = [r for r in found if runs.PARENT in r.data.tags]
    if not children:
        raise RuntimeError(f"no runs of the sweep in experiment {experiment!r}")
    # the last training step: grad_norm/max is logged there when a run ends
    return [(r, max((m.step for m in client.get_metric_history(r.info.run_id, "grad_norm/max")),
                    default=int(r.data.params["trainer.max_steps"]))) for r in children]


def grid_size(overrides: Sequence[str]) -> tuple[int, dict[str, int]]:
    """For the estimate: how many runs a sweep command makes, and the size of its largest run
    (batch, length, hidden, steps), from its preset's sweeper params and the command line."""
    from omegaconf import OmegaConf

    from rnnlab import paths

    values: dict[str, Any] = {"batch_size": 64, "seq_len": 100, "cell.hidden_size": 128, "trainer.max_steps": 400}
    sweeps: dict[str, str] = {}
    for o in overrides:
        if o.startswith("+experiment="):
            preset = OmegaConf.load(paths.config_dir() / "experiment" / f"{o.split('=', 1)[1]}.yaml")
            sweeps.update({k: str(v) for k, v in preset.hydra.sweeper.params.items()})
            values.update({k: OmegaConf.select(preset, k) for k in values if OmegaConf.select(preset, k) is not None})
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.removeprefix("hydra.sweeper.params.")
        if "," in value or o.startswith("hydra.sweeper.params."):
            sweeps[key] = value
        elif key in values:
            values[key] = value
    n = 1
    for key, value in sweeps.items():
        choices = value.split(",")
        n *= len(choices)
        if key in values:
            values[key] = max(int(c) for c in choices)
    return n, {"batch_size": int(values["batch_size"]), "seq_len": int(values["seq_len"]),
               "hidden_size": int(values["cell.hidden_size"]), "max_steps": int(values["trainer.max_steps"])}


@dataclass(frozen=True)
class TimedSweep:
    """One sweep command, run and timed: where its runs went, so that they can be priced later
    (section 5 times its sweeps this way, and 5b prices the one it shares rather than rerun it)."""

    overrides: tuple[str, ...]  # as a user types them, less hydra.launcher.n_jobs
    jobs: int
    wall_s: float
    uri: str
    experiment: str
    started: float  # epoch seconds when the process was launched
    dir: str  # its hydra.sweep.dir (each job's launch.json is there)

    def runs(self, overrides: Sequence[str], jobs: int) -> bool:
        """Whether this is the command ``overrides`` at ``jobs`` (Hydra ignores their order)."""
        return jobs == self.jobs and sorted(overrides) == sorted(self.overrides)

    @property
    def command(self) -> str:
        return "python src/train.py -m " + " ".join([*self.overrides, f"hydra.launcher.n_jobs={self.jobs}"])


def time_sweep(store: Store, name: str, overrides: Sequence[str], jobs: int) -> TimedSweep:
    """``src/train.py -m`` with ``overrides`` at ``jobs`` jobs, as a whole process, into a store
    of its own."""
    experiment = f"bench_{name}"
    cmd = train_cmd("-m", *overrides, f"hydra.launcher.n_jobs={jobs}", f"hydra.sweep.dir={store.dir / name}",
                    f"tracking.artifact_root={store.artifacts}", f"tracking.experiment={experiment}")
    uri = store.fresh_db(name)
    started = time.time()
    wall = run_measured(cmd, child_env(uri), store.dir, store.dir / f"{name}.log", timeout=3600)["wall_s"]
    from rnnlab import sweep

    if (store.dir / name / sweep.REPORT_LOG).is_file():  # its report, drawn after the process ended: not
        sweep.wait_for_report(store.dir / name)  # in its wall time, and not beside the next measurement
    return TimedSweep(tuple(overrides), jobs, wall, uri, experiment, started, str(store.dir / name))


def timed_or_run(store: Store, name: str, overrides: Sequence[str], jobs: int,
                 timed: Sequence[TimedSweep]) -> tuple[TimedSweep, bool]:
    """The sweep ``overrides`` at ``jobs``: one in ``timed`` that ran that command, else run now
    (as ``name``); and whether it was timed earlier."""
    earlier = next((t for t in timed if t.runs(overrides, jobs)), None)
    return (earlier, True) if earlier else (time_sweep(store, name, overrides, jobs), False)


def measure_case(s: Settings, name: str, sweep: TimedSweep) -> Row:
    """A timed sweep's runs, priced at the bare loop's rate."""
    uri, wall, jobs = sweep.uri, sweep.wall_s, sweep.jobs
    found = _sweep_runs(uri, sweep.experiment)
    keys = sorted({_cost_key(r) for r, _ in found})
    bare_ms = {k: bare_ms_per_step(k, s.efficiency_steps, s.warmup) for k in keys}
    ideal = sum(steps * bare_ms[_cost_key(r)] / 1000 for r, steps in found)
    eval_s = {k: bare_eval_s(k) for k in keys}
    client = MlflowClient(uri)
    passes = [_passes(client, r) for r, _ in found]
    evaluation = sum(n_val * eval_s[_cost_key(r)]["val"] + n_test * eval_s[_cost_key(r)]["test"]
                     for (r, _), (n_val, n_test) in zip(found, passes))
    in_runs = sum((r.info.end_time - r.info.start_time) / 1000 for r, _ in found)
    return {"case": name, "command": sweep.command, "runs": len(found), "jobs": jobs,
            "steps": sum(steps for _, steps in found),
            "wall_s": wall, "ideal_s": ideal, "efficiency": ideal / (wall * jobs),
            "bare_eval_s": evaluation, "efficiency_with_eval": (ideal + evaluation) / (wall * jobs),
            "validations": sum(v for v, _ in passes), "tests": sum(t for _, t in passes),
            "in_runs_s": in_runs, "outside_runs_s": wall * jobs - in_runs,
            "run_overhead_s_per_run": (in_runs - ideal) / len(found),
            "bare_ms_per_step": {"/".join(k): v for k, v in bare_ms.items()}}


def measure_efficiency(s: Settings, store: Store, log, timed: Sequence[TimedSweep] = ()) -> Row:
    """Each case of ``s.efficiency_sweeps``; a command already in ``timed`` is priced, not rerun."""
    cases = []
    for name, overrides in s.efficiency_sweeps:
        sweep, earlier = timed_or_run(store, f"eff-{name}", overrides, s.efficiency_jobs, timed)
        row = measure_case(s, name, sweep)
        row["timed_earlier"] = earlier
        log(f"  {name}: {row['runs']} runs, {row['jobs']} jobs: wall {row['wall_s']:.1f} s, bare "
            f"{row['ideal_s']:.1f} s of 1-thread training -> efficiency {row['efficiency']:.2f} "
            f"({row['efficiency_with_eval']:.2f} with {row['bare_eval_s']:.1f} s of bare evaluation); per run "
            f"{row['run_overhead_s_per_run']:.2f} s beyond bare steps; outside runs {row['outside_runs_s']:.1f} job-s")
        cases.append(row)
    key = ("lstm", *s.efficiency_scaling_config)
    scaling = parallel_scaling(key, s.efficiency_jobs, s.efficiency_steps, s.warmup)
    log(f"  bare loop alone {scaling['alone_ms_per_step']:.2f} ms/step, {scaling['jobs']} at once "
        f"{scaling['parallel_ms_per_step']:.2f} ms/step each: parallel scaling {scaling['scaling']:.2f}")
    for row in cases:
        row["efficiency_vs_parallel_bare"] = row["efficiency"] / scaling["scaling"]
    return {"cases": cases, "scaling": scaling}
