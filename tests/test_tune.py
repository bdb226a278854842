"""Tuning: the expected-best estimators against brute force, the search-space grammar, a tiny
study end to end through rnnlab's warm launcher and MLflow, its resume after a kill, and
bad search spaces rejected before anything exists."""

from __future__ import annotations

import importlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from conftest import ROOT, Store
from rnnlab.config import ConfigError
from rnnlab.tune import space as spaces
from rnnlab.tune.expected import expected_best

SCORES = [0.31, 0.12, 0.47, 0.12, 0.25, 0.9, 0.05]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_unbiased_expected_best_is_the_mean_over_all_subsets_of_distinct_trials(mode):
    pick = max if mode == "max" else min
    mean, std = expected_best(SCORES, mode)
    for n in range(1, len(SCORES) + 1):
        bests = [pick(c) for c in itertools.combinations(SCORES, n)]
        assert mean[n - 1] == pytest.approx(np.mean(bests), abs=1e-12)
        assert std[n - 1] == pytest.approx(np.std(bests), abs=1e-12)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_dodge_estimator_is_the_mean_over_all_draws_with_replacement(mode):
    pick = max if mode == "max" else min
    mean, _ = expected_best(SCORES[:5], mode, replacement=True)
    for n in range(1, 6):
        bests = [pick(c) for c in itertools.product(SCORES[:5], repeat=n)]
        assert mean[n - 1] == pytest.approx(np.mean(bests), abs=1e-12)


def test_expected_best_known_cases():
    mean, std = expected_best(SCORES, "max")
    assert mean[0] == pytest.approx(np.mean(SCORES)) and mean[-1] == max(SCORES) and std[-1] == 0
    assert np.all(np.diff(mean) >= 0)  # more trials never hurt
    assert expected_best([2.0, 1.0], "min")[0].tolist() == [1.5, 1.0]
    # Dodge's estimator is optimistic at n = N: it can draw the best trial more than once but
    # also miss it, so it lies below the true best, where the unbiased one is exact
    assert expected_best(SCORES, "max", replacement=True)[0][-1] < max(SCORES)


def test_one_cell_tuned_at_two_lengths_reports_its_unsolved_seeds_and_no_pairs():
    """A probe that no run solved (the LRU on adding at T = 100 and 200) still shows 0/5 per
    arm: on a task whose runs stop once solved, that is the finding. No pair: no empty table."""
    from rnnlab.report.tuning import ArmResult, cells_table, solved_table

    arms = [ArmResult(cell="lru", seq_len=T, study=f"s: T={T}", parent_id=str(T), main_metric="val/mse", mode="min",
                      storage="", space={}, tuned_solved=dict.fromkeys(range(1, 6), False),
                      default_solved=dict.fromkeys(range(1, 6), False), stops_once_solved=True) for T in (100, 200)]
    table = solved_table(arms)
    assert table is not None and "| lru | 100 | 0/5 | 0/5 |" in table and "below the lengths run" in table
    assert cells_table(arms).startswith("One cell at each length")
    for arm in arms:
        arm.stops_once_solved = False  # char_lm: nothing meant to be solved, nothing solved
    assert solved_table(arms) is None


def test_a_verdict_changes_only_between_two_verdicts():
    """While one default arm is still running the default comparison has no verdict, so tuning
    cannot have changed it: the table says so rather than '**yes**'. (A page with no default run
    at all has no default columns: test_problems.)"""
    from rnnlab.report.tuning import ArmResult, cells_table

    def arm(cell, tuned, default):
        return ArmResult(cell=cell, seq_len=100, study=f"s: {cell}", parent_id=cell, main_metric="val/bpc",
                         mode="min", storage="", space={}, tuned=dict(zip(range(1, 6), tuned)),
                         default=dict(zip(range(1, 6), default)))

    low, high = [2.70, 2.71, 2.72, 2.70, 2.71], [2.80, 2.82, 2.81, 2.80, 2.83]
    row = next(line for line in cells_table([arm("gru", low, []), arm("lru", high, low)]).splitlines()
               if line.startswith("| 100 |"))
    assert "gru better (established)" in row and row.endswith("| — |")
    row = next(line for line in cells_table([arm("gru", low, high), arm("lru", high, low)]).splitlines()
               if line.startswith("| 100 |"))
    assert "lru better (established)" in row and row.endswith("| **yes** |")


def test_a_joined_report_refuses_arms_not_tuned_alike(monkeypatch):
    """--with joins tunings run with the same budget and search where they are of one problem
    (task and settings), each cell from one of them; what differs is named. The seeds line
    names an arm with other seeds."""
    from rnnlab.report import tuning
    from rnnlab.report.store import ReportError
    from rnnlab.report.tuning import loading

    fixed = {"trainer.max_steps": "1000", "model.param_budget": "80000", "tune.sampler": "random", "tune.trials": "20"}

    def arm(cell, **kw):
        a = tuning.ArmResult(cell=cell, seq_len=100, study=f"s: cell={cell}", parent_id=cell, main_metric="val/bpc",
                             mode="min", storage="", space={}, task="char_lm", fixed=dict(fixed),
                             tuned=dict.fromkeys(range(1, 6), 2.6), default=dict.fromkeys(range(1, 6), 2.7))
        for k, v in kw.items():
            setattr(a, k, v) if k != "fixed" else a.fixed.update(v)
        return a

    stores = {"classic": [arm("gru")], "modern": [arm("lru", default={}, fixed={"cell.num_layers": "2"})]}
    monkeypatch.setattr(loading, "load", lambda uri, experiment: stores[experiment])
    both = [("modern", "sqlite:///m.db"), ("classic", "sqlite:///c.db")]
    arms = tuning.load_all(both)
    assert [(a.label, a.source) for a in arms] == [("gru T=100", "classic"), ("lru T=100", "modern")]
    assert tuning._seeds(arms, "default") == "1, 2, 3, 4, 5 (except lru T=100: none yet)"
    stores["classic"] = [arm("gru", fixed={"trainer.max_steps": "5000"})]
    with pytest.raises(ReportError, match="not run alike: trainer.max_steps is 1000, 5000"):
        tuning.load_all(both)
    # another task is another problem: it joins the page, compared with none of these, and its
    # budget may differ; arms of one task and settings selected on two metrics do not compare
    stores["classic"] = [arm("gru", task="copy", main_metric="val/loss", fixed={"trainer.max_steps": "5000"})]
    assert [(a.label, a.task) for a in tuning.load_all(both)] == [("gru T=100", "copy"), ("lru T=100", "char_lm")]
    stores["classic"] = [arm("gru", main_metric="val/loss")]
    with pytest.raises(ReportError, match=r"task char_lm were selected on different metrics \(val/bpc \(min\), "
                                          r"val/loss \(min\)\)"):
        tuning.load_all(both)
    stores["classic"] = [arm("lru", seq_len=200)]
    with pytest.raises(ReportError, match="cell lru is in both 'modern' and 'classic'"):
        tuning.load_all(both)
    by_store = {"sqlite:///m.db": [arm("lru")], "sqlite:///m2.db": [arm("gru")]}  # one name in two stores
    monkeypatch.setattr(loading, "load", lambda uri, experiment: by_store[uri])
    arms = tuning.load_all([("modern", "sqlite:///m.db"), ("modern", "sqlite:///m2.db")])
    assert [a.source for a in arms] == ["modern@sqlite:///m2.db", "modern@sqlite:///m.db"]  # gru, lru


def test_a_report_of_a_running_study_counts_only_trials_done():
    """A report written while a study runs (or after a killed one) counts finished and failed
    trials; the one still running and the stale copy of a re-asked trial are not trials done."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from rnnlab.report import tuning

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dist = {"optim.lr": FloatDistribution(1e-4, 1e-1, log=True)}
    study = optuna.create_study(direction="minimize")
    for lr, value in ((1e-3, 2.9), (3e-3, 2.8)):
        study.add_trial(create_trial(params={"optim.lr": lr}, distributions=dist, value=value))
    study.add_trial(create_trial(params={"optim.lr": 1e-2}, distributions=dist, state=TrialState.FAIL))
    study.add_trial(create_trial(params={"optim.lr": 2e-2}, distributions=dist, state=TrialState.FAIL,
                                 user_attrs={"stale": True}))
    study.ask(dist)  # running
    arm = tuning.ArmResult(cell="gru", seq_len=100, study="s", parent_id="p", main_metric="val/bpc", mode="min",
                           storage="", space={})
    tuning._read_study(arm, study)
    assert (arm.n_trials, arm.n_failed, arm.trial_values) == (3, 1, [2.9, 2.8])
    assert arm.best_trial == 1 and arm.best_params == {"optim.lr": "0.003"}


def test_the_search_space_grammar_becomes_optuna_distributions():
    d = spaces.distributions({"optim.lr": "tag(log, interval(3e-4, 3e-2))", "clip": "choice(null, 0.5, 1.0, 5.0)",
                              "cell.num_layers": "range(1, 4)", "cell.forget_bias": "choice(0, 1)",
                              "batch_size": "int(interval(16, 64))"})
    assert d["optim.lr"].log and (d["optim.lr"].low, d["optim.lr"].high) == (3e-4, 3e-2)
    assert d["clip"].choices == (None, 0.5, 1.0, 5.0)
    assert (d["cell.num_layers"].low, d["cell.num_layers"].high, d["cell.num_layers"].step) == (1, 3, 1)
    assert d["cell.forget_bias"].choices == (0, 1)
    assert type(d["batch_size"]).__name__ == "IntDistribution"
    assert [spaces.override(k, v) for k, v in {"clip": None, "optim.lr": 0.0031, "x": True}.items()] == \
        ["clip=null", "optim.lr=0.0031", "x=true"]


@pytest.mark.parametrize("text, says", [
    ("interval(3e-2, 3e-4)", "LOW < HIGH"),
    ("tag(log, interval(0, 1))", "LOW > 0"),
    ("choice()", "an empty choice"),
    ("0.01", "not a search space"),
    ("interval(1, ", "not a sweep in Hydra's grammar"),
])
def test_a_bad_range_is_one_line_naming_the_value(text, says):
    with pytest.raises(ConfigError) as e:
        spaces.distributions({"optim.lr": text})
    assert says in str(e.value) and "tune.space.optim.lr" in str(e.value) and "\n" not in str(e.value)


def tune(store, *overrides, check=True, timeout=300):
    return store.train("+tune=tiny", f"hydra.sweep.dir={store.dir / 'multirun'}", *overrides, tiny=False,
                       check=check, timeout=timeout)


def studies(store) -> dict[str, list[tuple[int, str, str]]]:
    """{study name: [(trial number, state, stale)]} from the Optuna store beside mlflow.db."""
    with sqlite3.connect(store.dir / "optuna.db") as db:
        rows = db.execute("select s.study_name, t.number, t.state, "
                          "(select value_json from trial_user_attributes a where a.trial_id = t.trial_id "
                          "and a.key = 'stale') from trials t join studies s using (study_id)").fetchall()
    out: dict[str, list] = {}
    for name, number, state, stale in rows:
        out.setdefault(name, []).append((number, state, stale))
    return out


def trial_runs(store) -> dict[str, dict[int, str]]:
    """{study name: {trial number: its MLflow run id}} for the trials that name their run."""
    with sqlite3.connect(store.dir / "optuna.db") as db:
        rows = db.execute("select s.study_name, t.number, a.value_json from trials t join studies s using (study_id) "
                          "join trial_user_attributes a using (trial_id) where a.key = 'run_id'").fetchall()
    out: dict[str, dict[int, str]] = {}
    for name, number, value in rows:
        out.setdefault(name, {})[number] = json.loads(value)
    return out


@pytest.mark.slow
def test_a_tiny_study_tunes_each_arm_then_reseeds_its_best(store, drawn, capsys):
    proc = tune(store)
    runs = store.runs("tune_tiny")
    parents = {r.data.tags["tune_study"]: r for r in runs if r.data.tags.get("sweep") == "true"}
    assert sorted(parents) == ["tiny: cell=gru", "tiny: cell=rnn"]
    for parent in parents.values():
        assert parent.info.status == "FINISHED"
        assert parent.info.run_name == f"tune-tiny {parent.data.tags['cell']} T=10: optim.lr, clip x 3"
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        trials = sorted((r for r in kids if r.data.tags["tune_role"] == "trial"),
                        key=lambda r: int(r.data.tags["tune_trial"]))
        reseeds = [r for r in kids if r.data.tags["tune_role"] == "reseed"]
        assert [r.data.tags["tune_trial"] for r in trials] == ["0", "1", "2"]
        cell = parent.data.tags["cell"]
        assert [r.info.run_name for r in trials] == [f"{cell}-adding-T10-trial{k}" for k in range(3)]
        assert sorted(r.info.run_name for r in reseeds) == [f"{cell}-adding-T10-best-s1", f"{cell}-adding-T10-best-s2"]
        assert all(r.data.tags["seed"] == "0" for r in trials)
        assert parent.data.metrics["tune/trials_done"] == 3 and parent.data.metrics["tune/failed"] == 0
        # the best trial: the lowest best validation MSE of the three, its params on the parent
        best_of = {r.data.tags["tune_trial"]: min(v for _, v in store.history(r.info.run_id, "val/mse"))
                   for r in trials}
        best = min(best_of, key=best_of.get)
        assert parent.data.params["best.trial"] == best
        assert parent.data.metrics["tune/best_value"] == pytest.approx(best_of[best])
        best_run = next(r for r in trials if r.data.tags["tune_trial"] == best)
        assert parent.data.params["best.optim.lr"] == best_run.data.params["optim.lr"]
        # re-run on seeds 1 and 2 with the best configuration, each with a test result
        assert sorted(r.data.tags["seed"] for r in reseeds) == ["1", "2"]
        for r in reseeds:
            assert r.info.status == "FINISHED" and "test/mse" in r.data.metrics
            assert r.data.params["optim.lr"] == best_run.data.params["optim.lr"]
            assert r.data.params["clip"] == best_run.data.params["clip"]
    # trial k of each arm drew the same values (common random numbers across arms)
    lrs = {name: sorted((int(r.data.tags["tune_trial"]), r.data.params["optim.lr"]) for r in runs
                        if r.data.tags.get("tune_role") == "trial"
                        and r.data.tags["mlflow.parentRunId"] == p.info.run_id) for name, p in parents.items()}
    assert lrs["tiny: cell=gru"] == lrs["tiny: cell=rnn"]
    assert "tune FINISHED" in proc.stdout

    # The same command again: every study is complete and every re-seed run done; nothing runs
    before = len(store.runs("tune_tiny"))
    proc = tune(store)
    assert len(store.runs("tune_tiny")) == before and "tune tiny: trials" not in proc.stdout

    # The default arm (the preset's untuned configuration on the re-seed seeds, a plain sweep
    # into the same experiment), then the tuned report
    store.train("-m", "hydra/launcher=cores", "hydra.launcher.n_jobs=2", "task=adding", "cell=rnn,gru",
                "seq_len=10", "batch_size=16", "cell.hidden_size=8", "trainer.max_steps=20",
                "trainer.val_check_interval=10", "task.val_size=64", "task.test_size=64", "threads=1", "seed=1,2",
                "tracking.experiment=tune_tiny",
                f"hydra.sweep.dir={store.dir / 'defaults'}", tiny=False)
    check_tuned_report(store, parents, drawn)
    check_joined_report(store, capsys)

    # An untuned run of another configuration in the same experiment would mix into the
    # default arm unseen: the report refuses, naming what differs
    store.train("task=adding", "cell=rnn", "seq_len=10", "batch_size=16", "cell.hidden_size=8", "clip=0.5",
                "trainer.max_steps=20", "trainer.val_check_interval=10", "task.val_size=64", "task.test_size=64",
                "threads=1", "seed=3", "tracking.experiment=tune_tiny", tiny=False)
    from rnnlab.report import tuning as tuned
    from rnnlab.report.store import ReportError

    with pytest.raises(ReportError, match=r"default arm of rnn T=10 mixes 2 configurations \(they differ in clip\)"):
        tuned.load(store.uri, "tune_tiny")


def check_joined_report(store, capsys) -> None:
    """Cells tuned by another preset (here: the LSTM, in its own experiment) join the
    comparison with --with; an arm in both, or an experiment with no study, is refused."""

    sys.path.insert(0, str(ROOT / "src"))
    cli = importlib.import_module("report")  # src/report.py
    tune(store, "hydra.sweeper.params.cell=lstm", "tune.name=tiny_lstm", "tune.reseeds=[1,2]",
         "tracking.experiment=tune_tiny_lstm")
    out = store.dir / "joined"
    args = ["--experiment", "tune_tiny", "--tracking-uri", store.uri, "--out", str(out)]
    assert cli.main([*args, "--with", f"tune_tiny_lstm@{store.uri}"]) == 0
    text = (out / "REPORT.md").read_text()
    assert "- **arms**: 3 (rnn T=10, lstm T=10, gru T=10)" in text
    assert "- **sources**: `tune_tiny` (rnn, gru; code hash `" in text and "`tune_tiny_lstm` (lstm; code hash `" in text
    assert f"--experiment tune_tiny --tracking-uri {store.uri} --with tune_tiny_lstm@{store.uri}`" in text  # regenerate
    assert "| 10 | rnn − lstm |" in text and "| 10 | lstm − gru |" in text
    assert "by cell: `cell.forget_bias: choice(0, 1)` (lstm)" in text
    assert ("on seeds 1, 2 (tuned), and of the preset's default configuration on seeds 1, 2 "
            "(except lstm T=10: none yet)") in text
    capsys.readouterr()
    assert cli.main([*args, "--with", "tune_tiny"]) == 2  # the same arms twice
    assert f"'tune_tiny' ({store.uri}) given twice: each tuning joins once" in capsys.readouterr().err
    assert cli.main([*args, "--with", "tune_nowhere"]) == 2
    refused = f"--with tune_nowhere: no tuning study in experiment 'tune_nowhere' of {store.uri}"
    assert refused in capsys.readouterr().err


def check_tuned_report(store, parents, drawn) -> None:
    from rnnlab.report import tuning as tuned

    arms = tuned.load(store.uri, "tune_tiny")
    assert [a.label for a in arms] == ["rnn T=10", "gru T=10"]
    runs = store.runs("tune_tiny")
    for arm in arms:
        parent = parents[arm.study]
        reseeds = {int(r.data.tags["seed"]): r.data.metrics["test/mse"] for r in runs
                   if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                   and r.data.tags.get("tune_role") == "reseed"}
        assert arm.tuned == reseeds and sorted(arm.default) == [1, 2]
        assert arm.best_value == pytest.approx(parent.data.metrics["tune/best_value"]) and len(arm.trial_values) == 3
        assert set(arm.importance) == {"optim.lr", "clip"} and sum(arm.importance.values()) == pytest.approx(1)
    path = tuned.build("tune_tiny", store.uri, store.dir / "report")
    text = path.read_text()
    assert text.startswith("# Report: experiment `tune_tiny`\n")
    for heading in ("## Tuned arms", "## The cells compared, default and tuned",
                    "## Expected best validation score against the number of trials", "## Hyperparameter importance"):
        assert heading in text, heading
    rnn = next(line for line in text.splitlines() if line.startswith("| rnn | 10 |"))
    assert "(trial " in rnn and "| 2 |" in rnn  # tuned - default on 2 seeds: a t-test, Holm-adjusted
    assert "| 10 | rnn − gru |" in text
    # exported with its trials, the tuned report comes back the same from the data alone
    exported = tuned.build("tune_tiny", store.uri, store.dir / "exported", export=True)
    saved = tuned.build_saved(store.dir / "exported", store.dir / "from-data")
    lines = [[line for line in p.read_text().splitlines() if not line.startswith("Generated ")]
             for p in (exported, saved)]
    assert lines[0] == lines[1] and any("importance" in line for line in lines[1])
    panels, legend = drawn["expected_best.png"]  # one panel (one length), a curve per cell
    assert [(t, x, lines) for t, x, _, _, lines in panels] == [
        ("T = 10: expected best of n trials (band: ± 1 sd)", "trials (random search)", 2)]
    assert legend == ["rnn", "gru"]
    panels, _ = drawn["importance.png"]  # each arm's trials against its most important hyperparameter
    assert [t.split(":")[0] for t, *_ in panels] == ["rnn T=10", "gru T=10"]
    assert all(x in ("optim.lr", "clip") and t.startswith(f"{t.split(':')[0]}: {x} (") for t, x, *_ in panels)


def training_runs(store, trial: str) -> list:
    """The runs of a tuning trial that have logged a training step (a store being written to
    by the jobs may be busy for a moment: then none yet)."""
    try:
        runs = store.runs("tune_tiny")
    except MlflowException:  # sqlite's "database is locked" while a job commits
        return []
    return [r for r in runs if r.data.tags.get("tune_trial") == trial and "train/loss" in r.data.metrics]


@pytest.mark.slow
@pytest.mark.parametrize("sig,lost", [(signal.SIGKILL, False), (signal.SIGINT, False), (signal.SIGKILL, True)],
                         ids=["killed", "ctrl-c", "machine-lost"])
def test_a_killed_study_resumes_without_redoing_finished_trials(store, sig, lost):
    """SIGKILL or Ctrl-C to the whole process group (the sweeper and its workers) after the
    first trials are told; the same command finishes the studies, each with 3 trials done.
    SIGKILL comes once the trials under way have a checkpoint: each is asked again under a new
    number and continues its run, which takes that number. Ctrl-C first lets the trials under
    way save and end KILLED, and leaves them unjudged; that case then continues on another
    machine, from a snapshot of the tuning's data, where each trial names its run's new id.
    ``lost``: the machine goes with no stop, and the study continues elsewhere from a snapshot
    taken while its trials ran (``reissue.sh every``): they, RUNNING there, are asked again."""
    # Two trials at once whatever the machine's cores; a trial trains for seconds, time to catch
    # both; metrics written as they are logged, so the store shows a trial training at once.
    slow = ["trainer.max_steps=500", "tune.reseeds=[]", "hydra.launcher.n_jobs=2", "tracking.async_logging=false"]
    if sig == signal.SIGKILL:  # a checkpoint at each epoch's end (100 steps), not each 30 s
        slow.append("checkpoint.min_interval_s=0")
    cmd = [sys.executable, str(ROOT / "src" / "train.py"), "+tune=tiny", f"hydra.sweep.dir={store.dir / 'm1'}",
           *store.overrides(), *slow]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=store.env(),
                            cwd=store.dir, start_new_session=True)
    assert proc.stdout is not None
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    # The jobs start seconds apart, so the first progress line of the second batch may come
    # from one trial while the other has no run yet: wait until both have logged a step.
    deadline = time.time() + 240

    def ready() -> bool:
        under_way = training_runs(store, trial="1")
        return len(under_way) == 2 and (sig != signal.SIGKILL or all(
            os.path.exists(os.path.join(r.data.tags.get("checkpoint_dir", "-"), "last.ckpt")) for r in under_way))

    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None and ready(), "".join(seen)[-3000:]
    if lost:  # the snapshot taken with every process frozen: trial 1 cannot be told meanwhile
        os.killpg(proc.pid, signal.SIGSTOP)
        store.snapshot("tune_tiny")
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    rest = "".join(seen)
    told = {name: [n for n, state, _ in trials if state == "COMPLETE"] for name, trials in studies(store).items()}
    assert told == {"tiny: cell=rnn": [0], "tiny: cell=gru": [0]}, rest[-3000:]
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Continue it with the same command" in rest, rest[-3000:]
        stopped = [r for r in store.runs("tune_tiny") if r.data.tags.get("tune_trial") == "1"]
        assert len(stopped) == 2 and all(r.info.status == "KILLED" for r in stopped)
        assert all(os.path.exists(os.path.join(r.data.tags["checkpoint_dir"], "last.ckpt")) for r in stopped)
        unjudged = {name: [n for n, state, _ in trials if state == "RUNNING"]
                    for name, trials in studies(store).items()}
        assert unjudged == {"tiny: cell=rnn": [1], "tiny: cell=gru": [1]}, "a stopped trial is not a failed one"
        # It continues on another machine, from a snapshot of its data: its Optuna studies
        # restored beside the new store, nothing else kept.
        store = store.elsewhere("tune_tiny", "m1")
        assert {name: [(n, state) for n, state, _ in trials] for name, trials in studies(store).items()} == {
            name: [(0, "COMPLETE"), (1, "RUNNING")] for name in ("tiny: cell=rnn", "tiny: cell=gru")}
    if lost:
        store = store.elsewhere("tune_tiny", "m1", taken=True)
        snapped = [r for r in store.runs("tune_tiny") if r.data.tags.get("tune_trial") == "1"]
        assert len(snapped) == 2 and all(r.info.status == "RUNNING" for r in snapped)

    tune(store, *slow)
    from rnnlab.report import tuning as tuned

    assert len(tuned.load(store.uri, "tune_tiny")) == 2  # its parents name the Optuna store where it is now
    after = studies(store)
    for name, trials in after.items():
        complete = sorted(n for n, state, _ in trials if state == "COMPLETE")
        stale = [n for n, state, st in trials if st == "true"]
        assert len(complete) == 3 and 0 in complete, trials  # trial 0 was not run again
        assert stale == [1], f"{name}: the killed trial is asked again once"
    runs = store.runs("tune_tiny")
    by_id = {r.info.run_id: r for r in runs}
    for name, numbered in trial_runs(store).items():
        # each trial's run is tagged with its number, the run continued by a trial asked again too
        assert {n: by_id[run_id].data.tags["tune_trial"] for n, run_id in numbered.items()} == \
            {n: str(n) for n in numbered}, name
        if sig == signal.SIGKILL:  # trial 2 (trial 1 asked again) continued trial 1's run (its checkpoint
            # is on the machine lost: trained again)
            assert by_id[numbered[2]].data.tags.get("resume_count") == (None if lost else "1"), name
    for r in runs:
        if r.data.tags.get("tune_role") == "trial" and r.data.tags["tune_trial"] == "0":
            assert r.data.tags.get("resume_count") is None  # told before the kill: left alone
    assert not [r for r in runs if r.info.status == "RUNNING"], "the killed trial's run ends KILLED"
    if lost:  # the snapshot's runs of the trial under way: ended, by the trial asked again for it
        assert sorted(r.data.tags.get("status_reason") for r in runs if r.info.status == "KILLED") == \
            ["interrupted"] * 2
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)


def test_a_trial_that_draws_a_done_configuration_scores_its_run_and_leaves_its_tag(store):
    """Trial 1 draws trial 0's configuration (a space of one point): its run is skipped as done
    and scores trial 1 too, but stays tagged with trial 0, the trial that trained it (only a run
    of a trial a stop left unjudged takes the number of the trial asked again for it)."""
    tune(store, "tune.trials=2", "tune.reseeds=[]", "tune.space={optim.lr: 'choice(0.001)', clip: 'choice(1.0)'}",
         "hydra.launcher.n_jobs=1")
    runs = {r.info.run_id: r for r in store.runs("tune_tiny") if r.data.tags.get("tune_role") == "trial"}
    for name, numbered in trial_runs(store).items():
        assert sorted(numbered) == [0, 1] and numbered[0] == numbered[1], name
        assert runs[numbered[0]].data.tags["tune_trial"] == "0", name
    assert len(runs) == 2  # one run per arm


def test_an_arm_stopped_mid_trial_then_draws_what_an_arm_never_stopped_draws():
    """Random search compares arms on common random numbers: every arm's k-th configuration is
    the same draw. A trial left unfinished is asked again under a new number; the draws after it
    must not shift (the MLflow side of the re-ask, ending the killed run, has nothing to end here)."""
    from types import SimpleNamespace

    import optuna
    from omegaconf import OmegaConf

    from rnnlab.tune import resume, store
    from rnnlab.tune.arms import Arm, Settings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = Settings.of(OmegaConf.create({"tune": {"name": "t", "trials": 4, "seed": 0}}))
    space = {"optim.lr": optuna.distributions.FloatDistribution(3e-4, 3e-2, log=True),
             "clip": optuna.distributions.CategoricalDistribution([None, 0.5, 1.0, 5.0])}

    def arm() -> Arm:
        return Arm(label="cell=gru", overrides=[], cfg=OmegaConf.create({}), space=space,
                   study=optuna.create_study())

    never, stopped = arm(), arm()
    reference = [store.ask(settings, never).params for _ in range(4)]
    first = [store.ask(settings, stopped) for _ in range(3)]
    assert [t.params for t in first] == reference[:3]
    stopped.study.tell(first[0], 1.0)
    stopped.study.tell(first[2], 1.0)  # trial 1 left RUNNING by a stop
    no_runs = SimpleNamespace(client=SimpleNamespace(search_runs=lambda *a, **k: []), experiment_id="0")
    resume.reask_stale(no_runs, stopped)
    assert store.ask(settings, stopped).params == reference[1], "asked again with its own values"
    assert store.ask(settings, stopped).params == reference[3], "then the draw an arm never stopped makes"


def test_a_launch_takes_whole_trials_that_keep_the_workers_busy():
    from rnnlab.tune.study import trials_per_batch

    assert trials_per_batch(2, 1) == 2 and trials_per_batch(1, 3) == 1
    assert trials_per_batch(2, 3) == 2, "3 seeds on 2 workers: 6 runs fill both, 3 leave one idle"
    assert trials_per_batch(16, 3) == 5, "15 of 16 slots; 10 trials fill no more, and TPE would wait longer"
    assert trials_per_batch(4, 3) == 1, "never more than twice the trials that fit"


@pytest.mark.slow
def test_a_trial_on_several_tuning_seeds_scores_the_mean_of_its_runs(store):
    """tune.seed as a list: a trial is one run per seed with the same sampled values, and it
    scores the mean of their best validation values (a task whose trials can all fail on one
    seed is then not tuned on noise). The re-seeds stay fresh; the report says how it scored.
    Three seeds on two workers: both trials' six runs go in one launch, each told its own three."""
    import optuna

    proc = tune(store, "hydra.sweeper.params.cell=gru", "tune.seed=[0,3,4]", "tune.trials=2", "tune.reseeds=[1]",
                "hydra.launcher.n_jobs=2")
    assert "tune tiny: trials cell=gru #0, cell=gru #1\n" in proc.stdout, "one launch of both trials"
    runs = store.runs("tune_tiny")
    by_trial: dict[int, dict[int, object]] = {}
    for r in runs:
        if r.data.tags.get("tune_role") == "trial":
            by_trial.setdefault(int(r.data.tags["tune_trial"]), {})[int(r.data.tags["seed"])] = r
    assert {k: sorted(v) for k, v in by_trial.items()} == {0: [0, 3, 4], 1: [0, 3, 4]}
    assert list(studies(store)) == ["tiny: cell=gru"]
    study = optuna.load_study(study_name="tiny: cell=gru", storage=f"sqlite:///{store.dir / 'optuna.db'}")
    told = {t.number: t for t in study.trials}
    for k, trial_runs in by_trial.items():
        assert len({r.data.params["optim.lr"] for r in trial_runs.values()}) == 1
        assert {r.info.run_name for r in trial_runs.values()} == {f"gru-adding-T10-trial{k}-s{s}" for s in (0, 3, 4)}
        best = {s: min(v for _, v in store.history(r.info.run_id, "val/mse")) for s, r in trial_runs.items()}
        assert len(set(best.values())) == 3  # three seeds, three values: the mean is none of them
        assert told[k].value == pytest.approx(sum(best.values()) / 3)
        assert told[k].user_attrs["values"] == pytest.approx({str(s): v for s, v in best.items()})
    parent = next(r for r in runs if r.data.tags.get("tune_study") == "tiny: cell=gru")
    assert parent.data.params["tune.seed"] == "[0, 3, 4]" and parent.info.status == "FINISHED"
    assert [r.data.tags["seed"] for r in runs if r.data.tags.get("tune_role") == "reseed"] == ["1"]
    from rnnlab import stats
    from rnnlab.report import tuning as tuned

    text = "\n".join(tuned._header(tuned.load(store.uri, "tune_tiny"), [("tune_tiny", store.uri)], "",
                                   stats.Family()))
    assert "on the tuning seeds 0, 3, 4; a trial scores the mean over them of each run's best `val/mse`" in text

    # More seeds for a finished study, where 5 left a comparison unsettled: only the new seed runs
    before = {r.info.run_id for r in runs}
    tune(store, "hydra.sweeper.params.cell=gru", "tune.seed=[0,3,4]", "tune.trials=2", "tune.reseeds=[1,2]",
         "hydra.launcher.n_jobs=2")
    new = [r for r in store.runs("tune_tiny") if r.info.run_id not in before]
    assert [(r.data.tags.get("tune_role"), r.data.tags["seed"]) for r in new if "tune_role" in r.data.tags] == [
        ("reseed", "2")]
    assert new[0].data.params["optim.lr"] == parent.data.params["best.optim.lr"]
    assert sorted(tuned.load(store.uri, "tune_tiny")[0].tuned) == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, says", [
    (("tune.seed=[0,1]", "tune.reseeds=[1,2]"), "tune.reseeds=[1, 2]: seeds other than the tuning seeds 0, 1"),
    (("tune.seed=[0,0]",), "tune.seed=[0, 0]: a seed, or a list of distinct seeds"),
])
def test_tuning_seeds_must_be_distinct_and_apart_from_the_reseeds(store, overrides, says):
    proc = tune(store, *overrides, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0] and "tune." in errors[0], proc.stderr[-2000:]
    assert store.runs() == [] and not (store.dir / "optuna.db").exists()


BAD_SPACES = {
    "low>high": ("optim.lr: interval(3e-2, 3e-4)", "tune.space.optim.lr='interval(3e-2, 3e-4)'", "LOW < HIGH"),
    "unknown-key": ("cell.forget_bias: choice(0, 1)", "tune.space.cell.forget_bias='forget_bias'",
                    "no such key in the config of cell=rnn"),
    "empty-choice": ("clip: choice()", "tune.space.clip='choice()'", "an empty choice"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_a_bad_search_space_fails_at_once_with_nothing_left_behind(store, case):
    """A preset of the user's own (in --config-dir) with a bad space: one line, exit 2, no run
    and no study (cell.forget_bias exists for the LSTM only: tune.cell_space.lstm)."""
    written, names, says = BAD_SPACES[case]
    (store.dir / "mine" / "tune").mkdir(parents=True)
    (store.dir / "mine" / "tune" / "bad.yaml").write_text(
        "# @package _global_\ndefaults:\n  - tiny\ntune:\n  space:\n    " + written + "\n")
    proc = store.train(f"--config-dir={store.dir / 'mine'}", "+tune=bad", f"hydra.sweep.dir={store.dir / 'm'}",
                       tiny=False, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0] and names in errors[0], proc.stderr[-2000:]
    assert store.runs() == [] and not (store.dir / "optuna.db").exists()


TUNE_PRESETS = sorted(p.stem for p in (ROOT / "conf" / "tune").glob("*.yaml"))


def compose_sweep(*overrides: str):
    """A preset's config as its sweeper gets it (Hydra's own node included), and Hydra's
    config loader, which composes each arm from it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rnnlab import paths

    paths.register_resolvers()  # ${cores:} in the launcher's n_jobs, as src/train.py has them
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True), \
            GlobalHydra.instance().config_loader()


@pytest.mark.parametrize("preset", TUNE_PRESETS)
def test_every_tune_preset_builds_its_arms_as_the_tuner_would(preset):
    """What `make tune EXP=<preset>` checks before it creates anything, run on every preset
    under conf/tune/: its settings pass, and every arm of its grid composes with each key of
    its search space present in that arm's config (tune.cell_space only for its cell)."""
    from rnnlab.tune import arms

    cfg, loader = compose_sweep(f"+tune={preset}")
    assert cfg.hydra.sweeper._target_.endswith("TuneSweeper")
    assert cfg.hydra.launcher._target_.endswith("WarmLauncher")  # rnnlab.launcher: batches on warm workers
    settings = arms.Settings.of(cfg)
    settings.check()
    params = {str(k): str(v) for k, v in cfg.hydra.sweeper.params.items()}
    grid, fixed = arms.grid(loader, params, [f"+tune={preset}"])
    built = [arms.arm(loader, cfg, settings, fixed, label, overrides) for label, overrides in grid]
    assert len(built) == len(grid) >= 1
    for arm in built:
        own = (cfg.tune.get("cell_space") or {}).get(arm.cfg.cell.name) or {}
        assert set(arm.space) == set(cfg.tune.space) | set(own), arm.label
        assert arm.main_metric.startswith("val/"), "tuned on validation, compared on the re-seeds' test metric"


def test_the_adding_tuning_trains_at_the_long_range_study_budget():
    """experiments/tune_adding asks whether long_range_study's LSTM limit is a learning-rate
    artefact: its trials must train as that study's runs did."""
    tuned, _ = compose_sweep("+tune=adding")
    study, _ = compose_sweep("+experiment=long_range_study")
    for key in ("trainer.max_steps", "trainer.val_check_interval", "solve.early_stop", "batch_size",
                "cell.hidden_size", "optim.name"):
        assert OmegaConf.select(tuned, key) == OmegaConf.select(study, key), key


@pytest.mark.slow
def test_a_grid_search_runs_every_point_of_its_grid_once(store):
    """tune.sampler=grid: each arm's trials are the grid's points, each once (the best of a
    fixed grid, as Zoology and MAD tune), whatever order the batches ran them in."""
    import optuna

    tune(store, "tune.sampler=grid", "tune.trials=4", "tune.reseeds=[1]",
         "tune.space={optim.lr: 'choice(0.001, 0.01)', clip: 'choice(null, 1.0)'}", "hydra.launcher.n_jobs=2")
    storage = f"sqlite:///{store.dir / 'optuna.db'}"
    for arm in ("cell=rnn", "cell=gru"):
        study = optuna.load_study(study_name=f"tiny: {arm}", storage=storage)
        points = sorted((t.params["optim.lr"], str(t.params["clip"])) for t in study.trials)
        assert points == [(0.001, "1.0"), (0.001, "None"), (0.01, "1.0"), (0.01, "None")], arm
    runs = store.runs("tune_tiny")
    assert sorted(r.data.params["optim.lr"] for r in runs if r.data.tags.get("tune_role") == "trial") == \
        ["0.001"] * 4 + ["0.01"] * 4
    # Its data restores the Optuna studies as they were (where a tuning continues on another
    # machine): the grid's points done (system attrs) included, and the signature it checks.
    from rnnlab.report.tuning import saved

    saved.export_(store.uri, "tune_tiny", store.dir / "snapshot")
    restored = f"sqlite:///{store.dir / 'restored.db'}"
    assert saved.restore(store.dir / "snapshot", restored) == ["tiny: cell=gru", "tiny: cell=rnn"]
    fields = ("number", "state", "value", "params", "distributions", "user_attrs", "system_attrs",
              "datetime_start", "datetime_complete")
    for name in ("tiny: cell=rnn", "tiny: cell=gru"):
        before, after = (optuna.load_study(study_name=name, storage=s) for s in (storage, restored))
        assert after.direction == before.direction and after.user_attrs == before.user_attrs
        assert "grid_id" in before.trials[0].system_attrs
        assert [[getattr(t, f) for f in fields] for t in after.trials] == \
            [[getattr(t, f) for f in fields] for t in before.trials]
    # Loaded on another machine, every trial run keeps its history of the main metric: a trial
    # asked again there after a snapshot left it unjudged scores the best of its finished runs
    from types import SimpleNamespace

    from rnnlab import studies as committed
    from rnnlab.tune.scoring import best_validation

    committed.load(store.dir / "snapshot", store.dir / "loaded" / "mlflow.db")
    loaded = Store(store.dir / "loaded")
    arm = SimpleNamespace(main_metric="val/mse", mode="min")
    best = {r.info.run_id: best_validation(store.client, r.info.run_id, arm) for r in runs}
    again = {r.data.tags["exported_run_id"]: best_validation(loaded.client, r.info.run_id, arm)
             for r in loaded.runs("tune_tiny") if r.data.tags.get("tune_role") == "trial"}
    assert len(again) == 8 and again == {k: best[k] for k in again}
    assert any(len(store.client.get_metric_history(k, "val/mse")) > 1 for k in again)
    # Data exported before the studies' directions were: each study's from its parent run's tags
    meta = json.loads((store.dir / "snapshot" / "data" / "study.json").read_text())
    del meta["optuna_studies"]
    (store.dir / "snapshot" / "data" / "study.json").write_text(json.dumps(meta))
    older = f"sqlite:///{store.dir / 'older.db'}"
    saved.restore(store.dir / "snapshot", older)
    assert optuna.load_study(study_name="tiny: cell=rnn", storage=older).direction.name == "MINIMIZE"


@pytest.mark.parametrize("space,trials,names,says", [
    ("{optim.lr: 'tag(log, interval(1e-3, 1e-2))'}", 3, "tune.space.optim.lr", "a choice(...) of values"),
    ("{optim.lr: 'choice(0.001, 0.01)'}", 3, "tune.trials=3", "the grid's size, 4"),
])
def test_a_grid_that_is_not_a_finite_grid_of_its_trials_is_refused_in_one_line(space, trials, names, says):
    """Before anything is created, as the tuner checks every arm (the tiny preset's space has
    clip: choice(null, 1.0) too: 2 x 2 points)."""
    from rnnlab.tune import arms

    cfg, loader = compose_sweep("+tune=tiny", "tune.sampler=grid", f"tune.trials={trials}", f"tune.space={space}")
    settings = arms.Settings.of(cfg)
    settings.check()
    params = {str(k): str(v) for k, v in cfg.hydra.sweeper.params.items()}
    grid, fixed = arms.grid(loader, params, [])
    with pytest.raises(ConfigError) as e:
        arms.arm(loader, cfg, settings, fixed, *grid[0])
    assert names in str(e.value) and says in str(e.value) and "\n" not in str(e.value)
