"""Recurrent cells: where a new cell goes. One :class:`CellSpec` per cell, in :data:`SPECS`.

A new cell is three things: its module in this package (a batch-first stack with the interface of
``nn.GRU``: ``forward(x, state=None) -> (outputs (B, T, H), final state)``), a row in
:data:`SPECS` below, and ``conf/cell/<name>.yaml`` with exactly the keys its spec names. What
reads the spec: the names a config may choose (``config.CELLS``, the allowed ``cell.impl``),
the builder (:func:`rnnlab.cells.factory.build`), the parameter and FLOP counts
(:mod:`rnnlab.cells.params`, so ``model.param_budget`` works), the diagnostics (which gate to
log, whether states saturate, what the cell's own probe returns), the benchmark (which cells
PyTorch fuses) and the report's colours. The tests parametrise over :data:`SPECS` and check
each yaml against its spec.

What the diagnostics need from the reference form (they replay a probe batch through it for
the true ``‖∂L/∂h_t‖``; what they log is the spec's :attr:`CellSpec.metrics`), one of two shapes:

- a classic cell (its fused and reference forms are two classes sharing one ``state_dict``):
  ``record`` / ``recorded`` as documented in :mod:`rnnlab.cells.reference` (per-layer states,
  zero probes on them, gate activations);
- a one-class cell (``impl`` = parallel | reference, an attribute the diagnostics switch on a
  copy): ``record`` / ``recorded["h_probe"]`` (zeros added to the last layer's states) and
  ``recorded["h"]`` (per-layer states, read when the spec says ``saturates``), ``gates(x)`` (the
  first layer's gates, of which the spec's ``gate`` is logged) and ``diagnostics(x)`` (its own
  knobs, named in the spec's ``probe_metrics``, e.g. the LRU's |λ|), as the base class in
  :mod:`rnnlab.cells.modern` provides.

This module imports no torch: ``config`` validates a command line before torch loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class CellSpec:
    name: str
    linear: bool  # h_t linear in h_{t-1} (the modern cells): a parallel scan trains it
    # impl -> "module:Class" that computes it; the first is the default. Every cell has a
    # "reference" (the step-by-step equations: the diagnostics replay batches through it);
    # a linear cell's fast form is "parallel", both computed by one class.
    impls: dict[str, str]
    layer_params: Callable[[int, int, int], int]  # (input i, hidden h, bias vectors per block) -> one layer's count
    step_flops: Callable[[int, int], int]  # (i, h) -> matmul FLOPs of one time step of one sequence
    color: str  # the report's colour for this cell, the same in every figure
    gate_blocks: int | None = None  # gate and candidate blocks of the input (and recurrent) matrix
    gate: tuple[str, str] | None = None  # (gate, metric): its mean, logged at each validation
    options: tuple[str, ...] = ()  # the cell's own config keys its class takes (beyond sizes, layers, dropout)
    hooks: dict[str, Any] = field(default_factory=dict)  # initialisation keys -> default (None: left as built)
    # Floats of recurrent state one layer (block) carries per sequence, for hidden size h: what
    # the next step reads of the past besides the input. See :meth:`state_size`.
    layer_state: Callable[[int], int] = lambda h: h
    # Its states are squashed into (−1, 1) (tanh), so the share near ±1 means something:
    # the diagnostics log it as ``hidden/saturation``.
    saturates: bool = False
    # The metrics the reference form's own ``diagnostics(x)`` returns (beyond gate and saturation).
    probe_metrics: tuple[str, ...] = ()
    # Its state is its whole context (attention's keys and values): ``layer_state`` per step, so
    # the state grows with the sequence's length. See :meth:`state_size`.
    context_state: bool = False

    @property
    def default_impl(self) -> str:
        return next(iter(self.impls))

    @property
    def torch_fused(self) -> bool:
        """One of its forms is a fused kernel of PyTorch's own (``torch.nn``: cuDNN on a GPU,
        oneDNN on a CPU), which the benchmark holds against the reference form."""
        return any(path.startswith("torch.") for path in self.impls.values())

    @property
    def metrics(self) -> tuple[str, ...]:
        """What the diagnostics' cell probe logs for this cell at each validation."""
        return (*(("hidden/saturation",) if self.saturates else ()), *((self.gate[1],) if self.gate else ()),
                *self.probe_metrics)

    def state_size(self, hidden_size: int, num_layers: int = 1, seq_len: int | None = None) -> int:
        """Floats of recurrent state one sequence carries from step to step, over all layers:
        H per layer for the RNN, GRU, minGRU and minLSTM (h), 2H for the LSTM (h and c), 2N per
        LRU block (N complex state channels). Excludes the input and anything recomputed from
        it; it is the memory a recurrence compresses the past into. A cell whose state is its
        context (``context_state``: attention's keys and values, 2H per step and layer) carries
        that much per step of ``seq_len``, which it then needs."""
        per_layer = self.layer_state(hidden_size)
        if self.context_state:
            if seq_len is None:
                raise ValueError(f"cell {self.name}'s state is its context: its state_size needs seq_len")
            per_layer *= seq_len
        return num_layers * per_layer

    @property
    def one_class(self) -> bool:
        """One class computes every form, chosen by its ``impl`` argument (the scan cells);
        else each form is its own class loading the same ``state_dict`` (fused and reference).
        How a stack is built, nothing more: behaviour reads the named fields above."""
        return len(set(self.impls.values())) == 1

    def cls(self, impl: str) -> Any:
        """The class that computes ``impl``, imported on first use."""
        module, _, attr = self.impls[impl].partition(":")
        return getattr(import_module(module), attr)


def _classic(gates: int) -> dict[str, Any]:
    """A gated cell with an (h × i) input and an (h × h) recurrent matrix per gate block."""
    return dict(gate_blocks=gates, layer_params=lambda i, h, nb: gates * h * (h + i + nb),
                step_flops=lambda i, h: 2 * gates * h * (i + h))


def _min(gates: int) -> dict[str, Any]:
    """A min-cell: gates and candidate from x_t only, one nn.Linear (single bias) for all."""
    return dict(gate_blocks=gates, layer_params=lambda i, h, nb: gates * h * (i + 1),
                step_flops=lambda i, h: 2 * gates * h * i)


_FUSED = {"fused": "torch.nn:{}", "reference": "rnnlab.cells.reference:Reference{}"}
_SCAN = {"parallel": "rnnlab.cells.modern:{}", "reference": "rnnlab.cells.modern:{}"}


def _impls(forms: dict[str, str], cls: str) -> dict[str, str]:
    return {impl: path.format(cls) for impl, path in forms.items()}


SPECS: dict[str, CellSpec] = {s.name: s for s in (
    CellSpec("rnn", False, _impls(_FUSED, "RNN"), color="tab:red", options=("nonlinearity",),
             hooks={"spectral_radius": None}, saturates=True, **_classic(1)),
    CellSpec("lstm", False, _impls(_FUSED, "LSTM"), color="tab:blue", gate=("f", "gates/forget_mean"),
             hooks={"forget_bias": 1.0, "spectral_radius": None}, saturates=True,
             layer_state=lambda h: 2 * h, **_classic(4)),
    CellSpec("gru", False, _impls(_FUSED, "GRU"), color="tab:green", gate=("z", "gates/update_mean"),
             hooks={"spectral_radius": None}, saturates=True, **_classic(3)),
    # minGRU's z is the share of the *new* candidate (h_t = (1 − z) h_{t−1} + z h̃_t), the GRU's
    # the share of the *old* state (PyTorch: h_t = (1 − z) n_t + z h_{t−1}): the same name, 1 − each other.
    CellSpec("mingru", True, _impls(_SCAN, "MinGRU"), color="tab:purple", gate=("z", "gates/update_mean"),
             **_min(2)),
    CellSpec("minlstm", True, _impls(_SCAN, "MinLSTM"), color="tab:brown", gate=("f", "gates/forget_mean"),
             **_min(3)),
    # B, C complex (h × i, h × h), D (h × i), ν, θ, γ (h each), and the block's W (h × h) + b
    # its state: N = hidden_size complex channels per block, 2N floats
    CellSpec("lru", True, _impls(_SCAN, "LRU"), color="tab:pink",
             options=("r_min", "r_max", "max_phase"), layer_state=lambda h: 2 * h,
             probe_metrics=("lru/abs_lambda_min", "lru/abs_lambda_median", "lru/abs_lambda_max"),
             layer_params=lambda i, h, nb: 3 * h * i + 3 * h * h + 4 * h,
             step_flops=lambda i, h: 2 * (3 * h * i + 3 * h * h)),
    # Not a recurrence: causal self-attention, the ceiling recall is read against (Zoology's). Its state
    # is its context, keys and values (2h) per step and layer; a pre-norm block per layer: an input
    # projection where i ≠ h, a LayerNorm, W_qkv and W_o, no MLP (rnnlab.cells.attention).
    CellSpec("attention", False, {"parallel": "rnnlab.cells.attention:Attention",
                                      "reference": "rnnlab.cells.attention:Attention"},
             color="black", options=("num_heads",), layer_state=lambda h: 2 * h, context_state=True,
             layer_params=lambda i, h, nb: (i * h + h if i != h else 0) + 4 * h * h + 6 * h,
             step_flops=lambda i, h: 2 * ((i * h if i != h else 0) + 4 * h * h)),
)}


def spec(name: str) -> CellSpec:
    """The spec of cell ``name``; ValueError naming the valid cells otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown cell {name!r}; valid: {', '.join(SPECS)}")
    return SPECS[name]
