"""The recall tasks (mqar, selective_copy, induction) and what came with them: generators whose
statistics are the papers', baselines that are what their strategy scores when simulated, tests
at longer lengths logged per length, ``model/state_size``, and a model that learns MQAR.
(What every task must satisfy is tests/test_every_task.py; every cell, test_every_cell.py.)"""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.config import ConfigError
from rnnlab.tasks.base import IGNORE_INDEX
from rnnlab.tasks.induction import Induction
from rnnlab.tasks.mqar import MQAR, power_law
from rnnlab.tasks.selective_copy import FIRST_SYMBOL, MARKER, SelectiveCopy


def _mqar(**kw) -> MQAR:
    args = dict(seq_len=64, batch_size=8, seed=0, vocab_size=512, num_kv_pairs=4, train_size=8,
                val_size=8, test_size=2000)
    return MQAR(**{**args, **kw})


@pytest.mark.parametrize("random_non_queries", [False, True])
def test_mqar_binds_each_query_to_its_own_pair_and_labels_only_the_queries(random_non_queries):
    task = _mqar(random_non_queries=random_non_queries)
    x, y = task.test["x"], task.test["y"]
    K, V = task.num_kv_pairs, task.vocab_size
    keys, values = x[:, 0 : 2 * K : 2], x[:, 1 : 2 * K : 2]
    assert ((keys >= 1) & (keys < V // 2)).all() and ((values >= V // 2) & (values < V)).all()
    assert all(len(set(r.tolist())) == K for r in keys) and all(len(set(r.tolist())) == K for r in values)
    scored = y != IGNORE_INDEX
    assert scored.sum(1).eq(K).all() and not scored[:, : 2 * K].any()
    for row in range(200):
        pairs = dict(zip(keys[row].tolist(), values[row].tolist(), strict=True))
        queried = x[row][scored[row]].tolist()
        assert sorted(queried) == sorted(pairs), "each key is queried exactly once"
        assert y[row][scored[row]].tolist() == [pairs[k] for k in queried], "the label is its key's value"
        where = scored[row].nonzero().flatten()
        assert ((where - 2 * K) % 2 == 0).all(), "queries sit at even offsets after the pairs"
    filler = x[:, 2 * K :][~scored[:, 2 * K :]]
    if random_non_queries:  # noise over the whole vocabulary, keys and values included
        assert filler.unique().numel() > 0.9 * V and (filler >= V // 2).float().mean().sub(0.5).abs() < 0.01
    else:  # Zoology's Figure 2: token 0, which no key or value uses
        assert filler.eq(0).all()


def test_bad_mqar_filler_setting_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"task\.random_non_queries.*true.*false"):
        _mqar(random_non_queries="yes")


def test_mqar_query_gaps_follow_zoology_s_power_law():
    """With one pair the gap of its query is drawn from the power law itself (with more, without
    replacement): its frequencies match p(g) ∝ (g + 1)^(a − 1) within sampling error."""
    task = _mqar(num_kv_pairs=1, test_size=20_000)
    where = (task.test["y"] != IGNORE_INDEX).nonzero()[:, 1]
    gaps = (where - 2) // 2
    space = (64 - 2) // 2
    seen = torch.bincount(gaps, minlength=space).double() / len(gaps)
    want = power_law(space, 0.01)
    assert (seen - want).abs().max() < 0.015, (seen[:5], want[:5])
    assert want[0] > 5 * want[-1], "most queries come soon after the pairs"


def test_mqar_baseline_is_what_guessing_among_the_values_scores():
    """Guessing uniformly among the sequence's K values, simulated on the test set, scores 1/K."""
    task = _mqar()
    assert task.query_order == "shuffled"
    x, y = task.test["x"], task.test["y"]
    K = task.num_kv_pairs
    g = torch.Generator().manual_seed(0)
    scored = y != IGNORE_INDEX
    values = x[:, 1 : 2 * K : 2]
    guess = values.gather(1, torch.randint(0, K, (len(x), K), generator=g))  # one guess per query
    acc = float((guess == y[scored].view(len(x), K)).float().mean())
    assert task.baselines()["acc"] == pytest.approx(1 / K)
    assert acc == pytest.approx(1 / K, abs=0.02)  # 8000 queries: sd 0.005


def _in_order(task: MQAR) -> tuple[float, list[float]]:
    """Answering the j-th query with the j-th pair's value, binding nothing, simulated on the
    test set: its accuracy, and how often the j-th query asks for the j-th pair, per j."""
    x, y = task.test["x"], task.test["y"]
    K = task.num_kv_pairs
    scored = y != IGNORE_INDEX
    guess = x[:, 1 : 2 * K : 2]  # the values, in the pairs' order: one per query, in the queries' order
    hit = guess == y[scored].view(len(x), K)
    return float(hit.float().mean()), hit.float().mean(0).tolist()


def test_mqar_query_order_says_nothing_of_the_pairs_unless_drawn_as_zoology_draws_it():
    """Zoology's order (the i-th key at the i-th gap drawn) lets the j-th query's answer be
    guessed from j alone above 1/K, and the baseline counts it; shuffled, it cannot."""
    shuffled = _mqar(test_size=4000)
    acc, per_rank = _in_order(shuffled)
    assert max(abs(p - 0.25) for p in per_rank) < 0.03 and shuffled.baselines()["acc"] == 0.25  # sd 0.007
    drawn = _mqar(test_size=4000, query_order="drawn")
    acc, per_rank = _in_order(drawn)
    assert per_rank[0] > 0.31, "the first gap drawn is the smallest most often: the first query asks pair 0"
    assert acc > 0.26
    base = drawn.baselines()
    assert base["acc"] >= acc - 0.01 and base["acc"] > 0.27 and base["loss"] < math.log(4)
    assert drawn.describe()["data/query_order"] == "drawn"
    with pytest.raises(ConfigError, match=r"task\.query_order.*shuffled, drawn"):
        _mqar(query_order="zoology")


def test_selective_copy_layout_and_its_order_free_baseline():
    task = SelectiveCopy(seq_len=48, batch_size=8, seed=0, val_size=8, test_size=2000)
    x, y = task.test["x"], task.test["y"]
    M = task.n_copy
    assert x.shape == (2000, 48 + M) and (x[:, -M:] == MARKER).all() and (y[:, :-M] == IGNORE_INDEX).all()
    data = x[:, :-M]
    assert ((data >= FIRST_SYMBOL).sum(1) == M).all()
    assert torch.equal(data[data >= FIRST_SYMBOL].view(-1, M), y[:, -M:]), "the outputs are the tokens, in order"
    # the strategy, simulated from the inputs: the most frequent data token, at every output step
    counts = torch.stack([torch.bincount(r[r >= FIRST_SYMBOL], minlength=FIRST_SYMBOL + 16) for r in data])
    mode = counts.argmax(1, keepdim=True).expand(-1, M)
    simulated = float((mode == y[:, -M:]).float().mean())
    base = task.baselines()
    assert base["acc"] == pytest.approx(simulated, abs=1e-6)
    assert 0.15 < base["acc"] < 0.3, "16 draws of 16 symbols: the mode's share is about 3.1/16"
    present = (counts > 0).sum(1).double()  # uniform among the symbols present: below the mode
    assert float((1 / present).mean()) < base["acc"]


def test_induction_layout_and_its_bag_of_tokens_baseline():
    task = Induction(seq_len=24, batch_size=8, seed=0, val_size=8, test_size=4000)
    x, y = task.test["x"], task.test["y"]
    assert (x[:, -1] == 0).all() and ((x[:, :-1] == 0).sum(1) == 1).all(), "the special token twice"
    first = (x[:, :-1] == 0).int().argmax(1)
    assert torch.equal(x[torch.arange(len(x)), first + 1], y) and (y > 0).all()
    # the strategy, simulated from the inputs: the most frequent symbol, ties broken at random
    g = torch.Generator().manual_seed(0)
    hits, present = [], []
    for row, target in zip(x.tolist(), y.tolist(), strict=True):
        counts = torch.bincount(torch.tensor([t for t in row if t]), minlength=17)
        modes = (counts == counts.max()).nonzero().flatten()
        hits.append(int(modes[int(torch.randint(0, len(modes), (1,), generator=g))]) == target)
        present.append(int((counts > 0).sum()))
    base = task.baselines()
    assert base["acc"] == pytest.approx(sum(hits) / len(hits), abs=0.02)  # 4000 draws: sd 0.006
    guess_present = sum(1 / d for d in present) / len(present)
    assert base["acc"] > guess_present + 0.02, "the mode is a better guess than any symbol present"


def test_a_length_test_draws_the_task_again_at_its_length_and_refuses_a_shorter_one():
    task = Induction(seq_len=24, batch_size=8, seed=0, val_size=8, test_size=16, test_seq_len=[96, 48])
    tests = task.length_tests()
    assert list(tests) == [48, 96] and tests[96].test["x"].shape == (16, 96)
    assert task.test["x"].shape == (16, 24), "the task itself stays at its length"
    with pytest.raises(ConfigError, match="task.test_seq_len"):
        Induction(seq_len=24, batch_size=8, seed=0, test_seq_len=[24])


@pytest.mark.parametrize("task,kwargs,key", [
    (MQAR, dict(seq_len=12, num_kv_pairs=4), "task.num_kv_pairs=4"),
    (MQAR, dict(seq_len=64, vocab_size=8, num_kv_pairs=4), "task.vocab_size=8"),
    (SelectiveCopy, dict(seq_len=8, n_copy=16), "task.n_copy=16"),
])
def test_bad_recall_settings_are_one_line_errors(task, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        task(batch_size=8, seed=0, **kwargs)


@pytest.mark.slow
def test_a_small_attention_model_learns_mqar():
    """4 pairs over a 64-token vocabulary at length 32: attention, the ceiling, is near perfect in
    300 steps (the baseline is 1/4). Slow: 300 steps of batch 64 take about a minute on a free core,
    several on a loaded one."""
    from rnnlab.model import RecurrentModel

    torch.manual_seed(0)
    task = MQAR(seq_len=32, batch_size=64, seed=0, vocab_size=64, num_kv_pairs=4, train_size=20_000,
                val_size=8, test_size=500)
    model = RecurrentModel(task, cell={"name": "attention", "hidden_size": 64, "num_layers": 2},
                           optim={"name": "adam", "lr": 3e-3}, embed_dim=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batches = iter(task.train_dataloader())
    for _ in range(STEPS):
        batch = next(batches)
        out, _ = model(batch)
        loss = task.loss(out, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = model.evaluate(task)["acc"]
    assert acc > 0.9, acc


STEPS = 300


@pytest.mark.slow
def test_a_run_logs_each_test_length_its_breakdown_and_its_state_size(store):
    """Through Hydra and MLflow as a user runs it: the test at each longer length with its
    baseline and skill, the accuracy by distance, and the state the cell carries (attention's:
    its context, seq_len 20 x 2 x width 16 x 2 layers)."""
    store.train("task=induction", "cell=attention", "task.test_seq_len=[40,80]", "task.val_size=32",
                "task.test_size=32")
    run = store.only_run("induction")
    metrics, params = run.data.metrics, run.data.params
    assert run.info.status == "FINISHED"
    for n in (40, 80):
        assert {f"test/L{n}/acc", f"test/L{n}/loss", f"baseline/L{n}/acc", f"test/L{n}/skill"} <= set(metrics)
        assert 0 <= metrics[f"test/L{n}/acc"] <= 1
    assert any(k.startswith("test/acc_by_dist/") for k in metrics), sorted(metrics)
    assert int(params["model/state_size"]) == 20 * 2 * 16 * 2
    assert int(params["model/step_flops"]) > 0


@pytest.mark.slow
def test_a_recurrent_run_logs_its_fixed_state_size(store):
    store.train("task=mqar", "cell=lstm", "task.vocab_size=64", "task.train_size=64", "task.val_size=16",
                "task.test_size=16")
    params = store.only_run("mqar").data.params
    assert int(params["model/state_size"]) == 2 * 16  # the LSTM's h and c, width 16, one layer


def test_the_state_size_figure_is_drawn_only_where_the_state_size_varies(tmp_path, drawn):
    """Zoology's figure: a panel per task and length where a cell ran at more than one state size,
    a line per cell; nothing at all when each cell has one (cells of one width differ in state
    size too: no curve)."""
    import pandas as pd

    from rnnlab.report.figures import plot_metric_vs_state_size
    from rnnlab.report.taskinfo import TaskInfo

    rows = [dict(task="mqar", seq_len=64, distance=None, cell=c, state_size=s, seed=k, outcome="finished",
                 **{"test/acc": a + 0.01 * k, "baseline/acc": 0.25})
            for c, sizes in [("gru", {64: 0.4, 128: 0.6}), ("attention", {16384: 1.0})]
            for s, a in sizes.items() for k in range(3)]
    runs = pd.DataFrame(rows)
    info = lambda task: TaskInfo(task, "test/acc", "max")  # noqa: E731
    assert plot_metric_vs_state_size(runs, tmp_path / "f.png", info) is not None
    panels, legend = drawn["f.png"]
    assert len(panels) == 1 and panels[0][1].startswith("state size")
    assert {"gru", "attention (the ceiling: its state is its context)"} <= set(legend)
    one_width = runs[runs["state_size"] != 128]  # gru at 64, attention at 16384: points, not curves
    assert plot_metric_vs_state_size(one_width, tmp_path / "g.png", info) is None
    assert plot_metric_vs_state_size(runs.drop(columns="state_size"), tmp_path / "h.png", info) is None


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["task=induction", "task.test_seq_len=[10]"], "task.test_seq_len="),
    (["task=mqar", "task.num_kv_pairs=6"], "task.num_kv_pairs=6"),
    (["task=mqar", "task.vocab_size=8"], "task.vocab_size=8"),
], ids=["test-length-below-training", "pairs-do-not-fit", "vocab-too-small"])
def test_a_bad_recall_setting_exits_2_with_one_line(store, overrides, message):
    """As a user sees it (seq_len 20 in the tiny runs): exit 2, one line naming the key, no run."""
    proc = store.train(*overrides, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert store.runs() == []
