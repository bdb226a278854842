"""The foundation: config composition, one end-to-end run through Hydra + MLflow, determinism,
and bad input rejected before any MLflow run exists."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from conftest import ROOT, TINY, compose

CELLS = sorted(p.stem for p in (ROOT / "conf" / "cell").glob("*.yaml"))
TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))


def test_a_cell_config_per_cell_and_a_cell_per_config():
    from rnnlab import config

    assert sorted(config.CELLS) == CELLS


@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_yaml_has_exactly_the_keys_its_spec_names(cell):
    """The conf tree mirrors the code: a key the yaml has and the spec lacks would reach the
    builder and be rejected; one the spec has and the yaml lacks could not be overridden."""
    from rnnlab.cells import SPECS

    s = SPECS[cell]
    keys = set(yaml.safe_load((ROOT / "conf" / "cell" / f"{cell}.yaml").read_text()))
    assert keys == {"name", "impl", "hidden_size", "num_layers", "dropout", *s.options, *s.hooks}
    assert yaml.safe_load((ROOT / "conf" / "cell" / f"{cell}.yaml").read_text())["impl"] == s.default_impl


@pytest.mark.parametrize("cell", CELLS)
def test_each_cell_has_a_step_by_step_reference_form(cell):
    """The diagnostics replay a batch through it (the true gradient through time) and the
    equivalence tests hold the fast form to it; a scan cell's fast form is ``parallel``."""
    from rnnlab.cells import SPECS

    s = SPECS[cell]
    assert "reference" in s.impls
    if s.linear:
        assert s.one_class and set(s.impls) == {"parallel", "reference"}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_task_config_composes(cell, task):
    from rnnlab import config

    cfg = compose(f"cell={cell}", f"task={task}", "seq_len=37", "clip=null")
    config.validate(cfg)
    assert cfg.cell.name == cell
    assert cfg.task.seq_len == 37 and cfg.task.seed == cfg.seed
    assert cfg.clip is None


@pytest.mark.slow
def test_end_to_end_run_is_tracked_in_mlflow(store):
    proc = store.train("cell=gru", "clip=0.5", "seed=3", cold=True)  # a new interpreter, as the README's
    run = store.only_run("char_lm")
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "gru-char_lm-T20-clip0.5-s3"
    tags = run.data.tags
    shown = {tags["cell"], tags["task"], tags["seq_len"], tags["clip"], tags["seed"]}
    assert shown == {"gru", "char_lm", "20", "0.5", "3"}
    assert len(tags["git_commit"]) >= 7 and tags["diverged"] == "false"
    from rnnlab.tracking import code_hash

    assert tags["code_hash"] == code_hash()  # the subprocess ran this very code
    assert (tags["main_metric"], tags["metric_mode"]) == ("val/bpc", "min")  # what the report ranks by
    params = run.data.params
    assert params["cell.hidden_size"] == "16" and params["optim.name"] == "adam"
    assert int(params["model/n_params"]) > 0
    # params are what runs are compared on, once each; bookkeeping and versions are not
    assert params["seq_len"] == "20" and "task.seq_len" not in params and "task.seed" not in params
    assert not [k for k in params if k.startswith(("tracking.", "sweep.", "version/")) or k.endswith("_target_")]
    assert run.data.tags["version/torch"]
    assert run.data.tags["env/cpu"].count(", ") == 2, "the processor, its kernels' instruction set, its cpus"
    metrics = run.data.metrics
    for key in ["train/loss", "val/loss", "val/ppl", "val/bpc", "test/loss", "test/ppl", "test/bpc",
                "grad_norm/pre_clip", "grad_norm/post_clip", "grad_norm/weight_hh_l0", "clip/active",
                "perf/tokens_per_s", "baseline/bpc"]:
        assert key in metrics, f"{key} not logged; have {sorted(metrics)}"
    assert metrics["val/ppl"] == pytest.approx(2.718281828 ** metrics["val/loss"], rel=1e-5)
    assert metrics["val/bpc"] == pytest.approx(metrics["val/loss"] / 0.6931471806, rel=1e-5)
    assert metrics["grad_norm/post_clip"] <= 0.5 + 1e-4
    # train/loss logged every 2 steps over 6 steps
    assert [s for s, _ in store.history(run.info.run_id, "train/loss")] == [1, 3, 5]
    for key in ("grad_norm/pre_clip", "grad_norm/weight_hh_l0", "clip/active"):
        assert [s for s, _ in store.history(run.info.run_id, key)] == [1, 3, 5], key
    artifacts = {a.path for a in store.client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts
    logged_cfg = yaml.safe_load(open(store.client.download_artifacts(run.info.run_id, "config.yaml")))
    assert logged_cfg["cell"]["name"] == "gru" and logged_cfg["clip"] == 0.5
    # The summary names the metric, the run and how to look at it.
    assert "val/bpc" in proc.stdout and run.info.run_id in proc.stdout and "mlflow ui" in proc.stdout


@pytest.mark.slow
def test_same_seed_same_metrics(store):
    # Three processes at once: bit-identical whatever else the machine is doing.
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda seed: store.train("cell=lstm", f"seed={seed}"), [1, 1, 2]))
    runs = sorted(store.runs("char_lm"), key=lambda r: r.data.tags["seed"])
    h = [store.history(r.info.run_id, "train/loss") for r in runs]
    assert h[0] == h[1], "same config and seed must give bit-identical loss histories"
    assert h[0] != h[2]


def test_a_run_shorter_than_one_validation_interval_validates_and_tests(store):
    """max_steps below val_check_interval: the last step is still validated, checkpointed and
    tested, and the summary shows both (small values readably, not as 0.0000)."""
    proc = store.train("task=adding", "trainer.max_steps=5", "trainer.val_check_interval=100",
                       "task.batches_per_epoch=2", "checkpoint.min_interval_s=0")  # last.ckpt at steps 2, 4
    run = store.only_run("adding")
    assert run.info.status == "FINISHED"
    assert {"val/mse", "test/mse"} <= set(run.data.metrics)
    assert [s for s, _ in store.history(run.info.run_id, "val/mse")] == [4]
    assert "val/mse = " in proc.stdout and "test/mse = " in proc.stdout
    # a console that informs: progress with rate and ETA, none of the libraries' noise
    assert "step      2/5 | " in proc.stdout and "steps/s | ETA " in proc.stdout
    for noise in ("litlogger", "LeafSpec", "multiple `ModelCheckpoint`", "pre-optimization state",
                  "GPU available", "`Trainer.fit` stopped"):
        assert noise not in proc.stdout + proc.stderr, noise
    (log,) = store.dir.glob("out*/train.log")  # Lightning's INFO lines: in the run's log file
    assert "GPU available" in log.read_text()
    # One comparable number, and the verdict against the baseline on the run page and console
    baseline, test = run.data.metrics["baseline/mse"], run.data.metrics["test/mse"]
    assert run.data.metrics["test/skill"] == pytest.approx(1 - test / baseline)
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("LSTM, adding, T=20, clip 1.0: test/mse ") and " vs baseline " in note
    assert note in proc.stdout
    exp_id = run.info.experiment_id
    assert f"/#/experiments/{exp_id}/runs/{run.info.run_id}?workflowType=machine_learning" in proc.stdout
    kind = store.client.get_experiment(exp_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"


def test_train_runs_in_process_and_tracks_the_run(store):
    """rnnlab.run.train on a composed config, as src/train.py calls it: the fast smoke test."""
    summary = store.train_in_process("task=copy", "cell=gru")
    run = store.only_run("copy")
    assert summary is not None and summary.status == "FINISHED" and summary.run_id == run.info.run_id
    assert run.info.status == "FINISHED" and run.data.tags["diverged"] == "false"
    assert {"val/loss", "test/loss", "train/loss", "grad_norm/pre_clip"} <= set(run.data.metrics)
    assert summary.lines()[0].startswith("[gru-copy-T20-clip1.0-s0] val/loss = ")


def test_make_ui_serves_the_store_runs_write_to_without_job_workers(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/elsewhere.db"}
    dry = subprocess.run(["make", "-n", "ui"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    (command,) = [line for line in dry.stdout.splitlines() if " ui --backend-store-uri " in line]
    assert f"--backend-store-uri sqlite:///{tmp_path}/elsewhere.db " in command
    assert command.startswith("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false ")


def test_the_training_step_steps_the_schedule_once_per_optimizer_step():
    """The training step is written out (manual optimisation), so the schedule is stepped there:
    once per step, as Lightning's automatic loop did with ``interval: step``."""
    import pytorch_lightning as pl

    from rnnlab.run import build_model, build_task

    cfg = compose(*TINY, "task=adding", "optim.lr=0.1", "optim.schedule=step", "optim.step_size=2",
                  "optim.gamma=0.5", "diagnostics.enabled=false")
    task = build_task(cfg)
    model = build_model(cfg, task, "schedule")
    trainer = pl.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(model, datamodule=task)
    assert trainer.global_step == 6
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 6
    assert model.optimizers().param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)


def test_a_profiler_asked_for_on_the_command_line_profiles(store):
    """Runs get a no-op profiler cheaper than Lightning's default; one named on the command
    line replaces it."""
    proc = store.train("task=adding", "trainer.max_steps=5", "+trainer.profiler=simple")
    assert store.only_run("adding").info.status == "FINISHED"
    assert "Profiler Report" in proc.stdout + proc.stderr
