"""The problems of a tuned page: which arms compare with which.

One tuning experiment may hold several problems (the recall study: MQAR at two settings,
selective copying, induction heads), and a paired difference between arms of two of them
means nothing. A problem is a task with its settings, as the arms' runs record them (the
``task`` tag and the ``task.*`` params, the length and how it was measured apart:
:data:`MEASUREMENT`): the arms of one problem are run at
one or several lengths and compare at each, as on a page of one task; the arms of two problems
compare with none of each other's. The page gives each problem its section, and its one Holm
family holds every problem's comparisons (:mod:`rnnlab.report.tuning.page`).

Within a problem, the sweep's other values (a width, ``cell.hidden_size``) that tell apart the
arms of a cell at a length make each its own arm, compared with the other cells at that value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rnnlab.report.store import ReportError
from rnnlab.report.tuning.arms import ArmResult, cell_rank

LENGTH = "task.seq_len"  # a task's length: a problem's arms may be run at several
NOT_VARIANT = ("cell", "seq_len")  # an arm's cell and length are its own columns on the page
# The task.* params that say how a trained model was measured, not what was trained: the sizes of
# the held-out sets and the longer lengths it is also tested at (``test/L<n>/*``). Two tunings of
# one task that differ only in these trained the same problem, so they are one problem (and its
# name does not carry them). Any task's keys of that kind, not one task's list.
MEASUREMENT = ("task.test_size", "task.val_size", "task.test_seq_len")


@dataclass
class Problem:
    """A task with its settings, and its arms: they compare with each other, and only with each other."""

    task: str
    settings: dict[str, str]  # the task.* params its runs share, less how they were measured (MEASUREMENT)
    arms: list[ArmResult]
    name: str = ""  # the task, with the settings that tell it from the page's other problems of that task
    slug: str = ""  # the name its figures' files carry

    @property
    def metric(self) -> str:
        return self.arms[0].test_metric

    @property
    def mode(self) -> str:
        return self.arms[0].mode


def group(arms: list[ArmResult]) -> list[Problem]:
    """The arms' problems: by task, then by shortest length and name; each arm told its
    problem and its variant (:attr:`ArmResult.problem`, :attr:`ArmResult.variant`). Refused
    (:class:`ReportError`) only where the arms of one problem were selected on different metrics."""
    by: dict[tuple[str, str], list[ArmResult]] = {}
    for a in arms:
        by.setdefault((a.task, json.dumps(trained(a.task_settings), sort_keys=True)), []).append(a)
    _join_arms_without_runs(by)
    found = [Problem(task, json.loads(settings), mine) for (task, settings), mine in by.items()]
    for p in found:
        metrics = sorted({f"{a.main_metric} ({a.mode})" for a in p.arms})
        if len(metrics) > 1:
            raise ReportError(f"the arms of task {p.task or '(untagged)'} were selected on different metrics "
                              f"({', '.join(metrics)}): only arms of one metric compare")
    for p in found:
        p.name = _name(p, [q for q in found if q.task == p.task])
    found.sort(key=lambda p: (p.task, min(a.seq_len for a in p.arms), p.name))
    for p in found:
        same_task = [q for q in found if q.task == p.task]
        p.slug = p.task if len(same_task) == 1 else f"{p.task}_{same_task.index(p) + 1}"
        _variants(p)
    return found


def trained(settings: dict[str, str]) -> dict[str, str]:
    """A run's task settings that say what was trained: all but :data:`MEASUREMENT`."""
    return {k: v for k, v in settings.items() if k not in MEASUREMENT}


def _join_arms_without_runs(by: dict[tuple[str, str], list[ArmResult]]) -> None:
    """An arm none of whose runs has started yet records no task settings: it belongs to its
    task's problem where the task has one, else it stands alone until its runs say."""
    for (task, settings) in [k for k in by if k[1] == "{}"]:
        others = [k for k in by if k[0] == task and k[1] != "{}"]
        if len(others) == 1:
            by[others[0]] += by.pop((task, settings))


def _name(p: Problem, same_task: list[Problem]) -> str:
    """``mqar (task.num_kv_pairs=4)``: the task, and where the page holds
    other problems of it, the settings in which they differ (as a label with a variant is
    written elsewhere on the pages: ``lstm (forget_bias=0)``)."""
    keys = sorted({k for q in same_task for k in q.settings})
    differ = [k for k in keys if len({q.settings.get(k) for q in same_task}) > 1]
    task = p.task or "(untagged)"
    return f"{task} ({', '.join(f'{k}={p.settings.get(k)}' for k in differ)})" if differ else task


def _variants(p: Problem) -> None:
    """Each arm's variant (the swept values other than cell and length that vary among the
    problem's arms: a width), and the arms in the page's order: by length, variant, cell."""
    swept = [k for a in p.arms for k in a.overrides if k not in NOT_VARIANT and not k.startswith("task.")]
    varied = [k for k in dict.fromkeys(swept) if len({a.overrides.get(k) for a in p.arms}) > 1]
    for a in p.arms:
        a.problem = p.name
        a.variant = {k: a.overrides.get(k, "none") for k in varied}
    p.arms.sort(key=lambda a: (a.seq_len, [_number(v) for v in a.variant.values()], cell_rank(a.cell)))


def _number(value: str) -> tuple[float, str]:
    """A swept value in numeric order where it is a number (widths 64 before 128)."""
    try:
        return (float(value), value)
    except ValueError:
        return (float("inf"), value)
