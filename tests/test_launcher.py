"""rnnlab's warm launcher (src/rnnlab/launcher.py, ``hydra/launcher=warm``, the presets'
``cores``): workers forked from a forkserver that has imported the training path, and the
check that forking it is safe. The sweeps that run through it end to end are in
test_sweep.py, test_interrupt.py and test_tune.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from conftest import ROOT, compose

# A process that imported what the forkserver imports, then ran one op with 2 threads: the
# counter-example, which shows that the check below sees an OpenMP pool when there is one.
AFTER_ONE_OP = """
import os, rnnlab.warm, torch
from rnnlab import launcher
torch.ones(4_000_000).sum()
print(launcher.pool_threads(launcher.server_threads(os.getpid())))
"""


def test_the_forkserver_imports_the_training_path_and_starts_no_thread_pool_before_it_forks():
    """The hazard: a process forked after torch (or BLAS) started its thread pool inherits a
    pool whose threads do not exist in it. The forkserver, started for 2 threads per job so
    that a pool would show, has imported torch, Lightning, MLflow and rnnlab's run; its threads,
    read from /proc/<pid>/task before it forks anything, are its main thread and allocator
    threads only. A process that ran one op shows the pool this check looks for."""
    from rnnlab import launcher

    ctx = launcher.context(threads=2)
    pid = launcher.server_pid()
    assert pid is not None
    loaded = launcher.wait_until_loaded()  # one fork, after the preload
    names = launcher.server_threads(pid)
    assert launcher.pool_threads(names) == 0, f"the forkserver runs threads before it forks: {names}"

    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", AFTER_ONE_OP], capture_output=True, text=True, env=env,
                         timeout=300, check=True).stdout
    assert int(out.split()[-1]) >= 1, "the check sees the pool of a process that ran an op"

    # a worker forked from it: everything imported, stop signals ignored while idle, 2 threads
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=launcher._worker_start, initargs=(2,)) as pool:
        start = time.perf_counter()
        state = pool.submit(launcher.worker_state).result(timeout=120)
        first = time.perf_counter() - start
    assert state["imported"] == ["torch", "pytorch_lightning", "mlflow", "rnnlab.run",
                                 "mlflow.store.tracking.sqlalchemy_store"]
    assert state["rnnlab"] == str(ROOT / "src" / "rnnlab"), "the forkserver imported another rnnlab"
    assert state["torch_threads"] == 2 and state["omp"] == "2" and state["sigint_ignored"]
    assert first < max(5.0, loaded), f"a warm worker took {first:.1f} s to answer"


def test_threads_per_job_are_the_configs_else_the_cores_shared():
    from rnnlab.launcher import threads_per_job

    cores = len(os.sched_getaffinity(0))
    assert threads_per_job(1, 2) == 1 and threads_per_job(3, 8) == 3
    assert threads_per_job(None, 1) == cores and threads_per_job(None, cores * 2) == 1


def test_the_presets_run_on_the_warm_launcher_and_a_launcher_named_replaces_it():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import rnnlab.paths  # noqa: F401  (the ${cores:} resolver)

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        preset = hydra_compose("config", overrides=["+experiment=long_range"], return_hydra_config=True)
        joblib = hydra_compose("config", overrides=["+experiment=long_range", "hydra/launcher=joblib"],
                               return_hydra_config=True)
    assert preset.hydra.launcher._target_ == "hydra_plugins.rnnlab_launcher.WarmLauncher"
    assert preset.hydra.launcher.n_jobs == len(os.sched_getaffinity(0))
    assert compose("+experiment=long_range").threads == 1
    assert joblib.hydra.launcher._target_.endswith("JoblibLauncher")


STARTS_A_SERVER = """
from rnnlab import launcher
launcher.context(threads=1)
launcher.wait_until_loaded()
print(launcher.server_pid(), flush=True)
"""


def test_the_forkserver_ends_with_its_launching_process_and_lets_go_of_its_output():
    """The forkserver holds the launching process's stdout: a pipe read to its end (a test, a
    `| tee`) waited seconds after the sweep had exited, for the teardown of torch's modules in
    the server. It ends at once now."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", STARTS_A_SERVER], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    proc.wait(timeout=300)
    exited = time.perf_counter()
    assert proc.stdout.read() == ""  # EOF: every holder of the pipe has closed it
    assert time.perf_counter() - exited < 2.0, "the forkserver held the output after its parent exited"
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


# A process that starts its forkserver and exits before the server has imported anything.
EXITS_AT_ONCE = """
from rnnlab import launcher
launcher.context(1)
print(launcher.server_pid(), flush=True)
"""


def test_a_process_that_exits_at_once_leaves_no_forkserver_importing():
    """A sweep with nothing to run exits while its forkserver is still importing torch,
    Lightning and MLflow (seconds): the server is stopped at the exit, not left to finish the
    imports for nobody."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", EXITS_AT_ONCE], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert proc.wait(timeout=120) == 0
    deadline = time.time() + 1.5  # the imports alone take longer than this
    while os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2] \
            and time.time() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2], \
        "the forkserver went on importing after its launching process had exited"


@pytest.mark.slow
def test_a_joblib_sweep_still_runs_and_exits(store):
    """Hydra's joblib launcher stays available (``hydra/launcher=joblib``), and src/train.py's
    fast exit lets its process end: a join of loky's manager thread without threading's exit
    hooks left it waiting forever after its last line."""
    proc = store.train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "task=adding", "cell=rnn,gru",
                       "threads=1", "sweep.report=false", f"hydra.sweep.dir={store.dir / 'sweep'}", timeout=600)
    assert proc.stdout.count("test/mse = ") == 2 and "sweep FINISHED" in proc.stdout


def test_a_warm_run_takes_sigterm_as_a_command_does_though_its_forkserver_ignores_it(tmp_path):
    """The forkserver ignores SIGTERM (a group's SIGTERM must not end it while its jobs save);
    a run the test suite forks from it (conftest.warm_train) is a command line's stand-in and
    must not inherit that: SIGTERM ends it, or reaches its own handlers."""
    from conftest import warm_train
    from rnnlab import launcher

    script = tmp_path / "disposition.py"
    script.write_text("import signal\nprint(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)\n")
    proc = warm_train([sys.executable, str(script)], env=dict(os.environ), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr
    server = launcher.server_pid()
    assert server is not None and _sigterm_ignored(server)


def _sigterm_ignored(pid: int) -> bool:
    """From /proc: whether the process ignores SIGTERM (bit 15 of SigIgn)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (15 - 1) & 1)
    raise AssertionError(f"no SigIgn line for {pid}")
