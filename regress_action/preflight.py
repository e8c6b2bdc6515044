"""The action's inputs checked before anything is registered, evaluated or written.

A bad input must fail fast, name the input as action.yml spells it, and leave nothing behind
(no run registered in a cached database, no empty report folder). Imports settings, spec,
metrics, store types and files; never torch or PyGithub.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, UserError
from .files import check_distinct, check_writable
from .metrics import metrics_for_task, unknown_metric_message
from .spec import BUILTIN_DATASETS, RunRecord, TaskSpec

if TYPE_CHECKING:
    from .settings import ActionInputs
    from .store import ExperimentDB


def check_inputs(inputs: ActionInputs, db: ExperimentDB) -> None:
    """Raise a ConfigError naming the first bad input; touch nothing."""
    _check_dataset(str(inputs.dataset))
    task = _task(inputs, db)
    if task is not None:
        _check_metric_names(inputs, task)
    paths: dict[str, Path | None] = {
        "input json-path": inputs.resolved_json_path(),
        "input markdown-path": inputs.resolved_markdown_path(),
    }
    for name, path in paths.items():
        try:
            check_writable(path, "the file")
        except UserError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    check_distinct(paths, {f"{what} (input db-url)": p for what, p in db.local_files().items()})


def _check_dataset(dataset: str) -> None:
    if dataset in BUILTIN_DATASETS or Path(dataset).exists():
        return
    close = difflib.get_close_matches(dataset, BUILTIN_DATASETS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"input dataset: {dataset!r} is neither a built-in dataset nor a path in the workspace "
        f"({Path.cwd()}); {hint}built-in: {', '.join(BUILTIN_DATASETS)}"
    )


def _task(inputs: ActionInputs, db: ExperimentDB) -> TaskSpec | None:
    """The runs' task: a registered run's, or the task inputs for checkpoints; checks that
    each run id exists and each checkpoint file is there."""
    task: TaskSpec | None = None
    for side in ("baseline", "candidate"):
        run_id: int | None = getattr(inputs, f"{side}_run_id")
        if run_id is not None:
            run = _get_run(db, run_id, f"{side}-run-id")
            task = task or run.task
            continue
        checkpoint = Path(getattr(inputs, f"{side}_checkpoint"))
        if not checkpoint.is_file():
            raise ConfigError(
                f"input {side}-checkpoint: no file {str(checkpoint)!r} in the workspace "
                f"({Path.cwd()}); check the path (relative to the repository root)"
            )
        given = inputs.task_spec()
        if given is None:
            raise ConfigError(
                f"input task is required with {side}-checkpoint: set task (lm or "
                "classification) and num-classes or vocab-size"
            )
        task = task or given
    return task


def _get_run(db: ExperimentDB, run_id: int, name: str) -> RunRecord:
    try:
        return db.get_run(run_id)
    except UserError as exc:
        raise ConfigError(f"input {name}: {exc}") from None


def _check_metric_names(inputs: ActionInputs, task: TaskSpec) -> None:
    available = list(metrics_for_task(task.task, task.num_classes, task.vocab_size))
    reported = list(inputs.metrics or available)
    for name, names, allowed in (
        ("metrics", inputs.metrics or (), available),
        ("gate", inputs.gate or (), reported),
        ("metric-tolerances", tuple(inputs.metric_tolerances), reported),
    ):
        for metric in names:
            if metric not in allowed:
                detail = (
                    unknown_metric_message(metric, task.task, available)
                    if metric not in available
                    else f"{metric!r} is not among the reported metrics ({', '.join(reported)})"
                )
                raise ConfigError(f"input {name}: {detail}")
