"""Sweeps through Hydra's joblib launcher into a fresh sqlite store: parent and children,
every metric present, resumption (on another machine, from a snapshot of the study's data),
and a failing job that does not stop the others."""

from __future__ import annotations

import pytest

from conftest import ROOT, compose

SMALL = ["+experiment=long_range", "task=adding", "clip=1.0", "seed=0", "trainer.max_steps=6",
         "trainer.val_check_interval=3", "trainer.log_every_n_steps=2", "cell.hidden_size=8",
         "task.val_size=32", "task.test_size=32"]


def sweep(store, *overrides, check=True):
    return store.train(*SMALL, f"hydra.sweep.dir={store.dir / 'multirun'}", *overrides, tiny=False, check=check)


def children(store, experiment="long_range"):
    return [r for r in store.runs(experiment) if r.data.tags.get("sweep") != "true"]


@pytest.mark.slow
def test_parallel_sweep_into_a_fresh_store_then_resume(fresh_store):
    store = fresh_store
    # 4 jobs at once into a store that does not exist yet: no schema race, no lock errors.
    proc = sweep(store, "cell=rnn,gru", "seq_len=10,20", "hydra.launcher.n_jobs=4")
    assert "already exists" not in proc.stderr and "database is locked" not in proc.stderr
    # the console keeps rnnlab's lines; Lightning's INFO lines go to each job's log file
    for noise in ("GPU available", "`Trainer.fit` stopped", "[INFO]"):
        assert noise not in proc.stdout + proc.stderr, noise
    assert proc.stdout.count("test/mse = ") == 4
    logs = sorted((store.dir / "multirun").glob("*/train.log"))
    assert len(logs) == 4 and all("`Trainer.fit` stopped" in f.read_text() for f in logs)
    runs = store.runs("long_range")
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    kids = children(store)
    assert len(parents) == 1 and len(kids) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/finished"] == 4
    assert {(r.data.tags["cell"], r.data.tags["seq_len"]) for r in kids} == {
        ("rnn", "10"), ("rnn", "20"), ("gru", "10"), ("gru", "20")}
    for r in kids:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id == r.data.tags["sweep_id"]
        # every logged point is there: 6 steps logged every 2 -> 3 train/loss points, 2 validations
        assert len(store.history(r.info.run_id, "train/loss")) == 3
        assert len(store.history(r.info.run_id, "val/mse")) == 2
        assert {"test/mse", "grad_norm/pre_clip", "perf/tokens_per_s"} <= set(r.data.metrics)

    # The sweep continues on another machine from a snapshot of its data; nothing of the first
    # machine (store, checkpoints) is left.
    store = store.elsewhere("long_range", "multirun")
    # Rerunning the same sweep with one more seq_len runs only the missing configurations.
    # (The reruns use one worker: what is tested is the skipping, and one process starts
    # faster than a pool.)
    proc = sweep(store, "cell=rnn,gru", "seq_len=10,20,30", "hydra.launcher.n_jobs=1")
    assert proc.stdout.count("skipped: already FINISHED") == 4
    assert len(children(store)) == 6
    # A run that failed is run again; sweep.rerun=true reruns everything.
    failed = next(r for r in children(store) if r.data.tags["seq_len"] == "30")
    store.client.set_terminated(failed.info.run_id, "FAILED")
    proc = sweep(store, "cell=rnn,gru", "seq_len=10,20,30", "hydra.launcher.n_jobs=1")
    assert proc.stdout.count("skipped: already FINISHED") == 5 and len(children(store)) == 7
    sweep(store, "cell=rnn", "seq_len=10", "sweep.rerun=true", "hydra.launcher.n_jobs=1")
    assert len(children(store)) == 8


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(store):
    proc = sweep(store, "cell=rnn", "seq_len=10,-3", check=False)
    assert proc.returncode != 0, "the sweep reports the failure when it ends"
    assert "seq_len=-3: must be an integer > 0" in proc.stderr
    kids = children(store)
    assert [(r.data.tags["seq_len"], r.info.status) for r in kids] == [("10", "FINISHED")]
    (parent,) = [r for r in store.runs("long_range") if r.data.tags.get("sweep") == "true"]
    assert parent.info.status == "FAILED", "a job failed before its run existed: the sweep failed"
    assert parent.data.metrics["sweep/failed"] == 1 and parent.data.metrics["sweep/finished"] == 1


@pytest.mark.slow
def test_a_job_that_raises_mid_run_fails_the_sweep_and_is_counted(store):
    """A job whose run exists when it raises (Lightning rejects the precision when it builds
    the Trainer): its run is FAILED with the error, and the parent ends FAILED, counted."""
    proc = sweep(store, "cell=rnn", "seq_len=10", "trainer.precision=32-true,no-such-precision", check=False)
    assert proc.returncode != 0
    kids = children(store)
    statuses = sorted(r.info.status for r in kids)
    assert statuses == ["FAILED", "FINISHED"], statuses
    (failed,) = [r for r in kids if r.info.status == "FAILED"]
    assert "no-such-precision" in failed.data.tags["error"]
    (parent,) = [r for r in store.runs("long_range") if r.data.tags.get("sweep") == "true"]
    assert parent.info.status == "FAILED"
    counts = {k: parent.data.metrics[f"sweep/{k}"] for k in ("finished", "diverged", "failed", "skipped")}
    assert counts == {"finished": 1, "diverged": 0, "failed": 1, "skipped": 0}


def test_presets_compose_with_the_grid_they_promise():
    cfg = compose("+experiment=long_range")
    assert cfg.tracking.experiment == "long_range" and cfg.threads == 1
    studies = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if p.stem != "long_range")
    assert {"char_lm", "modern_study", "modern_copy_depth", "modern_depth_char_lm"} <= set(studies)
    for name in studies:  # every preset but the smoke-scale long_range is a study
        assert compose(f"+experiment={name}").sweep.name == name
        # a preset that feeds a headline comparison runs at least 5 seeds: intervals need them
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir

        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            hydra_cfg = hydra_compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
        assert len(str(hydra_cfg.hydra.sweeper.params.seed).split(",")) >= 5, name
    study = compose("+experiment=long_range_study")
    assert study.solve.early_stop and study.trainer.max_steps == 1500
    # a study's parts share one MLflow experiment, so one report covers them
    for part, whole in [("long_range_study_copy", "long_range_study"), ("long_range_study_budget", "long_range_study"),
                        ("long_range_study_forget_bias", "long_range_study"), ("forecast_seattle", "forecast"),
                        ("char_lm_forget_bias", "char_lm"), ("modern_study_copy", "modern_study"),
                        ("forecast_followup_seattle", "forecast_followup"),
                        ("tune_char_lm_followup_rnn", "tune_char_lm_followup")]:
        assert compose(f"+experiment={part}").tracking.experiment == compose(f"+experiment={whole}").tracking.experiment
    # sentiment's window grows with the distance (${add:...}): only D varies, not the padding
    assert compose("+experiment=sentiment_distance", "task.distance=100").seq_len == 164


def test_code_hash_changes_with_any_config_or_source_file(tmp_path, monkeypatch):
    """Runs with one code hash ran the same code: a study states one. In a copy of conf/ and
    src/ (RNNLAB_ROOT and the module's own path point there): the same files give the same hash;
    a one-character edit of a yaml, or of a .py, gives another; a file that is not code
    (bytecode, a note) changes nothing."""
    import shutil

    from rnnlab import tracking

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    monkeypatch.setenv("RNNLAB_ROOT", str(tmp_path))
    monkeypatch.setattr(tracking, "__file__", str(tmp_path / "src" / "rnnlab" / "tracking.py"))

    def hash_after(edit) -> str:
        edit()
        tracking.code_hash.cache_clear()
        return tracking.code_hash()

    def replace(path, old, new):
        return lambda: path.write_text(path.read_text().replace(old, new, 1))

    try:
        first = hash_after(lambda: None)
        assert hash_after(lambda: None) == first
        (tmp_path / "src" / "rnnlab" / "__pycache__").mkdir(exist_ok=True)
        assert hash_after(lambda: (tmp_path / "src" / "rnnlab" / "__pycache__" / "x.pyc").write_bytes(b"0")) == first
        assert hash_after(lambda: (tmp_path / "src" / "NOTES.txt").write_text("not code")) == first
        yaml_edited = hash_after(replace(tmp_path / "conf" / "config.yaml", "seed: 0", "seed: 1"))
        assert yaml_edited != first
        py = tmp_path / "src" / "rnnlab" / "stats.py"
        assert hash_after(replace(py, '"""', '""" ')) not in (first, yaml_edited)
    finally:
        tracking.code_hash.cache_clear()


def test_config_hash_ignores_bookkeeping_only():
    from rnnlab.runs import config_hash

    base = config_hash(compose())
    assert config_hash(compose("tracking.experiment=elsewhere", "threads=1", "sweep.rerun=true")) == base
    assert config_hash(compose("seed=1")) != base
    assert config_hash(compose("cell.hidden_size=32")) != base


def test_the_default_configurations_keep_their_identity():
    """A run's identity is the hash of its whole config: resume (``resume=true``, a run id), a
    sweep's skips and a tuning's re-seed runs find earlier runs by it. A key added to a config
    group (a trainer option, say) changes every run's hash, and a store's finished runs are then
    strangers to the same command. Where a change is meant to change the numbers, update these
    and say so in CHANGELOG.md; where it is not (a setting the code can pass, a comment), keep
    them (a Trainer option rnnlab always wants goes to run.py's instantiate, not conf/trainer)."""
    from rnnlab.runs import config_hash

    assert {t: config_hash(compose(f"task={t}")) for t in ("char_lm", "adding")} == {
        "char_lm": "951a014196609be0", "adding": "604cbd99a038c4b8"}


def test_sweep_workers_check_memory_between_jobs_instead_of_collecting_garbage():
    """Without psutil, joblib's loky workers run a full gc.collect() after every job: about
    0.55 s in a warm worker (660,000 objects: torch, Lightning, MLflow), 4% of `make sweep`'s
    wall. With it they only read their memory size, and collect when it has grown by 300 MB.
    The worker checks after every job here (its check interval set to nothing), so no job has
    to outlast loky's 1 s interval."""
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=1, reuse=False, initializer=_check_after_every_job)
    try:
        # the worker measures its reference size (one collection) after its first job
        counts = [executor.submit(_full_collections).result(timeout=120) for _ in range(3)]
    finally:
        executor.shutdown(wait=True)
    assert counts[2] == counts[1], (f"the worker collected garbage between jobs ({counts}): is psutil missing "
                                    "from the environment? (pyproject.toml lists it)")


def _check_after_every_job() -> None:
    from joblib.externals.loky import process_executor

    process_executor._MEMORY_LEAK_CHECK_DELAY = -1.0


def _full_collections() -> int:
    """Full (generation 2) garbage collections this process has run so far."""
    import gc

    return gc.get_stats()[2]["collections"]
