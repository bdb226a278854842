"""Ctrl-C and SIGTERM (a scheduler's pre-emption or time limit) end a run KILLED, saying what
stopped it, with exit code 128 + the signal, and with the step they stopped at saved:
the printed command (or ``resume=true``) finishes the same run with the numbers of a run
never stopped. A sweep stopped the same way ends its parent run KILLED, and rerunning it
continues its jobs from where they stopped."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import LONG as RUN

# No periodic checkpoint in the whole run: whatever a resume finds, the interrupt saved.
NO_PERIODIC = [*RUN, "checkpoint.min_interval_s=3600"]


@pytest.mark.parametrize("checkpoint, step", [("/ckpt/last.ckpt", 60), (None, None)])
def test_the_interruption_crosses_from_a_joblib_worker_to_the_launcher(checkpoint, step):
    """A parallel sweep's worker raises it and joblib pickles it back to the launcher: a class that
    does not unpickle breaks the whole pool (BrokenProcessPool, the other jobs lost)."""
    import pickle

    from rnnlab.interrupts import Interrupted

    sent = Interrupted("SIGINT", "abc123", checkpoint, step)
    back = pickle.loads(pickle.dumps(sent))
    assert type(back) is Interrupted and str(back) == str(sent) and back.exit_code == 130
    assert (back.run_id, back.checkpoint, back.saved_step) == ("abc123", checkpoint, step)


@pytest.mark.slow
def test_an_interrupted_sweep_ends_its_parent_killed_and_its_rerun_continues_the_job(store):
    sweep = ("-m", *NO_PERIODIC, "seed=0,1", f"hydra.sweep.dir={store.dir / 'sweep'}")
    proc = store.signal_at("step     60 |", signal.SIGINT, *sweep, group=True)
    assert proc.returncode != 0
    (parent,) = [r for r in store.runs("adding") if r.data.tags.get("sweep") == "true"]
    assert parent.info.status == "KILLED"
    assert parent.data.metrics["sweep/interrupted"] == 1 and parent.data.metrics["sweep/finished"] == 0
    (job,) = [r for r in store.runs("adding") if r.data.tags.get("sweep") != "true"]
    assert job.info.status == "KILLED" and job.data.tags["stopped_by"] == "SIGINT"
    assert os.path.exists(os.path.join(job.data.tags["checkpoint_dir"], "last.ckpt")), "the interrupt saved"

    store.train(*sweep)  # the same command again continues the stopped job
    jobs = {r.info.run_id: r for r in store.runs("adding") if r.data.tags.get("sweep") != "true"}
    assert len(jobs) == 2 and all(r.info.status == "FINISHED" for r in jobs.values()), \
        [(r.info.run_name, r.info.status, r.data.tags.get("resume_count")) for r in jobs.values()]
    assert jobs[job.info.run_id].data.tags["resume_count"] == "1"
    steps = [s for s, _ in store.history(job.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and max(steps) >= 115, "one continuous history"


@pytest.mark.slow
@pytest.mark.parametrize("group, sig, times", [(True, signal.SIGINT, 1), (False, signal.SIGTERM, 2),
                                                (True, signal.SIGTERM, 1)],
                         ids=["ctrl-c-to-the-group", "sigterm-to-make-sweep", "sigterm-to-the-group"])
def test_a_stopped_parallel_sweep_saves_each_running_job_and_starts_no_other(store, group, sig, times):
    """Three jobs on two warm workers (rnnlab.launcher, the presets' launcher), one stop
    request: Ctrl-C from a terminal (to the whole group), a scheduler's SIGTERM to ``make
    sweep``, which reaches the launching process twice within a millisecond (make forwards it)
    and its workers not at all, or SIGTERM to the whole group (``kill -TERM -<pgid>``, a
    session's end), which reaches the workers' forkserver too. Both running jobs stop at a
    step, saved, and end KILLED; the third never starts; the command exits 128 + the signal
    with one line saying how to continue, no traceback. Before, joblib met the launcher's
    KeyboardInterrupt by SIGKILLing its workers mid-step: their runs stayed RUNNING, their last
    steps unsaved; and the group's SIGTERM ended the forkserver, which failed the sweep."""
    # 400 steps: once both jobs have validated at step 60, neither is near its end
    sweep = ("-m", *NO_PERIODIC, "trainer.max_steps=400", "hydra/launcher=cores", "hydra.launcher.n_jobs=2",
             "seed=0,1,2", f"hydra.sweep.dir={store.dir / 'sweep'}")
    proc = store.signal_at("step     60 |", sig, *sweep, group=group, times=times, seen=2)
    assert proc.returncode == 128 + sig, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Continue it with the same command" in proc.stderr, proc.stderr[-3000:]
    (parent,) = [r for r in store.runs("adding") if r.data.tags.get("sweep") == "true"]
    assert parent.info.status == "KILLED"
    counts = {k.removeprefix("sweep/"): v for k, v in parent.data.metrics.items()}
    assert (counts["interrupted"], counts["not_started"], counts["finished"]) == (2, 1, 0), counts
    jobs = [r for r in store.runs("adding") if r.data.tags.get("sweep") != "true"]
    name = signal.Signals(sig).name
    assert len(jobs) == 2 and all(r.info.status == "KILLED" and r.data.tags["stopped_by"] == name for r in jobs)
    for job in jobs:  # no periodic checkpoint: the stop saved these
        assert os.path.exists(os.path.join(job.data.tags["checkpoint_dir"], "last.ckpt")), job.info.run_name
    if group:
        return  # the rerun is the same either way
    store.train(*sweep)  # the same command: the two continue, the third starts
    after = [r for r in store.runs("adding") if r.data.tags.get("sweep") != "true"]
    assert sorted(r.data.tags.get("resume_count", "0") for r in after) == ["0", "1", "1"]
    assert all(r.info.status == "FINISHED" for r in after)


@pytest.mark.slow
def test_a_sweep_killed_outright_leaves_no_run_running_once_started_again(store):
    """SIGKILL to the whole group (a session's end, a lost machine): no handler runs, so the
    parent and both running jobs stay RUNNING, with no checkpoint to resume. The same command
    again ends each of them KILLED (status_reason orphaned, orphaned_by its successor) and runs
    every configuration afresh: afterwards no run in the store is RUNNING."""
    sweep = ("-m", *NO_PERIODIC, "trainer.max_steps=120", "hydra/launcher=cores", "hydra.launcher.n_jobs=2",
             "seed=0,1", f"hydra.sweep.dir={store.dir / 'sweep'}")
    proc = store.signal_at("step     20 |", signal.SIGKILL, *sweep, group=True, seen=2)
    assert proc.returncode == -signal.SIGKILL
    before = {r.info.run_id: r for r in store.runs("adding")}
    assert len(before) == 3 and all(r.info.status == "RUNNING" for r in before.values())
    store.train(*sweep)  # the same command
    after = {r.info.run_id: r for r in store.runs("adding")}
    assert not [r.info.run_name for r in after.values() if r.info.status == "RUNNING"]
    (parent,) = [r for i, r in after.items() if i not in before and r.data.tags.get("sweep") == "true"]
    new_jobs = {r.data.tags["seed"]: i for i, r in after.items()
                if i not in before and r.data.tags.get("sweep") != "true"}
    for run_id, old in before.items():
        r = after[run_id]
        assert (r.info.status, r.data.tags.get("status_reason")) == ("KILLED", "orphaned"), old.info.run_name
        successor = parent.info.run_id if old.data.tags.get("sweep") == "true" else new_jobs[old.data.tags["seed"]]
        assert r.data.tags["orphaned_by"] == successor
        assert r.info.end_time <= after[successor].info.start_time, "ended when it last ran, not when found"
    assert all(after[i].info.status == "FINISHED" for i in new_jobs.values()) and len(new_jobs) == 2


def test_only_a_run_whose_process_is_gone_is_taken_for_an_orphan(store):
    """A sweep ends another run of its configuration only when that run's process is gone: on
    this machine its pid is dead; on another (or a run without the tags), it has logged nothing
    for ORPHAN_AFTER_S. A parallel job here, or a run training on another machine, is left alone."""
    import socket

    from rnnlab import runs

    client = store.client
    exp = client.create_experiment("orphans")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def running(host, pid):
        run = client.create_run(exp, tags={runs.HOST: host, runs.PID: str(pid)})
        client.log_metric(run.info.run_id, "train/loss", 1.0)
        return client.get_run(run.info.run_id)

    here = socket.gethostname()
    alive_here, dead_here, elsewhere = running(here, os.getpid()), running(here, dead.pid), running("elsewhere", 1)
    now = runs.last_activity(client, elsewhere)
    assert not runs.is_orphan(client, alive_here) and runs.is_orphan(client, dead_here)
    assert not runs.is_orphan(client, elsewhere, now_ms=now + 60_000), "another machine's run, logging a minute ago"
    assert runs.is_orphan(client, elsewhere, now_ms=now + runs.ORPHAN_AFTER_S * 1000 + 1)
    assert runs.end_orphans(client, [alive_here, dead_here, elsewhere], "successor") == 1
    assert [client.get_run(r.info.run_id).info.status for r in (alive_here, dead_here, elsewhere)] == \
        ["RUNNING", "KILLED", "RUNNING"]


@pytest.fixture
def own_handlers():
    """Whatever a test installs for SIGINT and SIGTERM is put back after it."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_one_request_delivered_twice_is_not_a_second_request(monkeypatch, own_handlers):
    """GNU make sends SIGTERM on to its children, who also got the group's: two within a
    millisecond. Real signals, to a training run's handler in this process: the two are one
    request (stop at the next step, saved); a signal a quarter of a second later is a second
    (stop at once). The clock is made up, so that a loaded machine cannot split the pair."""
    from types import SimpleNamespace

    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from rnnlab import interrupts
    from rnnlab.callbacks import StopAtStep

    clock = iter([100.0, 100.0002, 100.3])
    monkeypatch.setattr(interrupts.time, "monotonic", lambda: next(clock))

    run = StopAtStep(None, None)  # type: ignore[arg-type]
    run.on_train_start(SimpleNamespace(world_size=1), None)  # type: ignore[arg-type]  # installs its handlers
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)  # make's copy
    assert run.requested == "SIGTERM"
    with pytest.raises(SIGTERMException):
        signal.raise_signal(signal.SIGTERM)


# A sweep's launching process, as rnnlab.sweep sets it up: its handlers installed, then make's
# two copies of one SIGTERM, then a second request. The clock is made up, as above.
SWEEP_GETS_SIGTERM = """
import os, signal, sys, time
from rnnlab import interrupts

clock = iter([100.0, 100.0002, 100.3])
time.monotonic = lambda: next(clock)
interrupts.handle_stop_signals(sys.argv[1], launcher=True)
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGTERM)
print("stopped by", interrupts.stopped_by(), flush=True)
os.kill(os.getpid(), signal.SIGTERM)
print("still running", flush=True)
"""


def test_a_sweep_takes_one_sigterm_delivered_twice_as_one_request_and_a_third_as_a_second(tmp_path):
    """The launcher's side of the same: the first SIGTERM writes the sweep's stop file (which
    every job reads) and says so once; make's copy changes nothing; a later one exits at once
    with SIGTERM's status, 143."""
    proc = subprocess.run([sys.executable, "-c", SWEEP_GETS_SIGTERM, str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["stopped by SIGTERM"]
    assert (tmp_path / "stop").read_text() == "SIGTERM"
    assert proc.stderr.count("sweep: SIGTERM: each running job stops at its next step, saved") == 1, proc.stderr


def same_numbers(store, got_id: str, want_id: str) -> None:
    for key in ["train/loss", "val/mse", "grad_norm/pre_clip", "test/mse"]:
        want, got = store.history(want_id, key), store.history(got_id, key)
        assert [s for s, _ in got] == [s for s, _ in want], f"{key}: duplicated or missing steps"
        assert got == want, f"{key}: the resumed run's numbers differ from the uninterrupted run's"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_early_interrupt_saves_its_step_and_the_printed_command_resumes_it(store, sig):
    pool = ThreadPoolExecutor(1)  # the uninterrupted reference trains meanwhile
    reference = pool.submit(store.train, *NO_PERIODIC, "tracking.experiment=reference")
    # step 60: mid-epoch (40-step epochs), seconds into the run, long before any periodic save
    proc = store.signal_at("step     60 |", sig, *NO_PERIODIC, "tracking.experiment=stopped")
    assert proc.returncode == 128 + sig, proc.stderr[-3000:]
    run = store.only_run("stopped")
    assert run.info.status == "KILLED"
    assert run.data.tags["stopped_by"] == signal.Signals(sig).name and run.data.tags["status_reason"] == "interrupted"
    assert "error" not in run.data.tags
    saved = re.search(r"saved at step (\d+)", proc.stderr)
    assert saved and 60 <= int(saved.group(1)) < 120, proc.stderr[-3000:]
    (command,) = [line.strip() for line in proc.stderr.splitlines() if f"resume={run.info.run_id}" in line]

    resumed_proc = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=300,
                                  env=store.env(), cwd=store.dir)
    assert resumed_proc.returncode == 0, resumed_proc.stderr[-3000:]
    assert "exists and is not empty" not in resumed_proc.stdout + resumed_proc.stderr
    resumed = store.only_run("stopped")
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert "stopped_by" not in resumed.data.tags and resumed.data.tags["status_reason"] == "ok"
    ref = reference.result() and store.only_run("reference")
    pool.shutdown()
    same_numbers(store, resumed.info.run_id, ref.info.run_id)
    assert resumed.data.metrics["test/mse"] == ref.data.metrics["test/mse"]


def test_the_message_offers_a_resume_only_when_a_checkpoint_exists():
    from rnnlab.interrupts import Interrupted

    saved = str(Interrupted("SIGTERM", "abc", "/ckpt/last.ckpt", 217))
    assert "saved at step 217" in saved and "resume=abc" in saved
    unsaved = str(Interrupted("SIGINT", "abc", None, None))
    assert "nothing was saved" in unsaved and "resume=" not in unsaved


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    """A second Ctrl-C (or a kill) in the middle of writing last.ckpt: the previous one stays,
    loadable, and no partial file is ever named last.ckpt."""
    import pytorch_lightning as pl

    from rnnlab.callbacks import FlushedCheckpoint

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    last = FlushedCheckpoint(lambda: None, dirpath=tmp_path, filename="last", every_n_train_steps=2)
    trainer = pl.Trainer(max_steps=2, callbacks=[last], logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Tiny(), torch.utils.data.DataLoader(torch.randn(8, 2), batch_size=2))
    path = tmp_path / "last.ckpt"
    before = path.read_bytes()

    from lightning_fabric.plugins.io import torch_io

    def torn(checkpoint, filepath):  # half the bytes reach the disk, then Ctrl-C
        with open(filepath, "wb") as f:
            f.write(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch_io, "_atomic_save", torn)
    with pytest.raises(KeyboardInterrupt):
        last.save_now(trainer)
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["global_step"] == 2


def test_training_imports_neither_the_sweep_nor_a_cycle():
    """A run depends on the interrupts module and a job's view of its multirun, not on the
    sweep's machinery; Lightning's logger on a run does not import the tracking module that
    creates it (tracking -> run_logger, one way)."""
    code = ("import sys; import rnnlab.run_logger; assert 'rnnlab.tracking' not in sys.modules, 'cycle'; "
            "import rnnlab.run, rnnlab.callbacks; print(sorted(m for m in sys.modules if m == 'rnnlab.sweep'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
