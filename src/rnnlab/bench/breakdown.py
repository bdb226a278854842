"""Where one sweep run's time goes: :func:`rnnlab.run.train` in a warm process, phase by phase.

A sweep worker pays its imports once and then runs job after job, so this times such a job: one
untimed run first (it pays what a process pays once: lazy imports, MLflow's store module, the
first figure), then ``repeats`` runs of the sweep's own configuration, each phase timed by
wrapping the function that does it (:class:`Stopwatch`), and beside each run the bare loop and
the bare evaluation of the same configuration, in the same process. It answers "what does a run
cost beyond its training steps" with one number, and says which phase to work on next.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from rnnlab.bench.harness import Store, compose, quiet
from rnnlab.bench.settings import Settings

Row = dict[str, Any]
Path_ = tuple[str, ...]
_MISSING = object()

# What a node's own time (its time less its timed children's) is made of, where it has children.
OWN_TIME = {
    "run": "config checks, data, model (before the MLflow run)",
    "fit and test": "callbacks and Trainer built",
    "fit": "training steps and Lightning's loop",
    "evaluation": "forward passes and metrics",
    "test": "best checkpoint restored",
}


def phases() -> list[tuple[Any, str, str]]:
    """(owner, attribute, label) of each timed function, imported late: they import Lightning."""
    import pytorch_lightning as pl
    from pytorch_lightning.loops.evaluation_loop import _EvaluationLoop

    from rnnlab import run
    from rnnlab.diagnostics import GradientFlow

    return [(run, "train", "run"),
            (run, "_open_run", "MLflow run created (tags, git state)"),
            (run, "_fit_and_test", "fit and test"),
            (run, "_checkpoint_dir", "params, tags and baselines logged"),
            (pl.Trainer, "fit", "fit"),
            (_EvaluationLoop, "run", "evaluation"),
            (GradientFlow, "on_validation_epoch_end", "gradient-flow probe"),
            (pl.Trainer, "save_checkpoint", "checkpoint saved"),
            (GradientFlow, "on_fit_end", "gradient-flow figure and CSV"),
            (pl.Trainer, "test", "test"),
            (run, "_finalize", "artifacts, final tags, run ended")]


class Stopwatch:
    """Adds up each call's wall time under its path of enclosing timed calls, e.g.
    ``("run", "fit and test", "fit", "evaluation")``, so nested phases come apart."""

    def __init__(self) -> None:
        self.seconds: dict[Path_, float] = defaultdict(float)
        self.calls: Counter[Path_] = Counter()
        self._stack: list[str] = []

    def _timed(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append(label)
            path = tuple(self._stack)
            self.seconds.setdefault(path, 0.0)  # keys in the order phases are entered
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[path] += time.perf_counter() - t
                self.calls[path] += 1
                self._stack.pop()
        return timed

    @contextlib.contextmanager
    def watching(self, targets: Sequence[tuple[Any, str, str]]) -> Iterator[Stopwatch]:
        """Times ``targets`` while inside; puts every attribute back however it ends."""
        saved: list[tuple[Any, str, Any]] = []
        try:
            for owner, name, label in targets:
                saved.append((owner, name, vars(owner).get(name, _MISSING)))
                setattr(owner, name, self._timed(getattr(owner, name), label))
            yield self
        finally:
            for owner, name, original in reversed(saved):
                if original is _MISSING:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)

    def own(self, path: Path_) -> float:
        """``path``'s time less that of the timed calls directly inside it."""
        inside = sum(v for p, v in self.seconds.items() if len(p) == len(path) + 1 and p[:-1] == path)
        return self.seconds[path] - inside


def _config(s: Settings, store: Store, seed: int) -> Any:
    return compose([f"cell={s.breakdown_cell}", *s.sweep_overrides, "threads=1", f"seed={seed}",
                    f"tracking.uri={store.uri}", f"tracking.artifact_root={store.artifacts}",
                    "tracking.experiment=bench_breakdown"])


def _timed_run(s: Settings, store: Store, seed: int) -> Stopwatch:
    from rnnlab import run

    watch = Stopwatch()
    with watch.watching(phases()), quiet():
        summary = run.train(_config(s, store, seed))
    torch.set_num_threads(s.threads)
    if summary is None or summary.status != "FINISHED":
        raise RuntimeError(f"the breakdown's run ended {summary and summary.status}")
    return watch


def _bare(s: Settings, store: Store, seed: int) -> dict[str, float]:
    """The bare loop over the run's own steps, and one pass over each evaluation split."""
    from rnnlab.bench.bare_loop import bare_eval, bare_run

    cfg = _config(s, store, seed)
    torch.set_num_threads(1)
    try:
        with quiet():
            train = bare_run(cfg, int(cfg.trainer.max_steps), s.warmup)
            ev = bare_eval(cfg)
    finally:
        torch.set_num_threads(s.threads)
    return {"train_s": train["train_s"], "val_s": ev["val"], "test_s": ev["test"]}


def measure(s: Settings, store: Store, log: Callable[[str], None]) -> Row:
    _timed_run(s, store, seed=0)  # untimed: what a worker's first job pays once
    watches, bares = [], []
    for r in range(s.breakdown_repeats):  # run and bare alternate which goes first
        pair = [lambda r=r: watches.append(_timed_run(s, store, seed=1 + r)),
                lambda r=r: bares.append(_bare(s, store, seed=1 + r))]
        for side in (pair if r % 2 == 0 else reversed(pair)):
            side()
    paths = list(dict.fromkeys(p for w in watches for p in w.seconds))  # in the order first entered
    rows = []
    for p in paths:
        rows.append({"path": list(p), "s": statistics.median(w.seconds.get(p, 0.0) for w in watches),
                     "own_s": statistics.median(w.own(p) for w in watches),
                     "calls": statistics.median(w.calls.get(p, 0) for w in watches)})
    run_s = statistics.median(w.seconds[("run",)] for w in watches)
    validations = statistics.median(w.calls[("run", "fit and test", "fit", "evaluation")] for w in watches)
    bare_train_s = statistics.median(b["train_s"] for b in bares)
    bare_eval_s = statistics.median(validations * b["val_s"] + b["test_s"] for b in bares)
    cfg = _config(s, store, 0)
    row: Row = {"cell": s.breakdown_cell, "overrides": list(s.sweep_overrides), "steps": int(cfg.trainer.max_steps),
                "repeats": s.breakdown_repeats, "phases": rows, "run_s": run_s,
                "bare_train_s": bare_train_s,
                "validations": validations, "bare_eval_s": bare_eval_s,
                "beyond_steps_s": run_s - bare_train_s, "beyond_steps_and_eval_s": run_s - bare_train_s - bare_eval_s}
    log(f"  {s.breakdown_cell} run {run_s:.2f} s; bare steps "
        f"{bare_train_s:.2f} s, bare evaluation {bare_eval_s:.2f} s: {row['beyond_steps_s']:.2f} s beyond the "
        f"steps, {row['beyond_steps_and_eval_s']:.2f} s beyond steps and evaluation")
    return row


def _of_runs(n: int) -> str:
    return f"median of {n} runs" if n > 1 else "one run"


def markdown(b: Row, target_s: float) -> list[str]:
    L = [f"## 5c. One run, phase by phase (target: <= {target_s:g} s per run beyond imports and training steps)",
         "", f"`{b['cell']}` with {' '.join(b['overrides'])}, one thread, in a process that has run one such "
         f"job already (as a sweep worker's later jobs), {_of_runs(b['repeats'])}; each phase timed by "
         "wrapping the function that does it (`rnnlab.bench.breakdown`). Each `·` is a level: a phase is "
         "inside the nearest line above it with one `·` fewer; \"(own)\": that line's time outside the "
         "phases listed under it.", "",
         "| phase | s | calls |", "|---|---|---|"]
    for r in b["phases"]:
        path = r["path"]
        L.append(f"| {'· ' * (len(path) - 1)}{path[-1]} | {r['s']:.3f} | {r['calls']:g} |")
        if path[-1] in OWN_TIME and any(q["path"][:-1] == path for q in b["phases"]):
            L.append(f"| {'· ' * len(path)}(own) {OWN_TIME[path[-1]]} | {r['own_s']:.3f} | |")
    L += ["", f"The bare loop makes the same {b['steps']} steps in {b['bare_train_s']:.2f} s and the run's "
          f"{b['validations']:g} validations and test in {b['bare_eval_s']:.2f} s. "
          f"Beyond its training steps a run costs **{b['beyond_steps_s']:.2f} s**; beyond steps and evaluation, "
          f"{b['beyond_steps_and_eval_s']:.2f} s."]
    return L
