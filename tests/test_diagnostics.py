"""Long-range diagnostics: the gradient-through-time profile against an independent
computation, its qualitative behaviour, and divergence that ends a run cleanly."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from conftest import EXPLODING
from rnnlab import diagnostics, sweep
from rnnlab.cells import SPECS
from rnnlab.config import FUSED_CELLS
from rnnlab.model import RecurrentModel
from rnnlab.tasks.adding import Adding
from rnnlab.tasks.copy import Copy

CELL_CLASSES = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def make_model(task, cell, hidden=6, embed=4, **cell_kwargs):
    torch.manual_seed(0)
    model = RecurrentModel(task, cell={"name": cell, "hidden_size": hidden, "num_layers": 1, **cell_kwargs},
                           optim={"name": "adam", "lr": 1e-3}, embed_dim=embed)
    return model.double().eval()


def manual_profile(model, batch, last_k):
    """‖∂L/∂x_t‖ by autograd through an explicit loop over nn.*Cell with the model's weights."""
    name = model.cell_name
    cell = CELL_CLASSES[name](model.rnn.input_size, model.rnn.hidden_size).double()
    for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, p).data.copy_(getattr(model.rnn, f"{p}_l0").data)
    if name == "rnn":
        cell.nonlinearity = model.rnn.nonlinearity
    x = model.encoder(batch["x"].double() if batch["x"].is_floating_point() else batch["x"]).detach()
    xs = [x[:, t].clone().requires_grad_(True) for t in range(x.shape[1])]
    h = torch.zeros(x.shape[0], model.rnn.hidden_size, dtype=torch.float64)
    c = torch.zeros_like(h)
    outs = []
    for xt in xs:
        if name == "lstm":
            h, c = cell(xt, (h, c))
        else:
            h = cell(xt, h)
        outs.append(h)
    hs = torch.stack(outs, 1)
    out = model.head(hs[:, -1]) if model.task.readout == "last" else model.head(hs)
    if model.task.readout == "seq":
        out, batch = out[:, -last_k:], {**batch, "y": batch["y"][:, -last_k:]}
    loss = model.task.loss(out, batch)
    grads = torch.autograd.grad(loss, xs)
    return torch.stack([g.norm() for g in grads])


@pytest.mark.parametrize("cell", list(CELL_CLASSES))  # the cells torch has a one-step nn.*Cell of
@pytest.mark.parametrize("task_cls", [Adding, Copy])
def test_profile_matches_an_independent_manual_loop(cell, task_cls):
    task = task_cls(seq_len=12, batch_size=5, seed=0, val_size=5, test_size=5)
    model = make_model(task, cell)
    batch = {k: (v.double() if v.is_floating_point() else v) for k, v in task.val.items()}
    got = diagnostics.input_grad_profile(model, batch, last_k=10)
    want = manual_profile(model, batch, last_k=10)
    assert got.shape == (task.val["x"].shape[1],)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (cuDNN's fused cells)")
@pytest.mark.parametrize("cell", FUSED_CELLS)
def test_profile_on_a_gpu_in_eval_mode_matches_the_cpu(cell):
    """cuDNN refuses an RNN backward in eval mode, which is where validation takes the profile.
    (CI has no GPU; the GPU bench's harness runs take this path too: experiments/bench/gpu-h200.)"""
    task = Adding(seq_len=12, batch_size=5, seed=0, val_size=5, test_size=5)
    model = make_model(task, cell).float()
    want = diagnostics.input_grad_profile(model, task.val, last_k=10)
    got = diagnostics.input_grad_profile(model.cuda(), {k: v.cuda() for k, v in task.val.items()}, last_k=10)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-7)


def test_horizon_and_ratio_definitions():
    profile = torch.tensor([1e-5, 1e-3, 0.02, 0.5, 1.0])
    assert diagnostics.horizon(profile, 0.01) == 2  # position 3 of 5 is 2 steps from the readout
    assert diagnostics.horizon(profile, 1e-6) == 4
    assert diagnostics.first_last_ratio(profile) == pytest.approx(-5)


def init_horizon(cell, T=100, **cell_kwargs):
    task = Adding(seq_len=T, batch_size=32, seed=0, val_size=32, test_size=8)
    torch.manual_seed(0)
    model = RecurrentModel(task, cell={"name": cell, "hidden_size": 64, "num_layers": 1, **cell_kwargs},
                           optim={"name": "adam", "lr": 1e-3}, embed_dim=16).eval()
    profile = diagnostics.input_grad_profile(model, task.val)
    return diagnostics.horizon(profile), diagnostics.first_last_ratio(profile)


def test_small_spectral_radius_gives_a_short_horizon_and_lstm_reaches_further():
    short, short_ratio = init_horizon("rnn", spectral_radius=0.5)
    rnn, _ = init_horizon("rnn")
    lstm, lstm_ratio = init_horizon("lstm", forget_bias=1.0)
    assert short <= 10 and short_ratio < -20, (short, short_ratio)
    assert short < rnn < lstm, (short, rnn, lstm)
    assert lstm_ratio > short_ratio


@pytest.mark.parametrize("cell", [name for name, s in SPECS.items() if s.saturates])
def test_cell_probe_reads_gates_and_saturation(cell):
    task = Adding(seq_len=30, batch_size=8, seed=0, val_size=8, test_size=8)
    model = make_model(task, cell).float()
    out = diagnostics.cell_probe(model, task.val)
    assert out["grad_h"].shape == (30,) and (out["grad_h"] > 0).all()
    assert 0 <= out["hidden/saturation"] <= 1
    if cell == "lstm":
        assert 0.5 < out["gates/forget_mean"] < 1  # forget bias 1 keeps the gate open at init
    if cell == "gru":
        assert 0 < out["gates/update_mean"] < 1
    assert model.rnn.__class__ is SPECS[cell].cls(SPECS[cell].default_impl), "the model's own stack is untouched"


@pytest.mark.slow
def test_divergence_ends_the_run_cleanly_and_clipping_prevents_it(store):
    diverging = store.train(*EXPLODING, "clip=null")
    assert diverging.returncode == 0
    assert "DIVERGED at step" in diverging.stdout
    store.train(*EXPLODING, "clip=1.0")
    runs = {r.data.tags["clip"]: r for r in store.runs("adding")}
    bad, good = runs["None"], runs["1.0"]
    assert bad.info.status == "FAILED" and bad.data.tags["diverged"] == "true"
    assert int(bad.data.tags["diverged_at_step"]) < 30
    assert bad.data.tags["last_grad_norm"] in ("nan", "inf")
    assert bad.data.metrics["grad_norm/nonfinite_steps"] == 1
    assert good.info.status == "FINISHED" and good.data.tags["diverged"] == "false"
    assert good.data.metrics["grad_norm/nonfinite_steps"] == 0
    assert good.data.metrics["grad_norm/max"] > 100, "the gradient did explode; clipping tamed it"
    assert {"grad_flow/horizon", "grad_flow/first_last_ratio", "hidden/saturation"} <= set(good.data.metrics)
    artifacts = {a.path for a in store.client.list_artifacts(good.info.run_id, "diagnostics")}
    assert artifacts == {"diagnostics/grad_flow.csv", "diagnostics/grad_flow.png"}


@pytest.mark.slow
def test_a_diverging_job_does_not_stop_a_multirun(store):
    proc = store.train("-m", *EXPLODING, "clip=null,1.0", f"hydra.sweep.dir={store.dir / 'multirun'}")
    assert proc.returncode == 0
    runs = store.runs("adding")
    jobs = [r for r in runs if r.data.tags.get("sweep") != "true"]
    statuses = sorted((r.data.tags["diverged"], r.info.status) for r in jobs)
    assert statuses == [("false", "FINISHED"), ("true", "FAILED")]
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert parent.data.metrics["sweep/diverged"] == 1 and parent.data.metrics["sweep/finished"] == 1
    # the parent is named by what the grid varies, records it, and carries the comparison
    assert parent.info.run_name == "sweep-adding clip=null,1.0"
    assert json.loads(parent.data.tags["sweep_params"]) == {"clip": "null,1.0"}
    # drawn in the background once the command returned (sweep.report=background, the default)
    assert "being written in the background" in proc.stdout
    assert sweep.wait_for_report(store.dir / "multirun") == 0
    report = {a.path for a in store.client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/REPORT.md", "report/metric_vs_length.png"} <= report, report


def test_diagnostics_can_be_switched_off(store):
    """Off: no probe replays a batch, so no gradient-through-time, gate or saturation metric
    is logged; the per-parameter gradient norms (Lightning's, every logging step) still are."""
    store.train_in_process("task=adding", "cell=gru", "diagnostics.enabled=false")
    keys = set(store.only_run("adding").data.metrics)
    assert not {k for k in keys if k.startswith(("grad_flow/", "gates/", "hidden/"))}, sorted(keys)
    assert "grad_norm/pre_clip" in keys and "grad_norm/weight_hh_l0" in keys
