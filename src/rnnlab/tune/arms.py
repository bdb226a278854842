"""What a tuning sweep compares, read from its Hydra config before anything is created: the
settings every study shares, and the arms of the grid, each with its composed config and
search space. Every mistake found here is a :class:`~rnnlab.config.ConfigError` (one line,
exit 2), so a bad preset leaves no run and no study behind.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from rnnlab.config import ConfigError
from rnnlab.tune import space as spaces

SAMPLERS = ("random", "tpe", "grid")


@dataclass
class Arm:
    """One point of the grid and its study."""

    label: str  # "cell=gru seq_len=200"
    overrides: list[str]
    cfg: DictConfig  # the arm's composed config (without sampled values)
    space: dict[str, Any]  # key -> optuna distribution
    main_metric: str = ""
    mode: str = "min"
    study: Any = None
    parent_id: str = ""
    reseeds: dict[str, int] = field(default_factory=dict)

    @property
    def run_name(self) -> str:
        """``gru-adding-T200``: what its trial runs are named after (``gru-adding-T200-trial3``,
        ``-best-s1``); the task, as a sweep's runs name it, tells apart the tunings of several
        tasks in one experiment (the recall study's)."""
        others = [o.replace("=", "") for o in self.overrides if o.split("=", 1)[0] not in ("cell", "seq_len")]
        return "-".join([self.cfg.cell.name, task_of(self.cfg).name, f"T{self.cfg.seq_len}", *others])

    @property
    def title(self) -> str:
        """``gru T=200``: the arm as its parent run's name shows it."""
        shown = [f"{self.cfg.cell.name}", f"T={self.cfg.seq_len}"]
        shown += [o for o in self.overrides if o.split("=", 1)[0] not in ("cell", "seq_len")]
        return " ".join(shown)


@dataclass
class Settings:
    """``tune.*``, as every arm's study reads it, and how many jobs the launcher runs at once."""

    t: DictConfig  # the tune group itself: its space and cell_space
    name: str
    n_trials: int
    sampler_name: str
    seeds: list[int]  # the tuning seeds: a trial is one run per seed
    reseed_seeds: list[int]
    batch_size: int

    @classmethod
    def of(cls, config: DictConfig) -> Settings:
        t = config.get("tune") or OmegaConf.create({})
        seed = t.get("seed", 0)
        seeds = [int(x) for x in seed] if OmegaConf.is_list(seed) or isinstance(seed, list) else [int(seed)]
        n_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=1)
        return cls(t=t, name=str(t.get("name") or "tune"), n_trials=int(t.get("trials", 20)),
                   sampler_name=str(t.get("sampler", "random")), seeds=seeds,
                   reseed_seeds=[int(s) for s in (t.get("reseeds") or [])],
                   batch_size=max(1, int(n_jobs if n_jobs and n_jobs > 0 else 1)))

    @property
    def seed(self) -> int:
        """What seeds the sampler: the first tuning seed."""
        return self.seeds[0] if self.seeds else 0

    @property
    def seed_shown(self) -> int | list[int]:
        """The tuning seed as a study's signature and its parent's params record it."""
        return self.seed if len(self.seeds) == 1 else self.seeds

    def check(self) -> None:
        if self.sampler_name not in SAMPLERS:
            raise ConfigError("tune.sampler", self.sampler_name, f"one of {', '.join(SAMPLERS)}")
        if self.n_trials < 1:
            raise ConfigError("tune.trials", self.n_trials, "a positive number of trials per arm")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("tune.seed", list(self.seeds), "a seed, or a list of distinct seeds")
        if set(self.seeds) & set(self.reseed_seeds):
            raise ConfigError("tune.reseeds", list(self.reseed_seeds), f"seeds other than the tuning seeds "
                              f"{', '.join(map(str, self.seeds))} (the comparison is on fresh seeds)")
        if not self.t.get("space"):
            raise ConfigError("tune.space", None, "a search space, e.g. {optim.lr: 'tag(log, interval(3e-4, 3e-2))'}")
        for cell in self.t.get("cell_space") or {}:
            if cell not in _cells():
                raise ConfigError(f"tune.cell_space.{cell}", cell, f"a cell: {', '.join(_cells())}")

    def written_space(self, cell: str) -> dict[str, str]:
        """The space as the preset writes it for ``cell``: the shared one and the cell's own."""
        space = dict(self.t.space)
        space.update((self.t.get("cell_space") or {}).get(cell) or {})
        return space


def grid(loader, params: dict[str, str], arguments: list[str]) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """The arms (label, their overrides) and the overrides every job shares."""
    parser = OverridesParser.create(config_loader=loader)
    written = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    axes: dict[str, list[str]] = {}
    fixed: dict[str, str] = {}
    for o in parser.parse_overrides(written):
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ConfigError(key, o.input_line, "the arms are a grid of choices (cell=rnn,gru); "
                                  "search spaces go in tune.space")
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
            fixed.pop(key, None)
        elif key in params:  # an arm axis given one value (cell=gru): an axis of one arm
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
            fixed.pop(key, None)
        else:
            fixed[key] = f"{key}={o.get_value_element_as_str()}"
            axes.pop(key, None)
    arms = [(" ".join(combo), list(combo)) for combo in itertools.product(*axes.values())] or [("all", [])]
    return arms, list(fixed.values())


def arm(loader, config: DictConfig, settings: Settings, fixed: list[str], label: str, overrides: list[str]) -> Arm:
    """The arm's composed config and its search space, every key of it checked against that config."""
    cfg = loader.load_sweep_config(config, [*overrides, *fixed])
    t = settings.t
    space = dict(t.space)
    extra = (t.get("cell_space") or {}).get(cfg.cell.name) or {}
    space.update(extra)
    where = {k: (f"tune.cell_space.{cfg.cell.name}" if k in extra else "tune.space") for k in space}
    dists = {}
    for key, text in space.items():
        dists.update(spaces.distributions({key: text}, where[key]))
    for key in space:
        spaces.check_keys(key, cfg, label, where[key])
    if settings.sampler_name == "grid":
        _check_grid(dists, where, settings.n_trials)
    task_cls = task_of(cfg)
    return Arm(label, overrides, cfg, dists, task_cls.main_metric, task_cls.mode)


def _check_grid(dists: dict[str, Any], where: dict[str, str], trials: int) -> None:
    """A grid search needs a finite grid (every key a ``choice(...)``) of exactly
    ``tune.trials`` points: fewer trials leave points out, more evaluate some twice."""
    import math

    from optuna.distributions import CategoricalDistribution

    for key, d in dists.items():
        if not isinstance(d, CategoricalDistribution):
            raise ConfigError(f"{where[key]}.{key}", repr(d), "a choice(...) of values under tune.sampler=grid")
    size = math.prod(len(d.choices) for d in dists.values())
    if trials != size:
        raise ConfigError("tune.trials", trials, f"the grid's size, {size} (the product of the choices' counts), "
                          "under tune.sampler=grid")


def task_of(cfg: DictConfig):
    """The arm's task class (its name, main metric and mode), without building its data."""
    from rnnlab.tasks.base import Task

    cls: type[Task] = get_class(cfg.task._target_)
    return cls


def _cells() -> tuple[str, ...]:
    from rnnlab.config import CELLS

    return tuple(CELLS)
