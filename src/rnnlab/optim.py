"""The optimizer and learning-rate schedule of a run, from the ``optim`` config node.

Names are those of :data:`rnnlab.config.OPTIMIZERS` and :data:`rnnlab.config.SCHEDULES`;
adding an optimizer is a line there, not here.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from hydra.utils import get_class

from rnnlab.config import MOMENTUM_OPTIMIZERS, OPTIMIZERS, SCHEDULES


def build(parameters: Iterable[torch.nn.Parameter], optim: dict, max_steps: int):
    """What ``LightningModule.configure_optimizers`` returns: the optimizer, or the optimizer
    with a schedule stepped every training step."""
    name = optim["name"]
    kwargs = {"lr": optim["lr"], "weight_decay": optim.get("weight_decay", 0.0)}
    if name in MOMENTUM_OPTIMIZERS:
        kwargs["momentum"] = optim.get("momentum", 0.0)
    optimizer = get_class(OPTIMIZERS[name])(parameters, **kwargs)
    schedule = optim.get("schedule")
    if schedule is None:
        return optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    if schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_steps)
    elif schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim["step_size"], gamma=optim["gamma"])
    else:
        raise ValueError(f"unknown optim.schedule {schedule!r}; valid: {SCHEDULES}")
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
