"""The task registry: every task regress-action evaluates, looked up by name.

A task is one object (see `base.Task`) in its own module here; adding one is a new module and
one line in `TASKS` below. Everything else (the CLI's and the Action's choices, `TaskSpec`
validation, metric selection, the built-in eval sets, the report's fragments) asks this registry.
Torch-free at import: adapters import torch when they run.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..metrics import Metric
from . import classification, lm, regression
from .base import Adapter, Analysis, BuiltinDataset, Task

if TYPE_CHECKING:
    from ..spec import TaskSpec

__all__ = [
    "TASKS",
    "Adapter",
    "Analysis",
    "BuiltinDataset",
    "Task",
    "builtin_datasets",
    "default_metrics",
    "get_task",
    "metrics_for",
    "modality_names",
    "select_metrics",
    "task_names",
    "unknown_metric_message",
]

TASKS: dict[str, Task] = {
    task.name: task for task in (classification.TASK, lm.TASK, regression.TASK)
}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def modality_names() -> tuple[str, ...]:
    """Every modality some task accepts, sorted."""
    return tuple(sorted({modality for task in TASKS.values() for modality in task.modalities}))


def get_task(name: str) -> Task:
    """The task called `name`; a ValueError with the closest name otherwise."""
    task = TASKS.get(name)
    if task is None:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown task {name!r}; {hint}tasks: {', '.join(TASKS)}")
    return task


def builtin_datasets() -> dict[str, BuiltinDataset]:
    """Every built-in eval set, by name (sorted), across the tasks."""
    found = {dataset.name: dataset for task in TASKS.values() for dataset in task.builtin}
    return dict(sorted(found.items()))


def metrics_for(spec: TaskSpec) -> dict[str, Metric]:
    """Every metric a task spec can report, in report order."""
    return get_task(spec.task).metrics(spec)


def select_metrics(spec: TaskSpec, requested: Sequence[str] | None) -> dict[str, Metric]:
    """The requested metrics, in report order, or without a request the default ones (every
    metric but the opt-in `default=False` ones); unknown names fail with a hint."""
    available = metrics_for(spec)
    if not requested:
        return default_metrics(available)
    for name in requested:
        if name not in available:
            raise ConfigError(unknown_metric_message(name, spec.task, list(available)))
    return {name: metric for name, metric in available.items() if name in requested}


def default_metrics(available: Mapping[str, Metric]) -> dict[str, Metric]:
    """The metrics reported when none are named: all but the opt-in (`default=False`) ones."""
    return {name: metric for name, metric in available.items() if metric.default}


def unknown_metric_message(name: str, task: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return (
        f"unknown metric {name!r} for task {task!r}{hint} "
        f"Available metrics: {', '.join(available)}."
    )


def adapter_for(spec: TaskSpec) -> Adapter:
    """The adapter that evaluates models for `spec`."""
    return get_task(spec.task).adapter(spec)
