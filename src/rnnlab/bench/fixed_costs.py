"""Section 5d: the fixed costs, in one table (issue #40), every number from this one run.

* **Imports**: a process that imports torch, torch + Lightning, torch + MLflow, ``rnnlab.run``
  (each a fresh process, wall time), and from ``python -X importtime -c "import rnnlab.run"``
  what Lightning and MLflow bring in themselves (scipy.signal, matplotlib, sympy, pandas), and
  who imported each.
* **First step**: a cold process (``python src/train.py`` with one run of the small sweep,
  from the process's start to its first training step), and a warm worker (rnnlab's
  launcher: from a worker taking the job to its first step; the first jobs also from the
  launch, when the pool was made).
* **The small sweep** (section 5's six runs, 2 jobs x 1 thread), on the warm launcher and on
  Hydra's joblib launcher, whole processes: wall time against its ideal (the bare loop's steps
  for its runs, spread over the jobs), and each phase, read from the MLflow runs' times.

A run's first step is read from its first ``train/loss`` point (logged every
``log_every_n_steps``), less the steps before it at the rate of the next points.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from rnnlab.bench import efficiency
from rnnlab.bench.harness import Store
from rnnlab.bench.processes import child_env, run_measured, train_cmd
from rnnlab.bench.settings import Settings

Row = dict[str, Any]
TARGET_SWEEP_FIXED_S = 5.0  # the small sweep's wall beyond its ideal, on 2 cores
TARGET_WARM_FIRST_STEP_S = 3.0  # a warm worker: from taking a job to its first step
LAUNCHERS = ("warm", "joblib")
IMPORTS = {"torch": "import torch", "torch + Lightning": "import torch, pytorch_lightning",
           "torch + MLflow": "import torch, mlflow", "rnnlab.run": "import rnnlab.run"}
FORCED = ("scipy.signal", "matplotlib", "sympy", "pandas")  # what the libraries import themselves


def _import_s(code: str, store: Store, name: str) -> float:
    return run_measured([sys.executable, "-c", code], child_env(store.fresh_db(name)), store.dir,
                        store.dir / f"{name}.log")["wall_s"]


def forced_imports(store: Store) -> list[Row]:
    """From ``-X importtime``: each of :data:`FORCED`'s cumulative import time and its chain of
    importers up to the first module outside the library that pulled it in."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import rnnlab.run"], capture_output=True,
                          text=True, env=child_env(store.fresh_db("importtime")), cwd=store.dir, timeout=900)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)) / 1e6, (len(m.group(3)) - 1) // 2, m.group(4)))
    found = []
    for target in FORCED:
        for i, (cum, level, name) in enumerate(rows):
            if name != target:
                continue
            chain = []
            for _, lvl, parent in rows[i + 1:]:  # importtime prints a module's imports before it
                if lvl < level:
                    chain.append(parent)
                    level = lvl
                if lvl == 0:
                    break
            found.append({"module": target, "import_s": cum, "imported_by": chain[0] if chain else "?",
                          "via": chain[-2] if len(chain) > 1 else chain[-1] if chain else "?"})
            break
    return found


def first_step_time(client: MlflowClient, run_id: str) -> float:
    """Epoch seconds at the end of a run's first training step."""
    points = sorted((m.step, m.timestamp / 1000) for m in client.get_metric_history(run_id, "train/loss"))
    if not points:
        raise RuntimeError(f"run {run_id} logged no train/loss")
    (s1, t1), rest = points[0], points[1:]
    per_step = (rest[0][1] - t1) / max(1, rest[0][0] - s1) if rest else 0.0
    return t1 - max(0, s1 - 1) * per_step


def cold_first_step(s: Settings, store: Store) -> Row:
    """``python src/train.py`` with one run of the small sweep: its first step from its start."""
    uri = store.fresh_db("cold")
    cell = s.sweep_runs[0].split("=", 1)[1].split(",")[0] if s.sweep_runs else "lstm"
    cmd = train_cmd(f"cell={cell}", "threads=1", *s.sweep_overrides, f"hydra.run.dir={store.dir / 'cold-run'}",
                    f"tracking.artifact_root={store.artifacts}", "tracking.experiment=bench_cold")
    t0 = time.time()
    wall = run_measured(cmd, child_env(uri), store.dir, store.dir / "cold.log")["wall_s"]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("bench_cold")
    assert exp is not None, "the cold run logged no experiment"
    (run,) = client.search_runs([exp.experiment_id])
    return {"first_step_s": first_step_time(client, run.info.run_id) - t0, "wall_s": wall,
            "run_start_s": run.info.start_time / 1000 - t0}


def timed_sweep(s: Settings, store: Store, launcher: str, timed: Sequence[efficiency.TimedSweep] = ()) -> Row:
    """The small sweep on ``launcher``, priced at the bare loop's rate, phase by phase. The
    same command already run (section 5's 2x1 sweep on the warm launcher) is read, not rerun."""
    overrides = (f"hydra/launcher={launcher}", *s.sweep_command(1)[1:])
    sweep, _ = efficiency.timed_or_run(store, f"fixed-{launcher}", overrides, s.efficiency_jobs, timed)
    t0 = sweep.started
    priced = efficiency.measure_case(s, launcher, sweep)
    client = MlflowClient(sweep.uri)
    exp = client.get_experiment_by_name(sweep.experiment)
    assert exp is not None
    found = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get("sweep") == "true"]
    kids = [r for r in found if r.data.tags.get("sweep") != "true"]
    start, end = min(r.info.start_time for r in kids) / 1000, max(r.info.end_time for r in kids) / 1000
    parent = parents[0].info
    jobs = sweep.jobs
    ideal = priced["ideal_s"] / jobs
    in_runs = sum((r.info.end_time - r.info.start_time) / 1000 for r in kids)
    phases = {
        "start to parent run (the launching process's imports, the store, the parent)": parent.start_time / 1000 - t0,
        "parent run to the first job's run (workers start, a job's setup)": start - parent.start_time / 1000,
        "runs: the bare loop's steps, over the jobs (the ideal)": ideal,
        "runs: beyond their steps (per-step overhead, validation and test, tracking), over the jobs":
            (in_runs - priced["ideal_s"]) / jobs,
        "between runs, and idle workers, over the jobs": (end - start) - in_runs / jobs,
        "last run's end to the parent's end (counts, report)": parent.end_time / 1000 - end,
        "parent's end to the process's exit (comparison view, links, exit)": t0 + sweep.wall_s - parent.end_time / 1000,
    }
    row: Row = {"launcher": launcher, "command": sweep.command, "runs": len(kids), "jobs": jobs,
                "wall_s": sweep.wall_s, "ideal_s": ideal, "fixed_s": sweep.wall_s - ideal, "phases": phases}
    if launcher == "warm":
        row["warm_first_steps"] = _warm_first_steps(client, kids, Path(sweep.dir))
    return row


def _warm_first_steps(client: MlflowClient, kids: Sequence[Any], sweep_dir: Path) -> list[Row]:
    """Per job of the warm launcher: its first step from the launch and from its worker taking it."""
    rows = []
    for path in sorted(sweep_dir.glob("*/launch.json")):
        launch = json.loads(path.read_text())
        run = next((r for r in kids if r.data.tags.get("checkpoint_dir", "").startswith(str(path.parent))), None)
        if run is None:
            continue
        step = first_step_time(client, run.info.run_id)
        rows.append({"job": int(path.parent.name), "from_launch_s": step - launch["submitted"],
                     "from_taken_s": step - launch["started"], "job_in_worker": launch["job_in_worker"]})
    return rows


def measure(s: Settings, store: Store, log: Callable[[str], None],
            timed: Sequence[efficiency.TimedSweep] = ()) -> Row:
    imports = {name: _import_s(code, store, f"import-{i}") for i, (name, code) in enumerate(IMPORTS.items())}
    log("  imports: " + ", ".join(f"{k} {v:.1f} s" for k, v in imports.items()))
    forced = forced_imports(store)
    log("  forced by the libraries: " + ", ".join(f"{r['module']} {r['import_s']:.1f} s (by {r['imported_by']})"
                                                   for r in forced))
    cold = cold_first_step(s, store)
    log(f"  cold process: first step {cold['first_step_s']:.1f} s after its start")
    sweeps = {}
    for launcher in LAUNCHERS:
        sweeps[launcher] = row = timed_sweep(s, store, launcher, timed)
        log(f"  small sweep, {launcher}: wall {row['wall_s']:.1f} s, ideal {row['ideal_s']:.1f} s, "
            f"fixed {row['fixed_s']:.1f} s")
    warm = sweeps["warm"].get("warm_first_steps", [])
    first = [r for r in warm if r["job_in_worker"] == 1]
    result: Row = {"imports_s": imports, "forced_imports": forced, "cold": cold, "sweeps": sweeps,
                   "warm_first_step_s": max((r["from_taken_s"] for r in warm), default=None),
                   "warm_first_step_from_launch_s": max((r["from_launch_s"] for r in first), default=None)}
    result["in_the_way"] = in_the_way(result)
    return result


def in_the_way(fc: Row) -> list[str]:
    """What keeps each target from being reached, largest first."""
    said = []
    warm = fc["sweeps"].get("warm")
    if warm and warm["fixed_s"] > TARGET_SWEEP_FIXED_S:
        costs = sorted(((v, k) for k, v in warm["phases"].items() if "(the ideal)" not in k), reverse=True)
        said.append(f"the small sweep is {warm['fixed_s']:.1f} s beyond its ideal (target {TARGET_SWEEP_FIXED_S:g} s): "
                    + "; ".join(f"{k} {v:.1f} s" for v, k in costs[:3]))
    w = fc.get("warm_first_step_s")
    if w is not None and w > TARGET_WARM_FIRST_STEP_S:
        said.append(f"a warm worker's first step is {w:.1f} s after it takes the job (target "
                    f"{TARGET_WARM_FIRST_STEP_S:g} s): the job's own setup (Hydra's job config, the MLflow run, "
                    "the task's data, Lightning's Trainer, the first step's kernels); section 5c has one run "
                    "phase by phase")
    forced = sum(r["import_s"] for r in fc.get("forced_imports", []))
    if forced:
        said.append(f"a cold process imports {forced:.1f} s of packages Lightning and MLflow pull in themselves ("
                    + ", ".join(f"{r['module']} by {r['imported_by']}" for r in fc["forced_imports"]) + ")")
    return said


def markdown(fc: Row) -> list[str]:
    L = ["## 5d. Fixed costs (issue #40)", "",
         f"Targets: the small sweep within {TARGET_SWEEP_FIXED_S:g} s of its ideal (the bare loop's steps, over the "
         f"jobs); a warm worker's first step within {TARGET_WARM_FIRST_STEP_S:g} s. Every number from this run.", "",
         "| what | seconds |", "|---|---|"]
    L += [f"| import {k} (a process) | {v:.1f} |" for k, v in fc["imports_s"].items()]
    L += [f"| of which {r['module']}, imported by {r['imported_by']} (via {r['via']}) | {r['import_s']:.1f} |"
          for r in fc["forced_imports"]]
    L += [f"| cold process: start to first step | {fc['cold']['first_step_s']:.1f} |"]
    if fc.get("warm_first_step_s") is not None:
        L += [f"| warm worker: job taken to first step (slowest job) | {fc['warm_first_step_s']:.1f} |"]
    if fc.get("warm_first_step_from_launch_s") is not None:
        L += [f"| warm worker: launch to first step (first jobs) | {fc['warm_first_step_from_launch_s']:.1f} |"]
    for launcher, sw in fc["sweeps"].items():
        L += [f"| small sweep, {launcher} launcher: wall / ideal / beyond ideal | {sw['wall_s']:.1f} / "
              f"{sw['ideal_s']:.1f} / **{sw['fixed_s']:.1f}** |"]
    sweeps = list(fc["sweeps"].values())
    L += ["", "The small sweep, phase by phase (s):", "",
          "| phase | " + " | ".join(sw["launcher"] for sw in sweeps) + " |",
          "|---|" + "---|" * len(sweeps)]
    for phase in sweeps[0]["phases"]:
        L.append(f"| {phase} | " + " | ".join(f"{sw['phases'][phase]:.1f}" for sw in sweeps) + " |")
    L += ["", "Commands:", ""] + [f"- {sw['launcher']}: `{sw['command']}`" for sw in sweeps]
    if fc.get("in_the_way"):
        L += ["", "In the way of the targets:", ""] + [f"- {w}" for w in fc["in_the_way"]]
    return L


def metrics(fc: Row) -> dict[str, float]:
    m = {"fixed_costs/cold_first_step_s": fc["cold"]["first_step_s"],
         **{f"fixed_costs/sweep_{k}_wall_s": v["wall_s"] for k, v in fc["sweeps"].items()},
         **{f"fixed_costs/sweep_{k}_fixed_s": v["fixed_s"] for k, v in fc["sweeps"].items()}}
    if fc.get("warm_first_step_s") is not None:
        m["fixed_costs/warm_first_step_s"] = fc["warm_first_step_s"]
    return m


def targets(fc: Row) -> list[str]:
    """The targets missed (the forced imports are said in the table, not as a warning)."""
    return [f"fixed costs: {w}" for w in fc.get("in_the_way", []) if w.startswith(("the small sweep", "a warm"))]
