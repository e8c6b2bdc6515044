"""The Python API: `compare_models(...)`, for notebooks and training scripts.

Imports torch (through `app`'s evaluation path); `import regress_action` reaches this module
only when `compare_models` is first used.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .app import Outputs, check_outputs, evaluate_models, finish, run_info
from .compare import ReportContext
from .errors import ConfigError
from .records_file import check_records_path
from .report import DatasetInfo, RunInfo
from .spec import EvalConfig, TaskSpec, VerdictConfig, check_report_name
from .store import open_db

if TYPE_CHECKING:
    import torch

    from .store import ExperimentDB
    from .tasks import Adapter


def compare_models(
    baseline_model: torch.nn.Module,
    candidate_model: torch.nn.Module,
    adapter: Adapter | None,
    task_spec: TaskSpec,
    eval_cfg: EvalConfig,
    db: ExperimentDB | str | None = None,
    comparison_name: str | None = None,
    threshold: float | None = None,
    *,
    verdict: VerdictConfig | None = None,
    baseline_run_id: int | None = None,
    candidate_run_id: int | None = None,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    records_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate both models on the same eval set in one pass and return the report as a dict.

    The dict has `status` (overall), `metrics` → name → `{baseline, candidate, delta, rel_delta,
    status, higher_is_better, ...}`, `dataset` (name, fingerprint, n) and, when `db` is given,
    `comparison_id`. Run ids come from the arguments or a `run_id` attribute on each model.
    `threshold` is the absolute tolerance of every metric (None: 0.01); `verdict` sets it with
    everything else (tolerances, metrics, significance), so passing both is a ConfigError. The
    default verdict is the plain tolerance rule on every metric (`VerdictConfig()`);
    `VerdictConfig(significance="gate")` is the Action's and the CLI's default rule: a gated
    metric (by default the task's primary one) regresses only when its change is beyond the
    tolerance and significant.
    `adapter` may be None: the task's own adapter is used. `records_path` (.parquet or .npz)
    receives every example's paired records; the report lists the largest flips only.

    An LM eval set's `tokenizer="model"` is the tokenizer in the folder a Hugging Face baseline
    was loaded from (`from_pretrained(folder)`); two such models with different tokenizers are
    compared on bits per byte alone (see `app.evaluate_models`).

    Under an initialised `torch.distributed` process group (e.g. a script started by torchrun),
    call it on every rank: each evaluates its shard of the eval set, rank 0 computes, records and
    writes the report, and every rank returns rank 0's dict (or raises rank 0's error).
    """
    from .distributed import joined

    _check_comparison_name(comparison_name)  # before any model runs
    request = _Request(
        baseline_model, candidate_model, adapter, task_spec, eval_cfg, db, comparison_name,
        _verdict(threshold, verdict), baseline_run_id, candidate_run_id, json_path, markdown_path,
        records_path,
    )  # fmt: skip
    with joined() as session:
        if session is None:
            return _compare(request)
        return session.share(lambda: _compare(request))


@dataclass(frozen=True)
class _Request:
    baseline_model: torch.nn.Module
    candidate_model: torch.nn.Module
    adapter: Adapter | None
    task_spec: TaskSpec
    eval_cfg: EvalConfig
    db: ExperimentDB | str | None
    comparison_name: str | None
    verdict: VerdictConfig
    baseline_run_id: int | None
    candidate_run_id: int | None
    json_path: str | Path | None
    markdown_path: str | Path | None
    records_path: str | Path | None


def _compare(r: _Request) -> dict[str, Any]:
    from .tasks import adapter_for

    if r.adapter is not None and r.adapter.task != r.task_spec.task:
        raise ConfigError(f"adapter for {r.adapter.task!r} does not fit task {r.task_spec.task!r}")
    adapter_for(r.task_spec)  # validates the task's sizes
    outputs = Outputs(
        json_path=Path(r.json_path) if r.json_path else None,
        markdown_path=Path(r.markdown_path) if r.markdown_path else None,
        records_path=Path(r.records_path) if r.records_path else None,
    )
    check_records_path(outputs.records_path, "records_path")
    baseline = RunInfo(run_id=r.baseline_run_id or getattr(r.baseline_model, "run_id", None))
    candidate = RunInfo(run_id=r.candidate_run_id or getattr(r.candidate_model, "run_id", None))
    eval_cfg = r.eval_cfg
    with ExitStack() as stack:
        store = None if r.db is None else stack.enter_context(open_db(r.db))
        check_outputs(
            {
                "json_path": outputs.json_path,
                "markdown_path": outputs.markdown_path,
                "records_path": outputs.records_path,
            },
            store,
        )
        if store is not None:
            baseline, candidate = _registered(store, baseline, candidate, r.task_spec)
        context = ReportContext(
            task=r.task_spec,
            dataset=DatasetInfo(name=eval_cfg.display_name(), fingerprint="", n=0),
            verdict=r.verdict,
            baseline=baseline,
            candidate=candidate,
            report_name=r.comparison_name or "default",
        )
        if eval_cfg.dataset_name is None and not isinstance(eval_cfg.dataset, str | Path):
            eval_cfg = eval_cfg.model_copy(update={"dataset_name": eval_cfg.display_name()})
        compared = evaluate_models(
            r.baseline_model,
            r.candidate_model,
            eval_cfg,
            r.task_spec,
            context,
            r.adapter,
            model_dirs=(_model_dir(r.baseline_model), _model_dir(r.candidate_model)),
        )
        outputs = replace(outputs, db=store)
        return finish(compared, outputs).report.to_dict()


def _model_dir(model: Any) -> Path | None:
    """The local folder a Hugging Face model was loaded from (`name_or_path`), where its
    tokenizer is (`tokenizer="model"`); None for any other model or a hub id."""
    where = getattr(model, "name_or_path", None)
    if not isinstance(where, str) or not where:
        return None
    path = Path(where)
    return path if path.is_dir() else None


def _check_comparison_name(name: str | None) -> None:
    if name is None:
        return
    try:
        check_report_name(name)
    except ValueError as exc:
        raise ConfigError(f"comparison_name={name!r}: {exc}") from None


def _verdict(threshold: float | None, verdict: VerdictConfig | None) -> VerdictConfig:
    if verdict is None:
        if threshold is None:
            return VerdictConfig()
        try:
            return VerdictConfig(threshold=threshold)
        except ValidationError:  # inf passes everything, nan compares false everywhere
            raise ConfigError(
                f"threshold={threshold!r}: the tolerance must be a finite number ≥ 0 (e.g. 0.01)"
            ) from None
    if threshold is not None:
        raise ConfigError(
            f"threshold={threshold!r} and verdict= both set the tolerance; pass "
            "verdict=VerdictConfig(threshold=..., ...) alone"
        )
    return verdict


def _registered(
    store: ExperimentDB, baseline: RunInfo, candidate: RunInfo, task: TaskSpec
) -> tuple[RunInfo, RunInfo]:
    """The runs' recorded details; unknown ids, missing ids or runs of another task fail
    before the evaluation."""
    if baseline.run_id is None or candidate.run_id is None:
        raise ConfigError(
            "recording a comparison needs baseline_run_id and candidate_run_id (or a `run_id` "
            "attribute on each model); register checkpoints with `regress-action runs add`"
        )
    runs = [store.get_run(int(baseline.run_id)), store.get_run(int(candidate.run_id))]
    for run in runs:
        if run.task != task:
            raise ConfigError(
                f"run {run.id} ({run.name}) is registered for "
                f"{run.task.model_dump(exclude_none=True)}, not this task_spec "
                f"{task.model_dump(exclude_none=True)}; pass the ids of runs of this task"
            )
    return run_info(runs[0]), run_info(runs[1])
