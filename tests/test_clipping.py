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


BY_HAND = ("sgd", "rmsprop", "adam")


def _by_hand(name: str, p: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:
    """Each configured name's update rule written out, at lr 0.1, momentum 0.5, weight decay
    0.01 and the torch class's defaults otherwise (RMSprop alpha 0.99, Adam betas 0.9/0.999)."""
    p, buf, m, v = p.clone(), torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, 1):
        g = g + 0.01 * p  # L2 weight decay, added to the gradient as all three do
        if name == "sgd":
            buf = g if t == 1 else 0.5 * buf + g
            p -= 0.1 * buf
        elif name == "rmsprop":
            v = 0.99 * v + 0.01 * g * g
            buf = 0.5 * buf + g / (v.sqrt() + 1e-8)
            p -= 0.1 * buf
        else:
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            p -= 0.1 * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    return p


def test_every_configured_optimizer_is_tested_by_hand():
    assert set(BY_HAND) == set(config.OPTIMIZERS)


@pytest.mark.parametrize("name", list(config.OPTIMIZERS))
def test_every_configured_optimizer_makes_its_own_update(name):
    """optim.name picks the update rule its name says, with lr, momentum (where it applies) and
    weight decay passed through: three steps match the rule computed by hand."""
    torch.manual_seed(0)
    start, grads = torch.randn(4, dtype=torch.float64), [torch.randn(4, dtype=torch.float64) for _ in range(3)]
    p = torch.nn.Parameter(start.clone())
    built = optim.build([p], {"name": name, "lr": 0.1, "momentum": 0.5, "weight_decay": 0.01}, max_steps=10)
    for g in grads:
        p.grad = g.clone()
        built.step()
    torch.testing.assert_close(p.detach(), _by_hand(name, start, grads), rtol=1e-12, atol=1e-12)


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
