"""task=sentiment: Rotten Tomatoes polarity with neutral filler between evidence and readout."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import BinaryF1Score

from rnnlab.config import ConfigError
from rnnlab.tasks.sentiment import PAD, Sentiment, load_plot_rows

T, D = 40, 15


@pytest.fixture(scope="module")
def plain():
    return Sentiment(seq_len=T, batch_size=16, seed=0)


@pytest.fixture(scope="module")
def far():
    return Sentiment(seq_len=T, batch_size=16, seed=0, distance=D, readout="mean")


def test_batches_are_left_padded_token_ids_with_a_mask(plain):
    batch = next(iter(plain.train_dataloader()))
    assert set(batch) == {"x", "y", "mask"}
    assert batch["x"].shape == (16, T) and batch["x"].dtype == torch.long
    assert batch["y"].shape == (16,) and batch["y"].dtype == torch.long
    assert batch["mask"].dtype == torch.bool and torch.equal(batch["mask"], batch["x"] != PAD)
    assert plain.input_kind == "tokens" and plain.output_size == 2 and plain.readout == "last"
    assert plain.input_size == len(plain.vocab) and plain.vocab[:2] == ["<pad>", "<unk>"]
    for split, f in plain.fields.items():
        assert f["x"].max() < plain.input_size and set(f["y"].unique().tolist()) == {0, 1}
        assert (f["x"][:, -1] != PAD).all(), f"{split}: the readout position must hold a token"
        # left padding: once a row has a token, no padding follows
        assert (f["mask"].int().diff(dim=1) >= 0).all()


def test_splits_are_disjoint_stratified_and_80_10_10(plain):
    texts = {s: set(v) for s, v in plain.texts.items()}
    assert all(len(texts[s]) == len(plain.texts[s]) for s in texts), "duplicate text inside a split"
    assert not texts["train"] & texts["val"] and not texts["train"] & texts["test"] \
        and not texts["val"] & texts["test"]
    n = {s: len(v) for s, v in plain.texts.items()}
    total = sum(n.values())
    assert total > 12_000  # 12,808 labelled snippets less exact duplicates
    assert n["val"] / total == pytest.approx(0.1, abs=0.002) and n["test"] / total == pytest.approx(0.1, abs=0.002)
    pos = {s: float(y.double().mean()) for s, y in plain.labels.items()}
    assert max(pos.values()) - min(pos.values()) < 0.005  # stratified
    # the split does not depend on the run seed, only on task.split_seed
    other = Sentiment(seq_len=T, batch_size=16, seed=5)
    assert other.texts == plain.texts


def test_distance_puts_the_review_end_exactly_D_before_the_readout(plain, far):
    assert far.vocab == plain.vocab and far.texts == plain.texts  # only the inputs move
    pool = far.filler_pool
    assert torch.equal(pool, torch.tensor(far.encode(" ".join(load_plot_rows()))))
    windows = pool.unfold(0, D, 1)
    room = T - D
    x, mask = far.fields["val"]["x"], far.fields["val"]["mask"]
    for i, text in enumerate(far.texts["val"]):
        ids = far.encode(text)
        kept = ids[-room:]  # truncated from the front: the end of the review is kept
        expected = [PAD] * (room - len(kept)) + kept
        assert x[i, :room].tolist() == expected
        assert x[i, T - 1 - D] == ids[-1]
        assert int(mask[i].sum()) == len(kept) + D
        if i < 25:  # the filler is a contiguous stretch of the plot rows
            assert (windows == x[i, room:]).all(1).any()
    # the filler differs between documents (drawn, not one fixed stretch)
    assert len({tuple(r) for r in x[:50, room:].tolist()}) > 40
    assert far.describe()["data/frac_truncated"] > plain.describe()["data/frac_truncated"]
    assert far.readout == "mean"


def test_majority_baseline_matches_direct_computation(plain):
    train, test = plain.labels["train"], plain.labels["test"]
    majority = 1 if (train == 1).sum() > (train == 0).sum() else 0
    acc = (test == majority).double().mean().item()
    f1 = BinaryF1Score()(torch.full_like(test, majority).float(), test).item()
    b = plain.baselines()
    assert b["acc"] == pytest.approx(acc) and b["f1"] == pytest.approx(f1, rel=1e-6)
    assert 0.5 < b["acc"] < 0.65  # fresh is the majority, about 58%


def test_char_tokens_and_custom_csv(tmp_path):
    rows = [f"{'great fun' if i % 2 else 'dull mess'} number {i}" for i in range(60)]
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(rows)))
    task = Sentiment(seq_len=12, batch_size=4, seed=0, data=str(path), min_count=1)
    assert sum(len(v) for v in task.texts.values()) == 60
    assert {"great", "dull", "number"} <= set(task.vocab)
    chars = Sentiment(seq_len=30, batch_size=4, seed=0, data=str(path), tokens="char")
    assert set(chars.vocab[2:]) <= set("great fun dull mess number 0123456789")
    assert chars.fields["train"]["x"].shape[1] == 30


def _error(**kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        Sentiment(**{"seq_len": T, "batch_size": 16, "seed": 0, **kwargs})
    return e.value


def test_bad_inputs_raise_config_errors_naming_the_key(tmp_path):
    e = _error(distance=T)
    assert e.key == "task.distance" and "seq_len" in str(e)
    assert _error(distance=-1).key == "task.distance"
    assert _error(tokens="bpe").key == "task.tokens"
    assert _error(readout="seq").key == "task.readout"
    e = _error(data=str(tmp_path / "nope.csv"))
    assert e.key == "task.data" and "text,label" in str(e)
    bad = tmp_path / "bad.csv"
    bad.write_text("review,label\nnice,1\n")
    e = _error(data=str(bad))
    assert e.key == "task.data" and "text" in e.valid and "review" in e.valid
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\nnice,1\nawful,0\nmeh,neutral\n")
    e = _error(data=str(labels))
    assert e.key == "task.data" and "0 or 1" in e.valid and "[2]" in e.valid
    few = tmp_path / "few.csv"
    few.write_text("text,label\n" + "".join(f"doc {i},{i % 2}\n" for i in range(8)))
    assert _error(data=str(few)).key == "task.data"


@pytest.mark.slow
def test_end_to_end_sentiment_run(store):
    store.train("task=sentiment", "task.distance=5", "cell=gru")
    run = store.only_run("sentiment")
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for key in ["train/loss", "val/acc", "val/f1", "val/loss", "test/acc", "test/f1", "baseline/acc",
                "baseline/f1"]:
        assert key in m, f"{key} not logged; have {sorted(m)}"
    assert 0 <= m["val/acc"] <= 1 and 0.5 < m["baseline/acc"] < 0.65
    p = run.data.params
    assert int(p["data/vocab_size"]) > 5000 and p["data/distance"] == "5"


def test_training_filler_is_fresh_for_every_batch_and_reproducible(far):
    """A filler fixed per training review would identify it right before the readout, a
    shortcut to memorising its label: each training batch draws new filler (the review part
    is the same), the same batch of the same run draws the same, and the held-out splits keep
    theirs fixed."""
    room = T - D
    data = far.train_dataloader().dataset
    one, other = torch.arange(16), torch.arange(0, 1600, 100)  # review 0 is in both batches
    a, b = data[one], data[other]
    assert not torch.equal(a["x"][0, room:], b["x"][0, room:]), "review 0 gets new filler in another batch"
    assert torch.equal(a["x"][0, :room], b["x"][0, :room]) and torch.equal(a["x"][:, :room],
                                                                          far.fields["train"]["x"][one, :room])
    assert (a["x"][:, room:] != far.fields["train"]["x"][one, room:]).any(1).all(), "not the fixed filler"
    windows = far.filler_pool.unfold(0, D, 1)
    assert all((windows == row).all(1).any() for row in a["x"][:, room:]), "a contiguous stretch of plot rows"
    assert torch.equal(a["mask"], a["x"] != PAD)
    # reproducible: the same run (seed) gets the same batches, so a resumed run sees the same data
    loaders = [Sentiment(seq_len=T, batch_size=16, seed=0, distance=D).train_dataloader() for _ in range(2)]
    assert torch.equal(next(iter(loaders[0]))["x"], next(iter(loaders[1]))["x"])
    assert torch.equal(far.val_dataloader().dataset.fields["x"], far.fields["val"]["x"])  # held-out: fixed
