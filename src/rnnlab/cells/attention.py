"""Causal self-attention as a "cell": the ceiling a recurrent state is read against on recall tasks
(Zoology's attention baseline, Arora et al. 2023). Its state is not a fixed-size summary but the
whole context: every past step's key and value, per layer.

A pre-norm residual attention block per layer, batch-first, with the interface of ``nn.GRU``::

    u = x  (or W_in x + b_in where the input's width is not the hidden size)
    u = u + sinusoidal position (first layer only: positions of any length, no learnt table)
    u = u + W_o · softmax(q kᵀ / √d + causal mask) v,   (q, k, v) = W_qkv · LayerNorm(u)

No MLP, as Zoology's Figure 2 models (its ``state_mixer`` is the identity): the ceiling is
attention's mixing alone, 4h² + 6h parameters a layer, fewer than a GRU layer's 6h² + 6h (a
transformer's 4h-wide MLP would add 8h², twice the attention itself).

``forward(x, state=None) -> (outputs (B, T, H), state (L, B, T0 + T, 2H))``: the state holds each
layer's keys and values of every step so far (a KV cache); given one, the new steps attend to it
too and their positions continue from its length. Two forms compute the same function:
``parallel`` (PyTorch's ``scaled_dot_product_attention`` over the whole sequence with a causal
mask, the training form) and ``reference`` (the recurrence attention also is: one step at a time,
each step's key and value appended to the cache and the query attending to it). The diagnostics
replay a probe batch through the reference form, as for the scan cells, for the true ‖∂L/∂h_t‖
of the last layer's outputs; there is no gate and nothing saturates.

Its state size is the cache, ``seq_len × 2H`` floats per layer (``CellSpec.context_state``); its
FLOPs per step (``step_flops``) count the projections, not the attention over the
context, which adds ``4·t·H`` at step ``t`` (so ``2·T·H`` per step on average over a sequence).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMPLS = ("parallel", "reference")


def positions(start: int, T: int, h: int, like: Tensor) -> Tensor:
    """Sinusoidal positions ``start .. start + T - 1`` (Vaswani et al. 2017), (T, h)."""
    pos = torch.arange(start, start + T, dtype=like.dtype, device=like.device).unsqueeze(1)
    freq = torch.exp(torch.arange(0, h, 2, dtype=like.dtype, device=like.device) * (-math.log(10_000.0) / h))
    out = torch.zeros(T, h, dtype=like.dtype, device=like.device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : h // 2]
    return out


class _Block(nn.Module):
    def __init__(self, d_in: int, h: int, heads: int):
        super().__init__()
        self.h, self.heads = h, heads
        self.proj = nn.Linear(d_in, h) if d_in != h else nn.Identity()
        self.norm = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.out = nn.Linear(h, h)

    def _split(self, t: Tensor) -> Tensor:  # (B, T, h) -> (B, heads, T, h / heads)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, u: Tensor, cache: Tensor | None, impl: str, probe: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``u`` (B, T, h) after projection and positions; ``cache`` (B, T0, 2h) or None."""
        q, k, v = self.qkv(self.norm(u)).chunk(3, dim=-1)
        kv = torch.cat([k, v], dim=-1)
        kv = kv if cache is None else torch.cat([cache, kv], dim=1)
        keys, values = kv.chunk(2, dim=-1)
        if impl == "parallel":
            a = self._parallel(q, keys, values)
        else:
            a = self._reference(q, keys, values)
        u = u + self.out(a)
        if probe is not None:
            u = u + probe
        return u, kv

    def _parallel(self, q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        T, T_all = q.shape[1], keys.shape[1]
        if T == T_all:
            a = F.scaled_dot_product_attention(self._split(q), self._split(keys), self._split(values), is_causal=True)
        else:  # the new steps come after the cached ones: step i sees every key up to T0 + i
            seen = torch.arange(T_all, device=q.device) <= (T_all - T + torch.arange(T, device=q.device)).unsqueeze(1)
            a = F.scaled_dot_product_attention(self._split(q), self._split(keys), self._split(values), attn_mask=seen)
        return a.transpose(1, 2).flatten(2)

    def _reference(self, q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """One step at a time: step t's query against the keys of every step up to t."""
        T0 = keys.shape[1] - q.shape[1]
        out = []
        for t in range(q.shape[1]):
            qt = self._split(q[:, t : t + 1])  # (B, heads, 1, d)
            kt, vt = self._split(keys[:, : T0 + t + 1]), self._split(values[:, : T0 + t + 1])
            w = torch.softmax(qt @ kt.transpose(-1, -2) / math.sqrt(qt.shape[-1]), dim=-1)
            out.append((w @ vt).transpose(1, 2).flatten(2))
        return torch.cat(out, dim=1)


class Attention(nn.Module):
    """A batch-first stack of causal self-attention blocks (see the module docstring)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 batch_first: bool = True, impl: str = "parallel", num_heads: int = 1):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"unknown cell impl {impl!r}; valid: {', '.join(IMPLS)}")
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"attention's num_heads must divide hidden_size {hidden_size}; got {num_heads}")
        self.input_size, self.hidden_size, self.num_layers, self.impl = input_size, hidden_size, num_layers, impl
        self.num_heads = num_heads
        self.layers = nn.ModuleList(_Block(input_size if k == 0 else hidden_size, hidden_size, num_heads)
                                    for k in range(num_layers))
        self.record = False  # the reference form: keep a gradient probe on the last layer's outputs
        self.recorded: dict[str, Tensor] = {}

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        start = 0 if state is None else state.shape[2]
        caches = []
        blocks: list[_Block] = list(self.layers)  # type: ignore[arg-type]  # ModuleList of _Block
        for k, block in enumerate(blocks):
            u = block.proj(x)
            if k == 0:
                u = u + positions(start, x.shape[1], self.hidden_size, u)
            probe = None
            if self.record and self.impl == "reference" and k == self.num_layers - 1:
                probe = u.new_zeros(u.shape, requires_grad=True)
                self.recorded = {"h_probe": probe}
            x, kv = block(u, None if state is None else state[k], self.impl, probe)
            caches.append(kv)
        return x, torch.stack(caches)

    def diagnostics(self, x: Tensor) -> dict[str, float]:
        return {}
