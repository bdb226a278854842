"""What a warm worker has imported before its first job (:data:`rnnlab.launcher.PRELOAD`): the
training path and what a job imports on its way to its first step (MLflow's sqlite store and
its tracing hooks, Hydra's job machinery, the synthetic tasks). Importing runs no torch op: the
forkserver that imports this module forks workers afterwards (see :mod:`rnnlab.launcher`)."""

from __future__ import annotations

import importlib

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
