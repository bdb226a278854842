"""A search space written in Hydra's override grammar, as Optuna distributions.

A tune preset writes each hyperparameter as the value of a Hydra override::

    optim.lr: tag(log, interval(3e-4, 3e-2))   # a float, sampled on a log scale
    clip: choice(null, 0.5, 1.0, 5.0)          # one of these (null: no clipping)
    cell.num_layers: range(1, 4)               # an int in [1, 3]
    cell.forget_bias: choice(0, 1)

``interval`` gives a ``FloatDistribution`` (``int(interval(16, 64))`` an ``IntDistribution``),
``tag(log, ...)`` samples it log-uniformly, ``range`` an ``IntDistribution`` with its step, and
``choice`` a ``CategoricalDistribution``. Everything is checked before any run exists: an
unknown key, low >= high, an empty choice or a non-positive log bound is one line naming
the value and what is valid (:class:`rnnlab.config.ConfigError`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from rnnlab.config import ConfigError

GRAMMAR = "tag(log, interval(LOW, HIGH)), interval(LOW, HIGH), range(START, STOP[, STEP]) or choice(A, B, ...)"
_MISSING = object()


def distributions(space: Mapping[str, str], where: str = "tune.space") -> dict[str, BaseDistribution]:
    """``{key: distribution}`` in the order written (the order a sampler draws them in)."""
    parser = OverridesParser.create()
    out: dict[str, BaseDistribution] = {}
    for key, text in space.items():
        setting = f"{where}.{key}"
        written = str(text).strip()
        plain = re.fullmatch(r"choice\((.*)\)", written, re.S)
        if plain:  # Hydra's choice() refuses null; its comma list (null,0.5,1.0) is the same sweep
            if not plain.group(1).strip():
                raise ConfigError(setting, text, "an empty choice: list at least one value")
            written = plain.group(1) if "," in plain.group(1) else f"{plain.group(1)},{plain.group(1)}"
        try:
            override = parser.parse_override(f"{key}={written}")
        except Exception as e:
            raise ConfigError(setting, text, f"not a sweep in Hydra's grammar ({str(e).splitlines()[0]}); "
                              f"use {GRAMMAR}") from None
        out[key] = _distribution(setting, str(text), override.value())
    return out


def _distribution(setting: str, text: str, value: Any) -> BaseDistribution:
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        log = "log" in value.tags
        if low is None or high is None or not low < high:
            raise ConfigError(setting, text, "an interval needs LOW < HIGH")
        if log and low <= 0:
            raise ConfigError(setting, text, "a log-scale interval needs LOW > 0")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if start is None or stop is None or not all(isinstance(v, int) for v in (start, stop, step)) \
                or step <= 0 or not start < stop:
            raise ConfigError(setting, text, "a range needs ints START < STOP and STEP > 0")
        low, high, by = int(start), int(stop), int(step)
        return IntDistribution(low, high - 1 - (high - 1 - low) % by, step=by)
    if isinstance(value, ChoiceSweep):
        if not value.list:
            raise ConfigError(setting, text, "an empty choice: list at least one value")
        options = list(dict.fromkeys(value.list))  # a one-value choice was written twice above
        if any(isinstance(v, (dict, list)) for v in options):
            raise ConfigError(setting, text, "choices must be numbers, strings, booleans or null")
        return CategoricalDistribution(options)  # type: ignore[arg-type]  # scalars, checked above
    raise ConfigError(setting, text, f"not a search space; use {GRAMMAR}")


def check_keys(key: str, cfg: DictConfig, arm: str, where: str = "tune.space") -> None:
    """``key`` names a value of the arm's config (``cell.forget_bias`` exists for the LSTM
    only: it belongs in ``tune.cell_space.lstm``)."""
    if OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING:
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    valid = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
    raise ConfigError(f"{where}.{key}", leaf, f"no such key in the config of {arm}"
                      + (f"; valid under '{parent or '(top level)'}': {', '.join(valid)}" if valid else ""))


def override(key: str, value: Any) -> str:
    """The override that sets ``key`` to a sampled ``value`` (``clip=null``, ``optim.lr=0.0031``)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, float):
        return f"{key}={value!r}"
    return f"{key}={value}"


def describe(space: Mapping[str, BaseDistribution]) -> str:
    """``optim.lr, clip``: what a study tunes, for its parent run's name."""
    return ", ".join(space)
