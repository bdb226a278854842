"""Validation of a composed config, before anything is created.

Hydra already rejects unknown group choices (``cell=LSTM``) with the list of valid ones. What
it cannot know is that ``seq_len`` must be a positive integer or that ``clip=-1`` is nonsense;
those are checked here, up front, so a bad command line fails in a second with one clear line
and never leaves a half-made MLflow run behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.cells import SPECS

# The names a config may choose from, defined once: the code that builds them and the rules
# below both read these. Adding an optimizer is one line here; a cell is declared by its spec in
# rnnlab/cells/ (the names below derive from the specs) and its yaml in conf/cell/.
CELLS = tuple(SPECS)
MODERN_CELLS = tuple(n for n, s in SPECS.items() if s.linear)  # linear in h_{t-1}: a parallel scan, or step by step
FUSED_CELLS = tuple(n for n, s in SPECS.items() if s.torch_fused)  # one form is PyTorch's fused kernel
IMPLS_OF = {n: tuple(s.impls) for n, s in SPECS.items()}
CELL_IMPLS = tuple(dict.fromkeys(i for impls in IMPLS_OF.values() for i in impls))
NONLINEARITIES = ("tanh", "relu")
OPTIMIZERS = {"adam": "torch.optim.Adam", "rmsprop": "torch.optim.RMSprop", "sgd": "torch.optim.SGD"}
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")  # the ones that take optim.momentum
SCHEDULES = (None, "cosine", "step")


class ConfigError(ValueError):
    """A config value is invalid. The message names the key, the value and what is valid."""

    def __init__(self, key: str, value: Any, valid: str):
        self.key, self.value, self.valid = key, value, valid
        super().__init__(f"invalid config: {key}={value!r}: {valid}")

    def __reduce__(self):  # picklable, so it crosses from joblib's workers to the launcher
        return type(self), (self.key, self.value, self.valid)


def integer(v: Any) -> bool:
    """An int, not a bool (a bool is an int in Python: ``true`` is no count)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def positive_int(v: Any) -> bool:
    return integer(v) and v > 0


def non_negative_int(v: Any) -> bool:
    return integer(v) and v >= 0


def positive_real(v: Any) -> bool:
    return _is_real(v) and v > 0


def real(v: Any) -> bool:
    return _is_real(v)


def unit_interval(v: Any) -> bool:
    return _is_real(v) and 0 <= v < 1


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


def choice(names) -> tuple[Callable[[Any], bool], str]:
    """A rule that accepts one of ``names``, with the message listing them (None as null)."""
    names = tuple(names)
    shown = ", ".join("null" if n is None else str(n) for n in names)
    return (lambda v: not isinstance(v, bool) and v in names), f"must be one of {shown}"


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def require(key: str, value: Any, check: Callable[[Any], bool], valid: str) -> Any:
    """Raise :class:`ConfigError` unless ``check(value)``; return the value for chaining."""
    if not check(value):
        raise ConfigError(key, value, valid)
    return value


# key -> (check, what is valid). Task-specific keys are validated by the task itself.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (non_negative_int, "must be an integer >= 0"),
    "seq_len": (positive_int, "must be an integer > 0"),
    "batch_size": (positive_int, "must be an integer > 0"),
    "clip": (optional(positive_real), "must be a number > 0, or null to disable clipping"),
    "threads": (optional(positive_int), "must be an integer > 0, or null for torch's default"),
    "cell.name": choice(CELLS),
    "cell.impl": choice(CELL_IMPLS),
    "cell.hidden_size": (positive_int, "must be an integer > 0"),
    "cell.num_layers": (positive_int, "must be an integer > 0"),
    "cell.dropout": (unit_interval, "must be a number in [0, 1)"),
    "cell.nonlinearity": choice(NONLINEARITIES),
    "cell.forget_bias": (real, "must be a finite number"),
    "cell.spectral_radius": (optional(positive_real), "must be a number > 0, or null for PyTorch's init"),
    "cell.r_min": (unit_interval, "must be a number in [0, 1) (the LRU's smallest initial |λ|)"),
    "cell.r_max": (unit_interval, "must be a number in [0, 1) (the LRU's largest initial |λ|; 1 or more is unstable)"),
    "cell.max_phase": (positive_real, "must be a number > 0 (the LRU's largest initial eigenvalue phase)"),
    "diagnostics.enabled": (one_of(True, False), "must be true or false"),
    "diagnostics.every_n_val": (positive_int, "must be an integer > 0"),
    "diagnostics.probe_size": (positive_int, "must be an integer > 0"),
    "diagnostics.last_k": (positive_int, "must be an integer > 0"),
    "diagnostics.threshold": (lambda v: _is_real(v) and 0 < v < 1, "must be a number in (0, 1)"),
    "model.embed_dim": (positive_int, "must be an integer > 0"),
    "model.param_budget": (optional(positive_int), "must be an integer > 0 (parameters), or null"),
    "optim.name": choice(OPTIMIZERS),
    "optim.lr": (positive_real, "must be a number > 0"),
    "optim.weight_decay": (lambda v: _is_real(v) and v >= 0, "must be a number >= 0"),
    "optim.momentum": (unit_interval, "must be a number in [0, 1)"),
    "optim.schedule": choice(SCHEDULES),
    "optim.step_size": (positive_int, "must be an integer > 0"),
    "optim.gamma": (positive_real, "must be a number > 0"),
    "trainer.max_steps": (positive_int, "must be an integer > 0"),
    "solve.threshold": (lambda v: _is_real(v) and 0 < v <= 1, "must be a number in (0, 1]"),
    "solve.early_stop": (one_of(True, False), "must be true or false"),
    "solve.patience": (positive_int, "must be an integer > 0 (validations)"),
    "sweep.rerun": (one_of(True, False), "must be true or false"),
    "sweep.report": (one_of(True, False, "background", "wait", "false"),
                     "must be one of background, wait, false (true: background)"),
    "tracking.async_logging": (one_of(True, False), "must be true or false"),
    "tracking.async_buffer_s": (lambda v: _is_real(v) and v >= 0, "must be a number of seconds >= 0"),
    "checkpoint.every_n_epochs": (positive_int, "must be an integer > 0"),
    "checkpoint.min_interval_s": (lambda v: _is_real(v) and v >= 0, "must be a number of seconds >= 0"),
    "resume": (lambda v: v is None or isinstance(v, bool) or (isinstance(v, str) and len(v) == 32),
               "must be null, true, false or an MLflow run id (32 hex characters)"),
    "trainer.val_check_interval": (positive_int, "must be an integer > 0 (steps)"),
    "trainer.log_every_n_steps": (positive_int, "must be an integer > 0"),
}


# Where a run is logged and how it is driven, not what determines its numbers: left out of
# the config hash (rnnlab.runs.config_hash) and of the params a run logs.
BOOKKEEPING = ("tracking", "sweep", "threads", "hydra", "resume", "tune")
# Keys that cannot change a number: logging cadence, console, checkpoint cadence.
NOT_COMPARED = ("trainer.log_every_n_steps", "trainer.enable_model_summary", "trainer.num_sanity_val_steps",
                "checkpoint.every_n_epochs", "checkpoint.min_interval_s")


def comparable(cfg: DictConfig) -> dict[str, Any]:
    """The params a researcher compares and filters runs on, each once: the resolved config
    without bookkeeping, without the class paths (``_target_``), and without keys that only
    repeat another (``task.seq_len: ${seq_len}``). The whole config stays in ``config.yaml``."""
    resolved, raw = _flatten(plain(cfg)), _flatten(OmegaConf.to_container(cfg, resolve=False))
    return {k: v for k, v in resolved.items()
            if k.split(".", 1)[0] not in BOOKKEEPING and not k.endswith("._target_") and k not in NOT_COMPARED
            and not _repeats_a_key(raw.get(k))}


def _repeats_a_key(raw: Any) -> bool:
    return isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") and ":" not in raw


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def plain(node: DictConfig) -> dict[str, Any]:
    """A config node as a plain, resolved dict."""
    out = OmegaConf.to_container(node, resolve=True)
    assert isinstance(out, dict), f"not a mapping: {node!r}"
    return {str(k): v for k, v in out.items()}


def validate(cfg: DictConfig) -> None:
    """Check every known key that is present; raise :class:`ConfigError` on the first bad one."""
    for key, (check, valid) in RULES.items():
        node = OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=False)
        if node == "<absent>":
            continue
        require(key, node, check, valid)
    cell = cfg.get("cell") or {}
    if cell.get("name") in IMPLS_OF and cell.get("impl") is not None:
        impls = IMPLS_OF[cell["name"]]
        require("cell.impl", cell["impl"], lambda v: v in impls,
                f"for {cell['name']} must be one of {', '.join(impls)}")
    if cell.get("r_min") is not None and cell.get("r_max") is not None:
        require("cell.r_max", cell["r_max"], lambda v: v > cell["r_min"],
                f"the LRU's ring needs r_min < r_max < 1 (r_min={cell['r_min']})")
