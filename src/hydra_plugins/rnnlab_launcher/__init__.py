"""Hydra's entry point for rnnlab's warm launcher (``hydra/launcher=warm``; the presets'
``hydra/launcher=cores`` uses it): jobs on workers forked from a process that has already
imported the training path. Hydra finds launchers only in the ``hydra_plugins`` namespace; the
work is in :mod:`rnnlab.launcher`. (No ``from __future__ import annotations``: Hydra loads
plugin modules outside ``sys.modules``, where dataclasses cannot resolve string annotations.)"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class WarmLauncherConf:
    _target_: str = "hydra_plugins.rnnlab_launcher.WarmLauncher"
    n_jobs: int = 1  # jobs at once, each in a worker process of its own


ConfigStore.instance().store(group="hydra/launcher", name="warm", node=WarmLauncherConf, provider="rnnlab")


class WarmLauncher(Launcher):
    """See :mod:`rnnlab.launcher`."""

    def __init__(self, n_jobs: int = 1, **_: Any) -> None:
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from rnnlab import launcher

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        return launcher.launch(self.config, self.hydra_context, self.task_function, self.n_jobs, job_overrides,
                               initial_job_idx)
