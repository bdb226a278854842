"""What a warm worker has imported before its first job (:data:`rnnlab.launcher.PRELOAD`): the
training path and what a job imports on its way to its first step (MLflow's sqlite store and
its tracing hooks, Hydra's job machinery, the synthetic tasks). Importing runs no torch op: the
forkserver that imports this module forks workers afterwards (see :mod:`rnnlab.launcher`)."""

from __future__ import annotations

import atexit
import importlib
import os
import sys

SERVER = "RNNLAB_FORKSERVER"  # set in the forkserver's environment by rnnlab.launcher

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
