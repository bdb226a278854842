"""Multi-query associative recall, MQAR (Arora, Eyuboglu et al. 2023, "Zoology: measuring and
improving recall in efficient language models", section 3; their generator
``zoology/data/multiquery_ar.py`` in HazyResearch/zoology, written again here from its
description, not copied).

A sequence of ``seq_len`` tokens over ``vocab_size`` ids opens with ``num_kv_pairs`` key-value
pairs ``k1 v1 k2 v2 ...``: keys drawn without replacement from the lower half of the vocabulary
(ids 1 .. V/2 - 1), values without replacement from the upper half (V/2 .. V - 1). The rest of the
sequence, ``seq_len - 2K`` positions, holds each key once more as a query, at even offsets
``2·g`` of that region; the ``K`` distinct gaps ``g`` in 0 .. (seq_len - 2K)/2 - 1 are drawn
without replacement with probability proportional to ``(g + 1)^(a - 1)``, ``a = power_a = 0.01``:
a power law that puts most queries soon after the pairs and some far away. Every other position
holds token 0, which no key or value uses, or, with ``random_non_queries=true``, a random token
over the whole vocabulary. The target at a
query's position is its key's value; every other position is ignored (``IGNORE_INDEX``), so the
loss and the accuracy are over the queries alone.

**Which key goes to which gap** (``query_order``). Zoology queries the i-th key at the i-th gap
drawn; the first draws favour small gaps, so the first query asks for the first pair more often
than chance (0.33 against 1/4 at seq_len 64, K = 4): a model that answers the j-th query with the
j-th value, binding nothing, scores about 0.28 there. The default, ``shuffled``, gives each key a
random one of the K gaps, so that the order of the queries says nothing of their pairs; ``drawn``
is Zoology's order, for its exact task. (The gaps themselves are Zoology's in both.)

**The baseline** is not chance over the vocabulary (1/V), which a model beats at once by
learning that answers are values. It is the best strategy that does not bind values to keys. With
shuffled queries that is guessing uniformly among the ``K`` values of the sequence's pairs (all
distinct), right with probability exactly ``1/K`` at every query, whatever the sequence, so
``1/K`` is its accuracy on any test set (``tests/test_task_recall.py`` simulates the strategy on
the test set to check it), and its cross-entropy is ``ln K``. With Zoology's order it is the
better of that and answering by position: for the j-th query at position t, the value of the pair
most often asked there (a table counted on sequences drawn apart from every split, scored on the
split), a lower bound on what order alone gives.

**Where recall breaks:** the accuracy is also logged by the distance between a query and its key
(``acc_by_dist/4-7``: queries 4 to 7 steps after their key), in octave bins.

**Filler, 0 or random.** Zoology's generator defaults to random filler, but the Zoology paper's
Figure 2, the point we compare with, sets ``random_non_queries=False``
(``zoology/experiments/paper_configs/iclr24_zoology_figure2/configs.py``; also its
``mqar_example_configs/mqar_configs_random_false.py``), so the default here is 0. The Based paper's
Figure 2 (``arxiv24_based_figure2/configs.py``) keeps the random filler. The two are different
tasks for a fixed-size state: random filler is full of adjacent (lower-half, upper-half) token
pairs that look like key-value pairs, so a recurrent cell must also learn to stop binding after
the context, while attention can tell the context from the rest by position.
``random_non_queries=true`` measures that harder version.

**Defaults** are Zoology's smallest Figure 2 point, seq_len 64 (the root ``seq_len``: give
``seq_len=64``) with 4 pairs, vocabulary 8,192 and its 100,000 training and 3,000 test sequences
(the training set is fixed and reshuffled each epoch, as Zoology's loader did for its paper). At
vocabulary 8,192 the output layer over every position dominates a CPU step; ``task.vocab_size=256`` is the study's
smaller point, said there. Zoology needs ``vocab_size > seq_len``; rnnlab needs only that the
keys and values fit: ``K < V/2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Generator, Tensor
from torchmetrics import MeanMetric, MetricCollection

from rnnlab.config import positive_int, require
from rnnlab.literature import SEQ_ICL, ZOOLOGY, Published
from rnnlab.tasks.base import IGNORE_INDEX
from rnnlab.tasks.batching import tensor_loader
from rnnlab.tasks.metrics import BinnedAccuracy
from rnnlab.tasks.synthetic import GeneratedTask

CHUNK = 4096  # sequences drawn at once (a top-k draw of distinct ids takes (chunk, V/2) floats)
QUERY_ORDERS = ("shuffled", "drawn")
ORDER_FIT_SIZE = 20_000  # sequences the order baseline's table is counted on
ORDER_FIT_SEED = 2**40 + 7  # apart from the splits' seeds (rnnlab.tasks.synthetic)


def power_law(space: int, a: float) -> Tensor:
    """Zoology's gap distribution over 0 .. space - 1: p(g) ∝ a (g + 1)^(a - 1)."""
    p = a * torch.arange(1, space + 1, dtype=torch.float64) ** (a - 1)
    return p / p.sum()


def distinct(n: int, low: int, high: int, k: int, g: Generator) -> Tensor:
    """(n, k) ids from low .. high - 1, distinct within each row, uniformly: rows with a repeat
    drawn again (few when k is small against the range), or top-k of noise when it is not."""
    if k * k > high - low:  # many repeats: one draw over the whole range instead
        return torch.rand(n, high - low, generator=g).topk(k, dim=1).indices + low
    ids = torch.randint(low, high, (n, k), generator=g)
    while True:
        s = ids.sort(dim=1).values
        again = (s[:, 1:] == s[:, :-1]).any(1).nonzero().flatten()
        if len(again) == 0:
            return ids
        ids[again] = torch.randint(low, high, (len(again), k), generator=g)


class MQAR(GeneratedTask):
    name = "mqar"
    input_kind = "tokens"
    main_metric = "val/acc"
    mode = "max"
    readout = "seq"
    input_size = output_size = 8192  # nominal (the default vocabulary); set per instance
    report_extras = ("loss",)
    length_label = "seq_len"
    published = (
        # Figure 2 (a plot: attention read from it, about 1.0; its runs stop once above 0.99) at
        # three of its four points, (512, 64) the fourth; settings from the figure's config,
        # zoology/experiments/paper_configs/iclr24_zoology_figure2 (experiments/recall_study/sources.md)
        Published(ZOOLOGY, "Figure 2", "seq_len 64, 4 KV pairs, vocab 8192, filler token 0, 2 layers with no MLP "
                  "(attention: 1 head), width 64-512, AdamW (weight decay 0.1, cosine over 64 epochs of 100,000 "
                  "at batch 512, stopped above 0.99 accuracy), best of lr 1e-4, 4.6e-4, 2.2e-3, 1e-2; attention "
                  "at about 1.0 at every width, read from the figure",
                  "test/acc", 64, {"attention": 1.0}, 0.25, "guessing among the 4 values, 1/K; not stated "
                  "there, and in its query order answering by position scores about 0.28 (ours shuffles it)"),
        Published(ZOOLOGY, "Figure 2", "seq_len 128, 8 KV pairs, vocab 8192, as above",
                  "test/acc", 128, {"attention": 1.0}, 0.125, "1/K"),
        Published(ZOOLOGY, "Figure 2", "seq_len 256, 16 KV pairs, vocab 8192, as above but batch 256; gated "
                  "convolutions and linear recurrences need a state that grows with K",
                  "test/acc", 256, {"attention": 1.0}, 0.0625, "1/K"),
        # The README's table (removed 2024-01-22), in its history; the setting is the configs of
        # then: single-query recall, not MQAR, and its "Random 25.0" fits their vocabulary-10
        # variant, not this one (chance 1/9): which setting each number ran is not recorded
        Published(SEQ_ICL, "README, associative recall", "single-query associative recall (not MQAR): vocab "
                  "20 (9 keys, 9 values), length 40, 2 layers of width 32, 5,000 training sequences, as the "
                  "configs of the time set it; which setting each number ran is not recorded", "test/acc", 40,
                  {"lstm": 0.362, "lru": 0.116, "attention": 1.0}, 0.25,
                  "\"Random\" as the README states it (1/9 = 0.111 at this vocab)"),
    )

    def __init__(self, seq_len: int, batch_size: int, seed: int, vocab_size: int = 8192,
                 num_kv_pairs: int = 4, power_a: float = 0.01, train_size: int = 100_000,
                 random_non_queries: bool = False, query_order: str = "shuffled", **kwargs):
        require("task.vocab_size", vocab_size, positive_int, "must be an integer > 0")
        require("task.num_kv_pairs", num_kv_pairs, positive_int, "must be an integer > 0")
        require("task.train_size", train_size, positive_int, "must be an integer > 0")
        self.check("task.vocab_size", vocab_size, num_kv_pairs < vocab_size // 2,
                   f"must leave room for {num_kv_pairs} distinct keys in 1 .. V/2 - 1 and values in V/2 .. V - 1: "
                   f"> {2 * num_kv_pairs + 1}")
        self.check("task.num_kv_pairs", num_kv_pairs, 4 * num_kv_pairs <= seq_len,
                   f"must fit the length: 2K tokens of pairs and K queries at even offsets need "
                   f"4K <= seq_len = {seq_len}, so K <= {seq_len // 4}")
        self.check("task.power_a", power_a, 0 < power_a <= 1, "must be in (0, 1] (1: uniform gaps)")
        self.check("task.random_non_queries", random_non_queries, isinstance(random_non_queries, bool),
                   "must be true (random filler) or false (token 0, Zoology's published setting)")
        self.check("task.query_order", query_order, query_order in QUERY_ORDERS,
                   f"must be one of {', '.join(QUERY_ORDERS)} (drawn: Zoology's, the i-th key at the i-th gap drawn)")
        super().__init__(seq_len, batch_size, seed, **kwargs)
        self.vocab_size, self.num_kv_pairs, self.power_a, self.train_size = \
            vocab_size, num_kv_pairs, power_a, train_size
        self.random_non_queries, self.query_order = random_non_queries, query_order
        self.input_size = self.output_size = vocab_size

    def at_length(self, seq_len: int) -> GeneratedTask:
        self.check("task.test_seq_len", seq_len, 4 * self.num_kv_pairs <= seq_len, "must fit the pairs")
        return super().at_length(seq_len)

    def generate(self, n: int, g: Generator) -> dict[str, Tensor]:
        parts = [self._generate(min(CHUNK, n - i), g) for i in range(0, n, CHUNK)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _generate(self, n: int, g: Generator) -> dict[str, Tensor]:
        T, K, V = self.seq_len, self.num_kv_pairs, self.vocab_size
        keys = distinct(n, 1, V // 2, K, g)
        values = distinct(n, V // 2, V, K, g)
        # the filler (0, or noise), then pairs and queries over it
        x = torch.randint(0, V, (n, T), generator=g) if self.random_non_queries else torch.zeros(n, T, dtype=torch.long)
        x[:, 0 : 2 * K : 2], x[:, 1 : 2 * K : 2] = keys, values
        space = (T - 2 * K) // 2
        # K distinct gaps, drawn one after another in proportion to p among those left (numpy's
        # choice(replace=False, p=p), as Zoology draws them): the top K of log p + Gumbel noise
        gumbel = -torch.log(-torch.log(torch.rand(n, space, generator=g, dtype=torch.float64).clamp_min(1e-300)))
        gaps = (power_law(space, self.power_a).log() + gumbel).topk(K, dim=1).indices  # in the order drawn
        if self.query_order == "shuffled":  # each key at a random one of the K gaps
            gaps = gaps.gather(1, torch.rand(n, K, generator=g).argsort(dim=1))
        where = 2 * K + 2 * gaps  # query positions, (n, K): the i-th key queried at gaps[:, i]
        x.scatter_(1, where, keys)
        y = torch.full_like(x, IGNORE_INDEX)
        y.scatter_(1, where, values)
        # the distance each query recalls over: from its key's position (2i) to the query
        dist = torch.zeros_like(x)
        dist.scatter_(1, where, where - 2 * torch.arange(K).unsqueeze(0))
        return {"x": x, "y": y, "dist": dist}

    # -- a fixed training set, as Zoology's loader for its paper (reshuffled each epoch) ------
    @property
    def train(self) -> dict[str, Tensor]:
        if "_train" not in self.__dict__:
            g = Generator().manual_seed(self.seed * 1_000_003 + 7)
            self.__dict__["_train"] = self.generate(self.train_size, g)
        return self.__dict__["_train"]

    def train_dataloader(self):
        return tensor_loader(self.train, self.batch_size, shuffle=True, seed=self.seed, drop_last=True)

    # -- loss and metrics: at the queries only ---------------------------------------------
    def loss(self, out, batch):
        return F.cross_entropy(out.flatten(0, 1), batch["y"].flatten(), ignore_index=IGNORE_INDEX)

    def metrics(self):
        return MetricCollection({"loss": MeanMetric(), "acc": MeanMetric(),
                                 "acc_by_dist": BinnedAccuracy(self.seq_len)})

    def update_metrics(self, metrics, out, batch, loss):
        scored = batch["y"] != IGNORE_INDEX
        pred, target = out.detach().argmax(-1)[scored], batch["y"][scored]
        metrics["loss"].update(loss.detach(), weight=len(target))
        metrics["acc"].update((pred == target).float())
        metrics["acc_by_dist"].update(pred, target, batch["dist"][scored])

    def compute_metrics(self, metrics):
        binned = metrics["acc_by_dist"]
        return {"loss": metrics["loss"].compute(), "acc": metrics["acc"].compute(),
                **binned.scalars("acc_by_dist")}

    def baselines(self, split: str = "test"):
        """Guessing uniformly among the sequence's K values: exactly 1/K right at every query;
        with Zoology's query order, the better of that and answering by position (the module's
        docstring), scored on ``split``."""
        K = self.num_kv_pairs
        guess = {"acc": 1 / K, "loss": math.log(K)}
        if self.query_order == "shuffled":
            return guess
        fit = self.generate(ORDER_FIT_SIZE, Generator().manual_seed(ORDER_FIT_SEED))
        table = torch.zeros(K, self.seq_len, K, dtype=torch.float64)  # (query rank, position, pair)
        rank, pos, pair = _queries(fit)
        table.index_put_((rank, pos, pair), torch.ones(len(rank), dtype=torch.float64), accumulate=True)
        rank, pos, pair = _queries(self.test if split == "test" else self.val)
        counts = table[rank, pos]  # (queries, K); a position never seen in the fit: the rank's counts
        unseen = counts.sum(1) == 0
        counts[unseen] = table.sum(1)[rank[unseen]]
        acc = float((counts.argmax(1) == pair).double().mean())
        share = (counts + 1) / (counts + 1).sum(1, keepdim=True)  # add-one: no zero probability
        by_order = {"acc": acc, "loss": float(-share.gather(1, pair[:, None]).log().mean())}
        return by_order if acc > guess["acc"] else guess

    def describe(self):
        return {**super().describe(), "data/train_size": self.train_size,
                "data/random_non_queries": self.random_non_queries, "data/query_order": self.query_order}


def _queries(data: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Each query's rank among its sequence's queries (0: the first), its position, and the
    index of the pair it asks for (its key sits at 2i), flat over the sequences."""
    scored = data["y"] != IGNORE_INDEX
    rank = (scored.cumsum(1) - 1)[scored]
    pos = scored.nonzero()[:, 1]
    return rank, pos, (pos - data["dist"][scored]) // 2
