"""Lightning's DDP on CPU (gloo): two processes, one MLflow run, the same result as one process
with the same global batch."""

from __future__ import annotations

import pytest

RUN = ["task=adding", "seq_len=10", "trainer.max_steps=100", "trainer.val_check_interval=50",
       "trainer.log_every_n_steps=10", "cell.hidden_size=16", "task.val_size=128", "task.test_size=128",
       "threads=1", "diagnostics.enabled=false"]


@pytest.mark.slow
def test_ddp_cpu_two_processes_log_once_and_match_one_process(store):
    store.train(*RUN, "trainer=ddp_cpu", "batch_size=32", "tracking.experiment=ddp", tiny=False)
    store.train(*RUN, "batch_size=64", "tracking.experiment=single", tiny=False)
    ddp, single = store.only_run("ddp"), store.only_run("single")
    assert ddp.info.status == "FINISHED" and ddp.data.params["trainer.strategy"] == "ddp"
    steps = [s for s, _ in store.history(ddp.info.run_id, "train/loss")]
    assert steps == [s for s, _ in store.history(single.info.run_id, "train/loss")], \
        "rank 0 alone logs: one point per logging step, no duplicates from rank 1"
    base = ddp.data.metrics["baseline/mse"]
    assert single.data.metrics["val/mse"] < 0.5 * base, "the budget is enough to learn"
    assert ddp.data.metrics["val/mse"] == pytest.approx(single.data.metrics["val/mse"], abs=0.25 * base)
