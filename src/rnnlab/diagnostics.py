"""Long-range diagnostics: does the gradient reach back through time, and are units saturated?

At every ``every_n_val``-th validation, on a fixed probe batch from the validation set:

* **gradient through time**: ``‖∂L/∂x_t‖`` for every input position t, where ``x_t`` is the
  encoded input (embedding or linear projection) and L is the loss read at the end of the
  sequence. ``x_t`` enters the recurrence exactly once, so its gradient is the total one even
  through fused cuDNN/oneDNN kernels. For per-step tasks (char-LM, copy) L is the loss of the
  last ``last_k`` steps that have a target (default 10: the copy task's recall window). Logged as
  ``grad_flow/horizon`` (the largest distance from the readout, in steps, at which the
  normalised gradient is still >= ``threshold`` of its maximum) and
  ``grad_flow/first_last_ratio`` (log10 of ‖∂L/∂x_1‖ / ‖∂L/∂x_T‖), and as a CSV + heatmap
  artifact over training;
* **inside the cell**: a reference twin of the recurrent stack (:mod:`rnnlab.cells.reference`,
  loaded with the same weights) replays the probe batch step by step, giving the true
  ``‖∂L/∂h_t‖`` (``grad_flow/hidden_horizon``), ``hidden/saturation`` (fraction of |h| > 0.99)
  and the mean gates (``gates/forget_mean`` for LSTM, ``gates/update_mean`` for GRU, where
  1 means "keep the old state").

All of it runs outside the training step, on a small batch, so it costs a few forward and
backward passes per validation.
"""

from __future__ import annotations

import copy
import csv
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from rnnlab import figures
from rnnlab.cells import spec


def readout_loss(task, out: Tensor, batch: dict[str, Tensor], last_k: int) -> Tensor:
    """The loss read at the end of the sequence: the whole loss for one-readout tasks, the
    loss of the last ``last_k`` steps that have a target for per-step tasks (every step for
    char-LM and copy: the last ``last_k``; a recall task's sparse queries: its last queries)."""
    if task.readout != "seq":
        return task.loss(out, batch)
    targeted = task.target_positions(batch)
    if bool(targeted.all()):
        k = min(last_k, out.shape[1])
        return task.loss(out[:, -k:], {**batch, "y": batch["y"][:, -k:]})
    steps = targeted.nonzero().squeeze(1)[-last_k:]
    return task.loss(out[:, steps], {**batch, "y": batch["y"][:, steps]})


def input_grad_profile(model, batch: dict[str, Tensor], last_k: int = 10) -> Tensor:
    """``‖∂L/∂x_t‖`` for t = 1..T (norm over batch and features), shape (T,).

    Runs at validation, with the model in eval mode, where cuDNN's fused RNNs refuse a backward
    pass: on a GPU the fused LSTM/GRU take PyTorch's own CUDA kernels here, same maths."""
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        e = model.embed(batch["x"]).detach().requires_grad_(True)
        h, _ = model.recur(e)
        loss = readout_loss(model.task, model.read(h, batch.get("mask")), batch, last_k)
        (g,) = torch.autograd.grad(loss, e)
    return g.detach().norm(dim=(0, 2))


def horizon(profile: Tensor, threshold: float = 0.01) -> int:
    """Largest distance from the readout (last position = 0) at which ``profile / max`` is
    still >= ``threshold``."""
    p = profile / profile.max().clamp_min(1e-30)
    above = (p >= threshold).nonzero()
    if len(above) == 0:
        return 0
    return int(len(profile) - 1 - above.min())


def first_last_ratio(profile: Tensor) -> float:
    """log10(‖∂L/∂x_1‖ / ‖∂L/∂x_T‖): about 0 when the gradient survives, very negative when it
    vanishes, positive when it grows backwards in time."""
    tiny = 1e-38
    return math.log10(max(float(profile[0]), tiny) / max(float(profile[-1]), tiny))


def reference_twin(model):
    """The recurrent stack in its step-by-step reference form, with the same weights, for the
    probe to record through: a copy switched to ``impl="reference"`` when the model's own class
    computes that form (the one-class cells), else the reference class loaded with its
    ``state_dict`` (a fused stack's twin). The model's own stack is never changed."""
    rnn, s = model.rnn, spec(model.cell_name)
    cls = s.cls("reference")
    if isinstance(rnn, cls):
        twin = copy.deepcopy(rnn)
        if hasattr(twin, "impl"):
            twin.impl = "reference"
        return twin.eval()
    kwargs = dict(input_size=rnn.input_size, hidden_size=rnn.hidden_size, num_layers=rnn.num_layers,
                  batch_first=True, **{k: getattr(rnn, k) for k in s.options})
    twin = cls(**kwargs).to(next(rnn.parameters()).device)
    twin.load_state_dict(rnn.state_dict())
    return twin.eval()


def hidden_grad(recorded: dict[str, Any], loss: Tensor) -> Tensor:
    """True ‖∂L/∂h_t‖ of the last layer, shape (T,), from the zero probe the reference form
    added to its states (a tensor, or a list over layers; complex for the LRU: its modulus)."""
    probe = recorded["h_probe"]
    probe = probe[-1] if isinstance(probe, list) else probe
    (grad,) = torch.autograd.grad(loss, probe, allow_unused=True)
    if grad is None:  # the loss does not depend on these states at all
        return probe.new_zeros(probe.size(1)).real
    return grad.detach().abs().norm(dim=(0, 2))


def gate_mean(twin, recorded: dict[str, Any], e: Tensor, name: str) -> float:
    """The mean of gate ``name``: over every layer's recorded gates where the reference form
    records them (the classic cells), else over the first layer's ``gates(e)`` (the scan cells)."""
    if "gates" in recorded:
        return float(recorded["gates"][name].mean())
    return float(twin.gates(e)[name].mean())


def cell_probe(model, batch: dict[str, Tensor], last_k: int = 10) -> dict[str, Any]:
    """Replay the probe batch through the reference twin: the true ‖∂L/∂h_t‖ (``grad_h``) and
    the metrics the cell's spec promises (:attr:`rnnlab.cells.CellSpec.metrics`): saturation
    where its states are squashed, its gate's mean, and its own knobs (the LRU's |λ|)."""
    s = spec(model.cell_name)
    twin = reference_twin(model)
    twin.record = True
    with torch.enable_grad():
        e = model.embed(batch["x"]).detach()
        h, _ = twin(e)
        loss = readout_loss(model.task, model.read(h, batch.get("mask")), batch, last_k)
        grad_h = hidden_grad(twin.recorded, loss)
    out: dict[str, Any] = {"grad_h": grad_h}
    with torch.no_grad():
        if s.saturates:
            hs = torch.stack([hl.detach() for hl in twin.recorded["h"]])
            out["hidden/saturation"] = float((hs.abs() > 0.99).float().mean())
        if s.gate:
            out[s.gate[1]] = gate_mean(twin, twin.recorded, e, s.gate[0])
        if s.probe_metrics:
            own = twin.diagnostics(e)
            if set(own) != set(s.probe_metrics):
                raise RuntimeError(f"cell {s.name}'s diagnostics() returned {sorted(own)}; its spec's "
                                   f"probe_metrics name {sorted(s.probe_metrics)}")
            out.update(own)
    return out


class GradientFlow(Callback):
    """Runs the probes at validation time and logs metrics, then a CSV and heatmap at the end."""

    def __init__(self, every_n_val: int = 1, probe_size: int = 32, last_k: int = 10,
                 threshold: float = 0.01):
        self.every_n_val, self.probe_size, self.last_k, self.threshold = every_n_val, probe_size, last_k, threshold
        self.rows: list[tuple[int, Tensor, Tensor]] = []  # (global step, grad_x profile, grad_h profile)
        self._n_val = 0
        self._probe: dict[str, Tensor] | None = None

    def state_dict(self):  # saved in checkpoints, so a resumed run keeps the earlier profiles
        return {"rows": [(s, gx, gh) for s, gx, gh in self.rows], "n_val": self._n_val}

    def load_state_dict(self, state):
        self.rows, self._n_val = list(state["rows"]), state["n_val"]

    def on_fit_start(self, trainer, pl_module):
        batch = next(iter(pl_module.task.val_dataloader()))
        self._probe = {k: v[: self.probe_size].clone() for k, v in batch.items()}

    def probe(self, pl_module) -> dict[str, Any]:
        assert self._probe is not None, "set in on_fit_start"
        batch = {k: v.to(pl_module.device) for k, v in self._probe.items()}
        with torch.inference_mode(False):
            gx = input_grad_profile(pl_module, batch, self.last_k).cpu()
            cell = cell_probe(pl_module, batch, self.last_k)
        gh = cell.pop("grad_h").cpu()
        return {"grad_x": gx, "grad_h": gh, **cell}

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or self._probe is None:
            return
        self._n_val += 1
        if (self._n_val - 1) % self.every_n_val:
            return
        was_training = pl_module.training
        pl_module.eval()
        result = self.probe(pl_module)
        pl_module.train(was_training)
        gx, gh = result.pop("grad_x"), result.pop("grad_h")
        if not (torch.isfinite(gx).all() and torch.isfinite(gh).all()):
            return  # a diverging model: the divergence check reports it
        self.rows.append((trainer.global_step, gx, gh))
        pl_module.log_dict({
            "grad_flow/horizon": float(horizon(gx, self.threshold)),
            "grad_flow/first_last_ratio": first_last_ratio(gx),
            "grad_flow/hidden_horizon": float(horizon(gh, self.threshold)),
            **{k: float(v) for k, v in result.items()},
        })

    def on_fit_end(self, trainer, pl_module):
        logger = trainer.logger
        if not self.rows or logger is None or not hasattr(logger, "run_id"):
            return
        with tempfile.TemporaryDirectory() as tmp:
            for path in self.write(Path(tmp), pl_module.run_label):
                logger.experiment.log_artifact(logger.run_id, str(path), "diagnostics")

    def write(self, out_dir: Path, title: str) -> list[Path]:
        """The profile per validation as a long CSV and a heatmap (position x step, log scale)."""
        csv_path = out_dir / "grad_flow.csv"
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "position", "distance_from_readout", "grad_input_norm", "grad_hidden_norm"])
            for step, gx, gh in self.rows:
                T = len(gx)
                for t in range(T):
                    w.writerow([step, t + 1, T - 1 - t, f"{float(gx[t]):.6e}", f"{float(gh[t]):.6e}"])
        from matplotlib.colors import LogNorm

        plt = figures.pyplot()

        steps = [r[0] for r in self.rows]
        grid = torch.stack([r[1] / r[1].max().clamp_min(1e-30) for r in self.rows]).clamp_min(1e-8).numpy()
        fig, ax = plt.subplots(figsize=(7, 3.8))
        T = grid.shape[1]
        im = ax.imshow(grid, aspect="auto", origin="lower", norm=LogNorm(vmin=1e-8, vmax=1),
                       extent=(0.5, T + 0.5, -0.5, len(steps) - 0.5), cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(steps)), [str(s) for s in steps])
        ax.set(xlabel="input position t (readout at the right)", ylabel="training step",
               title=f"{title}: ‖∂L/∂x_t‖ / max")
        # Decade ticks labelled in plain text: LogNorm's default puts mathtext labels and
        # minor ticks on the colorbar, whose parsing and drawing were half of this figure's cost.
        bar = fig.colorbar(im, ax=ax, label="normalised gradient (log)")
        decades = [10.0 ** e for e in range(-8, 1, 2)]
        bar.set_ticks(decades, labels=[f"1e{e}" if e else "1" for e in range(-8, 1, 2)])
        bar.minorticks_off()
        # Fixed margins: tight_layout measures every log-scale tick label first, which took
        # more than half of this figure's 0.6 s at the end of every run.
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.13, top=0.91)
        return [csv_path, Path(figures.save(fig, out_dir / "grad_flow.png"))]
