"""Lightning's DDP on CPU (gloo): two processes, one MLflow run, the same model as one process
with the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Stateful char_lm: each rank carries its state through its own streams, so the two ranks' batch
# k is exactly one process's batch k of twice the streams, and the averaged gradients are that
# process's (up to the order of a float sum).
RUN = ["task=char_lm", "task.stateful=true", "seq_len=50", "cell=gru", "cell.hidden_size=32",
       "trainer.max_steps=60", "trainer.val_check_interval=30", "trainer.log_every_n_steps=10",
       "threads=1", "diagnostics.enabled=false"]


@pytest.mark.slow
def test_ddp_cpu_two_processes_log_once_and_train_the_model_of_one_process(store):
    store.train(*RUN, "trainer=ddp_cpu", "batch_size=16", "tracking.experiment=ddp", tiny=False)
    store.train(*RUN, "batch_size=32", "tracking.experiment=single", tiny=False)
    ddp, single = store.only_run("ddp"), store.only_run("single")
    assert ddp.info.status == "FINISHED" and ddp.data.params["trainer.strategy"] == "ddp"
    steps = [s for s, _ in store.history(ddp.info.run_id, "train/loss")]
    assert steps == [s for s, _ in store.history(single.info.run_id, "train/loss")], \
        "rank 0 alone logs: one point per logging step, no duplicates from rank 1"
    # 4.0398 both; sharding the 16-stream batches by batch number instead (each rank every other
    # window, its state carried across the gap) gave 4.0568
    for metric in ("val/bpc", "test/bpc"):
        assert ddp.data.metrics[metric] == pytest.approx(single.data.metrics[metric], abs=1e-4), metric
    assert single.data.metrics["test/bpc"] < single.data.metrics["baseline/bpc"] - 0.5, "it learns"


@pytest.mark.slow
def test_ddp_cpu_with_epochs_and_splits_that_do_not_divide_among_the_ranks(store):
    """An epoch of 5 batches for 2 ranks (2 each: DDP's all-reduce pairs their steps in order, and
    an odd third batch was averaged with the other rank's next epoch), a validation split of 3
    batches (2 and 1: every example scored once), 6 epochs in 12 steps with last.ckpt at each
    epoch's end (a rank's epoch, not one process's), and the length test, which rank 0 scores
    alone after the others have returned (it waited for them in the metrics' all-gather)."""
    store.train("task=induction", "seq_len=16", "task.test_seq_len=[32]", "cell.hidden_size=16", "batch_size=16",
                "task.batches_per_epoch=5", "task.val_size=48", "task.test_size=48", "trainer.max_steps=12",
                "trainer.val_check_interval=4", "trainer.log_every_n_steps=2", "threads=1",
                "diagnostics.enabled=false", "trainer=ddp_cpu", "tracking.experiment=uneven", tiny=False,
                timeout=240)
    run = store.only_run("uneven")
    assert run.info.status == "FINISHED" and run.data.tags["world_size"] == "2"
    assert run.data.metrics["epoch"] == 6  # 12 steps, 2 per rank's epoch: 6 ended (3 per epoch: 4)
    # last.ckpt at every rank's epoch end, the last at step 12 (one process's 5-step epoch: 10)
    last = torch.load(Path(run.data.tags["checkpoint_dir"]) / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 12
    assert {"test/acc", "test/L32/acc", "baseline/L32/acc"} <= set(run.data.metrics)
