"""Building a cell's recurrent stack from its config, by its spec (:mod:`rnnlab.cells`).

``build(name, input_size, hidden_size, ...)`` returns a batch-first recurrent stack with the
interface of ``nn.RNN``/``nn.LSTM``/``nn.GRU``: ``forward(x, state=None) -> (outputs, final_state)``.
The classic cells: ``impl=fused`` uses PyTorch's fused kernels (oneDNN on CPU, cuDNN on GPU);
``impl=reference`` the step-by-step textbook cells of :mod:`rnnlab.cells.reference`, which
load the same ``state_dict``. The modern cells (:mod:`rnnlab.cells.modern`): ``impl=parallel``
(a scan over time) or ``impl=reference``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from rnnlab.cells import spec


class RecurrentStack(Protocol):
    """What the fused and the reference stacks share, as far as these helpers need."""

    hidden_size: int
    num_layers: int


def build(
    name: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    dropout: float = 0.0,
    impl: str | None = None,
    **config: Any,
) -> nn.Module:
    """Build a batch-first recurrent stack for cell ``name`` (one of ``rnnlab.cells.SPECS``).

    ``config`` holds the cell's own keys, as its yaml has them: the options its class takes
    (the RNN's ``nonlinearity``, the LRU's ring) and the initialisation hooks (``forget_bias``,
    ``spectral_radius``). A key the cell does not have is an error, not silently ignored: a
    spectral radius means nothing to a cell without a recurrent matrix."""
    s = spec(name)
    impl = impl or s.default_impl
    if impl not in s.impls:
        raise ValueError(f"unknown cell impl {impl!r} for {name}; valid: {', '.join(s.impls)}")
    unknown = sorted(set(config) - set(s.options) - set(s.hooks))
    if unknown:
        own = ", ".join((*s.options, *s.hooks)) or "none"
        raise ValueError(f"cell {name} has no {', '.join(unknown)}; its own keys: {own}")
    kwargs: dict[str, Any] = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                                  dropout=dropout if num_layers > 1 else 0.0, batch_first=True)
    kwargs.update({k: config[k] for k in s.options if k in config})
    config = {**s.hooks, **config}
    if s.one_class:
        kwargs["impl"] = impl
    module = s.cls(impl)(**kwargs)
    if config.get("forget_bias") is not None:
        init_forget_bias(module, config["forget_bias"])
    if config.get("spectral_radius") is not None:
        set_spectral_radius(module, config["spectral_radius"])
    return module


@torch.no_grad()
def set_spectral_radius(module: RecurrentStack, radius: float) -> None:
    """Rescale every gate block of every ``weight_hh`` to spectral radius ``radius``.

    The spectral radius of the recurrent matrix decides whether a linearised recurrence
    shrinks (< 1: vanishing gradients) or grows (> 1: exploding gradients) signals over time,
    which makes it the knob for provoking either on purpose.
    """
    h = module.hidden_size
    for layer in range(module.num_layers):
        w = getattr(module, f"weight_hh_l{layer}")
        for block in w.split(h):  # one (h, h) block per gate; views into w
            rho = torch.linalg.eigvals(block.double()).abs().max().item()
            if rho > 0:
                block.mul_(radius / rho)


@torch.no_grad()
def init_forget_bias(lstm: RecurrentStack, value: float) -> None:
    """Set the effective forget-gate bias of every layer to ``value``.

    PyTorch orders LSTM gates (i, f, g, o) and adds two bias vectors, so the forget slice of
    ``bias_ih`` gets ``value`` and that of ``bias_hh`` gets 0: their sum is what the gate sees.
    A bias of 1 keeps the forget gate open early in training (Jozefowicz et al. 2015).
    """
    h = lstm.hidden_size
    for layer in range(lstm.num_layers):
        getattr(lstm, f"bias_ih_l{layer}")[h : 2 * h].fill_(value)
        getattr(lstm, f"bias_hh_l{layer}")[h : 2 * h].zero_()
