"""Character-level LM data: splits, vocabulary, TBPTT windows, stateful streams."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.tasks.char_lm import CharLM


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    # Deterministic text with a character ('Z') only in the last 10%: it must map to <unk>.
    body = "".join(chr(97 + (i * 7) % 26) for i in range(9000))
    path.write_text(body + "Z" * 1000, encoding="utf-8")
    return path


def test_contiguous_split_and_vocabulary_from_train(corpus):
    task = CharLM(seq_len=10, batch_size=4, seed=0, corpus=str(corpus))
    n = 10_000
    assert [len(task.ids[s]) for s in ("train", "val", "test")] == [9000, 500, 500]
    assert "Z" not in task.vocab and task.vocab[0] == "\x00"
    assert (task.ids["test"] == 0).all(), "unseen characters map to the unknown id"
    # Round trip of the training split through the vocabulary.
    text = corpus.read_text()
    decoded = "".join(task.vocab[i] for i in task.ids["train"].tolist())
    assert decoded == text[:9000]
    assert task.describe()["data/n_chars"] == n


def test_windows_predict_the_next_character(corpus):
    task = CharLM(seq_len=10, batch_size=4, seed=0, corpus=str(corpus))
    b = next(iter(task.train_dataloader()))
    assert b["x"].shape == b["y"].shape == (4, 10) and b["x"].dtype == torch.long
    train = task.ids["train"]
    for x, y in zip(b["x"], b["y"]):
        # Locate the window in the training stream, then check the shift by one.
        starts = [s for s in range(len(train) - 10) if torch.equal(train[s:s + 10], x)]
        assert any(torch.equal(train[s + 1:s + 11], y) for s in starts)


def test_offsets_change_across_epochs_but_are_seeded(corpus):
    task = CharLM(seq_len=10, batch_size=4, seed=0, corpus=str(corpus))
    loader = task.train_dataloader()
    epochs = []
    for e in range(3):
        loader.sampler.set_epoch(e)
        epochs.append(torch.cat([b["x"] for b in loader]))
    again = task.train_dataloader()
    again.sampler.set_epoch(2)
    assert torch.equal(torch.cat([b["x"] for b in again]), epochs[2])
    assert not torch.equal(epochs[0], epochs[1])


def test_stateful_batches_continue_each_other(corpus):
    task = CharLM(seq_len=10, batch_size=4, seed=0, corpus=str(corpus), stateful=True)
    batches = list(task.train_dataloader())
    train = task.ids["train"]
    per_stream = (len(train) - 1) // 4
    for k, b in enumerate(batches[:3]):
        for row in range(4):  # row r of batch k is window k of stream r
            start = row * per_stream + k * 10
            assert torch.equal(b["x"][row], train[start:start + 10])
            assert torch.equal(b["y"][row], train[start + 1:start + 11])


def test_baseline_is_the_training_unigram_scored_on_the_test_split(corpus, tmp_path):
    uniform = tmp_path / "uniform.txt"
    uniform.write_text("".join(chr(97 + (i * 7) % 26) for i in range(10_000)), encoding="utf-8")
    base = CharLM(seq_len=10, batch_size=4, seed=0, corpus=str(uniform)).baselines()
    assert base["bpc"] == pytest.approx(math.log2(26), abs=0.01)  # 26 letters, near-uniform
    assert base["ppl"] == pytest.approx(math.exp(base["loss"]))
    # The fixture's test split is all 'Z', unseen in training (<unk>): a context-free model
    # trained on the training split cannot predict it. Smoothing keeps that finite.
    unseen = CharLM(seq_len=10, batch_size=4, seed=0, corpus=str(corpus)).baselines()
    assert math.log2(26) + 5 < unseen["bpc"] < 20


def test_default_corpus_ships_with_the_package():
    task = CharLM(seq_len=100, batch_size=64, seed=0, plays=["hamlet", "macbeth"])
    assert 250_000 < task.n_chars < 400_000
    assert 50 < len(task.vocab) < 100
    assert CharLM(seq_len=100, batch_size=64, seed=0, corpus="all").n_chars > 4_000_000


def test_stateful_streams_under_ddp_are_each_rank_s_own_and_together_one_process_s(corpus):
    """With 2 processes each carries its state through its own 4 streams: its consecutive batches
    continue each other row by row, and step k's global batch (both ranks' batch k) is window k
    of the 8 streams one process with batch_size=8 reads. Sharding the 4-stream batches by
    batch number instead gave each rank every other window, its state carried across a gap."""
    from conftest import as_rank

    one = list(CharLM(seq_len=10, batch_size=8, seed=0, corpus=str(corpus), stateful=True).train_dataloader())
    for rank in range(2):
        with as_rank(rank, 2):
            task = CharLM(seq_len=10, batch_size=4, seed=0, corpus=str(corpus), stateful=True)
            loader = task.train_dataloader()
            mine, length = list(loader), len(loader)
        assert len(mine) == length == len(one)
        for k, b in enumerate(mine):
            assert torch.equal(b["x"], one[k]["x"][4 * rank:4 * rank + 4])
            assert torch.equal(b["y"], one[k]["y"][4 * rank:4 * rank + 4])
            if k:  # the text goes on where the previous batch stopped, row by row
                assert torch.equal(b["x"][:, 0], mine[k - 1]["y"][:, -1])
