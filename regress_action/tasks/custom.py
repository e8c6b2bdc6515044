"""Custom metrics from the user's workspace: `--metrics-module pkg.mod` / input `metrics-module`
/ `VerdictConfig(metrics_module=...)`.

The module is imported from the working directory (the repository root, as model factories
are) and defines one function,

    def metrics(task: str) -> list[Metric]

returning the `regress_action.metrics.Metric`s it adds to a comparison of that task (`[]` for
a task it does not extend). A custom metric is a metric like any built-in: it names its
direction, kind and record columns, gets its paired test from its kind (a corpus metric
without a resampler gets the generic bootstrap `resampling.index_deltas`) and is reported,
gated, tolerated and selected by name like the task's own; `default=False` makes it opt-in.

Refused, each with one `MetricsModuleError` (a ConfigError, exit 2) saying what to fix: a
module that does not import, no `metrics` function, a function that raises or returns
something other than Metrics, a Metric that does not describe itself (`metrics.
check_definition`: direction, kind, columns, ...), a name clashing with a built-in metric of
the task or repeated, a column the task's adapter does not record, a resampler that is not a
`WeightedSums` or `CellCounts`. `check_metrics_module` runs every check that needs no task
spec, for every task, when the options are read (`config`); the columns a task records only for
some specs (`top5_correct`, `bytes`) are checked once the comparison's spec is known.

Imports the contract modules, `resampling` and `base`; `checkpoints.importable_from` inside the
loader. The user's module imports whatever it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..metrics import Metric, MetricDefinitionError, check_definition
from ..records import Columns
from ..resampling import CellCounts, WeightedSums
from .base import Task, first_line

if TYPE_CHECKING:
    from ..spec import TaskSpec

PROTOCOL = "def metrics(task: str) -> list[Metric]"
FIELD = "metrics_module"  # the VerdictConfig field (and the options' attribute)


class MetricsModuleError(ConfigError):
    """A metrics module that cannot be used; `named` names the option as its front end does."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{FIELD}: {detail}")
        self.detail = detail

    def named(self, names: Callable[[str], str]) -> ConfigError:
        return ConfigError(f"{names(FIELD)}: {self.detail}")


def custom_metrics(module_name: str, task: Task, spec: TaskSpec | None = None) -> dict[str, Metric]:
    """The metrics `module_name` adds to `task`, by name in the module's order, each checked
    against the task (see the module docstring). `spec` None checks the columns against every
    column the task can record."""
    builtin = task.all_metrics()
    recorded = task.record_columns(spec)
    found: dict[str, Metric] = {}
    for metric in _definitions(module_name, task.name):
        where = f"{module_name}: metric {metric.name!r} of task {task.name}"
        if metric.name in builtin:
            raise MetricsModuleError(
                f"{where} has the name of a built-in {task.name} metric; rename it (built-in: "
                f"{', '.join(builtin)})"
            )
        if metric.name in found:
            raise MetricsModuleError(f"{where} is returned twice; return each metric once")
        missing = [column for column in metric.columns if column not in recorded]
        if missing:
            raise MetricsModuleError(
                f"{where} reads column {missing[0]!r}, which the {task.name} task does not record"
                f"{_for_spec(task, spec, missing[0])}; its columns: {', '.join(recorded)}"
            )
        _check_resampler(metric, where)
        found[metric.name] = _guarded(module_name, metric)
    return found


def check_metrics_module(module_name: str) -> None:
    """Every check that needs no task spec, for every registered task: the options fail before
    any run is read or model loaded. A module that adds no metric to any task is refused too."""
    from . import TASKS  # the registry imports this module

    added = [custom_metrics(module_name, task) for task in TASKS.values()]
    if not any(added):
        raise MetricsModuleError(
            f"{module_name}.metrics(task) returned no metric for any task ({', '.join(TASKS)}); "
            "return the metrics of the task it extends, e.g. when task == 'classification'"
        )


def _module(name: str) -> ModuleType:
    from ..checkpoints import importable_from

    root = Path.cwd().resolve()
    with importable_from(root):
        try:
            return importlib.import_module(name)
        except MetricDefinitionError as exc:
            raise MetricsModuleError(
                f"{name} builds a metric that is not complete: {exc}"
            ) from None
        except Exception as exc:
            raise MetricsModuleError(
                f"cannot import {name!r} ({_describe(exc)}); make it importable from {root} "
                "(the repository root) or install it"
            ) from None


def _definitions(module_name: str, task: str) -> list[Metric]:
    module = _module(module_name)
    function = getattr(module, "metrics", None)
    if not callable(function):
        hint = " (it has METRICS: return them from it)" if hasattr(module, "METRICS") else ""
        raise MetricsModuleError(
            f"{module_name} has no function `metrics`{hint}; define `{PROTOCOL}` returning the "
            "metrics it adds to that task ([] for the others)"
        )
    call = f"{module_name}.metrics({task!r})"
    try:
        returned = function(task)
    except MetricDefinitionError as exc:
        raise MetricsModuleError(f"{call} builds a metric that is not complete: {exc}") from None
    except Exception as exc:
        raise MetricsModuleError(
            f"{call} failed ({_describe(exc)}); fix it, and return [] for a task it does not extend"
        ) from None
    if isinstance(returned, Metric | str | bytes | Mapping) or not isinstance(returned, Iterable):
        raise MetricsModuleError(
            f"{call} returned {_shown(returned)}, not a list of Metric; return [Metric(...), ...]"
        )
    items = list(returned)
    for item in items:
        if not isinstance(item, Metric):
            raise MetricsModuleError(
                f"{call} returned {_shown(item)}, not a regress_action.metrics.Metric; build each "
                "with Metric(name, higher_is_better, kind, description, columns, ...)"
            )
        try:  # fields changed after it was built (object.__setattr__) are checked again
            check_definition(item)
        except MetricDefinitionError as exc:
            raise MetricsModuleError(
                f"{call} returned a metric that is not complete: {exc}"
            ) from None
    return items


def _check_resampler(metric: Metric, where: str) -> None:
    resampler = metric.resampler
    if resampler is None:
        return
    if metric.kind != "corpus":
        raise MetricsModuleError(
            f"{where} is a {metric.kind} metric with a resampler; only a corpus metric has one "
            "(the test follows from the kind): drop it"
        )
    if not isinstance(resampler, WeightedSums | CellCounts):
        raise MetricsModuleError(
            f"{where} has resampler {_shown(resampler)}; use resampling.WeightedSums, "
            "resampling.CellCounts, or None for the generic bootstrap of whole_set"
        )


def _guarded(module_name: str, metric: Metric) -> Metric:
    """The metric with a `whole_set` whose failure is the user's error (exit 2), naming the
    metric, rather than an internal one."""
    function = metric.whole_set
    if function is None:
        return metric

    def whole_set(columns: Columns, num_classes: int | None) -> float:
        try:
            return float(function(columns, num_classes))
        except Exception as exc:
            raise MetricsModuleError(
                f"{module_name}: metric {metric.name!r}: whole_set(columns, num_classes) failed "
                f"({_describe(exc)}); it gets one side's columns {', '.join(metric.columns)} "
                "(numpy arrays) and must return a number"
            ) from None

    return replace(metric, whole_set=whole_set)


def _for_spec(task: Task, spec: TaskSpec | None, column: str) -> str:
    if spec is None or column not in task.record_columns(None):
        return ""
    sizes = [
        f"{size}={value}"
        for size in ("num_classes", "vocab_size")
        if (value := getattr(spec, size)) is not None
    ]
    return f" for this task spec ({', '.join(sizes) or spec.modality})"


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _shown(value: Any) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text if len(text) <= 60 else text[:59] + '…'})"
