"""Induction heads (Olsson et al. 2022; as Gu & Dao 2023, "Mamba", section 4.1.2, test it).

A sequence of ``seq_len`` tokens drawn uniformly from ``vocab_size`` symbols; once, at a random
position, the special token is followed by a symbol, the answer; the sequence ends with the
special token again, and the model must predict, from its last step, the symbol that followed the
first one. The special token occurs nowhere else. Mamba trains at L = 256 (vocabulary 16) and
tests at lengths up to 2^20: give ``task.test_seq_len=[512,1024]``, and the run logs
``test/L512/acc`` and the rest for each (a model trained at one length, tested at others).
Ids: 0 the special token, 1 .. vocab_size the symbols.

**The baseline** is the bag of tokens without their order, as selective copying's: the answer is
one of the sequence's T - 2 symbols, and without finding the special token each of them is as
likely to be it, so the best guess is the most frequent symbol, right with probability (its
count) / (T - 2); scored on the test set as the mean of that (its cross-entropy: the mean of
-ln(count of the answer / (T - 2))). It is above 1/16 at every length, most at short ones (0.12
at T = 64, 0.08 at 512), and above guessing among the symbols present.

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
                  "length to 2^20; attention at 2x (512): 58.6% with absolute positions (as ours, sinusoidal), 83.6% "
                  "RoPE, 99.6% xPos (at 1024: 26.6%, 31.3%, 67.6%): compare with our test/L128/acc", "test/acc", 256,
                  {"attention": 1.0, "mamba": 1.0}, 0.092,
                  "the most frequent symbol, our baseline at T = 256; not stated there"),
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
        """The bag of tokens: the most frequent symbol (accuracy), each symbol's share of the
        sequence as the prediction (loss), scored on ``split``."""
        data = self.test if split == "test" else self.val
        counts = F.one_hot(data["x"], self.vocab_size + 1)[..., 1:].sum(1).double()  # (n, V), T - 2 symbols
        n = self.seq_len - 2
        share = counts.gather(1, (data["y"] - 1).unsqueeze(1)) / n  # the answer's share: >= 1/n
        return {"acc": float(counts.amax(1).mean() / n), "loss": float(-share.log().mean())}
