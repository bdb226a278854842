"""Ctrl-C and SIGTERM (a scheduler's pre-emption or time limit) end a run KILLED, saying what
stopped it, with exit code 128 + the signal; ``resume=true`` then finishes the same run and
drops the stale reason. A sweep stopped the same way ends its parent run KILLED."""

from __future__ import annotations

import signal

import pytest

from conftest import LONG as RUN


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_is_killed_then_resumes_to_finished(store, sig):
    name = signal.Signals(sig).name
    proc = store.signal_at("step     60 |", sig, *RUN)  # last.ckpt was written at step 40
    assert proc.returncode == 128 + sig, proc.stderr[-3000:]
    run = store.only_run("adding")
    assert run.info.status == "KILLED"
    assert run.data.tags["stopped_by"] == name and run.data.tags["status_reason"] == "interrupted"
    assert "error" not in run.data.tags
    assert f"resume={run.info.run_id}" in proc.stderr, "the message says how to continue"

    store.train(*RUN, "resume=true")
    resumed = store.only_run("adding")
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert "stopped_by" not in resumed.data.tags and "error" not in resumed.data.tags
    assert resumed.data.tags["status_reason"] == "ok"


@pytest.mark.slow
def test_an_interrupted_sweep_ends_its_parent_killed(store):
    proc = store.signal_at("step     60 |", signal.SIGINT, "-m", *RUN, "seed=0,1",
                        f"hydra.sweep.dir={store.dir / 'sweep'}", group=True)
    assert proc.returncode != 0
    (parent,) = [r for r in store.runs("adding") if r.data.tags.get("sweep") == "true"]
    assert parent.info.status == "KILLED"
    assert parent.data.metrics["sweep/interrupted"] == 1 and parent.data.metrics["sweep/finished"] == 0
    (job,) = [r for r in store.runs("adding") if r.data.tags.get("sweep") != "true"]
    assert job.info.status == "KILLED" and job.data.tags["stopped_by"] == "SIGINT"
