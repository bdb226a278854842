"""The comparison view a sweep writes for the MLflow UI: what it selects, shows and hides.
Whether the UI reads it (the format is the UI's own, not an API, read back from a view the
UI saved) is tested by opening it: tests/test_browser.py, the table's columns, its groups and
the charts in order. pyproject.toml pins the MLflow it was read from: check another there."""

from __future__ import annotations

import json

import pytest

from rnnlab import views


def comparison(**kw) -> views.Comparison:
    base = dict(key="rnnlab-p1", name="compare: sweep-adding cell=rnn,gru",
                search_filter="tags.`mlflow.parentRunId` = 'p1'", main_metric="val/mse",
                metric_keys=["baseline/mse", "grad_flow/horizon", "grad_norm/pre_clip", "perf/tokens_per_s",
                             "steps_to_solve", "test/mse", "test/skill", "train/loss", "val/mse", "val/skill"])
    return views.Comparison(**{**base, **kw})


def test_the_view_shows_the_comparison_and_hides_the_bookkeeping():
    st = views.state(comparison())
    assert st["searchFilter"] == "tags.`mlflow.parentRunId` = 'p1'"
    assert st["orderByKey"] == "metrics.`test/skill`" and st["orderByAsc"] is False
    assert st["selectedColumns"] == st["columnOrder"] == [
        "metrics.`test/skill`", "metrics.`test/mse`", "metrics.`baseline/mse`", "metrics.`steps_to_solve`",
        "params.`seq_len`", "params.`clip`", "tags.`stop_reason`"]
    assert st["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "cell"}]
    shown = [c for c in st["compareRunCharts"] if not c["deleted"]]
    assert [c.get("metricKey") or c["yaxis"]["key"] for c in shown] == [
        "test/skill", "val/mse", "grad_norm/pre_clip", "grad_flow/horizon"]
    assert shown[0]["type"] == "SCATTER" and shown[0]["xaxis"] == {"key": "seq_len", "type": "PARAM"}
    hidden = {c["metricKey"] for c in st["compareRunCharts"] if c["deleted"]}
    assert hidden == {"baseline/mse", "perf/tokens_per_s"}
    # lengths that vary: a group per (cell, length); no skill: ranked by the test metric, lower first
    st = views.state(comparison(arms=("seq_len",), metric_keys=["test/mse", "val/mse"]))
    assert [k["groupByData"] for k in st["groupBy"]["groupByKeys"]] == ["cell", "seq_len"]
    assert st["orderByKey"] == "metrics.`test/mse`" and st["orderByAsc"] is True


def test_the_tag_is_the_envelope_the_ui_writes_and_reads_back():
    value = views.encode("compare: x", views.state(comparison()), now_ms=1)
    envelope = json.loads(value)
    assert set(envelope) == {"name", "createdAt", "updatedAt", "state"} and isinstance(envelope["state"], str)
    assert envelope["state"].startswith("deflate;") and len(value) < 20_000  # an experiment tag's limit
    name, st = views.decode(value)
    assert name == "compare: x" and st == views.state(comparison())
    plain = json.dumps({"name": "p", "createdAt": 1, "state": json.dumps({"searchFilter": "x"})})
    assert views.decode(plain) == ("p", {"searchFilter": "x"})


@pytest.fixture
def client(tmp_path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_a_sweep_view_selects_its_children_and_makes_room_at_the_ui_limit(client):
    exp = client.create_experiment("e")
    parent = client.create_run(exp, tags={"sweep": "true"}).info.run_id
    for cell, length in [("rnn", 10), ("gru", 20)]:
        child = client.create_run(exp, tags={"mlflow.parentRunId": parent, "cell": cell, "seq_len": str(length),
                                             "main_metric": "val/mse"}).info.run_id
        client.log_metric(child, "test/mse", 0.1)
        client.log_metric(child, "sweep/x", 1.0)
    for i in range(views.MAX_VIEWS):  # a full experiment: the UI's own views, and rnnlab's oldest
        key = f"{views.OURS}old{i}" if i < 2 else f"ui{i}"
        client.set_experiment_tag(exp, views.TAG_PREFIX + key, views.encode(key, {}, now_ms=i))
    key = views.for_sweep(client, exp, parent, "sweep-adding")
    tags = client.get_experiment(exp).tags
    assert views.TAG_PREFIX + key in tags and views.TAG_PREFIX + "rnnlab-old0" not in tags
    assert sum(k.startswith(views.TAG_PREFIX) for k in tags) == views.MAX_VIEWS
    name, st = views.decode(tags[views.TAG_PREFIX + key])
    assert name == "compare: sweep-adding" and st["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent}'"
    assert len(client.search_runs([exp], st["searchFilter"])) == 2  # the filter MLflow runs: the jobs only
    assert [k["groupByData"] for k in st["groupBy"]["groupByKeys"]] == ["cell", "seq_len"]
    assert {c["metricKey"] for c in st["compareRunCharts"] if c["deleted"]} == {"sweep/x"}
    # written again (make report after the sweep): the same key, replaced, not added
    assert views.for_sweep(client, exp, parent, "sweep-adding") == key
    assert sum(k.startswith(views.TAG_PREFIX) for k in client.get_experiment(exp).tags) == views.MAX_VIEWS


def test_a_sweep_view_has_a_group_per_arm_of_what_the_sweep_varies(client):
    """The seeds of one arm average together and nothing else does: a sweep over clipping and a
    task's distance at one length groups by (cell, clip, distance), the distance as the param."""
    exp = client.create_experiment("e")
    grid = {"cell": "rnn,gru", "seq_len": "10", "clip": "null,1.0", "+task.distance": "0,5", "seed": "0,1"}
    parent = client.create_run(exp, tags={"sweep": "true", "sweep_params": json.dumps(grid)}).info.run_id
    for cell in ("rnn", "gru"):
        for clip in ("none", "1.0"):
            for distance in ("0", "5"):
                for seed in ("0", "1"):
                    child = client.create_run(exp, tags={"mlflow.parentRunId": parent, "cell": cell, "seq_len": "10",
                                                         "clip": clip, "seed": seed, "main_metric": "val/acc"})
                    client.log_param(child.info.run_id, "task.distance", distance)
                    client.log_param(child.info.run_id, "seed", seed)
    key = views.for_sweep(client, exp, parent, "s")
    _, st = views.decode(client.get_experiment(exp).tags[views.TAG_PREFIX + key])
    assert st["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "cell"},
                                            {"mode": "tag", "groupByData": "clip"},
                                            {"mode": "param", "groupByData": "task.distance"}]
    assert "params.`task.distance`" in st["selectedColumns"]


def test_a_view_that_cannot_be_written_is_one_line_and_the_plain_links(client, capsys):
    from rnnlab import sweep

    exp = client.create_experiment("e")
    parent = client.create_run(exp).info.run_id

    class Refusing(type(client)):  # a store that takes runs but refuses experiment tags
        def set_experiment_tag(self, *args, **kwargs):
            raise PermissionError("experiment tags are read-only here")

    refusing = Refusing(client.tracking_uri)
    sweep.print_links(refusing, "http://ui", exp, parent, "sweep-x")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sweep: no comparison view in the MLflow UI (PermissionError: experiment tags are read-only here)"
    assert out[1].startswith("compare the runs, best test/skill first: http://ui/#/experiments/")
    assert out[2] == f"the sweep's report: http://ui/#/experiments/{exp}/runs/{parent}/artifacts/report/REPORT.md" \
                     "?workflowType=machine_learning"
