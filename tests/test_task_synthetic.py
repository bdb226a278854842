"""The adding and copy-memory probes: layout, the long-range knob, baselines from the data."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.tasks.adding import Adding
from rnnlab.tasks.copy import DELIMITER, Copy, memoryless_loss


def first_batches(task, n=2):
    it = iter(task.train_dataloader())
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("T", [2, 3, 25, 200])
def test_adding_layout(T):
    task = Adding(seq_len=T, batch_size=32, seed=0, val_size=500, test_size=500)
    b = first_batches(task, 1)[0]
    assert b["x"].shape == (32, T, 2) and b["x"].dtype == torch.float32
    assert b["y"].shape == (32, 1)
    values, markers = b["x"][..., 0], b["x"][..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert (markers.sum(1) == 2).all()
    pos = markers.nonzero()[:, 1].view(32, 2)
    assert (pos[:, 0] < T // 2).all() and (pos[:, 1] >= T // 2).all()
    torch.testing.assert_close(b["y"][:, 0], (values * markers).sum(1))


def test_adding_knob_moves_the_first_marker_away_from_the_readout():
    for T in (50, 400):
        x = Adding(seq_len=T, batch_size=8, seed=0, val_size=4000, test_size=8).val["x"]
        first = x[..., 1].argmax(1).float()  # first marker position
        distance = T - first  # steps between first marker and the readout
        assert distance.min() > T // 2 and distance.max() <= T
        assert distance.mean().item() == pytest.approx(0.75 * T, rel=0.05)


def test_adding_baseline_is_scored_on_the_test_set():
    """Predicting 1 (the mean of the sum) scores MSE 1/6 in expectation; the baseline a run is
    compared with is that predictor on the run's own test set, which differs by sampling."""
    task = Adding(seq_len=20, batch_size=8, seed=0, val_size=20_000, test_size=50)
    assert task.baselines()["mse"] == pytest.approx(((task.test["y"].double() - 1) ** 2).mean().item())
    assert task.baselines()["mse"] != pytest.approx(1 / 6, abs=1e-3), "50 sequences are not the expectation"
    empirical = ((task.val["y"] - 1) ** 2).mean().item()
    assert empirical == pytest.approx(1 / 6, abs=0.005)


@pytest.mark.parametrize("mode,value,base,want", [("min", 0.0, 0.16, 1.0), ("min", 0.16, 0.16, 0.0),
                                                  ("min", 0.32, 0.16, -1.0), ("max", 0.75, 0.5, 0.5),
                                                  ("max", 0.5, 0.5, 0.0), ("max", 1.0, 0.5, 1.0)])
def test_skill_is_one_when_perfect_and_zero_at_the_baseline(mode, value, base, want):
    task = Adding(seq_len=20, batch_size=8, seed=0, val_size=8, test_size=8)
    task.mode = mode
    assert task.skill(value, {"mse": base}) == pytest.approx(want)
    assert task.skill(value, {}) is None


def test_generated_data_is_seeded_fresh_and_held_out():
    a, b = Adding(20, 16, seed=0), Adding(20, 16, seed=0)
    c = Adding(20, 16, seed=1)
    a1, a2 = first_batches(a)
    b1, _ = first_batches(b)
    c1, _ = first_batches(c)
    assert torch.equal(a1["x"], b1["x"]), "same seed, same batches"
    assert not torch.equal(a1["x"], a2["x"]), "fresh sequences every step"
    assert not torch.equal(a1["x"], c1["x"]), "another seed, other batches"
    assert torch.equal(a.val["x"], c.val["x"]) and torch.equal(a.test["x"], c.test["x"]), \
        "held-out sets are the same for every seed"
    assert not torch.equal(a.val["x"], a.test["x"])
    # The next epoch continues with new sequences rather than repeating epoch 0.
    loader = a.train_dataloader()
    loader.sampler.set_epoch(1)
    assert not torch.equal(next(iter(loader))["x"], a1["x"])


@pytest.mark.parametrize("T", [1, 25, 100])
def test_copy_layout_and_delay(T):
    task = Copy(seq_len=T, batch_size=16, seed=0, val_size=64, test_size=64)
    b = first_batches(task, 1)[0]
    x, y = b["x"], b["y"]
    assert x.shape == y.shape == (16, T + 20) and x.dtype == torch.long
    assert ((x[:, :10] >= 1) & (x[:, :10] <= 8)).all()
    assert (x[:, 10:T + 10] == 0).all(), "seq_len blanks after the symbols"
    assert (x[:, T + 10] == DELIMITER).all() and (x[:, T + 11:] == 0).all()
    assert (y[:, :-10] == 0).all() and torch.equal(y[:, -10:], x[:, :10])


def test_copy_baseline_is_the_memoryless_strategy_on_the_data():
    T = 30
    task = Copy(seq_len=T, batch_size=16, seed=0, val_size=256, test_size=8)
    y = task.val["y"]
    # Memoryless: certain of the blank until the delimiter, then uniform over the 8 symbols.
    logp = torch.full((*y.shape, 10), -math.inf)
    logp[:, :-10, 0] = 0.0
    logp[:, -10:, 1:9] = -math.log(8)
    nll = -logp.gather(-1, y.unsqueeze(-1)).mean().item()
    assert nll == pytest.approx(memoryless_loss(T)) == pytest.approx(10 * math.log(8) / (T + 20))
    assert task.baselines()["loss"] == pytest.approx(nll)


@pytest.mark.slow
@pytest.mark.parametrize("task,metrics", [
    ("adding", ["val/mse", "val/mae", "test/mse", "baseline/mse"]),
    ("copy", ["val/loss", "val/acc", "test/acc", "baseline/loss", "baseline/acc"]),
])
def test_end_to_end(store, task, metrics):
    store.train(f"task={task}", "cell=rnn", "task.val_size=32", "task.test_size=32")
    run = store.only_run(task)
    assert run.info.status == "FINISHED"
    for key in metrics:
        assert key in run.data.metrics, f"{key} missing; have {sorted(run.data.metrics)}"
    if task == "adding":  # the trivial predictor on the run's own (seed-independent) test set
        test_set = Adding(seq_len=20, batch_size=8, seed=0, val_size=32, test_size=32)
        assert run.data.metrics["baseline/mse"] == pytest.approx(test_set.baselines()["mse"])
        assert run.data.metrics["test/skill"] == pytest.approx(
            1 - run.data.metrics["test/mse"] / run.data.metrics["baseline/mse"])
    else:
        assert run.data.metrics["baseline/loss"] == pytest.approx(memoryless_loss(20))


@pytest.mark.slow
def test_a_solved_run_logs_steps_to_solve_and_can_stop_early(store):
    """A GRU solves the adding problem at T=10 in a few hundred steps: val/skill crosses 0.9,
    steps_to_solve is that validation's step, and with early stop the run ends once two
    validations in a row are solved, well before max_steps, with its test metrics from the
    best checkpoint."""
    summary = store.train_in_process("task=adding", "cell=gru", "seq_len=10", "batch_size=32",
                                     "cell.hidden_size=32", "trainer.max_steps=2000",
                                     "trainer.val_check_interval=25", "solve.early_stop=true")
    run = store.only_run("adding")
    solved = int(run.data.metrics["steps_to_solve"])  # training steps taken until solved
    skill = dict(store.history(run.info.run_id, "val/skill"))  # Lightning logs val/* at step - 1
    assert skill[solved - 1] >= 0.9 and all(v < 0.9 for s, v in skill.items() if s < solved - 1)
    # whatever the trajectory (thread count, summation order): it stopped at the first
    # validation that made two solved ones in a row, well before max_steps
    steps = sorted(skill)
    pairs = [b for a, b in zip(steps, steps[1:]) if skill[a] >= 0.9 and skill[b] >= 0.9]
    assert pairs and max(skill) == pairs[0] < 2000 - 1
    assert run.data.tags["stop_reason"] == "solved" and summary.status == "FINISHED"
    assert run.data.metrics["test/skill"] > 0.8
