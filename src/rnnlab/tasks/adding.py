"""The adding problem (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

Each of ``seq_len`` steps carries (value ~ U[0,1), marker in {0,1}); exactly two markers,
one in each half of the sequence. The target, read after the last step, is the sum of the two
marked values. The first marker can sit up to ``seq_len`` steps before the readout, so the
length is the dependency's range. Predicting the mean 1 for every sequence scores
MSE = Var(U1 + U2) = 2/12 = 1/6 in expectation: a model below that has learnt to remember.
The baseline a run is compared with is that predictor scored on the run's own test set
(0.158-0.175 depending on ``seq_len``), so that sampling noise is not mistaken for learning.
"""

from __future__ import annotations

import torch
from torch import Generator, Tensor

from rnnlab.literature import BAI_2018, Published
from rnnlab.tasks.base import RegressionTask
from rnnlab.tasks.synthetic import GeneratedTask

TARGET_MEAN = 1.0  # E[U1 + U2]: the trivial predictor's constant output


class Adding(RegressionTask, GeneratedTask):
    name = "adding"
    input_kind = "real"
    main_metric = "val/mse"
    mode = "min"
    readout = "last"
    input_size = 2
    output_size = 1
    published = (Published(
        BAI_2018, "Table 1", "T = 600, about 70K parameters per model, hyperparameters tuned per cell",
        "test/mse", 600, {"rnn": 0.177, "lstm": 0.164, "gru": 5.3e-5},
        1 / 6, "predicting 1: the variance of a sum of two U(0,1) numbers, 1/6"),)

    def __init__(self, seq_len: int, batch_size: int, seed: int, **kwargs):
        self.check("seq_len", seq_len, seq_len >= 2, "must be >= 2 for the adding problem "
                   "(one marker in each half)")
        super().__init__(seq_len, batch_size, seed, **kwargs)

    def generate(self, n: int, g: Generator) -> dict[str, Tensor]:
        T = self.seq_len
        values = torch.rand(n, T, generator=g)
        half = T // 2
        first = torch.randint(0, half, (n,), generator=g)
        second = torch.randint(half, T, (n,), generator=g)
        markers = torch.zeros(n, T)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        y = (values * markers).sum(1, keepdim=True)
        return {"x": torch.stack([values, markers], dim=-1), "y": y}

    def baselines(self, split: str = "test"):
        """Predicting the target's mean for every sequence, scored on ``split``."""
        data = self.test if split == "test" else self.val
        return {"mse": float((data["y"].double() - TARGET_MEAN).pow(2).mean())}
