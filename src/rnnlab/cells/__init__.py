"""Recurrent cells: where a new cell goes.

``build(cfg, input_size)`` returns a batch-first recurrent stack with the interface of
``nn.RNN``/``nn.LSTM``/``nn.GRU``: ``forward(x, state=None) -> (outputs, final_state)``.
The classic cells: ``impl=fused`` uses PyTorch's fused kernels (oneDNN on CPU, cuDNN on GPU);
``impl=reference`` uses the step-by-step textbook cells in :mod:`rnnlab.cells.reference`,
which load the same ``state_dict``. The modern cells (minGRU, minLSTM, LRU, in
:mod:`rnnlab.cells.modern`): ``impl=parallel`` (a scan over time) or ``impl=reference``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from rnnlab.config import CELLS, IMPLS_OF, MODERN_CELLS


class RecurrentStack(Protocol):
    """What the fused and the reference stacks share, as far as these helpers need."""

    hidden_size: int
    num_layers: int


FUSED = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def build(
    name: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    dropout: float = 0.0,
    impl: str | None = None,
    nonlinearity: str = "tanh",
    forget_bias: float = 1.0,
    spectral_radius: float | None = None,
    **options: Any,
) -> nn.Module:
    """Build a batch-first recurrent stack for cell ``name`` (one of :data:`CELLS`);
    ``options`` are a modern cell's own (the LRU's ``r_min``, ``r_max``, ``max_phase``)."""
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; valid: {', '.join(CELLS)}")
    if name in MODERN_CELLS:
        from rnnlab.cells.modern import MODERN

        impl = impl or "parallel"
        if impl not in IMPLS_OF[name]:
            raise ValueError(f"unknown cell impl {impl!r} for {name}; valid: {', '.join(IMPLS_OF[name])}")
        return MODERN[name](input_size, hidden_size, num_layers=num_layers, dropout=dropout, impl=impl, **options)
    kwargs: dict[str, Any] = dict(
        input_size=input_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout if num_layers > 1 else 0.0,
        batch_first=True,
    )
    if name == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    impl = impl or "fused"
    if impl == "fused":
        module = FUSED[name](**kwargs)
    elif impl == "reference":
        from rnnlab.cells import reference

        module = reference.REFERENCE[name](**kwargs)
    else:
        raise ValueError(f"unknown cell impl {impl!r}; valid: {', '.join(IMPLS_OF[name])}")
    if name == "lstm":
        init_forget_bias(module, forget_bias)
    if spectral_radius is not None:
        set_spectral_radius(module, spectral_radius)
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
