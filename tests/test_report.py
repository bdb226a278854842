"""The comparison report: aggregation on hand-made runs (fast), and `src/report.py` end to end on
a tiny real sweep (slow): one table row per configuration, the right n, means equal to what
MLflow holds, the diverged fraction, the baseline, the figures, the parent run's artifacts."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from conftest import ROOT, Store
from rnnlab import report, stats
from rnnlab.report import figures as report_figures

T0 = pd.Timestamp("2026-01-01", tz="UTC")


# -- hand-made runs ------------------------------------------------------------------------

def raw_run(run_id: str, cell: str | None = "rnn", task: str = "adding", seq_len: int = 10, clip="1.0",
            seed: int = 0, status: str = "FINISHED", diverged: bool = False, minute: int = 0,
            metrics: dict | None = None, params: dict | None = None, tags: dict | None = None) -> dict:
    """One row as ``mlflow.search_runs`` returns it."""
    row = {"run_id": run_id, "status": status, "start_time": T0 + pd.Timedelta(minutes=minute),
           "tags.mlflow.runName": f"{cell}-{task}-T{seq_len}-clip{clip}-s{seed}",
           "tags.task": task, "tags.seq_len": str(seq_len), "tags.clip": str(clip), "tags.seed": str(seed),
           "tags.diverged": str(diverged).lower(), "tags.git_commit": "abc1234def", "tags.git_dirty": "false",
           "params.trainer.max_steps": "400", "params.cell.hidden_size": "128", "params.batch_size": "64",
           "params.diagnostics.threshold": "0.01"}
    if cell is not None:
        row["tags.cell"] = cell
    row.update({f"params.{k}": str(v) for k, v in (params or {}).items()})
    row.update({f"tags.{k}": v for k, v in (tags or {}).items()})
    row.update({f"metrics.{k}": v for k, v in (metrics or {}).items()})
    return row


def adding(mse: float) -> dict:
    return {"test/mse": mse, "baseline/mse": 1 / 6, "grad_flow/horizon": 9.0}


def fake_info(name: str) -> report.TaskInfo:
    """Task metadata without importing the task modules (they pull in torch)."""
    return {"adding": report.TaskInfo("adding", "test/mse", "min"),
            "copy": report.TaskInfo("copy", "test/loss", "min", ("test/acc",)),
            "sentiment": report.TaskInfo("sentiment", "test/acc", "max")}[name]


@pytest.fixture
def hand_made() -> pd.DataFrame:
    rows = [
        raw_run("parent", cell=None, tags={"sweep": "true", "sweep_id": "parent"}),
        # rnn T=10 clip 1.0: two finished seeds and one diverged
        raw_run("a0", seed=0, metrics=adding(0.10)),
        raw_run("a1", seed=1, metrics=adding(0.30)),
        raw_run("a2", seed=2, status="FAILED", diverged=True, metrics={"baseline/mse": 1 / 6}),
        # rnn T=10 clip none, seed 0: an old finished run, a newer one, and a newer crash
        raw_run("b_old", clip="None", minute=1, metrics=adding(0.50)),
        raw_run("b_new", clip="None", minute=2, metrics=adding(0.40)),
        raw_run("b_crash", clip="None", minute=3, status="FAILED", metrics={"baseline/mse": 1 / 6}),
        # lstm T=20: one seed; a configuration that only crashed
        raw_run("c0", cell="lstm", seq_len=20, metrics=adding(0.05)),
        raw_run("d0", cell="lstm", seq_len=20, clip="None", status="FAILED"),
        raw_run("g0", cell="gru", seq_len=20, status="RUNNING"),  # still training
        # copy (headline loss, also acc) and sentiment (length = task.distance)
        raw_run("e0", task="copy", seq_len=30, metrics={"test/loss": 0.2, "test/acc": 0.5,
                                                         "baseline/loss": 0.416, "baseline/acc": 0.125}),
        raw_run("f0", task="sentiment", seq_len=64, params={"task.distance": 16},
                metrics={"test/acc": 0.7, "baseline/acc": 0.5}),
        raw_run("f1", task="sentiment", seq_len=64, seed=1, params={"task.distance": 16},
                metrics={"test/acc": 0.8, "baseline/acc": 0.5}),
    ]
    return pd.DataFrame(rows)


def test_tidy_types_the_columns_and_drops_the_sweep_parent(hand_made):
    df = report.tidy(hand_made)
    assert "parent" not in set(df["run_id"]) and len(df) == len(hand_made) - 1
    r = df.set_index("run_id")
    assert r.loc["a0", "seq_len"] == 10 and r.loc["a0", "seed"] == 0 and r.loc["a0", "max_steps"] == 400
    assert r.loc["b_old", "clip"] == "none" and r.loc["a0", "clip"] == "1.0"
    assert r.loc["a2", "outcome"] == "diverged" and r.loc["b_crash", "outcome"] == "failed"
    assert r.loc["f0", "x"] == 16 and r.loc["a0", "x"] == 10, "sentiment's length is task.distance"
    assert r.loc["a0", "test/mse"] == 0.10
    assert [report.clip_label(v) for v in ("None", None, "1", "1.0", 0.5, "null")] == \
        ["none", "none", "1.0", "1.0", "0.5", "none"]


def test_select_keeps_the_most_recent_completed_run_of_each_configuration(hand_made):
    runs, superseded = report.select_runs(report.tidy(hand_made))
    ids = set(runs["run_id"])
    assert "b_new" in ids and not {"b_old", "b_crash"} & ids
    assert {"d0", "g0"} <= ids, "a configuration that only crashed is still counted (as failed)"
    assert superseded == 2
    assert list(runs.loc[runs["task"] == "adding", "cell"].unique()) == ["rnn", "lstm", "gru"]


def test_summarise_means_over_finished_seeds_and_counts_divergence_apart(hand_made):
    runs, _ = report.select_runs(report.tidy(hand_made))
    s = report.summarise(runs, fake_info).set_index(["task", "cell", "x", "clip"])
    g = s.loc[("adding", "rnn", 10, "1.0")]
    assert g["mean"] == pytest.approx(0.2) and g["std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert (g["n"], g["n_diverged"], g["n_runs"], g["n_failed"]) == (2, 1, 3, 0)
    assert g["baseline/mse"] == pytest.approx(1 / 6)
    assert s.loc[("adding", "rnn", 10, "none"), "mean"] == pytest.approx(0.40)
    one = s.loc[("adding", "lstm", 20, "1.0")]
    assert one["n"] == 1 and math.isnan(one["std"])
    crashed = s.loc[("adding", "lstm", 20, "none")]
    assert (crashed["n"], crashed["n_runs"], crashed["n_failed"], crashed["n_running"]) == (0, 0, 1, 0)
    assert s.loc[("adding", "gru", 20, "1.0"), "n_running"] == 1
    copy = s.loc[("copy", "rnn", 30, "1.0")]
    assert copy["mean"] == 0.2 and copy["test/acc mean"] == 0.5 and copy["baseline/acc"] == 0.125
    assert s.loc[("sentiment", "rnn", 16, "1.0"), "mean"] == pytest.approx(0.75)


def table_rows(markdown: str, title: str) -> list[list[str]]:
    """The body rows of the first table after the heading line containing ``title``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and title in line)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif rows:
            break
    return rows


def test_a_follow_up_against_the_baseline_is_sized_on_the_distance_from_it():
    """long_range_followup's LSTM: 2 of 10 seeds solve (0.001, 0.005), 8 sit at the baseline 0.1626.
    The mean is 0.13 but its distance from the baseline is 0.03 at an sd of 0.067: 37 seeds, not
    the 5 that the mean itself (0.13 / 0.067) would suggest."""
    from rnnlab.report.observations import against_baseline

    d = stats.mean_ci([0.0012, 0.0048, 0.162, 0.162, 0.162, 0.163, 0.163, 0.163, 0.163, 0.163], reference=0.1626)
    text = against_baseline(d, 0.169, 0.1626, "min")
    assert text == "below the baseline on average, not established (p = 0.169, Holm; 80% power at 37 seeds)"


def test_tables_and_observations_state_the_numbers(hand_made):
    runs, _ = report.select_runs(report.tidy(hand_made))
    summary = report.summarise(runs, fake_info)
    header, _, *rows = table_rows("# adding\n" + report.metric_table(summary, "adding", runs, fake_info), "adding")
    assert header == ["cell", "seq_len", "clip", "test/mse (mean [95% CI])", "n", "baseline", "diverged",
                      "failed", "running"]
    # seeds 0.1 and 0.3: mean 0.2, standard error 0.1, t(0.975, 1 d.o.f.) = 12.706: 0.2 ± 1.2706
    assert rows[0] == ["rnn", "10", "1.0", "0.2 [-1.07, 1.47]", "2", "0.1667", "1/3", "0", "0"]
    assert rows[1] == ["rnn", "10", "none", "0.4", "1", "0.1667", "0/1", "0", "0"]
    assert rows[3] == ["lstm", "20", "none", "—", "0", "—", "0/0", "1", "0"]
    assert rows[4] == ["gru", "20", "1.0", "—", "0", "—", "0/0", "0", "1"]
    copy_header = report.metric_table(summary, "copy", runs, fake_info).splitlines()[0]
    assert "test/loss (mean [95% CI])" in copy_header and "test/acc (mean [95% CI])" in copy_header
    sent = report.metric_table(summary, "sentiment", runs, fake_info).splitlines()
    assert sent[0].startswith("| cell | task.distance | seq_len | clip | test/acc")
    assert sent[2].startswith("| rnn | 16 | 64 | 1.0 | 0.75 [0.115, 1.39] | 2 | 0.5 |")  # 0.75 ± 12.706 x 0.05

    obs = "\n".join(report.observations(summary, runs, fake_info))
    print(obs)
    # one seed establishes nothing; two seeds 0.7 and 0.8 against the baseline 0.5: t = 5 on 1 d.o.f.,
    # p = 0.126 before the family's correction, so not established, and a follow-up is sized
    assert "lstm, clip 1.0: 0.05 (n=1; seeds: 0.05), one seed: below the baseline, nothing established" in obs
    assert ("rnn, clip 1.0: 0.75 [0.115, 1.39] (n=2; seeds: 0.7, 0.8), above the baseline on average, "
            "not established (p = ") in obs
    line = next(line for line in obs.splitlines() if "rnn, clip 1.0: 0.75" in line)
    assert float(line.split("(p = ")[1].split(",")[0]) >= 0.126 and "80% power at 3 seeds" in line
    assert "diverged: 1 of 5 adding runs" in obs
    assert "failed (in no mean and no diverged fraction): 1 (lstm-adding-T20-clipNone-s0)" in obs
    assert "running (in no mean and no diverged fraction): 1 (gru-adding-T20-clip1.0-s0)" in obs
    assert "rnn clip 1.0 seq_len=10: 1/3" in obs


def test_throughput_is_the_mean_over_runs_of_each_runs_median():
    runs = pd.DataFrame({"run_id": ["r1", "r2", "r3"], "task": "adding", "x": 10, "cell": "rnn",
                         "outcome": ["finished", "finished", "diverged"]})
    hist = pd.DataFrame([("r1", "perf/tokens_per_s", s, v) for s, v in enumerate([1, 100, 110, 120])]
                        + [("r2", "perf/tokens_per_s", s, v) for s, v in enumerate([200, 210, 5])]
                        + [("r3", "perf/tokens_per_s", 0, 1e6)], columns=["run_id", "key", "step", "value"])
    tp = report.throughput(runs, hist)
    assert tp["tokens_per_s"].tolist() == [(105 + 200) / 2] and tp["n"].tolist() == [2]


def test_profiles_keep_the_last_probe_normalised():
    gf = pd.DataFrame({"run_id": "r", "step": [3, 3, 6, 6], "distance_from_readout": [1, 0, 1, 0],
                       "grad_input_norm": [5.0, 10.0, 0.2, 4.0]})
    last = report.last_profiles(gf)
    assert last["step"].unique().tolist() == [6] and last["norm"].tolist() == [0.05, 1.0]


def test_headline_metrics_come_from_the_task_classes():
    """Every registered task's headline is its class's main metric on the test split, a
    variant's label (``forecast (series=x)``) its base task's; an unknown task falls back to
    test/loss and says it is unknown."""
    from rnnlab.runs import on_split
    from rnnlab.tasks import registry

    for task in registry.names():
        cls = registry.task_class(task)
        info = report.task_info(f"{task} (variant=1)")
        assert (info.metric, info.mode, info.known) == (on_split(cls.main_metric, "test"), cls.mode, True), task
    unknown = report.task_info("no_such_task")
    assert (unknown.metric, unknown.known) == ("test/loss", False)


def test_the_discussion_survives_regeneration(hand_made, tmp_path):
    runs, _ = report.select_runs(report.tidy(hand_made))
    summary = report.summarise(runs, fake_info)
    ctx = report.Context("exp", "sqlite:///x.db", runs, summary, report.throughput(runs, pd.DataFrame()), {})
    first = report.render(ctx, fake_info)
    assert "_To be written" in first and report.DISCUSSION_START in first
    path = tmp_path / "REPORT.md"
    path.write_text(first.replace("_To be written: what the numbers above show, and what they do not._",
                                  "LSTM wins, said a human."))
    ctx.discussion = report.kept_discussion(path)
    assert "LSTM wins, said a human." in report.render(ctx, fake_info)


def test_figures_draw_from_hand_made_runs(hand_made, tmp_path, drawn):
    runs, _ = report.select_runs(report.tidy(hand_made))
    summary = report.summarise(runs, fake_info)
    hist = pd.DataFrame([(rid, key, step, v * (1 + step)) for rid in runs["run_id"]
                         for key, v in [("train/loss", 1.0), ("grad_norm/pre_clip", 2.0)] for step in range(5)],
                        columns=["run_id", "key", "step", "value"])
    gf = pd.DataFrame([(rid, 5, d, 0.5 ** d) for rid in runs["run_id"] for d in range(10)],
                      columns=["run_id", "step", "distance_from_readout", "grad_input_norm"])
    report_figures.plot_metric_vs_length(summary, runs, tmp_path / "a.png", fake_info)
    report_figures.plot_training_curves(runs, hist, tmp_path / "b.png")
    report_figures.plot_grad_flow(runs, report.last_profiles(gf), tmp_path / "c.png")
    assert {p.name for p in tmp_path.glob("*.png")} == {"a.png", "b.png", "c.png"}

    panels, legend = drawn["a.png"]  # a panel per task, against the length that task varies
    assert [(t, x, y) for t, x, y, *_ in panels] == [
        ("adding: test/mse (lower is better)", "seq_len", "test/mse"),
        ("copy: test/loss (lower is better)", "seq_len", "test/loss"),
        ("sentiment: test/acc (higher is better)", "task.distance", "test/acc")]
    assert legend == ["rnn", "lstm", "clip 1.0", "no clipping", "trivial baseline"]

    panels, legend = drawn["b.png"]  # per task at its longest length: the loss, the gradient norm on a log axis
    curves = {t.replace("\n", " "): (yscale, lines) for t, _, _, yscale, lines in panels}
    assert curves["sentiment (task.distance = 16): train/loss"] == ("linear", 3)  # 2 seeds and their mean
    assert curves["sentiment (task.distance = 16): grad norm before clipping"] == ("log", 3)
    assert curves["adding (seq_len = 20): train/loss"] == ("linear", 2)  # one run each: no mean drawn
    assert legend == ["rnn", "lstm", "clip 1.0", "single run", "mean of finished seeds"]

    panels, legend = drawn["c.png"]  # a panel per task and cell; a cell without a profile says so
    titles = [t for t, *_ in panels]
    assert titles[:4] == ["adding: rnn (step 5)", "adding: lstm (step 5)", "adding: gru (step 5)", "copy: rnn (step 5)"]
    assert "copy: lstm (step 5)" not in titles and len(panels) == 5  # copy's lstm logged none: no axes drawn
    assert all(yscale == "log" for _, _, _, yscale, _ in panels)
    assert all(x == "distance from the readout (steps)" for _, x, *_ in panels)


def test_an_unknown_experiment_is_a_clear_error(store, capsys):
    sys.path.insert(0, str(ROOT / "src"))
    import importlib

    cli = importlib.import_module("report")  # src/report.py (tests import rnnlab.report separately)
    store.client.create_experiment("adding", artifact_location=(store.dir / "mlruns").as_uri())
    assert cli.main(["--experiment", "long_rnage", "--tracking-uri", store.uri, "--out", str(store.dir)]) == 2
    err = capsys.readouterr().err
    assert "no experiment named 'long_rnage'" in err and "existing: Default, adding" in err
    assert cli.main(["--experiment", "adding", "--tracking-uri", store.uri, "--out", str(store.dir)]) == 2
    assert "has no training runs" in capsys.readouterr().err
    missing = f"sqlite:///{store.dir / 'typo.db'}"
    assert cli.main(["--experiment", "adding", "--tracking-uri", missing, "--out", str(store.dir)]) == 2
    assert "no MLflow store at" in capsys.readouterr().err and not (store.dir / "typo.db").exists()


def test_a_report_of_another_experiment_is_not_overwritten(store, tmp_path):
    """``make sweep && make report`` must not write a smoke grid's tables over a committed study
    and keep the study's discussion under them."""
    study = tmp_path / "REPORT.md"
    study.write_text(f"# Report: experiment `long_range_study`\n\n{report.DISCUSSION_START}\nhand-written"
                     f"\n{report.DISCUSSION_END}\n")
    (tmp_path / "metric_vs_length.png").write_bytes(b"figure")
    with pytest.raises(report.ReportError, match="is the report of experiment 'long_range_study', not 'long_range'"):
        report.check_out_dir(tmp_path, "long_range")
    with pytest.raises(report.ReportError, match="not 'long_range'"):  # before it touches the folder
        report.build("long_range", store.uri, tmp_path, log_to_parent=False)
    assert "hand-written" in study.read_text() and (tmp_path / "metric_vs_length.png").exists()
    report.check_out_dir(tmp_path, "long_range_study")  # its own experiment: regenerated in place
    report.check_out_dir(tmp_path / "new", "long_range")  # a new folder


# -- end to end on a tiny real sweep -------------------------------------------------------

# TINY (conftest) plus what makes a 6-step run take about a second inside a multirun.
FAST = ["tracking.async_logging=false", "tracking.log_checkpoint=false", "task.val_size=16",
        "task.test_size=16", "trainer.log_every_n_steps=1"]
# A run that diverges at once, which is all this sweep needs: a ReLU RNN at spectral radius 3
# grows its state 3^20-fold over the sequence, and one unclipped SGD step at lr 1 sends the loss
# to inf. Non-finite at step 1 for seeds 0-7 with 1 and 2 threads (the margin is orders of
# magnitude, so summation order cannot change it). The clipping recipe is conftest.EXPLODING.
DIVERGING = ["task=adding", "cell=rnn", "cell.nonlinearity=relu", "cell.spectral_radius=3.0",
             "optim.name=sgd", "optim.lr=1.0"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, migrated_db) -> Store:
    """adding, rnn and lstm x seq_len 10, 20 x seeds 0, 1 with clip 1.0 (one Hydra sweep), plus
    rnn at seq_len 20 without clipping: seed 0 trains, seed 1 diverges (two single runs, in
    parallel with the sweep)."""
    store = Store(tmp_path_factory.mktemp("report"), template=migrated_db)
    # The schema and experiment exist before two processes write into the store at once.
    store.client.create_experiment("adding", artifact_location=(store.dir / "mlruns").as_uri())
    errors: list[BaseException] = []

    def run(*overrides):
        try:
            store.train(*FAST, *overrides)
        except BaseException as e:  # noqa: BLE001 - reported by the fixture below
            errors.append(e)

    grid = threading.Thread(target=run, args=(
        "-m", "task=adding", "cell=rnn,lstm", "seq_len=10,20", "seed=0,1", "clip=1.0", "sweep.report=wait",
        f"hydra.sweep.dir={store.dir / 'multirun'}"))
    grid.start()
    run("task=adding", "cell=rnn", "seq_len=20", "clip=null", "seed=0", f"hydra.run.dir={store.dir / 'plain'}")
    run(*DIVERGING, "seq_len=20", "clip=null", "seed=1", f"hydra.run.dir={store.dir / 'diverging'}")
    grid.join()
    if errors:
        raise errors[0]
    return store


def expected(store: Store) -> dict[tuple[str, int, str], dict]:
    """What each table row must say, straight from MLflow: finished test/mse per seed, counts.
    The diverging rnn (relu, spectral radius 3) is another configuration than the grid's rnn,
    so each gets its own label and rows."""
    out: dict[tuple[str, int, str], dict] = {}
    for r in store.runs("adding"):
        t = r.data.tags
        if "cell" not in t:
            continue
        cell = t["cell"]
        if cell == "rnn":  # the diverging run's cell differs: the report labels both kinds of rnn
            p = r.data.params
            radius = report._param_text(p["cell.spectral_radius"])
            cell += f" (nonlinearity={p['cell.nonlinearity']}, spectral_radius={radius})"
        row = out.setdefault((cell, int(t["seq_len"]), report.clip_label(t["clip"])),
                             {"mse": [], "diverged": 0, "runs": 0, "baseline": []})
        row["runs"] += 1
        row["baseline"].append(r.data.metrics["baseline/mse"])  # scored on the run's own test set
        if t["diverged"] == "true":
            row["diverged"] += 1
        elif r.info.status == "FINISHED":
            row["mse"].append(r.data.metrics["test/mse"])
    return out


def number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.slow
def test_report_of_a_tiny_sweep(sweep, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, str(ROOT / "src" / "report.py"), "--experiment", "adding",
                           "--tracking-uri", sweep.uri, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=sweep.env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    drawn = [f for f in report.FIGURES if f not in report.TASK_FIGURES]  # char_lm's and forecast's: not here
    assert {p.name for p in out.iterdir()} == {"REPORT.md", *drawn}
    md = (out / "REPORT.md").read_text()
    assert "- **runs**: 10: 9 finished / 1 diverged / 0 failed" in md
    assert "- **budget**: trainer.max_steps = 6; cell.hidden_size = 16; batch_size = 8" in md
    assert all(f"]({name})" in md for name in drawn)

    want = expected(sweep)
    header, _, *rows = table_rows(md, "adding: `test/mse`")
    assert header == ["cell", "seq_len", "clip", "test/mse (mean [95% CI])", "n", "baseline", "diverged"]
    assert sorted((r[0], int(r[1]), r[2]) for r in rows) == sorted(want) and len(want) == 6
    for cell, T, clip, value, n, baseline, diverged in rows:
        w = want[(cell, int(T), clip)]
        assert int(n) == len(w["mse"]) and diverged == f"{w['diverged']}/{w['runs']}"
        assert number(baseline) == pytest.approx(np.mean(w["baseline"]), rel=1e-3)
        if not w["mse"]:  # only a diverged seed: no mean
            assert value == "—"
            continue
        mean, _, interval = value.partition(" [")
        assert number(mean) == pytest.approx(np.mean(w["mse"]), rel=1e-3)
        if len(w["mse"]) > 1:  # the t-interval: mean ± t(0.975, n-1) s / sqrt(n)
            low, high = (number(v) for v in interval.rstrip("]").split(", "))
            half = sps.t.ppf(0.975, len(w["mse"]) - 1) * np.std(w["mse"], ddof=1) / np.sqrt(len(w["mse"]))
            mean_mse = np.mean(w["mse"])
            assert (low, high) == pytest.approx((mean_mse - half, mean_mse + half), rel=5e-3, abs=5e-4)
    # the sweep's shape, so the checks above meant something
    relu, tanh = "rnn (nonlinearity=relu, spectral_radius=3)", "rnn (nonlinearity=tanh, spectral_radius=None)"
    assert [(len(want[(c, 20, "none")]["mse"]), want[(c, 20, "none")]["diverged"]) for c in (relu, tanh)] == [
        (0, 1), (1, 0)]
    assert len(want[("lstm", 20, "1.0")]["mse"]) == 2 and len(want[(tanh, 10, "1.0")]["mse"]) == 2

    tp = table_rows(md, "## Training throughput")
    assert tp[0] == ["seq_len", "rnn tokens/s", "lstm tokens/s"] and [r[0] for r in tp[2:]] == ["10", "20"]
    assert all(re.fullmatch(r"[\d,]+ \(n=\d\)", c) for r in tp[2:] for c in r[1:])
    assert f"diverged: 1 of 10 adding runs ({relu} clip none seq_len=20: 1/1)" in md
    assert "grad_flow/horizon at the last probe" in md

    # The sweep's parent run holds the report too.
    parent = next(r for r in sweep.runs("adding") if r.data.tags.get("sweep") == "true")
    logged = {a.path for a in sweep.client.list_artifacts(parent.info.run_id, "report")}
    assert logged == {"report/REPORT.md", *(f"report/{n}" for n in drawn)}
    assert f"logged 4 files to the sweep's parent run {parent.info.run_id}" in proc.stdout

    # --sweep-id: only that sweep's runs (not the two single runs beside it). One test with the
    # above, so that pytest's workers build the sweep once.
    (tmp_path / "one").mkdir()
    result = report.build("adding", sweep.uri, tmp_path / "one", sweep_id=parent.info.run_id, log_to_parent=False)
    md = result.report.read_text()
    rows = table_rows(md, "adding: `test/mse`")[2:]
    assert result.n_runs == 8 and len(rows) == 4 and {r[2] for r in rows} == {"1.0"}
    assert {r[4] for r in rows} == {"2"} and {r[-1] for r in rows} == {"0/2"}
    assert f"--sweep-id {parent.info.run_id}" in md and result.logged_to is None
    check_the_report_from_its_data_is_the_report_from_the_store(sweep, tmp_path)


def same_page(a: str, b: str) -> bool:
    """Two versions of a report are the same page but for the line that says when it was made."""
    def drop(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("Generated ")]
    return drop(a) == drop(b)


def check_the_report_from_its_data_is_the_report_from_the_store(sweep, tmp_path):
    """--export writes the runs beside the report; --from rebuilds the same page from them
    alone (the store moved away), and `open_study` loads them into a new store with their
    parent, params, metrics, histories and the sweep's comparison view."""
    import importlib

    cli = importlib.import_module("report")  # src/report.py
    study = tmp_path / "study"
    assert cli.main(["--experiment", "adding", "--tracking-uri", sweep.uri, "--out", str(study), "--export",
                     "--no-log"]) == 0
    from_store = (study / "REPORT.md").read_text()
    assert sorted(p.name for p in (study / "data").iterdir()) == [
        "artifacts.parquet", "histories.parquet", "runs.parquet", "study.json"]
    assert "- **data**: [`data/`](data/)" in from_store and "--from" in from_store
    assert sweep.uri not in from_store and str(sweep.dir) not in from_store, "no machine path on the page"
    runs = pd.read_parquet(study / "data" / "runs.parquet")
    assert len(runs) == 11 and not {"artifact_uri", "tags.checkpoint_dir"} & set(runs.columns)  # 10 jobs, 1 parent
    assert (study / "data").stat().st_size and sum(f.stat().st_size for f in (study / "data").iterdir()) < 2e6

    moved = sweep.dir.with_name(sweep.dir.name + "-away")
    sweep.dir.rename(moved)  # no store now: the page must come from the data alone
    try:
        again = tmp_path / "again"
        again.mkdir()
        (again / "REPORT.md").write_text(from_store.replace("_To be written", "A human wrote this."))
        assert cli.main(["--from", str(study), "--out", str(again)]) == 0
        from_data = (again / "REPORT.md").read_text()
        assert "A human wrote this." in from_data, "the discussion is kept"
        assert same_page(from_store.replace("_To be written", "A human wrote this."), from_data)
        assert not same_page(from_store, from_data.replace("## Figures", "## Figure"))
        assert {p.name for p in again.glob("*.png")} == {p.name for p in study.glob("*.png")}
    finally:
        moved.rename(sweep.dir)

    from rnnlab import studies, views

    db = tmp_path / "opened" / "mlflow.db"
    opened = studies.load(study, db)
    assert opened.runs == 11 and not opened.reused and len(opened.views) == 1
    from mlflow import MlflowClient

    client = MlflowClient(opened.store)
    loaded = client.search_runs([opened.experiment_id], max_results=100)
    parent = next(r for r in loaded if r.data.tags.get("sweep") == "true")
    original = {r.info.run_id: r for r in sweep.runs("adding")}
    for r in loaded:
        o = original[r.data.tags[studies.EXPORTED_ID]]
        assert r.data.params == o.data.params and r.info.status == o.info.status
        def finite(metrics: dict) -> dict:  # a diverged run's NaN is no value in a frame, or NaN again
            return {k: v for k, v in metrics.items() if math.isfinite(v)}
        assert finite(r.data.metrics) == pytest.approx(finite(o.data.metrics)), r.info.run_name
        assert r.info.start_time == o.info.start_time and r.info.end_time == o.info.end_time
        if "sweep_id" in o.data.tags:
            assert r.data.tags["sweep_id"] == parent.info.run_id
        if "mlflow.parentRunId" in o.data.tags:
            assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
    job = next(r for r in loaded if r.data.tags.get("mlflow.parentRunId") and r.info.status == "FINISHED")
    assert [m.value for m in client.get_metric_history(job.info.run_id, "val/mse")] == [
        m.value for m in sweep.client.get_metric_history(job.data.tags[studies.EXPORTED_ID], "val/mse")]
    key, name = opened.views[0]
    assert key == f"{views.OURS}{parent.info.run_id}" and name.startswith("compare: ")
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/REPORT.md"}
    assert studies.load(study, db).reused, "the same data: the store is reused"

    # data -> store -> data: exported again from the loaded store (as a study continued on
    # another machine is), the histories and the artifacts the figures draw are all there.
    second = tmp_path / "second"
    assert cli.main(["--experiment", "adding", "--tracking-uri", opened.store, "--out", str(second), "--export",
                     "--no-log"]) == 0
    exported_as = {r.info.run_id: r.data.tags[studies.EXPORTED_ID] for r in loaded}
    for name, key in [("artifacts.parquet", ["run_id", "path"]), ("histories.parquet", ["run_id", "key", "step"])]:
        first = pd.read_parquet(study / "data" / name)
        exported = pd.read_parquet(second / "data" / name).assign(run_id=lambda f: f["run_id"].map(exported_as))
        assert len(first), f"{name}: the tiny sweep's report draws some"
        pd.testing.assert_frame_equal(first.sort_values(key, ignore_index=True),
                                      exported.sort_values(key, ignore_index=True), obj=name)


def test_a_sweep_parent_with_no_runs_of_its_own_gets_no_view():
    """A sweep restarted after all its jobs had finished leaves a parent with no children (every
    job skipped): opening the study lists a comparison view for the first parent only."""
    from rnnlab import studies

    rows = [("p1", 1, "true", "tune_char_lm-defaults", None), ("j1", 2, None, "rnn-T100-s1", "p1"),
            ("p2", 3, "true", "tune_char_lm-defaults", None)]
    runs = pd.DataFrame([{"run_id": r, "start_time": t, "tags.sweep": s, "tags.mlflow.runName": n,
                          "tags.mlflow.parentRunId": p} for r, t, s, n, p in rows])
    assert list(studies._parents(runs)) == [("p1", "tune_char_lm-defaults")]


def test_a_study_opens_into_a_store_named_by_a_relative_path(tmp_path, monkeypatch, capsys):
    """`open_study.py <study> --store a/mlflow.db`, as a page's instructions print it, loads the
    study there (a relative store had crashed making its artifact root's file URI)."""
    import importlib

    from mlflow import MlflowClient

    opener = importlib.import_module("open_study")  # src/open_study.py
    monkeypatch.chdir(tmp_path)
    assert opener.main(["long_range_followup", "--store", "a/mlflow.db"]) == 0
    store = tmp_path / "a" / "mlflow.db"
    assert store.is_file() and str(store) in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("long_range_followup").experiment_id])
    assert len(runs) == len(pd.read_parquet(ROOT / "experiments" / "long_range_followup" / "data" / "runs.parquet"))


@pytest.mark.parametrize("damage", ["no folder", "no data", "no run_id"])
def test_a_study_that_cannot_be_opened_is_one_line_and_writes_nothing(tmp_path, damage, capsys):
    import importlib

    opener = importlib.import_module("open_study")  # src/open_study.py
    folder = tmp_path / "study"
    if damage != "no folder":
        (folder / "data").mkdir(parents=True)
    if damage == "no run_id":
        pd.DataFrame({"status": ["FINISHED"], "start_time": [T0]}).to_parquet(folder / "data" / "runs.parquet")
    store = tmp_path / "store" / "mlflow.db"
    assert opener.main([str(folder), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert {"no folder": "no study", "no data": "has no data", "no run_id": "lacks what a run needs: run_id"}[
        damage] in err
    assert not store.exists() and not (store.parent.exists() and any(store.parent.iterdir()))


def test_critical_length_and_paired_differences_from_hand_made_runs():
    """gru solves T=10 on every seed and T=20 on three of five; rnn solves nothing. At T=10 gru's
    error is 0.1 below rnn's on every seed (established); at T=20 the sign varies (not)."""
    rows = []
    for seed in range(5):
        rows.append(raw_run(f"g10-{seed}", "gru", seq_len=10, seed=seed,
                            metrics={"test/mse": 0.01 + 0.01 * seed, "steps_to_solve": 200.0}))
        rows.append(raw_run(f"r10-{seed}", "rnn", seq_len=10, seed=seed, metrics={"test/mse": 0.11 + 0.01 * seed}))
        rows.append(raw_run(f"g20-{seed}", "gru", seq_len=20, seed=seed,
                            metrics={"test/mse": [0.05, 0.2, 0.05, 0.05, 0.2][seed],
                                     **({"steps_to_solve": 300.0} if seed not in (1, 4) else {})}))
        rows.append(raw_run(f"r20-{seed}", "rnn", seq_len=20, seed=seed,
                            metrics={"test/mse": [0.15, 0.1, 0.06, 0.1, 0.15][seed]}))
    rows.append(raw_run("r20-div", "rnn", seq_len=20, seed=5, status="FAILED", diverged=True))
    runs = report.tidy(pd.DataFrame(rows))

    critical = report.critical_table(runs, "adding").splitlines()
    assert critical[0].split("|")[1:-1] == [" cell ", " clip ", " critical length ", " seq_len=10 ", " seq_len=20 "]
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in critical[2:]}
    assert cells["gru"] == ["1.0", "20", "5/5 (200)", "3/5 (300)"], "solved seeds (median steps to solve)"
    assert cells["rnn"] == ["1.0", "none", "0/5", "0/6"], "the diverged seed counts as not solved"

    paired = report.paired_table(runs, "adding", fake_info).splitlines()[2:]
    t10, t20 = ([c.strip() for c in row.split("|")[1:-1]] for row in paired)
    assert t10[:3] == ["10", "1.0", "rnn - gru"] and t10[3].startswith("0.1 [0.1, 0.1]")
    assert t10[4:] == ["5", "< 0.001", "gru better (established)", "—"]
    # at T=20, rnn - gru = 0.1, -0.1, 0.01, 0.05, -0.05: t-test p = 0.957, second of two in Holm's order (x 1)
    p = sps.ttest_1samp([0.1, -0.1, 0.01, 0.05, -0.05], 0.0).pvalue
    assert t20[4:] == ["5", f"{p:.3f}", "not established", "> 1,000"], "effect 0.026 sd: no follow-up would do"

    # The observations name the lowest mean, and say it is not established at T=20.
    summary = report.summarise(runs, fake_info)
    obs = "\n".join(report.observations(summary, runs, fake_info))
    assert "lowest mean test/mse with clip 1.0: gru (0.11); not established against rnn (difference" in obs

    # Ours vs Bai et al. (2018) at their T=600: their GRU solves adding (5.3e-5 against 1/6), their
    # RNN does not; our GRU solves up to 20 (3 of 5 seeds), our RNN nowhere.
    lit = report.literature_table(summary, runs, "adding", fake_info)
    assert "Bai, Kolter & Koltun 2018" in lit and "T = 600" in lit
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in lit.splitlines()[4:]}
    assert rows["gru"][:2] == ["1.0", "5.3e-05"] and rows["gru"][2] == "yes" and rows["gru"][4:6] == ["3/5", "20"]
    assert rows["gru"][6].startswith("agree")
    assert rows["rnn"][2] == "no" and rows["rnn"][5] == "none" and rows["rnn"][6].startswith("agree")
    # their LSTM (0.164, at the baseline) fails at T=600; one that solves here at T <= 200 does not contradict it
    assert report._agreement(False, True, 600, 200).startswith("solved here at T ≤ 200, not there at T = 600")
    assert report._agreement(True, False, 600, 200) == "differ (their T = 600, ours 200)"


def test_what_clipping_changes_is_paired_by_seed_per_cell_and_length():
    """The lstm without clipping is 0.05 worse than clipped on every seed at T=20 (established)
    and solves 2 of 5 instead of 5 of 5; the rnn's difference changes sign (not established)."""
    rows = []
    for seed in range(5):
        rows.append(raw_run(f"l-c-{seed}", "lstm", seq_len=20, clip="1.0", seed=seed,
                            metrics={"test/mse": 0.01 * seed, "steps_to_solve": 300.0}))
        solved_unclipped = {"steps_to_solve": 900.0} if seed < 2 else {}
        rows.append(raw_run(f"l-n-{seed}", "lstm", seq_len=20, clip=None, seed=seed,
                            metrics={"test/mse": 0.01 * seed + 0.05, **solved_unclipped}))
        rows.append(raw_run(f"r-c-{seed}", "rnn", seq_len=20, clip="1.0", seed=seed,
                            metrics={"test/mse": 0.16 + [0.01, -0.01][seed % 2]}))
        rows.append(raw_run(f"r-n-{seed}", "rnn", seq_len=20, clip=None, seed=seed, metrics={"test/mse": 0.16}))
    table = report.clip_table(report.tidy(pd.DataFrame(rows)), "adding", fake_info).splitlines()
    assert [c.strip() for c in table[0].split("|")[1:-1]] == [
        "cell", "seq_len", "clip", "test/mse difference [95% CI]", "seeds", "solved", "p (Holm)", "verdict",
        "seeds for 80% power, alone"]
    rnn, lstm = ([c.strip() for c in row.split("|")[1:-1]] for row in table[2:])
    assert lstm[:3] == ["lstm", "20", "none - 1.0"] and lstm[3].startswith("0.05 [0.05, 0.05]")
    assert lstm[4:] == ["5", "2/5 vs 5/5", "< 0.001", "clip 1.0 better (established)", "—"]
    assert rnn[0] == "rnn" and rnn[4:6] == ["5", "0/5 vs 0/5"] and rnn[7] == "not established"
    one_clip = report.tidy(pd.DataFrame([r for r in rows if r["tags.clip"] == "1.0"]))
    assert report.clip_table(one_clip, "adding", fake_info) is None


def test_task_metric_comes_from_the_runs_tags_without_importing_the_task(monkeypatch):
    """A sweep's parent builds the report: reading each task's metric from its runs' tags spares
    it importing Lightning (seconds). A task no module defines is ranked as its runs say."""
    monkeypatch.setattr(report.taskinfo, "_TOLD", {})  # the dict task_info reads
    raw = pd.DataFrame([{"tags.task": "newtask", "tags.main_metric": "val/acc", "tags.metric_mode": "max"},
                        {"tags.task": "adding", "tags.main_metric": "val/mse", "tags.metric_mode": "min"}])
    report.remember_tasks(raw)
    info = report.task_info("newtask")
    assert (info.metric, info.mode, info.known) == ("test/acc", "max", True)
    assert report.task_info("adding") == report._task_info_from_code("adding")  # tags and code agree


def test_equal_budget_runs_are_their_own_arm_compared_only_with_each_other():
    """A study runs every cell at equal hidden size and at an equal parameter budget: the two
    sizings are separate rows, solved counts and paired differences (never across sizings)."""
    rows = []
    for seed in range(2):
        for cell, hidden_mse, budget_mse in (("rnn", 0.15, 0.12), ("gru", 0.01, 0.02)):
            rows.append(raw_run(f"{cell}-h-{seed}", cell, seed=seed, metrics={"test/mse": hidden_mse + 0.001 * seed},
                                params={"model.param_budget": "None"}))
            sized = {"model.param_budget": "30000", "cell.hidden_size": 99 if cell == "rnn" else 40}
            rows.append(raw_run(f"{cell}-b-{seed}", cell, seed=seed, metrics={"test/mse": budget_mse + 0.001 * seed},
                                params=sized))
    runs = report.tidy(pd.DataFrame(rows))
    assert set(runs["size"]) == {"hidden 128", "30,000 params"}
    summary = report.summarise(runs, fake_info)
    header, _, *table = table_rows("# adding\n" + report.metric_table(summary, "adding", runs, fake_info), "adding")
    assert header[:5] == ["cell", "seq_len", "clip", "size", "test/mse (mean [95% CI])"]
    # cell by cell, equal hidden size first, then the budget
    assert [(r[0], r[3], r[4].split(" ")[0]) for r in table] == [
        ("rnn", "hidden 128", "0.1505"), ("rnn", "30,000 params", "0.1205"),
        ("gru", "hidden 128", "0.0105"), ("gru", "30,000 params", "0.0205")]
    paired = [[c.strip() for c in r.split("|")[1:-1]] for r in report.paired_table(runs, "adding", fake_info)
              .splitlines()[2:]]
    assert sorted((r[3], r[2]) for r in paired) == [("rnn - gru", "30,000 params"), ("rnn - gru", "hidden 128")]
    critical = report.critical_table(runs, "adding").splitlines()
    assert critical[0].split("|")[1:4] == [" cell ", " clip ", " size "] and len(critical) == 2 + 4
    obs = "\n".join(report.observations(summary, runs, fake_info))
    assert "gru, clip 1.0, 30,000 params: 0.0205" in obs and "with clip 1.0, hidden 128: gru" in obs


def test_cells_each_at_a_clip_of_their_own_are_compared_as_whole_configurations():
    """Tuned arms are configurations: the RNN at clip 0.5 against the LSTM at clip 1.0 is one
    paired test (the comparison tune_char_lm_followup was made for), in the page's family, with
    the same p as scipy's paired t-test. Cells that share a clip are compared at it only; a cell
    run at several clips is never set against another cell's different clip."""
    rnn, lstm = [0.30, 0.31, 0.29, 0.33, 0.30], [0.35, 0.33, 0.36, 0.34, 0.37]
    rows = [raw_run(f"r{s}", "rnn", seed=s, clip=0.5, metrics={"test/mse": v, "baseline/mse": 1 / 6})
            for s, v in enumerate(rnn)]
    rows += [raw_run(f"l{s}", "lstm", seed=s, clip=1.0, metrics={"test/mse": v, "baseline/mse": 1 / 6})
             for s, v in enumerate(lstm)]
    runs = report.tidy(pd.DataFrame(rows))
    table = [[c.strip() for c in r.split("|")[1:-1]] for r in report.paired_table(runs, "adding", fake_info)
             .splitlines()[2:]]
    assert [(r[1], r[2], r[4]) for r in table] == [("0.5 vs 1.0", "rnn - lstm", "5")]
    assert float(table[0][5]) == pytest.approx(sps.ttest_rel(rnn, lstm).pvalue, abs=5e-4)  # alone: its own family
    assert table[0][6] == "rnn better (established)"
    obs = "\n".join(report.observations(report.summarise(runs, fake_info), runs, fake_info))
    assert "each cell at its own clip: rnn (clip 0.5)" in obs and "established against lstm (clip 1.0)" in obs

    # a GRU at both clips: compared with each cell at the clip they share, never across clips
    gru = [raw_run(f"g{c}{s}", "gru", seed=s, clip=c, metrics={"test/mse": 0.2 + 0.01 * s, "baseline/mse": 1 / 6})
           for c in (0.5, 1.0) for s in range(5)]
    runs = report.tidy(pd.DataFrame(rows + gru))
    table = [[c.strip() for c in r.split("|")[1:-1]] for r in report.paired_table(runs, "adding", fake_info)
             .splitlines()[2:]]
    assert sorted((r[1], r[2]) for r in table) == [
        ("0.5", "rnn - gru"), ("0.5 vs 1.0", "rnn - lstm"), ("1.0", "lstm - gru")]

    # a clip grid whose opposite arms diverged is still a grid: no comparison across clips
    grid = [raw_run(f"{c}{clip}{s}", c, seed=s, clip=clip, status="FAILED" if diverged else "FINISHED",
                    diverged=diverged, metrics={"test/mse": 0.3 + 0.01 * s, "baseline/mse": 1 / 6})
            for c, clip, diverged in (("rnn", 1.0, False), ("rnn", "None", True), ("lstm", 1.0, True),
                                      ("lstm", "None", False)) for s in range(5)]
    runs = report.tidy(pd.DataFrame(grid))
    assert report.paired_table(runs, "adding", fake_info) is None
    assert "own clip" not in "\n".join(report.observations(report.summarise(runs, fake_info), runs, fake_info))


def test_the_gru_to_lstm_speed_ratio_reads_the_runs_measured_speeds():
    """The claim the column tests: the GRU trains about 25% faster than the LSTM (3 gate blocks
    to 4), which reads 1.25. From the runs' own step histories: each run's median tokens/s (its
    warm-up interval ignored), a cell's mean over its runs, then the GRU's over the LSTM's at
    each length; a length without one of them has no ratio, a study without both no column."""
    def run(run_id, cell, x, speeds):
        return ({"run_id": run_id, "task": "adding", "x": x, "cell": cell, "outcome": "finished"},
                [(run_id, "perf/tokens_per_s", step, v) for step, v in enumerate(speeds)])

    # medians 240 and 260 (the GRU's mean: 250) against 190 and 210 (200); 5 and 9: warm-up
    made = [run("g1", "gru", 10, [5, 240, 260]), run("g2", "gru", 10, [5, 260, 270]),
            run("l1", "lstm", 10, [9, 190, 200]), run("l2", "lstm", 10, [9, 210, 220]),
            run("l3", "lstm", 20, [100, 100]), run("r1", "rnn", 20, [400, 400])]
    runs = pd.DataFrame([r for r, _ in made])
    hist = pd.DataFrame([h for _, steps in made for h in steps], columns=["run_id", "key", "step", "value"])
    where = pd.DataFrame({"task": ["adding"], "distance": [pd.NA]})

    def table(keep):
        tp = report.throughput(runs[runs["cell"].isin(keep)], hist)
        return [[c.strip() for c in r.split("|")[1:-1]] for r in
                report.throughput_table(tp, "adding", where).splitlines()]

    header, _, at10, at20 = table({"rnn", "lstm", "gru"})
    assert header[-1] == "gru / lstm speed"
    assert at10 == ["10", "—", "200 (n=2)", "250 (n=2)", "1.25"], "the claim, as a study would read it"
    assert at20[-1] == "—", "no GRU at 20: no ratio"
    assert "gru / lstm speed" not in table({"rnn", "gru"})[0]


def test_a_varied_task_or_cell_parameter_splits_the_runs_into_labelled_arms(tmp_path):
    """A study that varies the LSTM's forget-gate bias, or the forecast series and tau, gets a
    cell or task label per value: their runs are separate rows and sections, paired with the
    other cells seed by seed, never averaged together; tau is named only where it means
    something (Mackey-Glass), and the cells that do not vary it keep their plain names."""
    rows = []
    for seed in range(3):
        for cell, fb, bpc in (("rnn", None, 2.7), ("lstm", "1.0", 2.7), ("lstm", "0.0", 2.6), ("gru", None, 2.55)):
            params = {"cell.forget_bias": fb} if fb else {}
            rows.append(raw_run(f"{cell}{fb}-{seed}", cell, task="char_lm", seed=seed, params=params,
                                metrics={"test/bpc": bpc + 0.01 * seed}))
        for series, tau, mse in (("mackey_glass", 17, 0.01), ("mackey_glass", 30, 0.05), ("seattle_temps", 17, 0.3)):
            rows.append(raw_run(f"f-{series}{tau}-{seed}", "gru", task="forecast", seed=seed,
                                params={"task.series": series, "task.tau": tau},
                                metrics={"test/mse": mse + 0.001 * seed}))
    raw = pd.DataFrame(rows).assign(**{"tags.code_hash": "abcd1234abcd1234"})
    runs = report.tidy(raw)
    assert sorted(runs["cell"].unique(), key=report.cell_order) == [
        "rnn", "lstm (forget_bias=0)", "lstm (forget_bias=1)", "gru"]
    assert set(runs.loc[runs["task"] != "char_lm", "task"]) == {
        "forecast (series=mackey_glass, tau=17)", "forecast (series=mackey_glass, tau=30)",
        "forecast (series=seattle_temps)"}
    info = {"char_lm": report.TaskInfo("char_lm", "test/bpc", "min"),
            "forecast": report.TaskInfo("forecast", "test/mse", "min")}
    assert report.task_info("forecast (series=seattle_temps)").metric == "test/mse"  # looked up by its base
    summary = report.summarise(runs, lambda t: info[report.base(t)])
    assert len(summary) == 4 + 3 and set(summary["n"]) == {3}
    paired = report.paired_table(runs, "char_lm", lambda t: info[report.base(t)])
    assert "lstm (forget_bias=0) - lstm (forget_bias=1)" in paired
    assert "| rnn - lstm (forget_bias=0) | -0.1 [" not in paired and "| rnn - lstm (forget_bias=0) | 0.1 [" in paired
    ctx = report.Context("exp", "sqlite:///x.db", runs, summary, report.throughput(runs, pd.DataFrame()), {})
    page = report.render(ctx, lambda t: info[report.base(t)])
    assert "- **code hash**: `abcd1234abcd1234` for every run" in page
    assert "### forecast (series=seattle_temps): `test/mse`" in page
    assert "Loss by position" not in page, "a task's own figure is not announced without its data"
    # colours: two arms of one cell never share one; the first keeps the cell's own
    report_figures.assign_colors(runs["cell"])
    assert [report_figures.color(f"lstm (forget_bias={b})") for b in (0, 1)] == ["tab:blue", "tab:cyan"]


def test_runs_of_different_code_are_flagged_in_the_header(hand_made):
    raw = hand_made.assign(**{"tags.code_hash": ["h1"] * 5 + ["h2"] * (len(hand_made) - 5)})
    runs, _ = report.select_runs(report.tidy(raw))
    ctx = report.Context("exp", "sqlite:///x.db", runs, report.summarise(runs, fake_info),
                         report.throughput(runs, pd.DataFrame()), {})
    line = next(x for x in report.header(ctx).splitlines() if x.startswith("- **code hash**"))
    assert "`h1`" in line and "`h2`" in line and "did not all run the same code" in line


def test_a_panel_title_too_long_for_its_panel_breaks_after_what_the_panel_is():
    """Three panels a row at 4 inches each: the forecast study's titles ran into each other."""
    from rnnlab import figures
    from rnnlab.report.figures import _title

    fig, axes = figures.pyplot().subplots(1, 3, figsize=(12, 3))
    _title(axes[0], "forecast (series=mackey_glass, tau=17): rnn (step 800)")
    _title(axes[1], "adding: rnn (step 5)")
    assert axes[0].get_title() == "forecast (series=mackey_glass, tau=17):\nrnn (step 800)"
    assert axes[1].get_title() == "adding: rnn (step 5)"
    figures.pyplot().close(fig)


def test_task_figures_loss_by_position_and_best_forecasts(tmp_path, drawn):
    """char_lm's loss at each window position, averaged over seeds per cell and window; the
    forecast of the best run of each cell (lowest test MSE at any length and seed)."""
    rows = [raw_run(f"c{cell}{T}{s}", cell, task="char_lm", seq_len=T, seed=s, metrics={"test/bpc": 2.5})
            for cell in ("rnn", "lstm") for T in (10, 20) for s in (0, 1)]
    rows += [raw_run(f"f{cell}{s}", cell, task="forecast", seq_len=25, seed=s, metrics={"test/mse": m})
             for cell, s, m in (("rnn", 0, 0.5), ("rnn", 1, 0.2), ("gru", 0, 0.1), ("gru", 1, 0.3))]
    runs = report.tidy(pd.DataFrame(rows))
    best = report.best_runs(runs[runs["task"] == "forecast"], lambda t: report.TaskInfo(t, "test/mse", "min"))
    assert best["run_id"].tolist() == ["frnn1", "fgru0"]
    curves = pd.DataFrame([(rid, p, 4.0 - 0.05 * p) for rid, T in zip(runs["run_id"], runs["seq_len"])
                           if rid.startswith("c") for p in range(1, T + 1)], columns=["run_id", "position", "bpc"])
    preds = pd.DataFrame([(rid, i, np.sin(i / 5), np.sin(i / 5) + 0.1, np.sin((i + 1) / 5), np.sin((i + 1) / 5))
                          for rid in best["run_id"] for i in range(100)],
                         columns=["run_id", "index", "actual_t+1", "predicted_t+1", "actual_t+2", "predicted_t+2"])
    report_figures.plot_loss_by_position(runs, curves, tmp_path / "pos.png")
    report_figures.plot_forecasts(best, preds, tmp_path / "fc.png")
    assert report_figures.plot_forecasts(best, preds.iloc[:0], tmp_path / "none.png") is None
    assert {p.name for p in tmp_path.glob("*.png")} == {"pos.png", "fc.png"}
    panels, legend = drawn["pos.png"]  # a panel per window, a line per cell (mean of its seeds)
    assert [(t, lines) for t, _, _, _, lines in panels] == [("char_lm: seq_len = 10", 2), ("char_lm: seq_len = 20", 2)]
    assert panels[0][2] == "test bits per character" and legend == ["rnn", "lstm", "clip 1.0"]
    assert panels[0][1] == "position in the window = characters of context (log scale)"  # as char_lm writes it
    panels, legend = drawn["fc.png"]  # each cell's best run: rnn seed 1, gru seed 0
    assert [t.splitlines()[1] for t, *_ in panels] == ["rnn, lookback seq_len=25, seed 1: test/mse 0.2",
                                                       "gru, lookback seq_len=25, seed 0: test/mse 0.1"]
    assert legend == ["actual", "rnn: predicted", "gru: predicted"]


def test_the_header_states_what_each_sweep_cost():
    t0 = pd.Timestamp("2026-12-01 10:00", tz="UTC")
    raw = pd.DataFrame({"run_id": ["p1", "p2", "job"], "tags.sweep": ["true", "true", None],
                        "tags.mlflow.runName": ["forecast", "forecast", "gru-forecast"],
                        "status": ["FINISHED", "RUNNING", "FINISHED"], "start_time": [t0] * 3,
                        "end_time": [t0 + pd.Timedelta(seconds=1530), pd.NaT, t0]})
    assert report.parent_texts(raw, ["p1", "p2", "job", "gone"]) == {
        "p1": "forecast, FINISHED, wall time 25.5 min", "p2": "forecast, still running"}


def test_each_arm_is_judged_against_every_baseline_the_task_logs():
    """Forecast logs persistence and seasonal-naive: a cell that beats the first but not the
    second is said to be worse than the seasonal baseline, not just better than "the baseline"."""
    rows = [raw_run(f"s{seed}", "gru", task="forecast", seq_len=25, seed=seed,
                    metrics={"test/mse": 0.008 + 0.001 * seed, "baseline/mse": 0.054, "baseline/seasonal_mse": 0.0004})
            for seed in range(5)]
    runs = report.tidy(pd.DataFrame(rows))
    info = lambda t: report.TaskInfo("forecast", "test/mse", "min")  # noqa: E731
    obs = "\n".join(report.observations(report.summarise(runs, info), runs, info))
    assert "baseline mse = 0.054, baseline seasonal_mse = 0.0004 on the test set" in obs
    assert "better than the baseline by 81.5% of it (established" in obs
    assert "worse than the seasonal baseline by 2400.0% of it (established" in obs


def test_the_regenerate_command_names_the_preset_and_the_folder():
    from pathlib import Path

    assert report.regenerate_command("forecast_sweep", None, Path("experiments/forecast")).startswith(
        "make report EXP=forecast   #")
    # a study's second part inherits the experiment: the preset that sets it is named
    assert report.regenerate_command("long_range_study", None, ROOT / "experiments/long_range").startswith(
        "make report EXP=long_range_study OUT=experiments/long_range   #")
    assert report.regenerate_command("adding", None) == "python src/report.py --experiment adding"


def test_a_task_nothing_solves_gets_a_sentence_not_a_table_of_zeros(hand_made):
    runs, _ = report.select_runs(report.tidy(hand_made))
    ctx = report.Context("exp", "sqlite:///x.db", runs, report.summarise(runs, fake_info),
                         report.throughput(runs, pd.DataFrame()), {})
    page = report.render(ctx, fake_info)
    assert "**sentiment: critical length**: no run reached val/skill 0.9 at any task.distance" in page
    assert "**sentiment: solved seeds and critical length**" not in page


def test_solved_is_judged_by_each_runs_own_threshold_and_the_page_states_it():
    """A sweep run with solve.threshold=0.5 is solved at skill 0.6 (no steps_to_solve: the
    test skill decides), and the page says 0.5, not the default; a run without the param
    (logged before it existed) is judged at 0.9."""
    rows = [raw_run(f"s{seed}", seed=seed, params={"solve.threshold": 0.5},
                    metrics={**adding(0.1), "test/skill": skill}) for seed, skill in ((0, 0.6), (1, 0.4))]
    rows.append(raw_run("old", seq_len=20, metrics={**adding(0.1), "test/skill": 0.6}))
    runs, _ = report.select_runs(report.tidy(pd.DataFrame(rows)))
    assert dict(zip(runs["run_id"], report.solved(runs))) == {"s0": True, "s1": False, "old": False}
    ctx = report.Context("exp", "sqlite:///x.db", runs, report.summarise(runs, fake_info),
                         report.throughput(runs, pd.DataFrame()), {})
    page = report.render(ctx, fake_info)
    assert "(a run is solved when its validation skill reached 0.5 or 0.9: `steps_to_solve`)" in page
    one = runs[runs["seq_len"] == 10]
    ctx = report.Context("exp", "sqlite:///x.db", one, report.summarise(one, fake_info),
                         report.throughput(one, pd.DataFrame()), {})
    assert "(a run is solved when its validation skill reached 0.5: `steps_to_solve`)" in report.render(ctx, fake_info)


def test_line_styles_tell_every_clip_and_size_arm_apart():
    """Where sizes vary the arm is "clip, size": each gets its own style, and unclipped stays dotted."""
    arms = ["1.0, hidden 64", "1.0, 20,000 params", "none, hidden 64", "none, 20,000 params"]
    styles = [report_figures.clip_style(a, arms) for a in arms]
    assert len({str(s) for s in styles}) == len(arms)
    assert styles[0] == "-" and styles[2] == ":"
    assert [report_figures.clip_style(c, ["none", "1.0"]) for c in ("1.0", "none")] == ["-", ":"]


def test_inside_the_cells_averages_each_cells_own_knobs_over_finished_seeds():
    """The gate column is the cell's own (a dash where the cell has none), the LRU's |λ| only for
    the LRU; horizons are whole steps, gates and moduli three decimals; a diverged seed is left out."""
    rows = []
    for seed in range(2):
        rows.append(raw_run(f"l{seed}", "lstm", seed=seed, metrics={
            "test/mse": 0.1, "grad_flow/horizon": 8.0 + seed, "gates/forget_mean": 0.6 + 0.1 * seed}))
        rows.append(raw_run(f"u{seed}", "lru", seed=seed, metrics={
            "test/mse": 0.1, "grad_flow/horizon": 9.0, "lru/abs_lambda_median": 0.95 + 0.01 * seed}))
    rows.append(raw_run("l-div", "lstm", seed=2, status="FAILED", diverged=True,
                        metrics={"grad_flow/horizon": 0.0, "gates/forget_mean": 0.0}))
    table = report.inside_table(report.tidy(pd.DataFrame(rows)), "adding").splitlines()
    cells = lambda row: [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]  # noqa: E731  (\| is a pipe in a cell)
    assert cells(table[0]) == ["cell", "clip", "seq_len", "n", "input-gradient horizon", "forget gate (mean)",
                               r"\|λ\| median"]
    body = [cells(r) for r in table[2:]]
    assert body == [["lstm", "1.0", "10", "2", "8", "0.650", "—"], ["lru", "1.0", "10", "2", "9", "—", "0.955"]]
    assert report.inside_table(report.tidy(pd.DataFrame(rows)), "copy") is None


def test_the_best_mean_is_not_called_established_against_a_cell_better_on_the_shared_seeds():
    """gru has 7 seeds (mean 0.27), lstm 5 (mean 0.28) and lstm is lower on every seed both ran:
    gru has the best mean, but the paired test, on the shared seeds, says lstm is better. The
    sentence must follow the test, not the mean (it named gru the winner before)."""
    lstm = [0.278, 0.280, 0.282, 0.279, 0.281]
    gru = [v + d for v, d in zip(lstm, [0.010, 0.009, 0.011, 0.010, 0.012])] + [0.219, 0.219]
    rows = [raw_run(f"l{s}", "lstm", seed=s, metrics={"test/mse": v}) for s, v in enumerate(lstm)]
    rows += [raw_run(f"g{s}", "gru", seed=s, metrics={"test/mse": v}) for s, v in enumerate(gru)]
    runs = report.tidy(pd.DataFrame(rows))
    summary = report.summarise(runs, fake_info)
    assert summary.set_index("cell")["mean"].to_dict() == pytest.approx({"gru": 0.27, "lstm": 0.28}, abs=1e-4)
    paired = report.paired_table(runs, "adding", fake_info).splitlines()[2]
    assert "lstm - gru" in paired and "lstm better (established)" in paired
    obs = "\n".join(report.observations(summary, runs, fake_info))
    best = next(line for line in obs.splitlines() if "lowest mean test/mse" in line)
    assert best.startswith("  - lowest mean test/mse with clip 1.0: gru (0.27);"), best
    assert "established against" not in best.replace("worse on the seeds both finished, established", "")
    assert "but worse on the seeds both finished, established, than lstm (difference 0.0104" in best
