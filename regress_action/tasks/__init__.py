"""The task registry: every task regress-action evaluates, looked up by name.

A task is one object (see `base.Task`) in its own module here; adding one is a new module and
one line in `TASKS` below. Everything else (the CLI's and the Action's choices, `TaskSpec`
validation, metric selection, the built-in eval sets, the report's fragments) asks this registry.
It is also the one place that says which metrics a comparison has: the task's own and those of
the user's metrics module (`custom`). Torch-free at import: adapters import torch when they run.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..metrics import Metric
from . import classification, lm, regression
from .base import Adapter, Analysis, BuiltinDataset, Task
from .custom import MetricsModuleError, check_metrics_module, custom_metrics

if TYPE_CHECKING:
    from ..spec import TaskSpec

__all__ = [
    "TASKS",
    "Adapter",
    "Analysis",
    "BuiltinDataset",
    "MetricsModuleError",
    "Task",
    "builtin_datasets",
    "check_metrics_module",
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


def metrics_for(spec: TaskSpec, metrics_module: str | None = None) -> dict[str, Metric]:
    """Every metric a comparison of this task spec can report, in report order: the task's
    own, then those `metrics_module` adds (a MetricsModuleError if it cannot be used)."""
    task = get_task(spec.task)
    available = task.metrics(spec)
    if metrics_module:
        available |= custom_metrics(metrics_module, task, spec)
    return available


def select_metrics(
    spec: TaskSpec, requested: Sequence[str] | None, metrics_module: str | None = None
) -> dict[str, Metric]:
    """The requested metrics, in report order, or without a request the default ones (every
    metric but the opt-in `default=False` ones); unknown names fail with a hint."""
    available = metrics_for(spec, metrics_module)
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
