"""Step-by-step reference cells, written as the textbook equations.

:class:`ReferenceRNN`, :class:`ReferenceLSTM` and :class:`ReferenceGRU` are drop-in, batch-first
replacements for ``nn.RNN``/``nn.LSTM``/``nn.GRU``: the same constructor arguments (the subset
``input_size, hidden_size, num_layers, dropout, batch_first=True`` plus ``nonlinearity`` for the
RNN, keyword-only after ``num_layers``; also ``device``, ``dtype``), the same attributes, and
exactly the same parameters, so ``state_dict`` loads both ways::

    weight_ih_l{k}  (G*H, I_k)    weight_hh_l{k}  (G*H, H)
    bias_ih_l{k}    (G*H,)        bias_hh_l{k}    (G*H,)

with G = 1 (RNN), 4 (LSTM), 3 (GRU) and I_0 = input_size, I_k = hidden_size for k > 0.

Conventions. The code works on row vectors (a batch is a stack of rows), so the textbook's
column-vector ``W_xh x_t`` is ``x_t @ W_xh.T`` here; in the LSTM/GRU docstrings the row-vector
matrices are ``W = weight_ih.T`` (I, G*H) and ``U = weight_hh.T`` (H, G*H). PyTorch keeps two
bias vectors where the textbook has one: wherever the equations allow it the code folds them,
``b = bias_ih + bias_hh``; the GRU cannot, because ``r`` multiplies ``W_hn h + b_hn`` only.

Speed. The input projection ``x_t W + b`` of every time step is one matmul per layer before
the time loop; the loop then does one ``addmm`` and a few element-wise ops per step. The per-step
inputs are taken with ``unbind`` (one autograd node for all steps) rather than by indexing,
whose backward would write a full (B, T, G*H) zero tensor at every step. ``torch.jit.script``
of the loop (deprecated in this torch) gave no gain; ``torch.compile`` of the step lost to its
per-call overhead, and of the whole layer took minutes to compile and recompiles for every new
(B, T). So the loop is plain Python and works in any dtype (float64 included) and under
autograd. Its speed against the fused cells is measured by ``make bench`` ("fused vs
reference" in experiments/bench/results.md).

Recording. Set ``module.record = True`` and every forward also fills ``module.recorded``::

    recorded["h"]        list over layers of (B, T, H): that layer's hidden states h_1..h_T
                         (before inter-layer dropout), in the graph (the last layer's is the
                         output). Its .grad is NOT the true dL/dh_t: it misses the path
                         through h_{t+1}.
    recorded["h_probe"]  list over layers of (B, T, H) zero leaves with requires_grad, one per
                         layer, added to h_t inside the loop (h_t <- h_t + probe[:, t]) before
                         h_t is used anywhere. Their gradient is the TRUE total dL/dh_t
                         (through the outputs, the next step, the next layer and the final
                         state): ``torch.autograd.grad(loss, recorded["h_probe"])`` or, after
                         ``loss.backward()``, ``recorded["h_probe"][k].grad``.
                         Only present when grad mode is on.
    recorded["gates"]    dict name -> (num_layers, B, T, H) detached gate activations:
                         LSTM "i", "f", "g", "o"; GRU "r", "z" (update gate), "n"; RNN none.

:func:`hidden_grad_norms` and :func:`mean_gate` read these. With ``record = False`` (default)
the loop does no extra work and ``recorded`` is ``None``.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ReferenceGRU",
    "ReferenceLSTM",
    "ReferenceRNN",
    "hidden_grad_norms",
    "mean_gate",
]


class _ReferenceStack(nn.Module):
    """Shared machinery: parameters, initial state, layer stacking, dropout, recording.

    A subclass defines ``gate_blocks`` (G), ``gate_names``, :meth:`_input_projection` (all time
    steps at once) and :meth:`_step` (one time step, the textbook equations).
    """

    gate_blocks: int = 1
    gate_names: tuple[str, ...] = ()
    has_cell_state: bool = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        dropout: float = 0.0,
        batch_first: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if not batch_first:
            raise ValueError("reference cells are batch-first only (batch_first=True)")
        if hidden_size <= 0 or input_size <= 0:
            raise ValueError("input_size and hidden_size must be positive")
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError("dropout must be in [0, 1]")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout acts between layers only; with num_layers=1 it does nothing",
                stacklevel=2,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.batch_first = True
        self.bias = True
        self.bidirectional = False
        self.record: bool = False
        self.recorded: dict | None = None
        factory = {"device": device, "dtype": dtype}
        rows = self.gate_blocks * hidden_size
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            # Registration order matches nn.RNN/LSTM/GRU, so state_dict keys come out in order.
            self.register_parameter(
                f"weight_ih_l{k}", nn.Parameter(torch.empty(rows, layer_input, **factory))
            )
            self.register_parameter(
                f"weight_hh_l{k}", nn.Parameter(torch.empty(rows, hidden_size, **factory))
            )
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(rows, **factory)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(rows, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def flatten_parameters(self) -> None:
        """No-op, for code written against the fused modules."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s + ", batch_first=True"

    # -- to be defined by each cell -----------------------------------------------------------
    def _input_projection(self, x: Tensor, layer: int) -> Tensor:
        raise NotImplementedError

    def _step(self, xw_t: Tensor, h: Tensor, c: Tensor | None, U: Tensor, b_hh: Tensor):
        """One time step: ``(h_t, c_t or None, gates tuple in gate_names order)``.

        ``xw_t`` is this step's slice of :meth:`_input_projection`, ``U = weight_hh.T``.
        """
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def _initial_state(self, x: Tensor, state) -> tuple[Tensor, Tensor | None]:
        shape = (self.num_layers, x.size(0), self.hidden_size)
        if self.has_cell_state:
            if state is None:
                zeros = x.new_zeros(shape)
                return zeros, zeros
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise ValueError("LSTM state must be a tuple (h_0, c_0)")
            h0, c0 = state
        else:
            if state is None:
                return x.new_zeros(shape), None
            if isinstance(state, (tuple, list)):
                raise ValueError(f"{type(self).__name__} state must be a tensor h_0")
            h0, c0 = state, None
        for name, s in (("h_0", h0), ("c_0", c0)):
            if s is not None and tuple(s.shape) != shape:
                raise ValueError(f"expected {name} of shape {shape}, got {tuple(s.shape)}")
        return h0, c0

    def forward(self, x: Tensor, state=None):
        """``x`` (B, T, input_size) -> ``(outputs (B, T, H) of the last layer, final state)``.

        The final state is ``h_n`` (num_layers, B, H), or ``(h_n, c_n)`` for the LSTM, exactly
        as the fused modules return it. Dropout (training mode only) acts on the outputs of
        every layer but the last, as in PyTorch.
        """
        if x.dim() != 3:
            raise ValueError(f"expected batch-first input (B, T, input_size), got {tuple(x.shape)}")
        if x.size(2) != self.input_size:
            raise ValueError(f"expected input_size {self.input_size}, got {x.size(2)}")
        h0, c0 = self._initial_state(x, state)
        record = self.record
        probing = record and torch.is_grad_enabled()
        if record:
            rec_h: list[Tensor] = []
            rec_probe: list[Tensor] = []
            rec_gates: dict[str, list[Tensor]] = {n: [] for n in self.gate_names}
        else:
            self.recorded = None

        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        layer_input = x
        out = x
        for k in range(self.num_layers):
            U = getattr(self, f"weight_hh_l{k}").t()
            b_hh = getattr(self, f"bias_hh_l{k}")
            xw_steps = self._input_projection(layer_input, k).unbind(1)
            h = h0[k]
            c = c0[k] if c0 is not None else None
            outs: list[Tensor] = []
            if not record:
                for xw_t in xw_steps:
                    h, c, _ = self._step(xw_t, h, c, U, b_hh)
                    outs.append(h)
            else:
                gates_t: list[tuple[Tensor, ...]] = []
                probe = None
                if probing:
                    probe = x.new_zeros(x.size(0), x.size(1), self.hidden_size).requires_grad_()
                    rec_probe.append(probe)
                    probe_steps = probe.unbind(1)
                for t, xw_t in enumerate(xw_steps):
                    h, c, gates = self._step(xw_t, h, c, U, b_hh)
                    if probe is not None:
                        h = h + probe_steps[t]  # adds 0; its gradient is the total dL/dh_t
                    outs.append(h)
                    gates_t.append(gates)
                for j, name in enumerate(self.gate_names):
                    rec_gates[name].append(torch.stack([g[j] for g in gates_t], 1).detach())
            out = torch.stack(outs, 1)
            if record:
                rec_h.append(out)
            h_n.append(h)
            if c is not None:
                c_n.append(c)
            if k < self.num_layers - 1 and self.dropout > 0 and self.training:
                # The fused kernels run time-major and draw the mask over a (T, B, H) tensor;
                # drawing it the same way drops the same units under the same seed.
                layer_input = F.dropout(
                    out.transpose(0, 1).contiguous(), self.dropout, training=True
                ).transpose(0, 1)
            else:
                layer_input = out

        if record:
            self.recorded = {
                "h": rec_h,
                "gates": {n: torch.stack(v, 0) for n, v in rec_gates.items()},
            }
            if probing:
                self.recorded["h_probe"] = rec_probe
        final_h = torch.stack(h_n, 0)
        if self.has_cell_state:
            return out, (final_h, torch.stack(c_n, 0))
        return out, final_h


class ReferenceRNN(_ReferenceStack):
    r"""Elman RNN, batch-first, ``nn.RNN``'s parameters.

    .. math:: h_t = \tanh(W_{xh} x_t + W_{hh} h_{t-1} + b_h)

    with ``W_xh = weight_ih_l{k}``, ``W_hh = weight_hh_l{k}``, ``b_h = bias_ih_l{k} +
    bias_hh_l{k}`` (column vectors; the code computes the row form
    ``x_t W_xh^T + h_{t-1} W_hh^T + b_h``). ``nonlinearity="relu"`` replaces tanh by ReLU.
    """

    gate_blocks = 1
    gate_names = ()

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        batch_first: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; valid: tanh, relu")
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            dropout=dropout,
            batch_first=batch_first,
            device=device,
            dtype=dtype,
        )
        self.nonlinearity = nonlinearity

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"

    def _input_projection(self, x: Tensor, layer: int) -> Tensor:
        # W_xh x_t + b_h for every t at once, with b_h = bias_ih + bias_hh.
        W_xh = getattr(self, f"weight_ih_l{layer}")
        b_h = getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")
        return F.linear(x, W_xh, b_h)

    def _step(self, xw_t, h, c, U, b_hh):
        # h_t = tanh(W_xh x_t + b_h + W_hh h_{t-1})
        phi = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        h = phi(torch.addmm(xw_t, h, U))
        return h, None, ()


class ReferenceLSTM(_ReferenceStack):
    r"""LSTM with forget gate, batch-first, ``nn.LSTM``'s parameters.

    Row-vector form, ``W = weight_ih_l{k}^T`` (I, 4H), ``U = weight_hh_l{k}^T`` (H, 4H),
    ``b = bias_ih_l{k} + bias_hh_l{k}``::

        z   = x_t W + h_{t-1} U + b          split into four H-wide blocks, in PyTorch's
        z_i, z_f, z_g, z_o = z[:, 0:H], z[:, H:2H], z[:, 2H:3H], z[:, 3H:4H]   order (i, f, g, o)
        i   = σ(z_i)                         input gate
        f   = σ(z_f)                         forget gate (its bias is bias_*[H:2H])
        g   = tanh(z_g)                      candidate cell
        o   = σ(z_o)                         output gate
        c_t = f ⊙ c_{t-1} + i ⊙ g
        h_t = o ⊙ tanh(c_t)
    """

    gate_blocks = 4
    gate_names = ("i", "f", "g", "o")
    has_cell_state = True

    def _input_projection(self, x: Tensor, layer: int) -> Tensor:
        # x_t W + b for every t at once.
        W = getattr(self, f"weight_ih_l{layer}")
        b = getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")
        return F.linear(x, W, b)

    def _step(self, xw_t, h, c, U, b_hh):
        z = torch.addmm(xw_t, h, U)  # z = x_t W + b + h_{t-1} U
        z_i, z_f, z_g, z_o = z.chunk(4, 1)
        i = torch.sigmoid(z_i)
        f = torch.sigmoid(z_f)
        g = torch.tanh(z_g)
        o = torch.sigmoid(z_o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        return h, c, (i, f, g, o)


class ReferenceGRU(_ReferenceStack):
    r"""GRU (Cho et al. 2014) as PyTorch documents it, batch-first, ``nn.GRU``'s parameters.

    Blocks in PyTorch's order (r, z, n); ``W_i* = weight_ih_l{k}`` rows, ``W_h* = weight_hh_l{k}``
    rows::

        r   = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)           reset gate
        z   = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)           update gate
        n   = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))  candidate
        h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}

    ``r`` multiplies ``W_hn h + b_hn`` only, so the two bias vectors cannot be folded into one.
    """

    gate_blocks = 3
    gate_names = ("r", "z", "n")

    def _input_projection(self, x: Tensor, layer: int) -> Tensor:
        # W_i* x_t + b_i* for every t at once, blocks (r, z, n).
        return F.linear(x, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_ih_l{layer}"))

    def _step(self, xw_t, h_prev, c, U, b_hh):
        hw = torch.addmm(b_hh, h_prev, U)  # W_h* h_{t-1} + b_h*
        x_r, x_z, x_n = xw_t.chunk(3, 1)
        h_r, h_z, h_n = hw.chunk(3, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = (1 - z) * n + z * h_prev
        return h, None, (r, z, n)


def _recorded(module: nn.Module) -> dict:
    rec = getattr(module, "recorded", None)
    if rec is None:
        raise RuntimeError(
            "nothing recorded: set module.record = True before the forward pass"
        )
    return rec


def hidden_grad_norms(module: nn.Module, loss: Tensor, layer: int = -1) -> Tensor:
    """``‖∂L/∂h_t‖`` for t = 1..T, shape (T,), after a forward with ``record = True``.

    The gradient is the true total one (through h_{t+1}, the outputs and the final state), taken
    with ``torch.autograd.grad`` on ``recorded["h_probe"][layer]`` (default: last layer); the norm
    is over batch and hidden units together (Frobenius norm of the (B, H) slice). The graph is
    retained, so ``loss.backward()`` still works afterwards, and parameter ``.grad`` is untouched.
    """
    rec = _recorded(module)
    if "h_probe" not in rec:
        raise RuntimeError("no gradient probe recorded: the forward pass ran without grad mode")
    probe = rec["h_probe"][layer]
    (grad,) = torch.autograd.grad(loss, probe, retain_graph=True, allow_unused=True)
    if grad is None:  # the loss does not depend on this layer at all
        return probe.new_zeros(probe.size(1))
    return grad.detach().norm(dim=(0, 2))


def mean_gate(module: nn.Module, name: str, layer: int | None = None) -> float:
    """Mean activation of gate ``name`` from the last recorded forward (all layers by default).

    LSTM: "i", "f", "g", "o"; GRU: "r", "z" (update gate), "n".
    """
    gates = _recorded(module)["gates"]
    if name not in gates:
        raise KeyError(f"no gate {name!r} recorded; recorded: {', '.join(gates) or 'none'}")
    g = gates[name] if layer is None else gates[name][layer]
    return float(g.mean())
