"""Every committed study can be re-checked: a re-issued report regenerates from the runs
committed beside it (``experiments/<study>/data/``) to the same page, and a report not yet
re-issued says so in its first line. A study added with data is checked here with no list to
edit."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest

from conftest import ROOT

OLD_RULE = "> **Old rule: not yet re-issued.**"
REPORTS = sorted(p.parent for p in (ROOT / "experiments").glob("*/REPORT.md"))


def complete(study) -> bool:
    """The study's runs are all in its data (a snapshot of a study still running is not)."""
    meta = study / "data" / "study.json"
    return (study / "data" / "runs.parquet").is_file() and json.loads(meta.read_text()).get("complete", True)


WITH_DATA = [s for s in REPORTS if complete(s)]


def page_lines(text: str) -> list[str]:
    """A report's lines but the one that says when it was generated."""
    return [line for line in text.splitlines() if not line.startswith("Generated ")]


def test_every_report_is_reissued_with_its_data_or_says_it_is_not():
    assert REPORTS, "no committed reports found"
    for study in REPORTS:
        text = (study / "REPORT.md").read_text()
        has_data = study in WITH_DATA
        assert has_data != text.startswith(OLD_RULE), (
            f"{study.name}: " + ('data, but the old-rule notice' if has_data else 'no data, no old-rule notice'))


def test_committed_data_names_no_machine_path():
    """A study's data is read on other machines: no string in it names this one's folders
    (the export drops artifact URIs and checkpoint folders, and shortens the interpreter)."""
    import pandas as pd

    for table in sorted((ROOT / "experiments").glob("*/data/*.parquet")):
        frame = pd.read_parquet(table)
        for column in frame.select_dtypes(include="object").columns:
            text = frame[column].dropna().astype(str)
            hits = text[text.str.contains(r"/(?:work|tmp|root|home)/", regex=True)]
            assert hits.empty, f"{table.relative_to(ROOT)}, {column}: {hits.iloc[0][:120]}"


def test_every_trial_names_a_run_of_its_study():
    """A tuning's trials name their runs (``run_id``, one per tuning seed) by the ids in the
    study's own data, whatever machines it ran on (a store loaded from a snapshot gives its runs
    new ids; rnnlab.studies maps the trials' on load)."""
    import pandas as pd

    for table in sorted((ROOT / "experiments").glob("*/data/trials.parquet")):
        ids = set(pd.read_parquet(table.with_name("runs.parquet"), columns=["run_id"])["run_id"])
        for number, attrs in pd.read_parquet(table, columns=["number", "user_attrs"]).itertuples(index=False):
            named = json.loads(attrs).get("run_id", [])
            for run_id in named if isinstance(named, list) else [named]:
                assert run_id in ids, f"{table.relative_to(ROOT)}: trial {number} names run {run_id}, not in the data"


def test_the_export_shortens_an_absolute_interpreter():
    import pandas as pd

    from rnnlab.report.source import public

    runs = pd.DataFrame({"artifact_uri": ["file:///x"], "tags.command": [
        "/srv/me/rnnlab/.venv/bin/python src/train.py cell=gru"]})
    assert public(runs).to_dict("list") == {"tags.command": [".venv/bin/python src/train.py cell=gru"]}
    runs["tags.command"] = ["/usr/bin/python3.11 src/train.py"]
    assert public(runs)["tags.command"].tolist() == ["python3.11 src/train.py"]
    runs["tags.command"] = ["python src/train.py hydra.run.dir=/srv/x/run3 -m task.corpus=/data/a/x.txt,/data/b/y.txt "
                            "tracking.uri=sqlite:////srv/me/mlflow.db 'task.corpus=[/srv/a/x.txt]' "
                            "--config-dir /srv/conf metric=val/bpc seed=2"]
    assert public(runs)["tags.command"].tolist() == [
        "python src/train.py hydra.run.dir=…/run3 -m task.corpus=…/x.txt,…/y.txt tracking.uri=sqlite:///…/mlflow.db "
        "'task.corpus=[…/x.txt]' --config-dir …/conf metric=val/bpc seed=2"]
    runs = pd.DataFrame({"params.task.corpus": ["/data/me/plays.txt", "default"], "params.metric": ["val/bpc", "a/b"],
                         "params.tune.storage": ["sqlite:////srv/x/optuna.db"] * 2})
    assert public(runs).to_dict("list") == {"params.task.corpus": ["…/plays.txt", "default"],
                                            "params.metric": ["val/bpc", "a/b"],
                                            "params.tune.storage": ["sqlite:///optuna.db"] * 2}


@pytest.mark.slow
@pytest.mark.parametrize("study", WITH_DATA, ids=[s.name for s in WITH_DATA])
def test_a_committed_report_regenerates_from_its_data(study, tmp_path):
    cli = importlib.import_module("report")  # src/report.py
    out = tmp_path / study.name
    out.mkdir()
    shutil.copy(study / "REPORT.md", out / "REPORT.md")  # its discussion is kept, as in place
    assert cli.main(["--from", str(study), "--out", str(out)]) == 0
    committed, regenerated = (p.read_text() for p in (study / "REPORT.md", out / "REPORT.md"))
    diff = [(a, b) for a, b in zip(page_lines(committed), page_lines(regenerated)) if a != b]
    assert page_lines(committed) == page_lines(regenerated), (
        f"{study.name}: the page from its data differs from the committed one, first at {diff[:1]}; "
        f"rewrite it with: python src/report.py --from experiments/{study.name}")


# The benchmark's committed output (make bench; its GPU runs on a lent card): results.md is
# written from results.json alone, so each committed pair is checked as a study's report is.
BENCH_RESULTS = sorted(p.parent for p in (ROOT / "experiments" / "bench").rglob("results.json"))


@pytest.mark.parametrize("folder", BENCH_RESULTS, ids=[str(p.relative_to(ROOT / "experiments")) for p in BENCH_RESULTS])
def test_committed_bench_results_are_what_their_json_renders(folder):
    """The committed pair agrees, the warnings its targets raise included: a change to the
    rendering or to a target that the committed numbers no longer match shows here."""
    from rnnlab import bench

    res = json.loads((folder / "results.json").read_text())
    assert bench.check_targets(res) == res["warnings"]
    assert bench.to_markdown(res) == (folder / "results.md").read_text()


def test_the_committed_gpu_scans_name_their_card_and_ran_at_the_current_settings():
    """docs/benchmark.md quotes the GPU scans at Feng et al.'s setting (batch 64, up to 4096
    steps): the committed numbers must name the card they ran on, be measured at the bench's
    settings (a partial run, at fewer lengths), for cells that train by a parallel scan, and
    one of them must reach the longest length."""
    from rnnlab.bench.settings import Settings
    from rnnlab.cells import SPECS

    gpu_runs = [f for f in BENCH_RESULTS
                if json.loads((f / "results.json").read_text()).get("gpu", {}).get("available")]
    assert gpu_runs, "no committed GPU results"
    s = Settings()
    lengths = set()
    for folder in gpu_runs:
        res = json.loads((folder / "results.json").read_text())
        assert res["machine"]["cuda"] == res["gpu"]["device"] and res["gpu"]["device"].startswith("NVIDIA"), folder
        scan = res["gpu"]["scan"]
        assert {r["seq_len"] for r in scan} <= set(s.gpu_scan_seq_lens), folder
        assert {r["hidden"] for r in scan} <= set(s.gpu_scan_hiddens) and {r["batch"] for r in scan} == {
            s.gpu_scan_batch}, folder
        assert {r["cell"] for r in scan} <= {n for n, spec in SPECS.items() if spec.linear}, folder
        lengths |= {r["seq_len"] for r in scan}
    assert max(s.gpu_scan_seq_lens) in lengths
