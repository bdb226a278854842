"""Where users outgrow one process: Hydra's submitit and Ray launchers (and, in
tests/test_storage.py, a shared MLflow server)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from conftest import ROOT

TINY_ADDING = ["task=adding", "trainer.max_steps=6", "trainer.val_check_interval=3", "cell.hidden_size=8",
               "task.val_size=32", "task.test_size=32"]


PRESETS = [f"+{p.parent.name}={p.stem}" for p in sorted((ROOT / "conf").glob("*/*.yaml"))
           if p.parent.name in ("experiment", "tune")]


@pytest.mark.parametrize("launcher", ["submitit_local", "submitit_slurm", "cores"])
def test_every_preset_runs_under_any_launcher(launcher):
    """A preset names the launcher it runs with by default (one job per core), and a launcher
    given on the command line replaces it whole: no key of one launcher is left on another (a
    preset's hydra.launcher.n_jobs made SLURM's config refuse every preset)."""
    from hydra import compose, initialize_config_dir

    import rnnlab.paths  # noqa: F401  (the ${cores:} resolver)

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for preset in PRESETS:
            cfg = compose("config", overrides=[preset, f"hydra/launcher={launcher}"], return_hydra_config=True)
            assert ("n_jobs" in cfg.hydra.launcher) == (launcher == "cores"), preset
    assert len(PRESETS) > 10


@pytest.mark.slow
def test_submitit_local_multirun(store):
    store.train("-m", "hydra/launcher=submitit_local", "cell=rnn,gru", *TINY_ADDING, "tracking.experiment=sub",
                f"hydra.sweep.dir={store.dir / 'multirun'}", tiny=False)
    runs = store.runs("sub")
    kids = [r for r in runs if r.data.tags.get("sweep") != "true"]
    assert sorted(r.data.tags["cell"] for r in kids) == ["gru", "rnn"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["mlflow.parentRunId"] for r in kids} == {r.info.run_id for r in runs if r not in kids}


def ray_python() -> str:
    """An interpreter with Hydra's Ray launcher: this one, else ``make ray``'s .venv-ray. None
    there: skipped, except under CI, where .ci/run builds .venv-ray and its absence fails."""
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None:
        return sys.executable
    python = ROOT / ".venv-ray" / "bin" / "python"
    if python.exists():
        return str(python)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("no Ray launcher: .ci/run builds .venv-ray with `make ray`", pytrace=False)
    pytest.skip("no Ray launcher here (make ray builds .venv-ray)")


@pytest.mark.slow
def test_ray_multirun(store):
    """A real local Ray instance (2 CPUs) runs a 2-job sweep: a parent and its children."""
    store.train("-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "threads=1", "cell=rnn,gru",
                *TINY_ADDING, "tracking.experiment=ray", f"hydra.sweep.dir={store.dir / 'multirun'}", tiny=False,
                python=ray_python(), timeout=600)  # Ray's start-up: 35 s alone, minutes on a loaded machine
    runs = store.runs("ray")
    kids = [r for r in runs if r.data.tags.get("sweep") != "true"]
    assert sorted(r.data.tags["cell"] for r in kids) == ["gru", "rnn"]
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 3


# Training against a real `mlflow server` (and that server dying mid-run): tests/test_storage.py
