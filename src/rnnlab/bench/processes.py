"""Measurements of whole processes (``src/train.py`` runs, sweeps, bare imports): wall time
and peak RSS, for what cannot be measured from inside the benchmark's own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rnnlab import paths
from rnnlab.bench.harness import Store

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


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, str(paths.repo_root() / "src" / "train.py"), *args]


def child_env(uri: str) -> dict[str, str]:
    """The benchmark's environment, pointed at a throwaway store; without ``RNNLAB_ROOT``, so
    that the child finds its config in the checkout whose ``src/train.py`` it runs."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    env.pop("RNNLAB_ROOT", None)
    return env


def measure_imports(store: Store) -> dict[str, float]:
    """A process that only imports what a run needs: the floor under section 6's peak RSS, and
    what starting a process costs, for the duration estimate."""
    return run_measured([sys.executable, "-c", "import torch, pytorch_lightning, mlflow, rnnlab.run"],
                        child_env(store.fresh_db("imports")), store.dir, store.dir / "imports.log")
