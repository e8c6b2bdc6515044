"""The action's inputs checked before anything is registered, evaluated or written.

A bad input must fail fast, name the input as action.yml spells it, and leave nothing behind
(no run registered in a cached database, no empty report folder). Imports settings, config,
spec, the task registry, store types and files; never torch or PyGithub.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .config import check_precision, data_options, verdict_config
from .errors import ConfigError, UserError
from .files import check_distinct, check_writable, outside
from .records_file import check_records_path
from .settings import RunnerEnv, input_label, load
from .spec import RunRecord, TaskSpec, VerdictConfig
from .tasks import (
    MetricsModuleError,
    builtin_datasets,
    default_metrics,
    metrics_for,
    unknown_metric_message,
)

if TYPE_CHECKING:
    from .settings import ActionInputs
    from .store import ExperimentDB


def check_inputs(
    inputs: ActionInputs, given: TaskSpec | None, db: ExperimentDB, *, baseline_at_ref: bool = False
) -> None:
    """Raise a ConfigError naming the first bad input; touch nothing. `given` is the task the
    task inputs describe (None when they are not set); `baseline_at_ref`: the baseline
    checkpoint is read from a commit (`gitref`), which says whether it is there."""
    check_confined(inputs, load(RunnerEnv).workspace_roots())
    if inputs.dataset is not None:  # else a dataset factory, imported when the eval set loads
        _check_dataset(inputs.dataset)
    data_options(inputs, input_label)
    check_precision(inputs, input_label)
    check_records_path(inputs.records_path, input_label("records_path"))
    task = _runs_task(inputs, given, db, baseline_at_ref)
    if task is not None:
        _check_metric_names(verdict_config(inputs, input_label), task)
    paths: dict[str, Path | None] = {
        input_label("json_path"): inputs.json_path,
        input_label("markdown_path"): inputs.markdown_path,
        input_label("records_path"): inputs.records_path,
    }
    for name, path in paths.items():
        try:
            check_writable(path, "the file")
        except UserError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    check_distinct(paths, {f"{what} (input db-url)": p for what, p in db.local_files().items()})


def check_confined(inputs: ActionInputs, roots: tuple[Path, ...]) -> None:
    """Every path input (json-path, markdown-path, dataset, the checkpoints, a tokenizer file)
    must resolve, links included, inside one of `roots` (the workspace, RUNNER_TEMP)."""
    paths: dict[str, object] = {
        "json_path": inputs.json_path,
        "markdown_path": inputs.markdown_path,
        "records_path": inputs.records_path,
        "config": inputs.config,
        "baseline_checkpoint": inputs.baseline_checkpoint,
        "candidate_checkpoint": inputs.candidate_checkpoint,
        "dataset": None if inputs.dataset in builtin_datasets() else inputs.dataset,
        "tokenizer": None if inputs.tokenizer in {"bytes", "model"} else inputs.tokenizer,
    }
    for field, path in paths.items():
        if path is None:
            continue
        real = outside(str(path), roots)
        if real is None:
            continue
        shown = str(path)
        via = "" if str(real) == os.path.abspath(shown) else f", through a symlink to {str(real)!r}"
        raise ConfigError(
            f"{input_label(field)}: {shown!r} is outside the workspace ({roots[0]}{via}); "
            "use a path inside the repository checkout"
            + (" or RUNNER_TEMP" if len(roots) > 1 else "")
            + ", with no link leading out of it"
        )


def _check_dataset(dataset: str) -> None:
    builtin = list(builtin_datasets())
    if dataset in builtin or Path(dataset).exists():
        return
    close = difflib.get_close_matches(dataset, builtin, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"input dataset: {dataset!r} is neither a built-in dataset nor a path in the workspace "
        f"({Path.cwd()}); {hint}built-in: {', '.join(builtin)}"
    )


def _runs_task(
    inputs: ActionInputs, given: TaskSpec | None, db: ExperimentDB, baseline_at_ref: bool
) -> TaskSpec | None:
    """The runs' task: a registered run's, or the task inputs' (`given`) for checkpoints;
    checks that each run id exists and each checkpoint (a file, or an hf folder) is there."""
    task: TaskSpec | None = None
    for side in inputs.sides():
        run_id: int | None = getattr(inputs, f"{side}_run_id")
        if run_id is not None:
            run = _get_run(db, run_id, f"{side}-run-id")
            task = task or run.task
            continue
        checkpoint = Path(getattr(inputs, f"{side}_checkpoint"))
        at_ref = baseline_at_ref and side == "baseline"
        if not at_ref and not checkpoint.is_file() and not checkpoint.is_dir():  # or hf folder
            raise ConfigError(
                f"input {side}-checkpoint: no file or folder {str(checkpoint)!r} in the workspace "
                f"({Path.cwd()}); check the path (relative to the repository root)"
            )
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


def _check_metric_names(verdict: VerdictConfig, task: TaskSpec) -> None:
    try:
        every = metrics_for(task, verdict.metrics_module)
    except MetricsModuleError as exc:
        raise exc.named(input_label) from None
    available = list(every)
    reported = list(verdict.metrics or default_metrics(every))
    for name, names, allowed in (
        ("metrics", verdict.metrics or (), available),
        ("gate", verdict.gate or (), reported),
        ("metric-tolerances", tuple(verdict.tolerances), reported),
    ):
        for metric in names:
            if metric not in allowed:
                detail = (
                    unknown_metric_message(metric, task.task, available)
                    if metric not in available
                    else f"{metric!r} is not among the reported metrics ({', '.join(reported)})"
                )
                raise ConfigError(f"input {name}: {detail}")
