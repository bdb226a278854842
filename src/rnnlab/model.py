"""One LightningModule for every cell x task: input encoder -> recurrent stack -> head.

The task (a :class:`rnnlab.tasks.base.Task`) says how inputs are encoded, how the recurrent
outputs are read out, and which loss and metrics apply; the model only wires them together.
Clipping and the divergence guard are :class:`rnnlab.clipping.GradientGuard`; the optimizer
is :func:`rnnlab.optim.build`.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import grad_norm
from torch import Tensor, nn
from torchmetrics import Metric

from rnnlab import optim
from rnnlab.cells.factory import build as build_cell
from rnnlab.clipping import GradientGuard
from rnnlab.tasks.base import Task


class RecurrentModel(pl.LightningModule):
    def __init__(self, task: Task, cell: dict, optim: dict, clip: float | None = None,
                 embed_dim: int = 64, max_steps: int = 1000, run_label: str = "run"):
        super().__init__()
        self.save_hyperparameters(ignore=["task"])
        self.task = task
        self.guard = GradientGuard(clip)
        self.optim_cfg = dict(optim)
        self.run_label = run_label
        self.encoder: nn.Module
        if task.input_kind == "tokens":
            self.encoder = nn.Embedding(task.input_size, embed_dim)
        else:
            self.encoder = nn.Linear(task.input_size, embed_dim)
        cell_kwargs = {k: v for k, v in cell.items() if k != "name"}
        self.cell_name = cell["name"]
        self.rnn = build_cell(cell["name"], input_size=embed_dim, **cell_kwargs)
        self.head = nn.Linear(cell["hidden_size"], task.output_size)
        self.metrics = nn.ModuleDict({s: task.metrics() for s in ("val", "test")})
        self.final_vectors: dict[str, Tensor] = {}  # non-scalar metrics, e.g. loss by position
        self._carry: dict[str, object] = {}  # hidden state carried across batches (stateful)
        self.automatic_optimization = False  # see training_step
        self.last_loss: Tensor | None = None  # the last training step's loss, for progress lines
        self._trained_params: list[nn.Parameter] | None = None
        self.diverged_at: int | None = None  # global step at which loss or gradient went non-finite
        self._val_baselines: dict[str, float] | None = None  # the trivial strategy on the val split

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets _current_fx_name before and after every hook it calls (some thirty
        # times per training step), and nn.Module.__setattr__ first checks the value against
        # parameters, buffers and submodules: a plain string attribute needs none of that.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- checkpoints: what a resumed run needs to continue exactly --------------------------
    def on_save_checkpoint(self, checkpoint):
        checkpoint["rnnlab"] = {"rng": torch.get_rng_state(), **self.guard.state_dict()}

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("rnnlab")
        if state:
            torch.set_rng_state(state["rng"])
            self.guard.load_state_dict(state)

    # -- forward --------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def recur(self, e: Tensor, state=None):
        return self.rnn(e, state)

    def read(self, h: Tensor, mask: Tensor | None) -> Tensor:
        """Turn recurrent outputs (B, T, H) into predictions per the task's readout."""
        how = self.task.readout
        if how == "seq":
            return self.head(h)
        if how == "last":
            return self.head(h[:, -1])
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        m = mask.unsqueeze(-1)
        if how == "mean":
            return self.head((h * m).sum(1) / m.sum(1).clamp_min(1))
        if how == "max":
            return self.head(h.masked_fill(~m, -math.inf).amax(1))
        raise ValueError(f"unknown readout {how!r}; valid: seq, last, mean, max")

    def forward(self, batch: dict[str, Tensor], state=None):
        h, state = self.recur(self.embed(batch["x"]), state)
        return self.read(h, batch.get("mask")), state

    def _step(self, batch, stage: str):
        state = self._carry.get(stage) if self.task.stateful else None
        out, state = self(batch, state)
        if self.task.stateful:  # truncated BPTT: keep the state, cut the graph
            self._carry[stage] = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        return out, self.task.loss(out, batch)

    # -- training -------------------------------------------------------------------------
    def on_train_epoch_start(self):
        self._carry.pop("train", None)

    def training_step(self, batch, batch_idx):
        """One optimizer step, written out (manual optimisation): forward, backward, the
        logging step's gradient norms, clipping and the divergence guard, the update, the
        schedule. The same operations in the same order as Lightning's automatic loop, so
        the same numbers for a seed, without its closure machinery around every step."""
        opt = self.optimizers()
        out, loss = self._step(batch, "train")
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        log = self._should_log()
        if log:  # before the checkpoint of this step (see rnnlab.callbacks.FlushedCheckpoint)
            self._log_now({"train/loss": loss.detach(), **self._param_grad_norms()})
        if not self.guard.step(self._trained):
            self.diverged_at = self.global_step
            self.trainer.should_stop = True
        elif log:
            self._log_now(self.guard.metrics())
        opt.step()  # a dropped (non-finite) gradient leaves every weight as it was
        schedule = self.lr_schedulers()
        if schedule is not None:
            schedule.step()
        # For the progress display (rnnlab.console), read when it prints. Not self.log: its
        # result collection costs about a millisecond per call on CPU, more than a small step.
        self.last_loss = loss.detach()
        return loss

    @property
    def _trained(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates, listed once: walking the module tree costs
        about 0.2 ms per step."""
        if self._trained_params is None:
            self._trained_params = [p for p in self.parameters() if p.requires_grad]
        return self._trained_params

    def _param_grad_norms(self) -> dict[str, float]:
        """Per-parameter gradient 2-norms (before clipping), e.g. ``grad_norm/weight_hh_l0``:
        only at logging steps, since reading them costs a sync."""
        norms = grad_norm(self, norm_type=2)
        return {"grad_norm/" + k.split("/", 1)[1].removeprefix("rnn."): v for k, v in norms.items() if "/" in k}

    def _should_log(self) -> bool:
        t = self._trainer
        # log_every_n_steps is set on the Trainer by Lightning's logger connector, unseen by mypy
        every = t.log_every_n_steps if t is not None else 0  # type: ignore[attr-defined]
        return t is not None and t.logger is not None and (t.global_step + 1) % every == 0

    def _log_now(self, metrics: dict) -> None:
        """Straight to the logger, in one batch, at the step ``train/loss`` is logged at.

        Per-step diagnostics need none of ``self.log``'s epoch aggregation, and going through
        it costs per key, on CPU, more than a small RNN's step (make bench's attribution).
        """
        if self.logger is not None:
            self.logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=self.global_step)

    def configure_optimizers(self):
        return optim.build(self.parameters(), self.optim_cfg, self.hparams.max_steps)

    # -- evaluation -----------------------------------------------------------------------
    def _eval_step(self, batch, stage):
        out, loss = self._step(batch, stage)
        self.task.update_metrics(self.metrics[stage], out, batch, loss)

    def _eval_end(self, stage):
        values = self.task.compute_metrics(self.metrics[stage])
        self.metrics[stage].reset()
        scalars = {f"{stage}/{k}": v for k, v in values.items() if v.ndim == 0}
        if stage == "val":  # val/skill: how far from the baseline (0) towards perfect (1)
            if self._val_baselines is None:
                self._val_baselines = self.task.baselines("val")
            skill = self.task.skill(float(scalars[self.task.main_metric]), self._val_baselines)
            if skill is not None:
                scalars["val/skill"] = torch.tensor(skill)
        self.final_vectors.update({f"{stage}/{k}": v for k, v in values.items() if v.ndim > 0})
        # the headline metrics in the progress bar; a breakdown (val/acc_by_dist/4-7) only logged
        self.log_dict({k: v for k, v in scalars.items() if k.count("/") == 1}, prog_bar=stage == "val")
        if any(k.count("/") > 1 for k in scalars):
            self.log_dict({k: v for k, v in scalars.items() if k.count("/") > 1})
        self._carry.pop(stage, None)

    @torch.no_grad()
    def evaluate(self, task: Task) -> dict[str, float]:
        """Score the model on ``task``'s test set outside the Trainer, with ``task``'s own metrics:
        the same weights on the same task at another length (``Task.length_tests``)."""
        was_training = self.training
        self.eval()
        metrics = task.metrics().to(self.device)
        for m in metrics.modules():  # this process scores the whole set: nothing to gather (under
            if isinstance(m, Metric):  # DDP the other ranks have returned; see length_test_metrics)
                m.distributed_available_fn = lambda: False  # torchmetrics' own switch (a constructor argument)
        for batch in task.test_dataloader():
            batch = {k: v.to(self.device) for k, v in batch.items()}
            out, _ = self(batch)
            task.update_metrics(metrics, out, batch, task.loss(out, batch))
        values = task.compute_metrics(metrics)
        self.train(was_training)
        return {k: float(v) for k, v in values.items() if v.ndim == 0}

    def on_validation_epoch_start(self):
        self._carry.pop("val", None)

    def on_test_epoch_start(self):
        self._carry.pop("test", None)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def on_test_epoch_end(self):
        self._eval_end("test")
