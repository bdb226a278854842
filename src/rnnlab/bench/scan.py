"""Section 3b: the modern cells' parallel scan against their step-by-step form, beside the fused
LSTM and GRU: tokens per second of one training step of the recurrent stack alone (forward
and backward of a (B, T, H) batch through it, no encoder, head or optimizer), so that what
differs is the recurrence. Each form is timed interleaved with the others, medians of the
repeats (rnnlab.bench.timing)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from rnnlab.bench.timing import default_flags, interleave, median
from rnnlab.cells.factory import build
from rnnlab.config import MODERN_CELLS

FUSED = ("lstm", "gru")


def step_timer(cell: str, impl: str, batch: int, seq_len: int, hidden: int, steps: int,
               device: str = "cpu") -> Callable[[], dict[str, float]]:
    """A measurement: ``steps`` training steps of the stack (after one untimed), tokens/s; on a
    GPU also the peak memory of the steps. The stack and its batch are built when it runs and
    freed after, so that the forms measured beside it hold no memory meanwhile: the peak is
    this form's alone (input, weights, gradients, and what its forward keeps for backward)."""

    def measure() -> dict[str, float]:
        torch.manual_seed(0)
        stack = build(cell, input_size=hidden, hidden_size=hidden, impl=impl).to(device)
        x = torch.randn(batch, seq_len, hidden, device=device)

        def one() -> None:
            out, _ = stack(x)
            out.square().mean().backward()

        one()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(steps):
            one()
        if device != "cuda":
            return {"tokens_per_s": steps * batch * seq_len / (time.perf_counter() - t0)}
        torch.cuda.synchronize()
        return {"tokens_per_s": steps * batch * seq_len / (time.perf_counter() - t0),
                "peak_mib": torch.cuda.max_memory_allocated() / 2**20}  # Feng et al. compare memory too

    return measure


def measure(seq_lens: tuple[int, ...], hiddens: tuple[int, ...], batch: int, steps: int, repeats: int,
            log: Callable[[str], None], device: str = "cpu") -> list[dict]:
    rows = []
    for hidden in hiddens:
        for T in seq_lens:
            forms = [(c, "parallel") for c in MODERN_CELLS] + [(c, "reference") for c in MODERN_CELLS] + \
                    [(c, "fused") for c in FUSED]
            with default_flags():
                results = interleave(repeats, *(step_timer(c, impl, batch, T, hidden, steps, device)
                                                for c, impl in forms))
            speed = {f"{c}/{impl}": median(r) for (c, impl), r in zip(forms, results)}
            peak = {f"{c}/{impl}": max(x["peak_mib"] for x in r) for (c, impl), r in zip(forms, results)
                    if "peak_mib" in r[0]}
            for cell in MODERN_CELLS:
                par, seq = speed[f"{cell}/parallel"], speed[f"{cell}/reference"]
                row = {"cell": cell, "seq_len": T, "hidden": hidden, "batch": batch, "device": device,
                       "parallel_tokens_per_s": par, "sequential_tokens_per_s": seq,
                       "parallel_over_sequential": par / seq, "parallel_over_fused_lstm": par / speed["lstm/fused"],
                       "parallel_over_fused_gru": par / speed["gru/fused"],
                       "fused_lstm_tokens_per_s": speed["lstm/fused"], "fused_gru_tokens_per_s": speed["gru/fused"]}
                if peak:
                    row.update({"parallel_peak_mib": peak[f"{cell}/parallel"],
                                "sequential_peak_mib": peak[f"{cell}/reference"],
                                "fused_gru_peak_mib": peak["gru/fused"], "fused_lstm_peak_mib": peak["lstm/fused"]})
                rows.append(row)
                log(f"  {cell:7} H={hidden:<4} T={T:<5} parallel {par:>10,.0f} tok/s  sequential {seq:>9,.0f}  "
                    f"parallel/sequential {par / seq:6.1f}  /fused lstm {row['parallel_over_fused_lstm']:.2f}  "
                    f"/fused gru {row['parallel_over_fused_gru']:.2f}")
    return rows
