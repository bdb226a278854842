"""What every registered task must satisfy, parametrised over the tasks found under
``conf/task/`` (:mod:`rnnlab.tasks.registry`): a task added as CONTRIBUTING.md says is checked
here without being named anywhere. And the registry's own rules, on tasks made up for the test."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from conftest import as_rank, compose
from rnnlab import diagnostics, literature
from rnnlab.report.labels import length_label, only_for
from rnnlab.report.taskinfo import _task_info_from_code
from rnnlab.runs import on_split
from rnnlab.tasks import registry
from rnnlab.tasks.base import IGNORE_INDEX
from rnnlab.tasks.synthetic import GeneratedTask

TASKS = registry.names()


def test_every_task_config_is_registered():
    from conftest import ROOT

    assert TASKS == tuple(sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))) and TASKS


@pytest.mark.parametrize("task", TASKS)
def test_a_task_is_found_by_its_name_and_declares_what_the_report_reads(task):
    import pandas as pd

    cls = registry.task_class(task)
    assert cls.name == task
    assert cls.mode in ("min", "max") and cls.main_metric.startswith("val/")
    info = _task_info_from_code(task)
    assert info.known and info.metric == on_split(cls.main_metric, "test")
    assert info.extras == tuple(f"test/{m}" for m in cls.report_extras if f"test/{m}" != info.metric)
    runs = pd.DataFrame({"task": [task], "distance": [None]})
    assert length_label(task, runs) == cls.length_label
    assert only_for("task", task) == cls.only_for
    for p in literature.published(task):  # published numbers are compared on a test metric
        assert p.metric.startswith("test/") and p.values


@pytest.mark.parametrize("task", TASKS)
def test_the_flop_shape_is_the_built_task_s_or_a_clear_refusal(task):
    """The bench sizes its runs from a task's class before building it: the kind and readout
    are the built task's; sizes are either the built ones or nominal ones the class declares
    (char-LM's vocabulary), or the class says it cannot give them."""
    from rnnlab.run import build_task

    cls = registry.task_class(task)
    built = build_task(compose(f"task={task}", "seq_len=20"))
    try:
        shape = cls.flop_shape()
    except NotImplementedError as e:
        assert task in str(e) and "flop_shape" in str(e)
        return
    assert (shape["input_kind"], shape["readout"]) == (built.input_kind, built.readout)
    assert all(isinstance(shape[k], int) and shape[k] > 0 for k in ("input_size", "output_size"))


def test_a_yaml_whose_class_has_another_name_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "summing.yaml").write_text("_target_: rnnlab.tasks.adding.Adding\n")
    monkeypatch.setenv("RNNLAB_ROOT", str(tmp_path))
    registry.task_class.cache_clear()
    try:
        assert registry.names() == ("summing",)
        with pytest.raises(registry.TaskRegistryError, match="summing.yaml builds rnnlab.tasks.adding.Adding, "
                                                             "whose name is 'adding'"):
            registry.task_class("summing")
        with pytest.raises(registry.TaskRegistryError, match="unknown task 'adding'; registered .*: summing"):
            registry.task_class("adding")
        assert registry.find("adding") is None
    finally:
        registry.task_class.cache_clear()


class _Recall(GeneratedTask):
    """A made-up recall task: its fields are set after ``super().__init__``, and only a few
    steps have targets (the rest are IGNORE_INDEX)."""

    name = "recall"
    input_kind, readout, main_metric, mode = "tokens", "seq", "val/loss", "min"
    input_size = output_size = 5

    def __init__(self, seq_len, batch_size, seed, queries=3, **kwargs):
        super().__init__(seq_len, batch_size, seed, **kwargs)
        self.queries = queries  # read by generate: after the base class's __init__

    def generate(self, n, g):
        x = torch.randint(0, 5, (n, self.seq_len), generator=g)
        y = torch.full_like(x, IGNORE_INDEX)
        y[:, : self.queries] = x[:, : self.queries]  # the targets sit early, far from the end
        return {"x": x, "y": y}

    def loss(self, out, batch):
        return F.cross_entropy(out.flatten(0, 1), batch["y"].flatten())


def test_a_generated_task_may_set_its_fields_after_the_base_init():
    task = _Recall(seq_len=30, batch_size=4, seed=0, queries=4, val_size=6, test_size=2)
    assert task.val["x"].shape == (6, 30) and (task.val["y"] != IGNORE_INDEX).sum(1).eq(4).all()
    again = _Recall(seq_len=30, batch_size=4, seed=1, queries=4, val_size=6, test_size=2)
    assert torch.equal(task.val["x"], again.val["x"]), "held-out sets do not depend on the seed"


def test_the_diagnostic_loss_reads_the_last_steps_that_have_targets():
    task = _Recall(seq_len=30, batch_size=4, seed=0, val_size=6, test_size=2)
    batch = task.val
    out = torch.randn(6, 30, 5)
    loss = diagnostics.readout_loss(task, out, batch, last_k=10)
    assert torch.isfinite(loss), "the last 10 steps have no target: their loss alone is NaN"
    want = F.cross_entropy(out[:, :3].flatten(0, 1), batch["y"][:, :3].flatten())
    torch.testing.assert_close(loss, want)
    dense = {**batch, "y": batch["x"]}  # every step a target: the last last_k steps, as before
    want = F.cross_entropy(out[:, -10:].flatten(0, 1), batch["x"][:, -10:].flatten())
    torch.testing.assert_close(diagnostics.readout_loss(task, out, dense, last_k=10), want)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_the_task_trains_through_hydra_and_mlflow_with_its_baseline_and_skill(store, task):
    """The smoke test every config gets: a tiny run as a user starts it, FINISHED, with the
    test metric the task is ranked by and the trivial baseline beside it."""
    from rnnlab.runs import metric_name

    cls = registry.task_class(task)
    store.train(f"task={task}", "cell=gru")
    run = store.only_run(task)
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.tags["task"] == task
    assert on_split(cls.main_metric, "test") in metrics
    if f"baseline/{metric_name(cls.main_metric)}" in metrics:  # a baseline for the headline: a skill
        assert "test/skill" in metrics


@pytest.mark.parametrize("served", [3, 0], ids=["mid-epoch", "after-an-epoch-end"])
@pytest.mark.parametrize("task", TASKS)
def test_a_resumed_epoch_serves_the_batches_of_an_uninterrupted_one(task, served):
    """Lightning's order on resume: the loader's state loaded and ``iter()`` called
    (``FitLoop.setup_data``), then ``set_epoch`` (``FitLoop.on_advance_start``), then the first
    batch. Whatever a task's loader, the resumed epoch must serve that epoch's batches in that
    epoch's order, less those already served: char_lm's built its epoch at ``iter()``, so the rest
    of an epoch resumed after the first was epoch 0's windows (a study's seed moved 0.0008 bpc)."""
    from itertools import islice

    from rnnlab.run import build_task

    epoch, k = 2, 4  # the batches compared after the resume point
    built = build_task(compose(f"task={task}", "seq_len=20", "batch_size=4"))
    built.setup("fit")
    whole = built.train_dataloader()
    n = len(whole)
    assert n > served + k, f"{task}: an epoch of {n} batches is too short for this test"
    whole.sampler.set_epoch(epoch)
    want = list(islice(iter(whole), served, served + k))

    resumed = built.train_dataloader()
    # a checkpoint mid-epoch (StopAtStep on SIGTERM), or last.ckpt on the epoch before's last batch
    resumed.load_state_dict({"epoch": epoch, "served": served} if served else {"epoch": epoch - 1, "served": n})
    batches = iter(resumed)
    resumed.sampler.set_epoch(epoch)
    got = list(islice(batches, k))
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[f], b[f]) for f in a), f"{task}: another batch"


# and the settings under which a task builds another training loader (char_lm's stateful streams
# are their own test's: test_task_char_lm.py)
LOADER_VARIANTS = [(t, ()) for t in TASKS] + [("sentiment", ("task.distance=5",))]


@pytest.mark.parametrize(("task", "extra"), LOADER_VARIANTS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else v)
def test_under_ddp_the_ranks_train_as_many_batches_and_evaluation_scores_every_example_once(task, extra):
    """Rank r's batch k is one process's batch k * world + r. In training every rank takes as
    many batches: DDP's gradient all-reduce pairs the ranks' steps in order, and a rank's extra
    batch would be averaged with another's next epoch (the last n % world are left out). In
    validation and test the ranks together score each of one process's batches once."""
    from rnnlab.run import build_task

    world, epoch = 3, 1
    built = build_task(compose(f"task={task}", "seq_len=20", "batch_size=16", *extra))  # 48 examples: 3 batches
    built.setup("fit")

    def loaders(rank: int | None):  # each built and read as that rank
        with as_rank(rank, world) if rank is not None else contextlib.nullcontext():
            out = {}
            for name in ("train", "val", "test"):
                loader = getattr(built, f"{name}_dataloader")()
                loader.sampler.set_epoch(epoch)
                out[name] = (len(loader), list(loader))
            return out

    one, ranks = loaders(None), [loaders(r) for r in range(world)]
    for name, (n, whole) in one.items():
        assert n == len(whole)
        for r, got in enumerate(ranks):
            length, batches = got[name]
            assert length == len(batches), f"{task} {name} rank {r}: len() says {length}, served {len(batches)}"
            for k, b in enumerate(batches):
                w = whole[k * world + r]
                assert all(torch.equal(b[f], w[f]) for f in w), f"{task} {name}: rank {r}'s batch {k}"
        counts = [len(got[name][1]) for got in ranks]
        assert min(counts) >= 1, f"{task} {name}: a rank with no batch would leave the others waiting"
        if name == "train":
            assert counts == [n // world] * world, f"{task}: ranks train {counts} batches of {n}"
        else:
            assert sum(counts) == n, f"{task} {name}: the ranks score {counts} of {n} batches"


def test_under_ddp_a_split_too_small_to_give_every_rank_a_batch_is_refused():
    """A rank with no batch skips the loop, and the others wait for it forever (the metrics'
    all-gather, the checkpoint's barrier): refused when the loader is built, naming the value
    and the largest that works. One process is never refused for it (an empty epoch was, and
    stays, Lightning's to skip)."""
    from rnnlab.config import ConfigError
    from rnnlab.run import build_task
    from rnnlab.tasks.batching import alone

    def adding(batch_size):
        built = build_task(compose("task=adding", "seq_len=20", f"batch_size={batch_size}", "task.val_size=128",
                                   "task.batches_per_epoch=2"))
        built.setup("fit")
        return built

    big, largest = adding(64), adding(63)
    assert len(big.val_dataloader()) == 2 and len(big.train_dataloader()) == 2  # one process
    with as_rank(1, 3):
        with pytest.raises(ConfigError, match=r"batch_size=64: too large for 3 processes: a split of 128 "
                                              r"examples must give each a batch \(at most 63\)"):
            big.val_dataloader()
        assert len(largest.val_dataloader()) == 1  # 3 batches of 63, 63 and 2: rank 1's is the second
        with pytest.raises(ConfigError, match=r"task.batches_per_epoch=2: at least 3"):
            big.train_dataloader()
        with alone():  # rank 0's scoring after the run: every batch, as one process
            assert len(big.val_dataloader()) == 2


def test_under_ddp_rank_0_scores_the_length_tests_on_the_whole_test_set():
    """After a DDP run the other ranks have returned and rank 0 scores the longer lengths alone:
    every batch of the test set (not its shard), and no all-gather of the metrics (which waited
    for the returned ranks and failed the run)."""
    from rnnlab.run import build_model, build_task, length_test_metrics

    cfg = compose("task=induction", "seq_len=16", "task.test_seq_len=[32]", "task.test_size=48", "batch_size=16",
                  "cell.hidden_size=16")
    task = build_task(cfg)
    task.setup("fit")
    model = build_model(cfg, task, "length-test")
    one = length_test_metrics(task, model)
    with as_rank(0, 2):
        assert length_test_metrics(task, model) == one  # rank 0 of 2: 3 batches, as one process
    assert "test/L32/acc" in one
