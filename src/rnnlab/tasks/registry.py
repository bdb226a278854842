"""The registered tasks: one ``conf/task/<name>.yaml`` each, whose ``_target_`` names the class.

The yaml is the registration, as Hydra already needs it to build the task: nothing else lists
the tasks. What the report and the bench need to know about a task (its extra metrics, length
label, figures, published numbers, FLOP shape) are class attributes of its
:class:`~rnnlab.tasks.base.Task`, found here by the task's name.

A task's yaml is named after its ``Task.name``: runs are tagged with that name, and a report
finds the class again from the tag. :func:`task_class` checks it and says so when they differ.
This module imports no torch; a class is imported when first asked for.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

import yaml

from rnnlab.paths import config_dir

if TYPE_CHECKING:
    from rnnlab.tasks.base import Task


class TaskRegistryError(ValueError):
    """A task name no yaml registers, or a yaml whose class carries another name."""


def names() -> tuple[str, ...]:
    """Every registered task, by name (the stems of ``conf/task/*.yaml``)."""
    return tuple(sorted(p.stem for p in (config_dir() / "task").glob("*.yaml")))


@cache
def task_class(name: str) -> type[Task]:
    """The class ``conf/task/<name>.yaml``'s ``_target_`` names, imported on first use."""
    path = config_dir() / "task" / f"{name}.yaml"
    if not path.is_file():
        raise TaskRegistryError(f"unknown task {name!r}; registered (conf/task/): {', '.join(names())}")
    target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
    if not isinstance(target, str) or "." not in target:
        raise TaskRegistryError(f"conf/task/{name}.yaml has no _target_ naming its task class")
    module, _, attr = target.rpartition(".")
    cls = getattr(import_module(module), attr)
    if getattr(cls, "name", None) != name:
        raise TaskRegistryError(
            f"conf/task/{name}.yaml builds {target}, whose name is {getattr(cls, 'name', None)!r}: a task's "
            f"yaml is named after its Task.name (runs are tagged with it); rename one of them")
    return cls


def find(name: str) -> type[Task] | None:
    """:func:`task_class`, or None for a task this checkout does not register (a report of
    runs made by another version falls back to defaults)."""
    try:
        return task_class(name)
    except TaskRegistryError:
        return None
