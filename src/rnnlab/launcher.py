"""Warm workers for parallel sweeps: rnnlab's Hydra launcher (``hydra/launcher=warm``; the
presets' ``conf/hydra/launcher/cores.yaml`` uses it).

Hydra's joblib launcher starts loky workers that import torch, Lightning and MLflow again, one
after the other: seconds per worker before any job runs. Here the workers are forked from a
multiprocessing *forkserver* that imported the training path once (:data:`PRELOAD`): a worker
exists in milliseconds with everything imported. The forkserver lives as long as the launching
process, so a tuning study's batches (one :meth:`WarmLauncher.launch` each) reuse it.

Fork safety: forking a process whose OpenMP (or BLAS) thread pool is running leaves the child a
pool it cannot use (it hangs or crashes at its first parallel op). The forkserver imports the
modules and runs no torch op, and it starts with the threads a job may use in its environment
(``OMP_NUM_THREADS`` and the like, as loky sets them; ``OPENBLAS_NUM_THREADS=1``: numpy's
OpenBLAS would otherwise start its pool at import). :func:`server_threads` names the server's
threads: its main thread and allocator threads that register fork handlers
(``jemalloc_bg_thd``), no unnamed worker thread; tests/test_launcher.py checks it, with a
process that ran one op as the counter-example.

What joblib's launcher gave, kept: jobs in parallel processes (``n_jobs``, one thread each
under the presets' ``threads: 1``; else cores // n_jobs, as loky sets them), results in order,
a job's error recorded in its ``JobReturn`` (Hydra raises it after the batch), pickling by
value (cloudpickle) for ``src/train.py``'s task function. Signals: an idle worker ignores
Ctrl-C and SIGTERM (a job installs its own handlers, :mod:`rnnlab.interrupts`), so that a
stop request never kills a worker (which would break the pool and kill the jobs saving their
step); the launching process's handler asks the jobs to stop and waits for them. A second
request raises there, and the workers are killed at once, as joblib did. The forkserver ignores
SIGTERM (:mod:`rnnlab.warm`), so that one sent to the whole process group leaves the pool intact.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# What the forkserver imports before it forks a worker: the training path (torch, Lightning,
# MLflow and rnnlab's run), MLflow's sqlite store and Hydra's job machinery.
PRELOAD = ["rnnlab.warm"]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
SERVER = "RNNLAB_FORKSERVER"  # in the forkserver's environment (see rnnlab.warm)
ALLOCATOR_THREADS = ("jemalloc_bg_thd",)  # pyarrow's jemalloc: fork-safe (pthread_atfork)

_server: dict[str, Any] = {}  # the forkserver this process started: its pid, its threads per job


def threads_per_job(config_threads: int | None, n_jobs: int) -> int:
    """A job's torch threads: the config's ``threads``, else the cores shared by the jobs."""
    if config_threads:
        return int(config_threads)
    return max(1, len(os.sched_getaffinity(0)) // max(1, n_jobs))


def context(threads: int) -> multiprocessing.context.ForkServerContext:
    """The forkserver context, its server started (once per process) with the training path
    imported and ``threads`` per job in its environment."""
    ctx = multiprocessing.get_context("forkserver")
    if _alive(_server.get("pid")) and _server.get("pid") == _forkserver_pid() and _server.get("threads") != threads:
        forkserver._forkserver._stop()  # type: ignore[attr-defined]  # set up for another thread count
    if _server.get("pid") != _forkserver_pid() or not _alive(_server.get("pid")):
        ctx.set_forkserver_preload(PRELOAD)
        saved = {k: os.environ.get(k) for k in (*THREAD_VARS, "OPENBLAS_NUM_THREADS", SERVER, "PYTHONPATH")}
        os.environ.update({**dict.fromkeys(THREAD_VARS, str(threads)), "OPENBLAS_NUM_THREADS": "1", SERVER: "1",
                           "PYTHONPATH": _python_path()})
        try:
            forkserver.ensure_running()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if not _server:
            atexit.register(_stop_own_server)
        _server.update(pid=_forkserver_pid(), threads=threads, started=time.time())
    return ctx


def _stop_own_server() -> None:
    """At this process's exit, its forkserver has nothing left to serve. It ends by itself once it
    sees its launching process gone, but only after it has imported the training path: a sweep
    that ended first (nothing left to run, a refused setting) left it importing, orphaned, for
    seconds of a core. The workers it forked are processes of their own, already joined. SIGKILL:
    the forkserver ignores SIGTERM (see rnnlab.warm), and holds nothing to save."""
    pid = _server.get("pid")
    if pid is not None and pid == _forkserver_pid() and _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _python_path() -> str:
    """The forkserver's PYTHONPATH: this rnnlab's source folder first. Python 3.11's forkserver
    does not take its parent's sys.path (``src/train.py`` puts its own folder there), so it
    would import another rnnlab (an editable install's) or none."""
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join([here, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)])


def _forkserver_pid() -> int | None:
    """The pid of this process's forkserver (multiprocessing keeps it on a private attribute)."""
    return getattr(forkserver._forkserver, "_forkserver_pid", None)


def _alive(pid: int | None) -> bool:
    return pid is not None and os.path.exists(f"/proc/{pid}")


def server_pid() -> int | None:
    return _server.get("pid")


def wait_until_loaded(timeout: float = 120.0) -> float:
    """Block until the forkserver has imported :data:`PRELOAD` (it answers a fork only then);
    the seconds it took. Forks one process that exits at once."""
    start = time.perf_counter()
    ctx = context(_server.get("threads", 1))
    p = ctx.Process(target=_nothing)
    p.start()
    p.join(timeout)
    return time.perf_counter() - start


def _nothing() -> None:
    pass


def server_threads(pid: int | None = None) -> list[str]:
    """The names of the forkserver's threads (``/proc/<pid>/task/*/comm``)."""
    pid = pid or server_pid()
    assert pid is not None, "no forkserver started"
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip())
        except FileNotFoundError:  # a thread that just ended
            pass
    return names


def pool_threads(names: list[str]) -> int:
    """Threads other than the main one and the allocators': a thread pool's (OpenMP, BLAS)."""
    return len([n for n in names if n not in ALLOCATOR_THREADS]) - 1


# -- in a worker ------------------------------------------------------------------------------
def _worker_start(threads: int) -> None:
    """A worker, just forked: idle, it ignores stop signals (a job installs its own), and it
    runs ``threads`` torch threads unless its job's config says otherwise."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    os.environ.pop(SERVER, None)  # a job's own subprocesses are no forkserver
    import torch

    torch.set_num_threads(threads)


def worker_state() -> dict[str, Any]:
    """What a worker has when it starts a job (tests and the bench ask a worker for it)."""
    import sys

    import torch

    import rnnlab

    return {"pid": os.getpid(), "rnnlab": str(Path(rnnlab.__file__).parent),
            "torch_threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS"),
            "imported": [m for m in ("torch", "pytorch_lightning", "mlflow", "rnnlab.run",
                                     "mlflow.store.tracking.sqlalchemy_store") if m in sys.modules],
            "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN}


_jobs_here = 0  # jobs this worker has taken


def _execute(blob: bytes, submitted: float) -> bytes:
    """One job, as Hydra's joblib launcher runs it (``execute_job``), its JobReturn pickled
    here: an error that does not unpickle in the launcher must not break the pool. The job's
    dir gets ``launch.json``: when it was submitted and taken (the bench's fixed costs)."""
    global _jobs_here
    started = time.time()
    _jobs_here += 1
    import json

    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    idx, overrides, hydra_context, config, task_function, singleton_state = cloudpickle.loads(blob)
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    try:
        ret = run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    finally:  # idle again: stop signals are the job's business, not the worker's
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    try:
        job_dir = Path(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir))
        (job_dir / "launch.json").write_text(json.dumps(
            {"submitted": submitted, "started": started, "pid": os.getpid(), "job_in_worker": _jobs_here}))
    except Exception:  # noqa: S110  bookkeeping for the bench: never the job's outcome
        pass
    try:
        return cloudpickle.dumps(ret)
    except Exception:  # Hydra's config of this launcher: its node's class is the plugin's, which Hydra
        pass  # loads outside sys.modules, so that it may not pickle; the plain values do
    if ret.hydra_cfg is not None:
        from omegaconf import DictConfig, OmegaConf

        plain = OmegaConf.create(OmegaConf.to_container(ret.hydra_cfg, resolve=False))
        ret.hydra_cfg = plain if isinstance(plain, DictConfig) else None
    try:
        return cloudpickle.dumps(ret)
    except Exception as e:  # an unpicklable return value or error: its text
        ret.return_value = RuntimeError(f"{type(ret.return_value).__name__}: {ret.return_value} "
                                        f"(not picklable: {e})")
        return cloudpickle.dumps(ret)


# -- in the launching process -----------------------------------------------------------------
def launch(config, hydra_context, task_function, n_jobs: int, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> list:
    """Run the jobs on ``n_jobs`` warm workers; their JobReturns, in order."""
    import cloudpickle
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    n = max(1, min(int(n_jobs), len(job_overrides)))
    threads = threads_per_job(config.get("threads"), int(n_jobs))  # as the sweep's start warmed up for
    # a tuning study prints one line per batch itself (rnnlab.tune): these would repeat it
    say = log.debug if config.get("tune") else log.info
    say(f"warm launcher: {len(job_overrides)} jobs on {n} workers, {threads} thread(s) each; "
        f"sweep output dir: {sweep_dir}")
    for idx, overrides in enumerate(job_overrides):
        say(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
    state = Singleton.get_state()
    blobs = [cloudpickle.dumps((initial_job_idx + i, list(o), hydra_context, config, task_function, state))
             for i, o in enumerate(job_overrides)]
    executor = ProcessPoolExecutor(max_workers=n, mp_context=context(threads), initializer=_worker_start,
                                   initargs=(threads,))
    try:
        futures: list[Future] = [executor.submit(_execute, b, time.time()) for b in blobs]
        results = [cloudpickle.loads(f.result()) for f in futures]
    except BaseException:  # a second Ctrl-C or SIGTERM (stop at once), a worker lost: no job goes on
        _kill(executor)
        raise
    executor.shutdown(wait=True)
    assert all(isinstance(r, JobReturn) for r in results)
    return results


def _kill(executor: ProcessPoolExecutor) -> None:
    for p in list((getattr(executor, "_processes", None) or {}).values()):
        try:
            p.kill()
        except (OSError, AttributeError):
            pass
    executor.shutdown(wait=False, cancel_futures=True)
