"""Induction heads (Olsson et al. 2022; as Gu & Dao 2023, "Mamba", section 4.1.2, test it).

A sequence of ``seq_len`` tokens drawn uniformly from ``vocab_size`` symbols; once, at a random
position, the special token is followed by a symbol, the answer; the sequence ends with the
special token again, and the model must predict, from its last step, the symbol that followed the
first one. The special token occurs nowhere else. Mamba trains at L = 256 (vocabulary 16) and
tests at lengths up to 2^20: give ``task.test_seq_len=[512,1024]``, and the run logs
``test/L512/acc`` and the rest for each (a model trained at one length, tested at others).
Ids: 0 the special token, 1 .. vocab_size the symbols.

**The baseline** guesses uniformly among the symbols present in the context (the answer is always
one of them), without finding the special token: right with probability 1/D for a sequence with
D distinct symbols, scored on the test set as the mean of 1/D (its cross-entropy: the mean of
ln D). At L = 256 and 16 symbols nearly every sequence has all 16, so it is 1/16; at short lengths
it is above that.

**Where recall breaks:** accuracy by the distance from the answer to the end of the sequence
(``acc_by_dist/64-127``), in octave bins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Generator, Tensor
from torchmetrics import MeanMetric, MetricCollection

from rnnlab.config import positive_int, require
from rnnlab.literature import MAMBA, Published
from rnnlab.tasks.metrics import BinnedAccuracy
from rnnlab.tasks.synthetic import GeneratedTask

SPECIAL = 0


class Induction(GeneratedTask):
    name = "induction"
    input_kind = "tokens"
    main_metric = "val/acc"
    mode = "max"
    readout = "last"
    input_size = 17  # nominal (the default vocabulary and the special token); set per instance
    output_size = 17
    report_extras = ("loss",)
    # quoted from a transcription of the paper (experiments/recall_study/sources.md)
    published = (
        Published(MAMBA, "Table 11 (Table 2 plots it)", "trained at L = 256, vocabulary 16, 2 layers (attention: "
                  "8 heads, width 128), batch 8, 204,800 steps (409,600 with RoPE or xPos); Mamba exact at every "
                  "length to 2^20", "test/acc", 256, {"attention": 1.0, "mamba": 1.0}, 1 / 16,
                  "uniform over the 16 symbols"),
        Published(MAMBA, "Table 11", "as above, tested at L = 512 (2x): attention with absolute positions 58.6%, "
                  "RoPE 83.6%, xPos 99.6% (quoted: absolute, as our attention's sinusoidal positions); at 1024: 26.6%, "
                  "31.3%, 67.6%", "test/acc", 512,
                  {"attention": 0.586, "mamba": 1.0}, 1 / 16, "uniform over the 16 symbols"),
    )

    def __init__(self, seq_len: int, batch_size: int, seed: int, vocab_size: int = 16, **kwargs):
        require("task.vocab_size", vocab_size, positive_int, "must be an integer > 0")
        self.check("seq_len", seq_len, seq_len >= 4, "must be >= 4 for induction (the special token, its "
                   "answer, a token, the special token again)")
        super().__init__(seq_len, batch_size, seed, **kwargs)
        self.vocab_size = vocab_size
        self.input_size = self.output_size = vocab_size + 1

    def generate(self, n: int, g: Generator) -> dict[str, Tensor]:
        T = self.seq_len
        x = torch.randint(1, self.vocab_size + 1, (n, T), generator=g)
        first = torch.randint(0, T - 2, (n,), generator=g)  # the special token, its answer before T - 1
        rows = torch.arange(n)
        x[rows, first] = SPECIAL
        x[:, -1] = SPECIAL
        y = x[rows, first + 1]
        return {"x": x, "y": y, "dist": (T - 1) - (first + 1)}

    def loss(self, out, batch):
        return F.cross_entropy(out, batch["y"])

    def metrics(self):
        return MetricCollection({"loss": MeanMetric(), "acc": MeanMetric(),
                                 "acc_by_dist": BinnedAccuracy(self.seq_len)})

    def update_metrics(self, metrics, out, batch, loss):
        pred = out.detach().argmax(-1)
        metrics["loss"].update(loss.detach(), weight=len(pred))
        metrics["acc"].update((pred == batch["y"]).float())
        metrics["acc_by_dist"].update(pred, batch["y"], batch["dist"])

    def compute_metrics(self, metrics):
        return {"loss": metrics["loss"].compute(), "acc": metrics["acc"].compute(),
                **metrics["acc_by_dist"].scalars("acc_by_dist")}

    def baselines(self, split: str = "test"):
        """Uniform among the distinct symbols of the context, scored on ``split``."""
        x = (self.test if split == "test" else self.val)["x"]
        present = F.one_hot(x, self.vocab_size + 1)[..., 1:].amax(1).sum(1).double()  # D per sequence
        return {"acc": float((1 / present).mean()), "loss": float(present.log().mean())}
