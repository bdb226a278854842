"""The other side of a comparison: the training loop anyone would write by hand, with the
harness's model, weights and batches, so that the difference between the two is the harness."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from rnnlab.bench.flops import model_step_flops
from rnnlab.bench.harness import base_overrides, compose, quiet
from rnnlab.bench.settings import Settings
from rnnlab.bench.timing import default_flags, synchronize

if TYPE_CHECKING:
    from rnnlab.tasks.base import Task


def _batches(task: Task) -> Iterator[dict[str, torch.Tensor]]:
    """The task's training batches, epoch after epoch, as Lightning would draw them."""
    epoch = 0
    while True:
        loader = task.train_dataloader()
        sampler: Any = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def bare_run(cfg: DictConfig, steps: int, warmup: int, device: str = "cpu") -> dict[str, float]:
    """Same model class and initial weights as the harness (same seed, same builders), same
    batches; Adam, ``clip_grad_norm_``, no logging, no checks; PyTorch's default flags."""
    from rnnlab.run import build_model, build_task

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task(cfg)
    model = build_model(cfg, task, "bare").to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    dev = torch.device(device)
    tokens, t0, cpu0 = 0, 0.0, 0.0
    marks: list[float] = []  # CPU: the clock at each timed step's start, and at the end
    with default_flags():
        batches = _batches(task)
        for i in range(warmup + steps):
            if i == warmup:
                synchronize(dev)
                t0, cpu0 = time.perf_counter(), time.process_time()
            if i >= warmup and dev.type == "cpu":
                marks.append(time.perf_counter())
            batch = {k: v.to(dev, non_blocking=True) for k, v in next(batches).items()}
            out, _ = model(batch)
            loss = task.loss(out, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            if i >= warmup:
                tokens += task.tokens(batch)
        synchronize(dev)
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if marks:
            marks.append(time.perf_counter())
    # the median step on CPU (see rnnlab.bench.timing.StepTimer), the window on a GPU
    step_s = [b - a for a, b in zip(marks, marks[1:])]
    rate = tokens / steps / statistics.median(step_s) if step_s else tokens / dt
    return {"tokens_per_s": rate, "train_s": dt, "tokens": tokens, "cpu_s_per_step": cpu / steps,
            "flops_per_step": model_step_flops(cfg, task)}


def bare(s: Settings, cell: str, task: str, seq_len: int, steps: int, warmup: int,
         extra: tuple[str, ...] = (), device: str = "cpu") -> dict[str, float]:
    """:func:`bare_run` on the config the harness side composes for the same arguments."""
    cfg = compose([*base_overrides(s, cell, task, seq_len), *s.extra, *extra])
    torch.set_num_threads(s.threads)
    with quiet():
        return bare_run(cfg, steps, warmup, device)


def bare_eval(cfg: DictConfig) -> dict[str, float]:
    """Seconds for one pass over the validation and the test split as a hand-written loop
    would make it: the harness's model, forward and loss in inference mode, batches already
    built; no metrics, no hooks, no checkpoint. What a sweep's evaluations would cost anyway."""
    from rnnlab.run import build_model, build_task

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = build_task(cfg)
    model = build_model(cfg, task, "bare").eval()
    out: dict[str, float] = {}
    with torch.inference_mode():
        for split, loader in (("val", task.val_dataloader()), ("test", task.test_dataloader())):
            batches = list(loader)
            t = time.perf_counter()
            for batch in batches:
                y, _ = model(batch)
                task.loss(y, batch)
            out[split] = time.perf_counter() - t
    return out
