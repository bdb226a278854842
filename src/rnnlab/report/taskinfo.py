"""What each task is judged by: its headline test metric and mode, read from the runs' tags or the
task class, so the report ranks runs exactly as model selection did.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pandas as pd

from rnnlab import runs as runs_tags
from rnnlab.report.labels import base
from rnnlab.runs import metric_name, on_split
from rnnlab.tasks.registry import find


@dataclass(frozen=True)
class TaskInfo:
    """How a task's runs are ranked: its headline test metric, the direction, extra columns."""

    name: str
    metric: str  # e.g. "test/mse": the test version of the task class's main_metric
    mode: str  # "min" | "max"
    extras: tuple[str, ...] = ()  # more test metrics shown beside the headline, e.g. ("test/acc",)
    known: bool = True  # False: no task class found, defaults used

    @property
    def short(self) -> str:
        return metric_name(self.metric)

    @property
    def better(self) -> str:
        return "lower" if self.mode == "min" else "higher"


_TOLD: dict[str, tuple[str, str]] = {}  # task -> (main metric, mode), as the runs' tags say


def remember_tasks(raw: pd.DataFrame) -> None:
    """What the runs say about their tasks (``main_metric``, ``metric_mode`` tags): with it,
    :func:`task_info` needs no import of the task classes, which pulls in Lightning (seconds at
    the end of every sweep)."""
    cols = [f"tags.{k}" for k in ("task", runs_tags.MAIN_METRIC, runs_tags.METRIC_MODE)]
    if all(c in raw.columns for c in cols):
        for task, metric, mode in raw[cols].dropna().drop_duplicates().itertuples(index=False):
            _TOLD[task] = (metric, mode)


def _info(name: str, main_metric: str, mode: str) -> TaskInfo:
    metric = on_split(main_metric, "test")
    cls = find(name)
    extras = tuple(f"test/{m}" for m in (cls.report_extras if cls else ()) if f"test/{m}" != metric)
    return TaskInfo(name, metric, mode, extras)


def task_info(name: str) -> TaskInfo:
    """The headline metric and mode the runs were selected on, so the report ranks them exactly
    as model selection did: from the runs' tags, else from the task class
    (:mod:`rnnlab.tasks.registry`); an unknown task falls back to test/loss. ``name`` may be a label
    with a variant, ``forecast (series=seattle_temps)``."""
    name = base(name)
    if name in _TOLD:
        return _info(name, *_TOLD[name])
    return _task_info_from_code(name)


@cache
def _task_info_from_code(name: str) -> TaskInfo:
    cls = find(name)
    if cls is None:
        return TaskInfo(name, "test/loss", "min", known=False)
    return _info(name, cls.main_metric, cls.mode)
