"""What a warm worker has imported before its first job (:data:`rnnlab.launcher.PRELOAD`): the
training path and what a job imports on its way to its first step (MLflow's sqlite store and
its tracing hooks, Hydra's job machinery, the synthetic tasks). Importing runs no torch op: the
forkserver that imports this module forks workers afterwards (see :mod:`rnnlab.launcher`)."""

from __future__ import annotations

import atexit
import importlib
import os
import signal
import sys

SERVER = "RNNLAB_FORKSERVER"  # set in the forkserver's environment by rnnlab.launcher

if os.environ.get(SERVER):
    # The forkserver ignores SIGTERM, as multiprocessing has it ignore SIGINT. A SIGTERM to the
    # whole process group (`kill -TERM -<pgid>`, a scheduler, a session's end) would otherwise
    # end it while the jobs save their step, and the pool, which learns of its workers through
    # the forkserver's pipes, would take them all for dead ("terminated abruptly") and fail the
    # sweep. It still ends with its launching process (multiprocessing's alive pipe), or at
    # that process's exit by SIGKILL (rnnlab.launcher._stop_own_server). Its workers inherit
    # the setting, which they have anyway while idle; a job installs its own handlers.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

MODULES = (
    "rnnlab.paths",  # the config resolvers
    "rnnlab.run",  # torch, Lightning, MLflow's client, rnnlab's run
    "rnnlab.run_logger",
    "rnnlab.launcher",
    "rnnlab.tasks.adding",
    "rnnlab.tasks.copy",
    "rnnlab.cells.reference",
    "hydra.core.utils",
    "hydra._internal.core_plugins.basic_sweeper",
    "cloudpickle",
    "mlflow.store.tracking.sqlalchemy_store",  # sqlalchemy, alembic: a second on a job's first write
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.tracing.processor.otel",
    "mlflow.tracing.export.utils",
    "torch.utils.serialization",
)

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: S112  a module this install lacks: the job imports what it needs
        continue


def _exit_now() -> None:
    """The forkserver's end (its launching process has exited): no teardown of torch's modules.
    It holds the launching process's stdout and stderr, so whoever reads them to their end (a
    pipe, a test) would wait seconds for that teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if os.environ.get(SERVER):  # the forkserver; its workers end with os._exit and never run this
    atexit.register(_exit_now)


def run_main(script: str, argv: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """``python <script> <argv...>`` in this already-warm process (a child of the forkserver):
    its stdout and stderr to the files ``out`` and ``err``, ``env`` its whole environment, its
    exit code this process's. What a command line runs, less the interpreter's start and the
    imports: the test suite launches its runs so (tests/conftest.py)."""
    import runpy

    atexit.unregister(_exit_now)  # the forkserver's end, inherited: not this process's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the forkserver's SIGTERM setting, not a command's
    os.setpgid(0, 0)  # a group of its own, as a command's: whoever stops it stops what it started
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")
