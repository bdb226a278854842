"""Selective copying (Gu & Dao 2023, "Mamba", section 3.1 and appendix E.1; Poli et al. 2024,
"Mechanistic design and scaling of hybrid architectures" (MAD), its selective copying task).

A sequence of ``seq_len + n_copy`` steps: its first ``seq_len`` steps are noise (the blank
token) with ``n_copy`` data tokens, drawn uniformly from ``vocab_size`` symbols, at random
positions among them; then ``n_copy`` marker tokens, at which the model must output the data tokens
in the order they came (``seq_len`` is the span the tokens are scattered over, as ``task=copy``'s
is its delay; the S4/Mamba generator's L + M). Unlike copy memory (``task=copy``), where the tokens sit at fixed
positions, the spacing is random: a model must decide from the content what to keep (the "selective"
of the name), which time-invariant recurrences (S4, the LRU) cannot. The loss and the accuracy are
over the ``n_copy`` output steps only. Mamba's setting: L = 4,096, 16 tokens, vocabulary 16
(its 16 count the noise token; here ``vocab_size`` counts the data symbols alone).
Ids: 0 the blank, 1 the marker, 2 .. vocab_size + 1 the symbols.

**The baseline** is the best strategy that ignores what the task tests, the order. A model that
counts which symbols occurred (a bag of tokens, no positions) knows at each output step only that
the answer is one of the sequence's data tokens, with probability count/n_copy for each symbol, at
every output step alike; its best guess is the most frequent symbol, right at max-count / n_copy
of the steps. Any order-free strategy does no better, so this is the ceiling of learning the bag
without the order (above uniform chance over the vocabulary, 1/16, or among the distinct tokens
present, about 1/10 at 16 of 16). It is scored on the test set itself (the mean over sequences of
max-count / n_copy: about 0.19 at 16 of 16), and its cross-entropy is that of predicting the
counts, mean of -ln(count(token)/n_copy).

**Where recall breaks:** accuracy by output index (``acc_by_index/4-7``: the 4th to 7th token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Generator, Tensor
from torchmetrics import MeanMetric, MetricCollection

from rnnlab.config import positive_int, require
from rnnlab.literature import FENG_2024, MAMBA, Published
from rnnlab.tasks.base import IGNORE_INDEX
from rnnlab.tasks.metrics import BinnedAccuracy
from rnnlab.tasks.synthetic import GeneratedTask

BLANK, MARKER, FIRST_SYMBOL = 0, 1, 2


class SelectiveCopy(GeneratedTask):
    name = "selective_copy"
    input_kind = "tokens"
    main_metric = "val/acc"
    mode = "max"
    readout = "seq"
    input_size = output_size = 16 + FIRST_SYMBOL  # nominal (the default vocabulary); set per instance
    report_extras = ("loss",)
    published = (
        # quoted from transcriptions of the papers (experiments/recall_study/sources.md)
        Published(MAMBA, "Table 1", "L = 4096, 16 tokens, vocabulary 16, 2 layers of width 64, 400K steps of "
                  "batch 64 at lr 1e-4, no seeds stated; s4 and s6: the bare time-invariant and selective SSM "
                  "layers (\"No gate\"), mamba: S6 in the Mamba block", "test/acc", 4096,
                  {"s4": 0.183, "s6": 0.970, "mamba": 0.998}, None, "not stated"),
        Published(FENG_2024, "layer ablation", "Mamba's selective copying, 2 layers (3 layers: minGRU 99.5 ± 0.2, "
                  "minLSTM 96.0 ± 2.8), 400K steps, mean ± sd over seeds (minGRU ± 3.2, minLSTM ± 5.8); "
                  "no GRU or LSTM run", "test/acc", 4096,
                  {"mingru": 0.968, "minlstm": 0.857}, None, "not stated"),
    )

    def __init__(self, seq_len: int, batch_size: int, seed: int, vocab_size: int = 16, n_copy: int = 16,
                 **kwargs):
        require("task.vocab_size", vocab_size, positive_int, "must be an integer > 0")
        require("task.n_copy", n_copy, positive_int, "must be an integer > 0")
        self.check("task.n_copy", n_copy, n_copy <= seq_len,
                   f"must fit the span the tokens are scattered over: <= seq_len = {seq_len}")
        super().__init__(seq_len, batch_size, seed, **kwargs)
        self.vocab_size, self.n_copy = vocab_size, n_copy
        self.input_size = self.output_size = vocab_size + FIRST_SYMBOL

    def generate(self, n: int, g: Generator) -> dict[str, Tensor]:
        M = self.n_copy
        context, T = self.seq_len, self.steps
        tokens = torch.randint(FIRST_SYMBOL, FIRST_SYMBOL + self.vocab_size, (n, M), generator=g)
        where = torch.rand(n, context, generator=g).topk(M, dim=1).indices.sort(dim=1).values
        x = torch.full((n, T), BLANK, dtype=torch.long)
        x.scatter_(1, where, tokens)
        x[:, context:] = MARKER
        y = torch.full_like(x, IGNORE_INDEX)
        y[:, context:] = tokens
        return {"x": x, "y": y}

    @property
    def steps(self) -> int:
        return self.seq_len + self.n_copy

    def loss(self, out, batch):
        M = self.n_copy
        return F.cross_entropy(out[:, -M:].flatten(0, 1), batch["y"][:, -M:].flatten())

    def metrics(self):
        return MetricCollection({"loss": MeanMetric(), "acc": MeanMetric(),
                                 "acc_by_index": BinnedAccuracy(self.n_copy)})

    def update_metrics(self, metrics, out, batch, loss):
        M = self.n_copy
        pred, target = out[:, -M:].detach().argmax(-1), batch["y"][:, -M:]
        metrics["loss"].update(loss.detach(), weight=target.numel())
        metrics["acc"].update((pred == target).float())
        index = torch.arange(1, M + 1, device=target.device).expand_as(target)
        metrics["acc_by_index"].update(pred, target, index)

    def compute_metrics(self, metrics):
        return {"loss": metrics["loss"].compute(), "acc": metrics["acc"].compute(),
                **metrics["acc_by_index"].scalars("acc_by_index")}

    def baselines(self, split: str = "test"):
        """The bag of tokens without their order, scored on ``split``: the most frequent symbol at
        every output step (accuracy), the symbols' frequencies as the prediction (loss)."""
        y = (self.test if split == "test" else self.val)["y"][:, -self.n_copy:] - FIRST_SYMBOL
        counts = F.one_hot(y, self.vocab_size).sum(1).double()  # (n, V): each symbol's count
        share = counts.gather(1, y) / self.n_copy  # each target's frequency in its own sequence
        return {"acc": float(counts.amax(1).mean() / self.n_copy), "loss": float(-share.log().mean())}
