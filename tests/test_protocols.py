"""Tuning protocols compared (issue 37): one arm tuned twice through the real tuner, its trials
scored on one tuning seed and on two, each with its default arm; the two-seed study's page
compares them from the store, is exported with the link and regenerates from the data alone,
and what does not compare is refused with one line."""

from __future__ import annotations

import json
import math
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats as sps

from conftest import ROOT, Store, holm, table_rows

sys.path.insert(0, str(ROOT / "src"))
import report as cli  # noqa: E402

# A run ends at the first validation (every 10 steps of 40) at which its skill reaches 0.05, so
# that the steps a tuning trained may fall short of its runs' budget.
SETTINGS = ["trainer.max_steps=40", "solve.threshold=0.05", "solve.patience=1", "solve.early_stop=true"]
ARM = ["hydra.sweeper.params.cell=gru", "tune.trials=2", "tune.reseeds=[1,2]", *SETTINGS]
ONE, TWO = "tune_tiny", "tune_tiny_seeds"


def tune(store: Store, experiment: str, *overrides: str) -> None:
    store.train("+tune=tiny", f"hydra.sweep.dir={store.dir / experiment}", f"tracking.experiment={experiment}",
                f"tune.name={experiment}", *ARM, *overrides, tiny=False)


def defaults(store: Store, experiment: str) -> None:
    """The preset's untuned configuration on the re-seeds: a plain sweep into the experiment."""
    store.train("-m", "hydra/launcher=joblib", "task=adding", "cell=gru", "seq_len=10", "batch_size=16",
                "cell.hidden_size=8", "trainer.val_check_interval=10", "task.val_size=64", "task.test_size=64",
                "threads=1", "seed=1,2", *SETTINGS, f"tracking.experiment={experiment}",
                f"hydra.sweep.dir={store.dir / ('defaults-' + experiment)}", tiny=False)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, migrated_db) -> Store:
    store = Store(tmp_path_factory.mktemp("protocols"), template=migrated_db)
    tune(store, ONE)
    tune(store, TWO, "tune.seed=[0,4]")
    for experiment in (ONE, TWO):
        defaults(store, experiment)
    return store


def section(text: str) -> str:
    return text.split("## Tuning protocols compared\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow
def test_the_page_compares_each_protocol_its_cost_and_verdicts(tuned, tmp_path, capsys):
    out = tmp_path / "page"
    args = ["--experiment", TWO, "--tracking-uri", tuned.uri, "--out", str(out), "--protocols", ONE]
    assert cli.main(args) == 0, capsys.readouterr().err
    text = (out / "REPORT.md").read_text()
    assert f"--experiment {TWO} --tracking-uri {tuned.uri} --protocols {ONE}@{tuned.uri}`" in text
    part = section(text)
    runs = tuned.runs()
    exp = {e.name: e.experiment_id for e in tuned.client.search_experiments()}

    def of(experiment, role):
        return [r for r in runs if r.info.experiment_id == exp[experiment] and r.data.tags.get("tune_role") == role]

    test = {e: {int(r.data.tags["seed"]): r.data.metrics["test/mse"] for r in of(e, "reseed")} for e in (ONE, TWO)}
    default = {int(r.data.tags["seed"]): r.data.metrics["test/mse"] for r in runs
               if r.info.experiment_id == exp[TWO] and "tune_role" not in r.data.tags and "seed" in r.data.tags}
    table = table_rows(part, "gru")
    assert [r[2] for r in table[:3]] == ["default", f"tuned on seed 0 (`{ONE}`)", f"tuned on seeds 0, 4 (`{TWO}`)"]
    for row, experiment, per_trial in ((table[1], ONE, 1), (table[2], TWO, 2)):
        _, _, _, best, solved, mean, n_runs, steps, wall = row
        trials = of(experiment, "trial")
        assert int(n_runs) == len(trials) == 2 * per_trial
        assert solved == f"{sum('steps_to_solve' in r.data.metrics for r in of(experiment, 'reseed'))}/2"
        # the steps each trial run trained: the step of its last logged metric, from the store
        trained = [tuned.history(r.info.run_id, "grad_norm/max")[-1][0] for r in trials]
        assert int(steps.replace(",", "")) == sum(trained)
        seconds = sum((r.info.end_time - r.info.start_time) / 1000 for r in trials)
        assert abs(float(wall.replace(",", "")) - seconds) <= 1
        assert float(mean.split(" [")[0]) == pytest.approx(np.mean(list(test[experiment].values())), rel=1e-3)
        assert best.startswith("optim.lr ")
    assert table[0][6:] == ["—", "—", "—"]
    assert "- gru: default " in part and "; tuned on seed 0 " in part and "; tuned on seeds 0, 4 " in part

    # the paired differences, each a paired t-test over seeds 1 and 2, Holm-adjusted across the
    # page: these three (the page's own tuned - default is the same comparison, counted once)
    diffs = {r[2]: r for r in table_rows(part.split("Paired differences", 1)[1], "gru")}
    assert list(diffs) == ["tuned on seeds 0, 4 − default", "tuned on seeds 0, 4 − tuned on seed 0",
                           "tuned on seed 0 − default"]
    seeds = [1, 2]
    pairs = [(test[TWO], default), (test[TWO], test[ONE]), (test[ONE], default)]
    # (both protocols may pick the same configuration: no difference at all, p = 1)
    raw = [sps.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue for a, b in pairs]
    adjusted = holm([1.0 if math.isnan(p) else p for p in raw])
    _, _, _, ci, n, p, verdict, _ = diffs["tuned on seed 0 − default"]
    d = [test[ONE][s] - default[s] for s in seeds]
    half = sps.t.ppf(0.975, 1) * np.std(d, ddof=1) / math.sqrt(2)
    mean, low, high = (float(v) for v in ci.replace("[", "").replace("]", "").replace(",", "").split())
    assert n == "2" and mean == pytest.approx(np.mean(d), rel=1e-3, abs=1e-6)
    assert (low, high) == pytest.approx((np.mean(d) - half, np.mean(d) + half), rel=5e-3, abs=5e-4)
    shown = 0.0005 if p == "< 0.001" else float(p)
    assert shown == pytest.approx(adjusted[2], abs=1e-3 if p != "< 0.001" else 5e-4)
    assert verdict.startswith("not established") == (adjusted[2] >= 0.05)
    assert "this page makes 3 comparisons" in text


@pytest.mark.slow
def test_an_exported_comparison_regenerates_from_the_data_alone(tuned, tmp_path, capsys):
    studies = tmp_path / "experiments"
    mine = studies / TWO
    base = ["--tracking-uri", tuned.uri, "--export"]
    # the sibling not exported yet: refused, naming what to do, nothing written
    assert cli.main(["--experiment", TWO, "--out", str(mine), "--protocols", ONE, *base]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--protocols {ONE}: no exported study of it in {studies}" in err
    assert not mine.exists()
    assert cli.main(["--experiment", ONE, "--out", str(studies / ONE), *base]) == 0
    assert cli.main(["--experiment", TWO, "--out", str(mine), "--protocols", ONE, *base]) == 0
    assert json.loads((mine / "data" / "study.json").read_text())["protocols"] == [ONE]
    capsys.readouterr()
    assert cli.main(["--from", str(mine), "--out", str(tmp_path / "again")]) == 0
    exported, again = ((p / "REPORT.md").read_text() for p in (mine, tmp_path / "again"))
    assert "## Tuning protocols compared" in exported
    assert page_lines(exported) == page_lines(again)
    # the study without its sibling beside it: one line naming the missing study
    alone = tmp_path / "elsewhere" / TWO
    shutil.copytree(mine, alone)
    assert cli.main(["--from", str(alone)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"compares protocols with '{ONE}': no tuning data in" in err


def page_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("Generated ")]


@pytest.mark.slow
def test_tunings_that_differ_in_more_than_their_scoring_are_refused(tuned, tmp_path, capsys):
    tune(tuned, "tune_tiny_short", "tune.seed=5", "trainer.max_steps=30", "tune.trials=1", "tune.reseeds=[]")
    out = tmp_path / "page"
    base = ["--experiment", TWO, "--tracking-uri", tuned.uri, "--out", str(out)]
    assert cli.main([*base, "--protocols", "tune_tiny_short"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'tune_tiny_short' was not tuned as 'tune_tiny_seeds' but for tune.seed" in err
    assert "trainer.max_steps is 30 there, 40 here" in err and "tune.trials is 1 there, 2 here" in err
    assert cli.main([*base, "--protocols", "tune_nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--protocols tune_nowhere: no tuning study in experiment 'tune_nowhere' of {tuned.uri}" in err
    assert f"(tuning experiments there: {ONE}, tune_tiny_short)" in err
    assert cli.main([*base, "--protocols", TWO]) == 2
    assert f"--protocols {TWO}: the page's own study" in capsys.readouterr().err
    assert not out.exists()


def arm(cell: str = "gru", seeds: str = "0", **fixed: str):
    from rnnlab.report.tuning import ArmResult

    return ArmResult(cell=cell, seq_len=200, study=f"s: cell={cell}", parent_id=cell, main_metric="val/mse",
                     mode="min", storage="", space={"optim.lr": "tag(log, interval(3e-4, 3e-2))"}, task="adding",
                     source=f"tune_{seeds}",
                     fixed={"trainer.max_steps": "1500", "tune.trials": "12", "tune.seed": seeds, **fixed})


def test_protocols_are_the_same_arms_tuned_alike_but_for_their_scoring():
    from rnnlab.report.store import ReportError
    from rnnlab.report.tuning.protocols import protocols

    found = protocols([arm(seeds="[0, 6, 7]")], [[arm(seeds="0")]])
    assert [p.name for p in found] == ["tuned on seed 0", "tuned on seeds 0, 6, 7"]  # fewest seeds first
    refused = r"'tune_0' tunes lstm T=200, gru T=200; 'tune_\[0, 6, 7\]' tunes gru T=200: protocols compare"
    with pytest.raises(ReportError, match=refused):
        protocols([arm(seeds="[0, 6, 7]")], [[arm(seeds="0"), arm("lstm", seeds="0")]])
    with pytest.raises(ReportError, match=r"batch_size is 64 there, None here \(only tune.seed may differ\)"):
        protocols([arm(seeds="[0, 6, 7]")], [[arm(seeds="0", batch_size="64")]])
    with pytest.raises(ReportError, match=r"both score trials on tune.seed 0: protocols to compare differ"):
        protocols([arm(seeds="0")], [[arm(seeds="0")]])


def run(reason: str, seconds: float = 60.0, resumed: int = 0, **metrics: float):
    params = {"trainer.max_steps": "1500", "solve.patience": "2", "task.batches_per_epoch": "100",
              "trainer.val_check_interval": "100"}
    tags = {"stop_reason": reason, "diverged_at_step": "41", **({"resume_count": str(resumed)} if resumed else {})}
    return SimpleNamespace(info=SimpleNamespace(start_time=1_000, end_time=1_000 + int(seconds * 1000)),
                           data=SimpleNamespace(tags=tags, params=params, metrics=metrics))


@pytest.mark.parametrize("reason, metrics, steps", [
    ("max_steps", {"epoch": 15.0}, 1500),
    ("diverged", {}, 42),
    ("solved", {"steps_to_solve": 300.0, "epoch": 4.0}, 400),  # solved twice in a row: stopped at once
    ("solved", {"steps_to_solve": 300.0, "epoch": 7.0}, 700),  # fell below after solving, went on
    ("killed", {}, None),
])
def test_the_steps_a_run_trained_follow_from_why_it_stopped(reason, metrics, steps):
    from rnnlab.report.tuning.compute import of_trials, steps_trained

    assert steps_trained(run(reason, **metrics)) == steps
    c = of_trials([run(reason, **metrics)])
    assert (c.runs, c.steps, c.unknown, c.seconds) == (1, steps or 0, int(steps is None), 60.0 if steps else 0.0)


def test_a_resumed_trial_run_counts_its_steps_at_the_arm_s_rate_not_the_time_it_stood_stopped():
    """A study spanning sessions: a run stopped for a day and resumed spans that day."""
    from rnnlab.report.tuning.compute import of_trials

    done = [run("max_steps", seconds=150.0, epoch=15.0), run("solved", seconds=50.0, steps_to_solve=300.0, epoch=4.0)]
    c = of_trials([*done, run("max_steps", seconds=86_400.0, resumed=1, epoch=15.0)])
    rate = (150.0 + 50.0) / (1500 + 400)  # seconds per step of the runs never stopped
    assert (c.runs, c.steps, c.estimated, c.unknown) == (3, 3400, 1, 0)
    assert c.seconds == pytest.approx(200.0 + 1500 * rate)
    alone = of_trials([run("max_steps", seconds=86_400.0, resumed=1, epoch=15.0)])
    assert alone.steps == 1500 and math.isnan(alone.seconds)  # no run to take a rate from: not a guess
    # on the page: the arm without a rate says so, and the protocol's total counts the others
    from rnnlab.report.tuning.protocols import Protocol, _seconds, _total

    timed, untimed = arm("gru"), arm("lstm")
    timed.compute, untimed.compute = c, alone
    assert _seconds(alone) == "— (1 resumed or untimed, no other run to take a rate from)"
    assert _seconds(c) == f"{c.seconds:,.0f} (1 estimated: resumed or untimed, at the others' rate)"
    assert _total(Protocol("tune_0", ["0"], {"gru": timed, "lstm": untimed})) == \
        f"4 trial runs, 4,900 steps, {c.seconds:,.0f} s in all (the seconds of 1 arm(s) unknown: see the table)"
