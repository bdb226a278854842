"""A run killed with SIGKILL and started again with resume=true continues into the same
MLflow run: same id, one continuous metric history, the same numbers as a run never killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY

RUN = ["task=adding", "cell=gru", "seq_len=20", "trainer.max_steps=120", "trainer.val_check_interval=20",
       "trainer.log_every_n_steps=5", "task.batches_per_epoch=40", "task.val_size=64", "task.test_size=64"]


def kill_after(store, marker: str, *overrides: str) -> None:
    """Start a training run and SIGKILL it as soon as ``marker`` appears on its stdout."""
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, *store.overrides(), *overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=store.env(), cwd=store.dir)
    deadline = time.time() + 240
    for line in proc.stdout:
        if marker in line or time.time() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_run_resumes_into_the_same_run_with_the_same_numbers(store):
    store.train(*RUN, "tracking.experiment=uninterrupted")
    reference = store.only_run("uninterrupted")

    # Killed at step 60: the last checkpoint is from the end of epoch 1 (step 40), and
    # train/loss points up to step 60 already reached the store.
    kill_after(store, "step     60 |", *RUN, "tracking.experiment=killed")
    killed = store.only_run("killed")
    assert killed.info.status == "RUNNING"
    steps_before = [s for s, _ in store.history(killed.info.run_id, "train/loss")]
    assert max(steps_before) > 40

    # Without resume, a second run would be a new MLflow run; with it, the same one continues.
    proc = store.train(*RUN, "tracking.experiment=killed", "resume=true")
    resumed = store.only_run("killed")
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["resume_count"] == "1"
    assert killed.info.run_id in proc.stdout

    for key in ["train/loss", "val/mse", "grad_norm/pre_clip"]:
        want = store.history(reference.info.run_id, key)
        got = store.history(resumed.info.run_id, key)
        assert [s for s, _ in got] == [s for s, _ in want], f"{key}: duplicated or missing steps"
        assert got == want, f"{key}: the resumed run's numbers differ from the uninterrupted run's"
    assert resumed.data.metrics["test/mse"] == reference.data.metrics["test/mse"]


@pytest.mark.slow
def test_resume_of_an_unknown_or_different_run_is_refused(store):
    store.train("task=adding", "tracking.experiment=x", "task.val_size=16", "task.test_size=16")
    run = store.only_run("x")
    proc = store.train("task=adding", "tracking.experiment=x", "task.val_size=16", "task.test_size=16",
                       "seed=5", f"resume={run.info.run_id}", check=False)
    assert proc.returncode == 2 and "another configuration" in proc.stderr
    proc = store.train("task=adding", "resume=" + "0" * 32, check=False)
    assert proc.returncode == 2 and "no such run" in proc.stderr
    assert len(store.runs()) == 1


@pytest.mark.slow
def test_a_logged_run_can_be_rerun_from_its_config_artifact(store, tmp_path):
    store.train("task=adding", "task.val_size=32", "task.test_size=32")
    first = store.only_run("adding")
    folder = tmp_path / "logged"
    folder.mkdir()
    store.client.download_artifacts(first.info.run_id, "config.yaml", str(folder))
    store.train("--config-path", str(folder), "--config-name", "config", tiny=False)
    runs = store.runs("adding")
    assert len(runs) == 2
    again = next(r for r in runs if r.info.run_id != first.info.run_id)
    assert again.data.tags["config_hash"] == first.data.tags["config_hash"]
    assert store.history(again.info.run_id, "train/loss") == store.history(first.info.run_id, "train/loss")
    assert again.data.metrics["test/mse"] == first.data.metrics["test/mse"]
