"""Hydra's entry point for rnnlab's tuning sweeper (``hydra/sweeper=tune``, set by the
presets in conf/tune/). Hydra finds sweepers only in the ``hydra_plugins`` namespace; the
work is in :mod:`rnnlab.tune.study`. (No ``from __future__ import annotations``: Hydra loads
plugin modules outside ``sys.modules``, where dataclasses cannot resolve string annotations.)"""


from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class TuneSweeperConf:
    _target_: str = "hydra_plugins.rnnlab_tuner.tuner.TuneSweeper"
    params: Any = None  # the arms: a grid as in Hydra's basic sweeper, e.g. {cell: "rnn,lstm,gru"}


ConfigStore.instance().store(group="hydra/sweeper", name="tune", node=TuneSweeperConf, provider="rnnlab")


class TuneSweeper(Sweeper):
    """One Optuna study per arm of the grid; see :class:`rnnlab.tune.study.Tuner`."""

    def __init__(self, params: Any = None) -> None:
        self.params = {str(k): str(v) for k, v in (params or {}).items()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from rnnlab.tune.study import Tuner

        assert self.config is not None and self.hydra_context is not None, "setup() comes first"
        return Tuner(self.config, self.launcher, self.hydra_context.config_loader, self.params, arguments).run()
