"""Copy memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016; Bai et al. 2018).

Input: 10 symbols drawn from 1..8, then ``seq_len`` blanks (0), then the delimiter (9) and 9
more blanks: ``seq_len + 20`` steps in all. Target: blank everywhere except the last 10 steps,
which must reproduce the 10 symbols, so they must be held over ``seq_len + 10`` steps.
The memoryless strategy (blank, then a uniform guess over the 8 symbols) scores a mean
cross-entropy of ``10 ln 8 / (seq_len + 20)`` over all steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Generator, Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from rnnlab.literature import BAI_2018, Published
from rnnlab.tasks.synthetic import GeneratedTask

N_RECALL, N_SYMBOLS, BLANK, DELIMITER = 10, 8, 0, 9


def memoryless_loss(seq_len: int) -> float:
    return N_RECALL * math.log(N_SYMBOLS) / (seq_len + 2 * N_RECALL)


class Copy(GeneratedTask):
    name = "copy"
    input_kind = "tokens"
    main_metric = "val/loss"
    mode = "min"
    readout = "seq"
    input_size = 10  # blank, 8 symbols, delimiter
    output_size = 10
    report_extras = ("acc",)  # the headline is the loss; the accuracy on the recalled symbols beside it
    published = (Published(
        BAI_2018, "Table 1", "copy memory, delay T = 1000, about 16K parameters per model",
        "test/loss", 1000, {"rnn": 0.0202, "lstm": 0.0204, "gru": 0.0197},
        10 * 2.0794415416798357 / 1020, "the memoryless strategy, 10 ln 8 / (T + 20)"),)

    @property
    def steps(self) -> int:
        return self.seq_len + 2 * N_RECALL

    def generate(self, n: int, g: Generator) -> dict[str, Tensor]:
        T = self.seq_len
        symbols = torch.randint(1, N_SYMBOLS + 1, (n, N_RECALL), generator=g)
        x = torch.full((n, T + 2 * N_RECALL), BLANK, dtype=torch.long)
        x[:, :N_RECALL] = symbols
        x[:, T + N_RECALL] = DELIMITER
        y = torch.full_like(x, BLANK)
        y[:, -N_RECALL:] = symbols
        return {"x": x, "y": y}

    def loss(self, out, batch):
        return F.cross_entropy(out.flatten(0, 1), batch["y"].flatten())

    def metrics(self):
        return MetricCollection({"loss": MeanMetric(),
                                 "acc": MulticlassAccuracy(num_classes=self.output_size, average="micro")})

    def update_metrics(self, metrics, out, batch, loss):
        metrics["loss"].update(loss, weight=batch["y"].numel())
        metrics["acc"].update(out[:, -N_RECALL:].argmax(-1), batch["y"][:, -N_RECALL:])

    def baselines(self, split: str = "test"):
        """The memoryless strategy; exact on any split, since every sequence has the same layout."""
        return {"loss": memoryless_loss(self.seq_len), "acc": 1 / N_SYMBOLS}
