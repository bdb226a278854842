"""The gradient guard, the optimizer builder and the name rules, on plain tensors: no Trainer."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab import config, optim
from rnnlab.clipping import GradientGuard


def params_with_grads(*grads):
    params = [torch.nn.Parameter(torch.zeros(len(g))) for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=torch.float32)
    return params


def test_clips_to_the_global_norm_and_reports_before_and_after():
    guard = GradientGuard(max_norm=1.0)
    params = params_with_grads([3.0, 0.0], [0.0, 4.0])  # global norm 5
    assert guard.step(params)
    total = torch.cat([p.grad for p in params]).norm().item()
    assert total == pytest.approx(1.0, rel=1e-5)
    m = guard.metrics()
    assert m["grad_norm/pre_clip"] == pytest.approx(5.0)
    assert m["grad_norm/post_clip"] == pytest.approx(1.0, rel=1e-5)
    assert m["clip/active"] == 1.0 and m["grad_norm/max"] == pytest.approx(5.0)


def test_clip_active_is_the_fraction_of_clipped_steps_in_the_window():
    guard = GradientGuard(max_norm=1.0)
    for g in ([0.5], [2.0], [0.1], [3.0]):
        guard.step(params_with_grads(g))
    assert guard.metrics()["clip/active"] == 0.5
    guard.step(params_with_grads([0.2]))
    assert guard.metrics()["clip/active"] == 0.0, "each call starts a new window"


def test_without_a_limit_it_measures_and_leaves_gradients_alone():
    guard = GradientGuard(max_norm=None)
    params = params_with_grads([30.0, 40.0])
    assert guard.step(params)
    assert params[0].grad.tolist() == [30.0, 40.0]
    m = guard.metrics()
    assert m["grad_norm/pre_clip"] == m["grad_norm/post_clip"] == pytest.approx(50.0)
    assert m["clip/active"] == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_gradient_is_refused_and_the_weights_keep_their_last_good_value(bad):
    guard = GradientGuard(max_norm=1.0)
    params = params_with_grads([1.0, bad])
    opt = torch.optim.SGD(params, lr=1.0)
    assert not guard.step(params)
    assert params[0].grad is None
    opt.step()
    assert params[0].tolist() == [0.0, 0.0]
    assert guard.nonfinite_steps == 1 and not math.isfinite(guard.last_norm)
    assert guard.max_seen == 0.0, "a non-finite norm is not the largest seen"


def test_state_round_trips_through_a_checkpoint():
    guard = GradientGuard(max_norm=1.0)
    guard.step(params_with_grads([7.0]))
    guard.step(params_with_grads([math.nan]))
    other = GradientGuard(max_norm=1.0)
    other.load_state_dict(guard.state_dict())
    assert (other.max_seen, other.nonfinite_steps) == (7.0, 1)


@pytest.mark.parametrize("name", list(config.OPTIMIZERS))
def test_every_configured_optimizer_builds(name):
    p = [torch.nn.Parameter(torch.ones(2))]
    built = optim.build(p, {"name": name, "lr": 0.1, "momentum": 0.5}, max_steps=10)
    assert type(built).__name__.lower() == name


def test_schedules_step_every_training_step():
    p = [torch.nn.Parameter(torch.ones(2))]
    built = optim.build(p, {"name": "adam", "lr": 0.1, "schedule": "cosine"}, max_steps=10)
    assert built["lr_scheduler"]["interval"] == "step"
    assert isinstance(built["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)


def test_a_bool_is_no_count():
    """true is an int in Python; the shared predicates refuse it wherever a count is expected."""
    from rnnlab.tasks.adding import Adding

    with pytest.raises(config.ConfigError, match="task.val_size=True"):
        Adding(seq_len=10, batch_size=4, seed=0, val_size=True)
    assert not config.positive_int(True) and not config.choice(config.CELLS)[0](True)
