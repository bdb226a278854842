"""Where users outgrow one process: Hydra's submitit launcher and a shared MLflow server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

TINY_ADDING = ["task=adding", "trainer.max_steps=6", "trainer.val_check_interval=3", "cell.hidden_size=8",
               "task.val_size=32", "task.test_size=32"]


@pytest.mark.slow
def test_submitit_local_multirun(store):
    store.train("-m", "hydra/launcher=submitit_local", "cell=rnn,gru", *TINY_ADDING, "tracking.experiment=sub",
                f"hydra.sweep.dir={store.dir / 'multirun'}", tiny=False)
    runs = store.runs("sub")
    kids = [r for r in runs if r.data.tags.get("sweep") != "true"]
    assert sorted(r.data.tags["cell"] for r in kids) == ["gru", "rnn"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["mlflow.parentRunId"] for r in kids} == {r.info.run_id for r in runs if r not in kids}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server-artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("mlflow server did not start")
            time.sleep(0.5)
    yield url, tmp_path / "server-artifacts"
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_training_against_a_real_mlflow_server(store, mlflow_server):
    url, artifacts = mlflow_server
    cmd = [sys.executable, str(Path(__file__).parents[1] / "src" / "train.py"), *TINY_ADDING,
           f"tracking.uri={url}", f"hydra.run.dir={store.dir / 'out'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=store.dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name("adding").experiment_id])
    assert run.info.status == "FINISHED" and "test/mse" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "checkpoints"}
    assert any(artifacts.rglob("best.ckpt")), "artifacts went through the server to its store"
