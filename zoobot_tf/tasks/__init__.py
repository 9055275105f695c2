"""What a model predicts: one :class:`Task` object per kind of label (see :mod:`zoobot_tf.tasks.base`).

    from zoobot_tf.tasks import VoteTask, ClassificationTask, RegressionTask
    model = Zoobot(task=VoteTask("gz_decals_dr5"), backbone="convnext_nano")
    model = Zoobot(task=ClassificationTask(["no_ring", "ring"]), backbone="resnet18")

Adding a task: a module with a ``Task`` subclass decorated with ``@register_task``, imported below.
"""
from __future__ import annotations

import inspect
from typing import Mapping

from zoobot_tf.tasks.base import TASK_REGISTRY, Task, register_task
from zoobot_tf.tasks.classification import ClassificationTask, infer_class_names
from zoobot_tf.tasks.regression import RegressionTask
from zoobot_tf.tasks.unit_interval import UnitIntervalRegressionTask
from zoobot_tf.tasks.votes import VoteTask

__all__ = ["Task", "VoteTask", "ClassificationTask", "RegressionTask", "UnitIntervalRegressionTask", "register_task",
           "make_task",
           "make_task_for_catalog", "task_names", "infer_class_names"]


def task_names() -> list[str]:
    """The registered task names (the CLI's ``--task`` choices)."""
    return sorted(TASK_REGISTRY)


def make_task(task: "Task | str | Mapping" = "votes", **options) -> Task:
    """A Task from a Task (returned as is), a config dict (``{"name": "votes", "schema": ...}``), or a
    name plus that task's options (``make_task("classification", class_names=[...])``). Options that the
    named task does not take (e.g. ``schema`` for a classifier) are ignored, so callers can pass one set."""
    if isinstance(task, Task):
        return task
    if isinstance(task, Mapping):  # a saved config: its own values win over the caller's defaults
        options = {**{k: v for k, v in options.items() if v is not None}, **dict(task)}
        task = options.pop("name", None)
    cls = TASK_REGISTRY.get(str(task))
    if cls is None:
        raise ValueError(f"Unknown task. Received: task={task!r}; expected one of {task_names()}")
    return cls(**_accepted_options(cls.__init__, options))


def make_task_for_catalog(task: "Task | str", catalog, columns=None, **options) -> Task:
    """A task for a catalog's label columns: a classifier learns the classes found in its column, a regressor
    one target per column, a vote task the schema's columns. A Task object is returned as is."""
    if isinstance(task, Task):
        return task
    cls = TASK_REGISTRY.get(str(task))
    if cls is None:
        raise ValueError(f"Unknown task. Received: task={task!r}; expected one of {task_names()}")
    _require_columns(catalog, [columns] if isinstance(columns, str) else list(columns or []))
    return cls.for_catalog(catalog, columns, **_accepted_options(cls.for_catalog, options))


def _require_columns(catalog, columns: list[str]) -> None:
    """The label columns a task is made from must be in the catalog (before a classifier reads its classes)."""
    from zoobot_tf.data.catalogs import CatalogError, column_list, missing_columns

    missing = [c for c in columns if c not in catalog.columns]
    if missing:
        raise CatalogError(f"missing {len(missing)} label column(s): {missing_columns(missing, catalog.columns)}. "
                           f"The catalog's columns: {column_list(catalog.columns)}")


def _accepted_options(fn, options: dict) -> dict:
    accepted = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in accepted and v is not None}
