"""A control for the recall study's pilots: a bare PyTorch model (embedding, 2-layer nn.GRU or
nn.LSTM, linear head; Adam, no clipping, no Lightning, no rnnlab cell) trained on rnnlab's own
MQAR data. If it plateaus where the harness does, the plateau is the task's and the cell's, not
the harness's.

    python experiments/recall_study/bare_mqar.py --cell GRU --seq-len 32 --pairs 2 --vocab 64 --steps 8000
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.tasks.base import IGNORE_INDEX
from rnnlab.tasks.mqar import MQAR


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    a.add_argument("--cell", choices=["GRU", "LSTM"], default="GRU")
    a.add_argument("--seq-len", type=int, default=32)
    a.add_argument("--pairs", type=int, default=2)
    a.add_argument("--vocab", type=int, default=64)
    a.add_argument("--width", type=int, default=64)
    a.add_argument("--steps", type=int, default=8000)
    a.add_argument("--lr", type=float, default=3e-3)
    a.add_argument("--random-non-queries", action="store_true")
    args = a.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task = MQAR(seq_len=args.seq_len, batch_size=64, seed=1, vocab_size=args.vocab, num_kv_pairs=args.pairs,
                train_size=64_000, val_size=1000, test_size=2000, random_non_queries=args.random_non_queries)
    train, test = task.train, task.test
    embed = nn.Embedding(args.vocab, args.width)
    rnn = getattr(nn, args.cell)(args.width, args.width, 2, batch_first=True)
    head = nn.Linear(args.width, args.vocab)
    model = nn.ModuleList([embed, rnn, head])

    def forward(x: torch.Tensor) -> torch.Tensor:
        return head(rnn(embed(x))[0])

    opt = torch.optim.Adam(model.parameters(), args.lr)
    start = time.time()
    for step in range(1, args.steps + 1):
        i = torch.randint(0, len(train["x"]), (64,))
        loss = F.cross_entropy(forward(train["x"][i]).flatten(0, 1), train["y"][i].flatten(), ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            with torch.no_grad():
                scored = test["y"] != IGNORE_INDEX
                acc = (forward(test["x"]).argmax(-1)[scored] == test["y"][scored]).float().mean().item()
            print(f"step {step:6d}  train loss {loss.item():.3f}  test acc {acc:.3f}  "
                  f"(baseline {1 / args.pairs:.3f}; {time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
