"""A tuned page of several problems (issue 41, the recall study): tunings of several tasks, and
of one task at several settings, written to one experiment. Arms compare only within their
problem (a task with its settings), at each length and width; the page gives each problem a
section and holds every comparison in one Holm family; Zoology's figure draws the test metric
against the state size. End to end: two real tiny tunings (MQAR at two widths, selective
copying) into one store, the page from the store, exported, and regenerated from its data."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import scipy.stats as sps

from conftest import ROOT, Store, holm, table_rows

sys.path.insert(0, str(ROOT / "src"))
import report as cli  # noqa: E402

EXPERIMENT = "recall_study"


def arm(cell, T, task, settings, width="64", **kw):
    from rnnlab.report.tuning import ArmResult

    return ArmResult(cell=cell, seq_len=T, study=f"s: {task} {cell} {width} {T} {settings}", parent_id=cell,
                     main_metric="val/acc", mode="max", storage="", space={}, task=task,
                     task_settings=dict(settings), overrides={"cell": cell, "cell.hidden_size": width}, **kw)


def test_arms_group_into_problems_by_task_and_settings_and_compare_only_within_them():
    """MQAR at 4 pairs (two widths) and at 8, selective copying at two lengths (one problem: a
    length is compared at, not apart), an arm with no run yet joining its task's problem: each
    problem named by what tells it from its task's others, arms ordered by length, width, cell.
    How a problem was measured (its test and validation sizes, the longer lengths it is also
    tested at) is not what was trained: arms that differ only in that are one problem, and its
    name does not carry it."""
    from rnnlab import stats
    from rnnlab.report.store import ReportError
    from rnnlab.report.tuning import cells_table, problems

    k4 = {"task.num_kv_pairs": "4", "task.vocab_size": "256", "task.test_seq_len": "[]", "task.test_size": "3000"}
    k8 = {"task.num_kv_pairs": "8", "task.vocab_size": "256", "task.test_seq_len": "[256]", "task.test_size": "3000"}
    k4_longer = {**k4, "task.test_seq_len": "[128]", "task.test_size": "1000", "task.val_size": "500"}
    copy = {"task.n_copy": "16"}
    good, bad = [0.9, 0.92, 0.91], [0.3, 0.32, 0.35]
    seeds = dict.fromkeys
    arms = [arm("attention", 64, "mqar", k4, "128", tuned=dict(zip((1, 2, 3), good))),
            arm("gru", 64, "mqar", k4_longer, "128", tuned=dict(zip((1, 2, 3), bad))),
            arm("gru", 64, "mqar", k4, "64", tuned=dict(zip((1, 2, 3), bad))),
            arm("attention", 64, "mqar", k4_longer, "64", tuned=dict(zip((1, 2, 3), good))),
            arm("gru", 128, "mqar", k8, tuned=seeds((1, 2, 3), 0.1)),
            arm("gru", 128, "selective_copy", copy), arm("gru", 64, "selective_copy", copy),
            arm("attention", 64, "selective_copy", {})]
    found = problems.group(arms)
    assert [(p.name, p.slug) for p in found] == [
        ("mqar (task.num_kv_pairs=4)", "mqar_1"), ("mqar (task.num_kv_pairs=8)", "mqar_2"),
        ("selective_copy", "selective_copy")]
    assert found[0].settings == {"task.num_kv_pairs": "4", "task.vocab_size": "256"}  # what was trained
    assert [a.label for a in found[0].arms] == [
        "gru cell.hidden_size=64 T=64", "attention cell.hidden_size=64 T=64",
        "gru cell.hidden_size=128 T=64", "attention cell.hidden_size=128 T=64"]
    assert [a.label for a in found[1].arms] == ["gru T=128"]  # one width: nothing to tell apart
    assert [a.label for a in found[2].arms] == ["gru T=64", "attention T=64", "gru T=128"]
    # cells compare at each width, never across widths or problems; each pair its own comparison
    family = stats.Family()
    table = cells_table(found[0].arms, family)
    rows = [line for line in table.splitlines() if line.startswith("| 64 |")]
    assert [r.split(" | ")[1:3] for r in rows] == [["64", "gru − attention"], ["128", "gru − attention"]]
    assert cells_table(found[1].arms, family).startswith("One cell at each length")
    cells_table(found[2].arms, family)  # no seeds: nothing tested, but nothing shared with mqar's keys
    assert family.size == 2
    # arms of one task and settings selected on two metrics do not compare: one line, naming them
    arms[1].main_metric = "val/loss"
    with pytest.raises(ReportError, match=r"^the arms of task mqar were selected on different metrics "
                                          r"\(val/acc \(max\), val/loss \(max\)\): only arms of one metric compare$"):
        problems.group(arms)


def test_arms_tested_at_longer_lengths_get_a_row_each_at_every_length_beside_its_baseline():
    """The tuned re-seed runs at the trained length and each longer one: mean [95% t-interval],
    the trivial baseline there, the seeds; an arm not tested longer has no row, a length an arm
    was not tested at a dash, and a page with none tested longer no table."""
    from rnnlab.report.tuning import longer_table, problems

    k4 = {"task.num_kv_pairs": "4"}
    gru = arm("gru", 64, "mqar", k4, tuned={1: 0.5, 2: 0.7}, baseline=0.25,
              longer={128: {1: 0.3, 2: 0.5}, 256: {1: 0.2, 2: math.nan}}, longer_baseline={128: 0.25, 256: 0.25})
    attention = arm("attention", 64, "mqar", k4, tuned={1: 1.0, 2: 1.0}, baseline=0.25,
                    longer={128: {1: 0.9, 2: 0.95}}, longer_baseline={128: 0.25})
    lstm = arm("lstm", 64, "mqar", k4, tuned={1: 0.4, 2: 0.4}, baseline=0.25)
    problems.group([gru, attention, lstm])
    table = longer_table([gru, attention, lstm]) or ""
    assert table.splitlines()[0] == ("| cell | trained T | at T | baseline at T | at 128 | baseline at 128 | at 256 "
                                     "| baseline at 256 | seeds |")
    g, a = (r for r in table_rows(table, "gru")), table_rows(table, "attention")[0]
    assert next(g) == ["gru", "64", "0.6 [-0.671, 1.87]", "0.25", "0.4 [-0.871, 1.67]", "0.25", "0.2 (1 diverged)",
                       "0.25", "2"]
    assert a[4:] == ["0.925 [0.607, 1.24]", "0.25", "—", "—", "2"] and not table_rows(table, "lstm")
    assert longer_table([lstm]) is None


def test_arms_without_a_default_run_are_tested_against_the_trivial_baseline():
    """The recall presets tune over a grid that holds the default and run no default arm: each
    arm is then tested against its task's trivial baseline (one-sample t-test of its seeds minus
    the baseline), and the page has no default columns, rows or ranking to show empty."""
    from rnnlab.report.tuning import cells_table, problems, solved_table, tuned_table

    k4 = {"task.num_kv_pairs": "4"}
    gru = arm("gru", 64, "mqar", k4, tuned={1: 0.26, 2: 0.31, 3: 0.24, 4: 0.27}, baseline=0.25,
              tuned_solved=dict.fromkeys((1, 2, 3, 4), False), stops_once_solved=True)
    attention = arm("attention", 64, "mqar", k4, tuned={1: 0.97, 2: 0.99, 3: 0.98, 4: 1.0}, baseline=0.25,
                    tuned_solved=dict.fromkeys((1, 2, 3, 4), True), stops_once_solved=True)
    arms = [gru, attention]
    problems.group(arms)
    table = tuned_table(arms)
    header, _, g, a = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    assert header[5:8] == ["tuned: test/acc", "baseline", "tuned − baseline"]
    want = [sps.ttest_1samp([v - 0.25 for v in x.tuned.values()], 0.0).pvalue for x in arms]
    assert [float(g[-3]), 0.0005 if a[-3] == "< 0.001" else float(a[-3])] == pytest.approx(holm(want), abs=1e-3)
    assert g[-2] == "not established" and a[-2] == "tuned better (established)"
    assert g[7].startswith("0.02 [") and "default" not in table
    cells = cells_table(arms)
    assert cells.splitlines()[0] == "| T | difference | tuned | verdict, tuned |"
    solved = solved_table(arms) or ""
    assert "solved, default" not in solved and "- gru: critical length below the lengths run tuned" in solved
    assert "- attention: critical length 64 tuned" in solved


def test_the_tuned_page_sets_the_tasks_published_numbers_beside_its_arms():
    """Each published entry of the arms' task and metric (Zoology's Figure 2 points, seq_icl's
    table for MQAR) is a table: every cell they report and every tuned arm, theirs beside ours
    with its interval, under the entry's setting; a cell only one side has shows a dash."""
    from rnnlab.literature import ZOOLOGY, published
    from rnnlab.report.tuning import literature_tables, problems

    k4 = {"task.num_kv_pairs": "4"}
    gru = arm("gru", 64, "mqar", k4, tuned={1: 0.25, 2: 0.27, 3: 0.26})
    attention = arm("attention", 64, "mqar", k4, tuned={1: 1.0, 2: 0.99, 3: 1.0})
    problems.group([gru, attention])
    tables = literature_tables([gru, attention])
    entries = [e for e in published("mqar") if e.metric == "test/acc"]
    assert len(tables) == len(entries) >= 2
    first = tables[0]
    assert first.startswith(f"**{ZOOLOGY}, Figure 2**: seq_len 64, 4 KV pairs") and "their T = 64" in first
    assert table_rows(first, "attention") == [["attention", "1", "64", "0.9967 [0.982, 1.01]"]]
    assert table_rows(first, "gru") == [["gru", "—", "64", "0.26 [0.235, 0.285]"]]
    seq_icl = next(t for t in tables if "seq_icl" in t)
    assert table_rows(seq_icl, "lstm") == [["lstm", "0.362", "—", "—"]]  # theirs only: we ran no LSTM here
    assert literature_tables([arm("gru", 64, "no_such_task", {}, tuned={1: 0.5})]) == []


# --- end to end: two tunings of the recall study's presets, tiny, into one store ---------------

TINY = ["trainer.max_steps=20", "trainer.val_check_interval=10", "task.test_size=200", "task.val_size=100",
        "tune.reseeds=[1,2]", "threads=1"]


@pytest.fixture(scope="module")
def recall(tmp_path_factory, migrated_db) -> Store:
    store = Store(tmp_path_factory.mktemp("recall"), template=migrated_db)
    store.train("+tune=recall", "hydra.sweeper.params={cell:'gru,attention',cell.hidden_size:'8,16'}",
                "task.train_size=1280", "task.test_seq_len=[128]", f"hydra.sweep.dir={store.dir / 'mqar'}", *TINY,
                tiny=False, timeout=900)
    store.train("+tune=recall_copy", "hydra.sweeper.params={cell:'gru,attention',seq_len:'64',cell.hidden_size:'16'}",
                f"hydra.sweep.dir={store.dir / 'copy'}", *TINY, tiny=False, timeout=900)
    return store


def sections(text: str, level: str = "##") -> dict[str, str]:
    return {part.split("\n", 1)[0]: part for part in text.split(f"\n{level} ")[1:]}


def page_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("Generated ")]


@pytest.mark.slow
def test_a_recall_study_of_two_tasks_gets_a_section_per_problem_one_family_and_the_state_size_figure(
        recall, tmp_path, drawn, capsys):
    out = tmp_path / EXPERIMENT
    assert cli.main(["--experiment", EXPERIMENT, "--tracking-uri", recall.uri, "--out", str(out)]) == 0, \
        capsys.readouterr().err
    text = (out / "REPORT.md").read_text()
    parts = sections(text)
    mqar, copy = parts["mqar: `test/acc`, higher is better"], parts["selective_copy: `test/acc`, higher is better"]
    assert list(parts) == ["Test metric against state size", "mqar: `test/acc`, higher is better",
                           "selective_copy: `test/acc`, higher is better"]
    assert "- **problems**: 2, a section each: mqar (4 arms); selective_copy (2 arms)." in text

    # each arm's tuned mean is its re-seed runs' test/acc, from the store
    runs = recall.runs(EXPERIMENT)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("tune_study")}

    def reseeds(task, cell, width, metric="test/acc"):
        return {int(r.data.tags["seed"]): r.data.metrics[metric] for r in runs
                if r.data.tags.get("tune_role") == "reseed" and r.data.tags["cell"] == cell
                and r.data.params["cell.hidden_size"] == width
                and parents[r.data.tags["mlflow.parentRunId"]].data.tags["task"] == task}

    tuned = table_rows(sections(mqar, "###")["Tuned arms"], "gru")
    assert [r[:3] for r in tuned] == [["gru", "64", "8"], ["gru", "64", "16"]]
    assert float(tuned[0][6].split(" [")[0]) == pytest.approx(np.mean(list(reseeds("mqar", "gru", "8").values())),
                                                             rel=1e-3, abs=1e-6)
    copy_tuned = sections(copy, "###")["Tuned arms"]
    assert [r[:2] for r in table_rows(copy_tuned, "gru")] == [["gru", "64"]] and "cell.hidden_size" not in copy_tuned

    # the cells compared within each problem and width only, and each arm against its trivial
    # baseline (no default arm was run: the page has no default columns): one Holm family
    pairs = [("mqar", "8"), ("mqar", "16"), ("selective_copy", "16")]
    raw = []
    for task, width in pairs:
        g, a = reseeds(task, "gru", width), reseeds(task, "attention", width)
        p = sps.ttest_rel([g[s] for s in (1, 2)], [a[s] for s in (1, 2)]).pvalue
        raw.append(1.0 if math.isnan(p) else p)
    arms = [(t, c, w) for t, w in pairs for c in ("gru", "attention")]
    for task, cell, width in arms:
        acc, base = reseeds(task, cell, width), reseeds(task, cell, width, "baseline/acc")
        p = sps.ttest_1samp([acc[s] - np.mean(list(base.values())) for s in (1, 2)], 0.0).pvalue
        raw.append(1.0 if math.isnan(p) else p)
    adjusted = holm(raw)
    assert "default" not in mqar.split("### Expected best")[0] and "none yet" not in text
    compared = "The cells compared, tuned"
    shown = [*table_rows(sections(mqar, "###")[compared], "64"), *table_rows(sections(copy, "###")[compared], "64")]
    assert [r[:-2] for r in shown] == [["64", "8", "gru − attention"], ["64", "16", "gru − attention"],
                                       ["64", "gru − attention"]]

    def p_of(verdict):
        p = verdict.split("p = ")[1].split(";")[0].rstrip(")") if "p = " in verdict else "1"
        return 0.0005 if p == "< 0.001" else float(p)

    for row, want in zip(shown, adjusted):
        assert p_of(row[-1]) == pytest.approx(want, abs=1e-3)
        assert row[-1].startswith("not established") == (want >= 0.05)
    header = table_rows(sections(mqar, "###")["Tuned arms"], "cell")[0]
    assert header[6:9] == ["tuned: test/acc", "baseline", "tuned − baseline"]
    tested = {(task, r[0], r[2] if task == "mqar" else "16"): r
              for task, sec in (("mqar", mqar), ("selective_copy", copy))
              for cell in ("gru", "attention") for r in table_rows(sections(sec, "###")["Tuned arms"], cell)}
    for arm_key, want in zip(arms, adjusted[3:]):
        assert p_of(f"p = {tested[arm_key][-3]}") == pytest.approx(want, abs=1e-3), arm_key
    assert "this page makes 9 comparisons" in text and "One Holm family for the whole page" in text

    # MQAR's runs, trained at 64, were also tested at 128: its section shows them beside the
    # baseline there (descriptive: the page's family is the three comparisons above); copy's were not
    longer = "At longer lengths than trained"
    assert longer in sections(mqar, "###") and longer not in sections(copy, "###")
    table = sections(mqar, "###")[longer]
    assert "| cell | cell.hidden_size | trained T | at T | baseline at T | at 128 | baseline at 128 | seeds |" in table
    shown = table_rows(table, "gru") + table_rows(table, "attention")
    assert [r[:3] for r in shown] == [["gru", "8", "64"], ["gru", "16", "64"], ["attention", "8", "64"],
                                      ["attention", "16", "64"]]
    for cell, width, _T, at_T, base_T, at_128, base_128, n in shown:
        mean = np.mean(list(reseeds("mqar", cell, width, "test/L128/acc").values()))
        assert float(at_128.split(" [")[0]) == pytest.approx(mean, rel=1e-3, abs=1e-6)
        assert float(at_T.split(" [")[0]) == pytest.approx(np.mean(list(reseeds("mqar", cell, width).values())),
                                                           rel=1e-3, abs=1e-6)
        assert float(base_128) == pytest.approx(np.mean(list(reseeds("mqar", cell, width, "baseline/L128/acc")
                                                             .values())), rel=1e-3, abs=1e-6)
        assert float(base_T) == pytest.approx(0.25) and n == "2"  # MQAR's baseline, 1/K of 4 pairs; seeds 1, 2

    # Zoology's figure: one panel (MQAR, its cells at two widths), attention legended as the ceiling
    panels, legend = drawn["metric_vs_state_size.png"]
    assert [p[0] for p in panels] == ["mqar, seq_len=64: test/acc"]
    assert "attention (the ceiling: its state is its context)" in legend and "gru" in legend
    assert (out / "metric_vs_state_size.png").is_file() and "![state size](metric_vs_state_size.png)" in text
    for name in ("expected_best_mqar.png", "importance_mqar.png", "expected_best_selective_copy.png"):
        assert (out / name).is_file() and f"({name})" in text

    # exported beside its data, and regenerated from the data alone: the same page
    exported = tmp_path / "experiments" / EXPERIMENT
    args = ["--experiment", EXPERIMENT, "--tracking-uri", recall.uri, "--out", str(exported), "--export"]
    assert cli.main(args) == 0, capsys.readouterr().err
    import pandas as pd
    saved = pd.read_parquet(exported / "data" / "runs.parquet")
    assert {"metrics.test/L128/acc", "metrics.baseline/L128/acc"} <= set(saved.columns)
    assert cli.main(["--from", str(exported), "--out", str(tmp_path / "again")]) == 0
    again = (tmp_path / "again" / "REPORT.md").read_text()
    assert page_lines((exported / "REPORT.md").read_text()) == page_lines(again)
    assert sections(again) == sections(text)  # the page from the store, but for its header's data lines
    assert (tmp_path / "again" / "metric_vs_state_size.png").is_file()
