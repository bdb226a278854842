"""Parameter and matmul FLOP counts of the recurrent cells, in closed form.

A cell with G gate blocks (RNN 1, GRU 3, LSTM 4), input size i and hidden size h has, per layer,
G blocks of an (h × i) input matrix, an (h × h) recurrent matrix and bias::

    single bias  (textbook):  G·h·(h + i + 1)    RNN h(h+i+1), GRU 3h(h+i+1), LSTM 4h(h+i+1)
    pytorch      (two biases, bias_ih and bias_hh): G·h·(h + i + 2)

Layers after the first take the hidden state as input (i = h). For i = 300, h = 128:
single 54,912 / 164,736 / 219,648 and pytorch 55,040 / 165,120 / 220,160 (RNN / GRU / LSTM).

The modern cells have no recurrent matrix (their gates read x_t only), per layer::

    minGRU   2·h·(i + 1)                 W_z, W_h with their biases
    minLSTM  3·h·(i + 1)                 W_f, W_i, W_h
    LRU      3·h·i + 3·h² + 4·h          ν, θ, γ (h each), B (complex h × i), C (complex h × h),
                                         D (h × i), and the block's projection W (h × h) + b

The same blocks set the matmul FLOPs of a forward pass (:func:`forward_flops`), which the
benchmark (``src/bench.py``) turns into a roofline. Both per-layer formulas sit side by side in
each cell's spec (``rnnlab.cells.SPECS``: ``layer_params``, ``step_flops``), so that the
parameter and FLOP counts cannot disagree about what a cell is; this module sums them over
layers, encoder and head.

CLI: ``python -m rnnlab.cells.params --input-size 300 --hidden-size 128 [--num-layers 1]``.
"""

from __future__ import annotations

import argparse

from rnnlab.cells import SPECS, spec

BIAS_VECTORS = {"single": 1, "pytorch": 2}


def count_params(
    cell: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: str = "pytorch"
) -> int:
    """Number of parameters of a ``num_layers`` stack of ``cell`` (any of ``rnnlab.cells.SPECS``).

    ``bias="pytorch"`` counts two bias vectors per gate block, as ``nn.RNN``/``nn.GRU``/
    ``nn.LSTM`` store them; ``bias="single"`` counts one, as the textbook equations have it (the
    modern cells have one layout: nn.Linear's single bias).
    """
    layer_params = spec(cell).layer_params
    if bias not in BIAS_VECTORS:
        raise ValueError(f"unknown bias layout {bias!r}; valid: {', '.join(BIAS_VECTORS)}")
    if input_size < 1 or hidden_size < 1 or num_layers < 1:
        raise ValueError("input_size, hidden_size and num_layers must be >= 1")
    h, nb = hidden_size, BIAS_VECTORS[bias]
    return sum(layer_params(input_size if layer == 0 else h, h, nb) for layer in range(num_layers))


def forward_flops(cell: str, batch: int, seq_len: int, hidden_size: int, embed_dim: int,
                  input_size: int, output_size: int, input_kind: str = "tokens",
                  readout: str = "seq", num_layers: int = 1) -> dict[str, int]:
    """Matmul FLOPs (multiply + add = 2) of one forward pass of ``RecurrentModel``.

    * encoder: an embedding lookup costs none; a linear projection of ``input_size`` real
      features costs ``2·B·T·input_size·E``;
    * recurrence: per layer and time step ``2·B·G·H·(I + H)`` with G gate blocks and
      I = E for the first layer, H after it (as in :func:`count_params`); minGRU and minLSTM
      ``2·B·G·H·I`` (no recurrent matrix), the LRU ``2·B·(3·H·I + 3·H²)`` (B and C complex, D, W);
      a scan's element-wise work is left out like the gates';
    * head: ``2·B·H·output_size`` per read position (T of them for ``readout="seq"``, else 1).

    Element-wise work (gates, losses, the optimizer) is left out: it is memory-bound, so it
    does not belong on a roofline whose ceiling is a matmul.
    """
    step_flops = spec(cell).step_flops
    B, T, H, E = batch, seq_len, hidden_size, embed_dim
    encoder = 0 if input_kind == "tokens" else 2 * B * T * input_size * E
    recurrence = sum(B * T * step_flops(E if k == 0 else H, H) for k in range(num_layers))
    head = 2 * B * (T if readout == "seq" else 1) * H * output_size
    return {"encoder": encoder, "recurrence": recurrence, "head": head,
            "forward": encoder + recurrence + head}


def train_step_flops(cell: str, batch: int, seq_len: int, hidden_size: int, embed_dim: int,
                     input_size: int, output_size: int, input_kind: str = "tokens",
                     readout: str = "seq", num_layers: int = 1) -> int:
    """Matmul FLOPs of one training step: 3 × :func:`forward_flops`, because the backward pass
    of every matmul computes two products of the same size, the gradients with respect to its
    input and to its weights."""
    return 3 * forward_flops(cell, batch, seq_len, hidden_size, embed_dim, input_size, output_size,
                             input_kind, readout, num_layers)["forward"]


def model_params(cell: str, input_kind: str, input_size: int, embed_dim: int, hidden_size: int,
                 num_layers: int, output_size: int) -> int:
    """Parameters of a whole ``RecurrentModel``: encoder (an embedding for tokens, a linear
    projection with bias for real inputs), the recurrent stack, and the linear head."""
    encoder = input_size * embed_dim + (embed_dim if input_kind == "real" else 0)
    head = hidden_size * output_size + output_size
    return encoder + count_params(cell, embed_dim, hidden_size, num_layers) + head


def hidden_for_budget(budget: int, cell: str, input_kind: str, input_size: int, embed_dim: int,
                      num_layers: int, output_size: int, tolerance: float = 0.02) -> int:
    """The hidden size whose model is closest to ``budget`` parameters, for comparisons at
    equal capacity (Collins et al. 2017): at one hidden size an LSTM has 4x the recurrent
    weights of a vanilla RNN. ValueError if no size comes within ``tolerance``."""
    def size(h: int) -> int:
        return model_params(cell, input_kind, input_size, embed_dim, h, num_layers, output_size)

    lo, hi = 1, 1
    while size(hi) < budget:  # the count grows with h: bracket, then bisect
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) < budget else (lo, mid)
    best = min((lo, hi), key=lambda h: abs(size(h) - budget))
    if abs(size(best) - budget) > tolerance * budget:
        raise ValueError(f"no hidden size gives {budget:,} parameters within {tolerance:.0%} "
                         f"(hidden {best}: {size(best):,})")
    return best


def table(input_size: int, hidden_size: int, num_layers: int = 1) -> str:
    """A plain-text table of :func:`count_params` for every cell in both bias layouts (the
    modern cells have one: their rows repeat)."""
    rows = [("cell", "single bias", "pytorch (2 biases)", "difference")]
    for cell in SPECS:
        single = count_params(cell, input_size, hidden_size, num_layers, "single")
        pytorch = count_params(cell, input_size, hidden_size, num_layers, "pytorch")
        rows.append((cell, f"{single:,}", f"{pytorch:,}", f"{pytorch - single:,}"))
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    lines = [
        r[0].ljust(widths[0]) + "".join("  " + r[k].rjust(widths[k]) for k in range(1, 4))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    head = f"input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}"
    return head + "\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rnnlab.cells.params",
        description="Parameter counts of RNN, GRU and LSTM stacks (single vs PyTorch bias).",
    )
    parser.add_argument("--input-size", type=int, required=True)
    parser.add_argument("--hidden-size", type=int, required=True)
    parser.add_argument("--num-layers", type=int, default=1)
    args = parser.parse_args(argv)
    print(table(args.input_size, args.hidden_size, args.num_layers))


if __name__ == "__main__":
    main()
