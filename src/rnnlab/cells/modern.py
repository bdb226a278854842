"""Recurrences without a nonlinear dependence on the previous state: minGRU, minLSTM, LRU.

Each comes in two forms that compute the same function: ``parallel`` for training (a scan over
time in plain torch, no Python loop over steps) and ``reference`` (the step-by-step equations,
as ``cell.impl=reference`` is for the classic cells). tests/test_modern_cells.py checks that
they agree to 1e-10 in float64, outputs and every gradient.

**minGRU and minLSTM** (Feng et al. 2024, "Were RNNs All We Needed?", section 3 and their
log-space appendix). Gates and candidate depend on ``x_t`` only::

    minGRU:   z_t = σ(W_z x_t + b_z),  h̃_t = g(W_h x_t + b_h)
              h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t
    minLSTM:  f_t = σ(W_f x_t + b_f),  i_t = σ(W_i x_t + b_i),  h̃_t = g(W_h x_t + b_h)
              f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
              h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t

with ``g(x) = x + 0.5`` for x ≥ 0 and ``σ(x)`` below, which keeps ``h̃`` positive so that the
recurrence ``h_t = a_t ⊙ h_{t−1} + b_t`` can run in log space (Heinsen 2023):
``log h_t = a*_t + logcumsumexp_j(log b_j − a*_j)`` with ``a*_t = Σ_{k≤t} log a_k``; a
non-zero initial state adds ``exp(a*_t) ⊙ h_0``. Layers are stacked directly: layer l + 1
reads layer l's ``h`` (positive, and nonlinear in the input through ``g``).

**LRU** (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences"):
a diagonal complex linear recurrence with the exponential parametrisation
``λ = exp(−exp(ν) + i·exp(θ))`` and the γ normalisation::

    x_k = λ ⊙ x_{k−1} + exp(γ) ⊙ (B u_k),   y_k = Re(C x_k) + D u_k

``|λ|`` initialised uniformly on the ring [r_min, r_max] (the paper's Lemma 3.2) with phases
in [0, max_phase], ``exp(γ) = sqrt(1 − |λ|²)``. The block rnnlab uses (one layer is not the
model): the recurrence, then a nonlinear projection with a residual,
``out_k = y_k + GELU(W y_k + b)``. The parallel form is a Hillis–Steele associative scan over
time: log2(T) steps, each ``x[t] += λ^(2^d) x[t − 2^d]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMPLS = ("parallel", "reference")


def g(x: Tensor) -> Tensor:
    """Positive everywhere, continuous, identity-like above 0 (Feng et al. 2024, eq. 11)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor | None) -> Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t for t = 1..T (dim 1), from log a and log b, in log space."""
    a_star = torch.cumsum(log_a, dim=1)
    h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))
    if h0 is not None:
        h = h + torch.exp(a_star) * h0.unsqueeze(1)
    return h


class _MinStack(nn.Module):
    """A batch-first stack of min-cells with the interface of ``nn.GRU``:
    ``forward(x, state=None) -> (outputs (B, T, H), final state (L, B, H))``."""

    n_gates: int  # gate and candidate projections per layer: minGRU 2 (z, h̃), minLSTM 3 (f, i, h̃)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 batch_first: bool = True, impl: str = "parallel"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"unknown cell impl {impl!r}; valid: {', '.join(IMPLS)}")
        self.input_size, self.hidden_size, self.num_layers, self.impl = input_size, hidden_size, num_layers, impl
        self.dropout = nn.Dropout(dropout) if num_layers > 1 and dropout > 0 else nn.Identity()
        self.layers = nn.ModuleList(nn.Linear(input_size if k == 0 else hidden_size, self.n_gates * hidden_size)
                                    for k in range(num_layers))
        self.record = False  # the reference form: keep a gradient probe on the last layer's states
        self.recorded: dict[str, Tensor] = {}

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        finals = []
        for k, layer in enumerate(self.layers):
            h0 = None if state is None else state[k]
            pre = layer(x)  # (B, T, G·H): all gates at once, from the input alone
            if self.impl == "parallel":
                x = self._parallel(pre, h0)
            else:
                x = self._reference(pre, h0, self._probe(pre) if k == self.num_layers - 1 else None)
            finals.append(x[:, -1])
            if k < self.num_layers - 1:
                x = self.dropout(x)
        return x, torch.stack(finals)

    def _probe(self, pre: Tensor) -> Tensor | None:
        """Zeros added to each state h_t: their gradient is the true total ∂L/∂h_t."""
        if not self.record:
            return None
        probe = pre.new_zeros(pre.shape[0], pre.shape[1], self.hidden_size, requires_grad=True)
        self.recorded = {"h_probe": probe}
        return probe

    def diagnostics(self, x: Tensor) -> dict[str, float]:
        """What to log at a validation about this cell's own knobs beyond its spec's gate."""
        return {}

    def gates(self, x: Tensor) -> dict[str, Tensor]:
        """The first layer's gates over a batch (diagnostics log the spec's gate's mean)."""
        return self._gates(self.layers[0](x))

    def _gates(self, pre: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _parallel(self, pre: Tensor, h0: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _reference(self, pre: Tensor, h0: Tensor | None, probe: Tensor | None = None) -> Tensor:
        """The equations, one step at a time."""
        gates = self._gates(pre)
        keep, write, cand = gates["keep"], gates["write"], gates["candidate"]
        h = torch.zeros_like(cand[:, 0]) if h0 is None else h0
        out = []
        for t in range(pre.shape[1]):
            h = keep[:, t] * h + write[:, t] * cand[:, t]
            if probe is not None:
                h = h + probe[:, t]
            out.append(h)
        return torch.stack(out, dim=1)


class MinGRU(_MinStack):
    n_gates = 2

    def _gates(self, pre: Tensor) -> dict[str, Tensor]:
        k, h = pre.chunk(2, dim=-1)
        z = torch.sigmoid(k)
        return {"z": z, "keep": 1 - z, "write": z, "candidate": g(h)}

    def _parallel(self, pre: Tensor, h0: Tensor | None) -> Tensor:
        k, h = pre.chunk(2, dim=-1)
        log_z, log_keep = -F.softplus(-k), -F.softplus(k)  # log σ(k), log (1 − σ(k))
        return log_scan(log_keep, log_z + log_g(h), h0)


class MinLSTM(_MinStack):
    n_gates = 3

    def _gates(self, pre: Tensor) -> dict[str, Tensor]:
        kf, ki, h = pre.chunk(3, dim=-1)
        f, i = torch.sigmoid(kf), torch.sigmoid(ki)
        return {"f": f / (f + i), "keep": f / (f + i), "write": i / (f + i), "candidate": g(h)}

    def _parallel(self, pre: Tensor, h0: Tensor | None) -> Tensor:
        kf, ki, h = pre.chunk(3, dim=-1)
        diff = F.softplus(-kf) - F.softplus(-ki)  # log i − log f
        log_f, log_i = -F.softplus(diff), -F.softplus(-diff)  # log f', log i' (f' + i' = 1)
        return log_scan(log_f, log_i + log_g(h), h0)


class LRU(nn.Module):
    """A batch-first stack of LRU blocks (see the module docstring); state (L, B, H) complex."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 batch_first: bool = True, impl: str = "parallel", r_min: float = 0.9, r_max: float = 0.999,
                 max_phase: float = 2 * math.pi):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"unknown cell impl {impl!r}; valid: {', '.join(IMPLS)}")
        check_ring(r_min, r_max)
        self.input_size, self.hidden_size, self.num_layers, self.impl = input_size, hidden_size, num_layers, impl
        self.dropout = nn.Dropout(dropout) if num_layers > 1 and dropout > 0 else nn.Identity()
        self.layers = nn.ModuleList(_LRULayer(input_size if k == 0 else hidden_size, hidden_size, r_min, r_max,
                                              max_phase) for k in range(num_layers))
        self.record = False  # the reference form: keep a gradient probe on the last layer's states
        self.recorded: dict[str, Tensor] = {}

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        finals = []
        for k, layer in enumerate(self.layers):
            probe = None
            if self.record and self.impl == "reference" and k == self.num_layers - 1:
                probe = torch.zeros(x.shape[0], x.shape[1], self.hidden_size, dtype=torch.complex(x, x).dtype,
                                    device=x.device, requires_grad=True)
                self.recorded = {"h_probe": probe}
            x, last = layer(x, None if state is None else state[k], self.impl, probe)
            finals.append(last)
            if k < self.num_layers - 1:
                x = self.dropout(x)
        return x, torch.stack(finals)

    def eigenvalue_moduli(self) -> Tensor:
        """|λ| of every layer: how long each state channel remembers (|λ|^t)."""
        layers: list[_LRULayer] = list(self.layers)  # type: ignore[arg-type]  # ModuleList of _LRULayer
        return torch.cat([layer.lam().abs().detach().flatten() for layer in layers])

    def diagnostics(self, x: Tensor) -> dict[str, float]:
        """The eigenvalue moduli, the knob of the memory horizon (|λ|^t after t steps)."""
        m = self.eigenvalue_moduli()
        return {"lru/abs_lambda_min": float(m.min()), "lru/abs_lambda_median": float(m.median()),
                "lru/abs_lambda_max": float(m.max())}


def check_ring(r_min: float, r_max: float) -> None:
    """The ring [r_min, r_max] of initial eigenvalue moduli: inside the unit circle (|λ| < 1
    keeps the recurrence stable) and not empty."""
    if not 0 <= r_min < r_max < 1:
        raise ValueError(f"the LRU's eigenvalue ring needs 0 <= r_min < r_max < 1; got r_min={r_min}, "
                         f"r_max={r_max}")


class _LRULayer(nn.Module):
    def __init__(self, d_in: int, h: int, r_min: float, r_max: float, max_phase: float):
        super().__init__()
        u1, u2 = torch.rand(h), torch.rand(h)
        # |λ| uniform on the ring's area (Lemma 3.2): |λ|² ~ U[r_min², r_max²]
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        self.nu_log = nn.Parameter(torch.log(nu.clamp_min(1e-12)))
        self.theta_log = nn.Parameter(torch.log((max_phase * u2).clamp_min(1e-12)))
        modulus = torch.exp(-nu)
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt((1 - modulus**2).clamp_min(1e-12))))
        self.B_re = nn.Parameter(torch.randn(h, d_in) / math.sqrt(2 * d_in))
        self.B_im = nn.Parameter(torch.randn(h, d_in) / math.sqrt(2 * d_in))
        self.C_re = nn.Parameter(torch.randn(h, h) / math.sqrt(h))
        self.C_im = nn.Parameter(torch.randn(h, h) / math.sqrt(h))
        self.D = nn.Parameter(torch.randn(h, d_in) / math.sqrt(d_in))
        self.proj = nn.Linear(h, h)

    def lam(self) -> Tensor:
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def forward(self, u: Tensor, x0: Tensor | None, impl: str, probe: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lam = self.lam()
        B = torch.complex(self.B_re, self.B_im) * torch.exp(self.gamma_log).unsqueeze(-1)
        b = torch.complex(u, torch.zeros_like(u)) @ B.transpose(0, 1)  # (B, T, H) complex
        x = associative_scan(lam, b, x0) if impl == "parallel" else _linear_reference(lam, b, x0, probe)
        C = torch.complex(self.C_re, self.C_im)
        y = (x @ C.transpose(0, 1)).real + u @ self.D.transpose(0, 1)
        return y + F.gelu(self.proj(y)), x[:, -1]


def associative_scan(lam: Tensor, b: Tensor, x0: Tensor | None) -> Tensor:
    """x_t = λ ⊙ x_{t−1} + b_t over dim 1 in log2(T) parallel steps (Hillis & Steele 1986):
    after step d, x[t] holds the sum over the last 2^(d+1) inputs, each weighted by its power of λ."""
    x = b
    T, offset, power = b.shape[1], 1, lam
    while offset < T:
        x = torch.cat([x[:, :offset], x[:, offset:] + power * x[:, :-offset]], dim=1)
        offset, power = 2 * offset, power * power
    if x0 is not None:
        steps = torch.arange(1, T + 1, device=b.device, dtype=b.real.dtype)
        x = x + torch.exp(steps.unsqueeze(-1) * torch.log(lam)) * x0.unsqueeze(1)
    return x


def _linear_reference(lam: Tensor, b: Tensor, x0: Tensor | None, probe: Tensor | None = None) -> Tensor:
    x = torch.zeros_like(b[:, 0]) if x0 is None else x0
    out = []
    for t in range(b.shape[1]):
        x = lam * x + b[:, t]
        if probe is not None:
            x = x + probe[:, t]
        out.append(x)
    return torch.stack(out, dim=1)

