"""Storage, and storage that fails: training against a real `mlflow server` on 127.0.0.1 that
dies mid-run (the run stops without losing its checkpoint and continues into the same MLflow
run once the server is back), and a disk too small for the run, refused at start."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from conftest import ROOT, TINY, Server

# 200 steps in epochs of 40: last.ckpt at steps 40, 80, ...; progress lines every 20 steps.
LONG = ["task=adding", "cell=gru", "seq_len=20", "trainer.max_steps=200", "trainer.val_check_interval=20",
        "trainer.log_every_n_steps=5", "task.batches_per_epoch=40", "task.val_size=64", "task.test_size=64"]


def _can_mount_tmpfs(folder) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_a_disk_too_small_for_the_run_is_refused_at_start(store):
    disk = store.dir / "disk"
    disk.mkdir()
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs unprivileged user namespaces)")
    # A 512 KiB tmpfs, in a private mount namespace, holds the run's output and artifact dirs.
    train = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, f"hydra.run.dir={disk}/out",
             f"tracking.artifact_root={disk}/mlruns"]
    script = (f"mount -t tmpfs -o size=512k tmpfs {disk} || exit 99\n"
              f"{' '.join(train)}\nrc=$?\necho '--- files:'\nfind {disk} -type f\nexit $rc")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          env=store.env(), cwd=store.dir, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"hydra.run.dir='{disk}/out': only 0." in proc.stderr and "MB of checkpoints and artifacts" in proc.stderr
    assert store.runs() == []
    left = proc.stdout.split("--- files:")[1].split()
    hydras_own = [f for f in left if "/out/.hydra/" in f or f.endswith("/out/train.log")]
    assert left == hydras_own, f"only Hydra's record of the command may remain: {left}"


@pytest.mark.slow
def test_a_server_that_dies_mid_run_keeps_the_checkpoint_and_the_run_continues(tmp_path):
    server = Server(tmp_path).start()
    out = tmp_path / "out"
    env = {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), *TINY, *LONG, f"tracking.uri={server.url}",
           f"hydra.run.dir={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.time() + 240
        for line in proc.stdout:  # the server goes away after the checkpoint at step 40
            if "step     60 |" in line or time.time() > deadline:
                break
        server.kill()
        stderr = proc.communicate(timeout=240)[1]
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr[-3000:]
    assert "lost the MLflow tracking store" in stderr and "its checkpoints are kept in" in stderr, stderr[-3000:]
    resume = next(line.strip() for line in stderr.splitlines() if "resume=" in line)
    run_id = resume.rsplit("resume=", 1)[1]
    (ckpt,) = out.glob(f"checkpoints/{run_id}/last.ckpt")

    server.start()  # the same store, back again
    try:
        client = MlflowClient(server.url)
        assert client.get_run(run_id).info.status == "RUNNING"
        done = subprocess.run([*cmd, f"resume={run_id}"], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["resume_count"] == "1"
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert steps == list(range(4, 200, 5)), "one continuous train/loss history"
        assert ckpt.exists() and "test/mse" in run.data.metrics
        assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "checkpoints"}
        assert any(server.artifacts.rglob("best.ckpt")), "artifacts went through the server to its store"
    finally:
        server.kill()


def test_artifacts_follow_a_store_made_elsewhere(tmp_path, migrated_db):
    """With only MLFLOW_TRACKING_URI pointing elsewhere, artifacts go beside that store, not
    into the repository's mlruns/."""
    from conftest import Store

    (tmp_path / "elsewhere").mkdir()
    elsewhere = Store(tmp_path / "elsewhere", template=migrated_db)
    elsewhere.train_in_process("task=adding", artifacts=False)
    run = elsewhere.only_run("adding")
    assert run.info.artifact_uri.startswith((tmp_path / "elsewhere" / "mlruns").as_uri())
    assert any((tmp_path / "elsewhere" / "mlruns").rglob("config.yaml"))
