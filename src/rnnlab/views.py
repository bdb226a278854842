"""A saved view of the MLflow UI per comparison: one link opens a sweep's runs side by side.

The MLflow UI (3.17) loads a view from the experiment tag ``mlflow.sharedViewState.<key>``
when the URL carries ``viewStateShareKey=<key>``. The tag holds what the UI's own "Views ->
Save as new view" writes, read back from a view saved in a real browser:

    {"name": ..., "createdAt": ms, "updatedAt": ms, "state": "deflate;" + base64(zlib(json))}

where the state holds the runs filter, sort, table columns, grouping and the charts (their
sections and order). The format is the UI's own, not an API: tests/test_views.py pins it
against the installed MLflow and the browser test opens it, so an upgrade that changes it
fails loudly. A view that cannot be written never fails a run or a sweep: the caller says so
in one line and prints the plain links.

What a comparison shows, with no click: the runs of one sweep (or the re-seed runs of a
tuning study), flat and grouped so that cells compare: a group per arm, i.e. per cell and value
of every other key the sweep varies except the seed (length, clipping, a task's distance, a
budget), so that the seeds of one arm average together and nothing else does; with the
columns that compare them (``test/skill``, the task's test metric and its baseline,
``seq_len``, ``clip``, the other swept keys, ``steps_to_solve`` where the task has one, how
each run stopped), sorted best first; and on the charts page, first: the test metric against the
length, the validation metric over steps, the gradient norm before clipping and the
gradient's horizon through time. The bookkeeping (``baseline/*``, ``sweep/*``, ``tune/*``,
``perf/*``) is kept off the charts, which the UI would otherwise draw for every metric.
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from rnnlab.runs import CELL, CLIP, MAIN_METRIC, SEED, SEQ_LEN, STOP_REASON, SWEEP_PARAMS, TASK, metric_name, on_split

TAG_PREFIX = "mlflow.sharedViewState."
MAX_VIEWS = 40  # the UI lists at most this many saved views per experiment
OURS = "rnnlab-"  # the keys of the views rnnlab writes: the oldest make room for new ones
BOOKKEEPING = ("baseline/", "sweep/", "tune/", "perf/")
AS_TAGS = (TASK, SEQ_LEN, CLIP)  # swept keys every run also carries as a tag (clip written none, 1.0)


@dataclass
class Comparison:
    """What a comparison view shows: the runs (a search filter) and the task's metrics."""

    key: str  # the view's key: rnnlab-<the parent run's id>
    name: str  # as the UI's Views list shows it
    search_filter: str
    main_metric: str  # e.g. val/mse: the task's model-selection metric
    metric_keys: list[str]  # every metric the runs logged (those left off the charts are listed deleted)
    arms: tuple[str, ...] = ()  # the keys besides the cell whose values the runs differ in: a group each

    @property
    def test_metric(self) -> str:
        return on_split(self.main_metric, "test")

    @property
    def ranked_by(self) -> str:
        return "test/skill" if "test/skill" in self.metric_keys else self.test_metric


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"


def state(c: Comparison) -> dict:
    """The UI state of the comparison (the JSON inside the view's ``state``)."""
    key = metric_name(c.main_metric)
    columns = [_column("metrics", m) for m in ("test/skill", c.test_metric, f"baseline/{key}", "steps_to_solve")
               if m in c.metric_keys]
    columns += [_column("params", k) for k in (SEQ_LEN, CLIP, *[a for a in c.arms if a not in AS_TAGS])]
    columns.append(_column("tags", STOP_REASON))
    group_keys = [{"mode": "tag" if k in (CELL, *AS_TAGS) else "param", "groupByData": k} for k in (CELL, *c.arms)]
    section = _uid("comparison")
    charts = [
        {"uuid": _uid("vs-length"), "type": "SCATTER", "runsCountToCompare": 100, "metricSectionId": section,
         "deleted": False, "isGenerated": False, "xaxis": {"key": SEQ_LEN, "type": "PARAM"},
         "yaxis": {"key": c.ranked_by, "type": "METRIC"}},
        _line(c.main_metric, section),
        _line("grad_norm/pre_clip", section),
        {"uuid": _uid("horizon"), "type": "BAR", "runsCountToCompare": 100, "metricSectionId": section,
         "deleted": False, "isGenerated": False, "displayName": "grad_flow/horizon", "metricKey": "grad_flow/horizon"},
    ]
    shown = {c.main_metric, "grad_norm/pre_clip", "grad_flow/horizon"}
    charts = [ch for ch in charts if ch.get("metricKey", ch.get("yaxis", {}).get("key")) in c.metric_keys]
    # the UI draws every other metric in a generated section of its own, unless told it was deleted
    hidden = [m for m in c.metric_keys if m.startswith(BOOKKEEPING) and m not in shown]
    charts += [{"uuid": _uid(m), "type": "BAR", "runsCountToCompare": 100, "metricSectionId": section,
                "deleted": True, "isGenerated": True, "displayName": m, "metricKey": m} for m in hidden]
    return {
        "searchFilter": c.search_filter,
        "orderByKey": _column("metrics", c.ranked_by),
        "orderByAsc": c.ranked_by != "test/skill" and _lower_is_better(c.main_metric),
        "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
        "selectedColumns": columns, "columnOrder": columns, "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": True, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": {"aggregateFunction": "average", "groupByKeys": group_keys}, "groupsExpanded": {},
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
        "compareRunSections": [{"uuid": section, "name": "compare the cells", "display": True,
                                "isReordered": True, "deleted": False, "isGenerated": False}],
        "compareRunCharts": charts,
    }


def _line(metric: str, section: str) -> dict:
    return {"uuid": _uid(metric), "type": "LINE", "runsCountToCompare": 100, "metricSectionId": section,
            "deleted": False, "isGenerated": False, "displayName": metric, "metricKey": metric,
            "lineSmoothness": 0, "xAxisScaleType": "linear", "scaleType": "linear", "range": {},
            "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [],
            "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}


def _uid(name: str) -> str:
    """A chart's or section's id: stable for a name, so one comparison always writes the same view."""
    return "rnnlab-" + "".join(ch if ch.isalnum() else "-" for ch in name)


def _lower_is_better(main_metric: str) -> bool:
    return metric_name(main_metric) not in ("acc", "f1", "accuracy", "recall")


def encode(name: str, view_state: dict, now_ms: int | None = None) -> str:
    """The tag's value, as the UI writes it: an envelope around the compressed state."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    packed = "deflate;" + base64.b64encode(zlib.compress(json.dumps(view_state).encode())).decode()
    return json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": packed})


def decode(value: str) -> tuple[str, dict]:
    """(name, state) of a view's tag value, compressed or plain, as the UI reads both."""
    envelope = json.loads(value)
    packed = envelope["state"]
    if packed.startswith("deflate;"):
        packed = zlib.decompress(base64.b64decode(packed.split(";", 1)[1])).decode()
    return envelope["name"], json.loads(packed)


def write(client, experiment_id: str, c: Comparison) -> str:
    """Write the comparison's view to its experiment (replacing an earlier one of the same key,
    and, at the UI's limit of views, the oldest of rnnlab's); return its key."""
    tags = client.get_experiment(experiment_id).tags
    views = {k[len(TAG_PREFIX):]: v for k, v in tags.items() if k.startswith(TAG_PREFIX)}
    if c.key not in views and len(views) >= MAX_VIEWS:
        ours = sorted((json.loads(v).get("createdAt", 0), k) for k, v in views.items() if k.startswith(OURS))
        if not ours:
            raise RuntimeError(f"the experiment already holds {len(views)} saved views, the UI's limit")
        client.delete_experiment_tag(experiment_id, TAG_PREFIX + ours[0][1])
    client.set_experiment_tag(experiment_id, TAG_PREFIX + c.key, encode(c.name, state(c)))
    return c.key


def url(base: str, experiment_id: str, key: str, charts: bool = False) -> str:
    """The link that opens the view: the table, or (``charts``) the charts page."""
    from rnnlab.tracking import experiment_url

    mode = "&compareRunsMode=CHART" if charts else ""
    return experiment_url(base, experiment_id) + f"&viewStateShareKey={key}" + mode


def of_runs(key: str, name: str, search_filter: str, runs: Iterable, swept: Iterable[str] = (SEQ_LEN,)) -> Comparison:
    """The comparison of ``runs`` (MLflow runs that ``search_filter`` selects); ``swept``: the
    keys that may tell arms apart (a sweep's overrides), of which those the runs differ in group."""
    runs = list(runs)
    metric_keys = sorted({k for r in runs for k in r.data.metrics})
    mains = [r.data.tags.get(MAIN_METRIC) for r in runs if r.data.tags.get(MAIN_METRIC)]

    def value(run, k: str):
        return (run.data.tags if k in AS_TAGS else run.data.params).get(k)

    arms = tuple(k for k in dict.fromkeys(s.lstrip("+") for s in swept)
                 if k not in (CELL, SEED) and len({value(r, k) for r in runs}) > 1)
    return Comparison(key=key, name=name, search_filter=search_filter, main_metric=mains[0] if mains else "val/loss",
                      metric_keys=metric_keys, arms=arms)


def for_sweep(client, experiment_id: str, parent_id: str, name: str) -> str:
    """Write the comparison view of the sweep whose parent run is ``parent_id``; its key. Its arms
    are the parent's swept keys (its ``sweep_params`` tag; a parent without one: length, clip)."""
    search = f"tags.`mlflow.parentRunId` = '{parent_id}'"
    children = client.search_runs([experiment_id], search)
    grid = client.get_run(parent_id).data.tags.get(SWEEP_PARAMS)
    swept = list(json.loads(grid)) if grid else [SEQ_LEN, CLIP]
    return write(client, experiment_id, of_runs(OURS + parent_id, f"compare: {name}"[:200], search, children, swept))


def for_tuning(client, experiment_id: str, study: str) -> str:
    """Write the comparison view of a tuning study's re-seed runs: the tuned arms side by side."""
    search = "tags.tune_role = 'reseed'"
    reseeds = client.search_runs([experiment_id], search)
    return write(client, experiment_id, of_runs(OURS + "tune-" + study, f"compare tuned: {study}"[:200], search,
                                                reseeds))
