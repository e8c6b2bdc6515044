"""The Python API: `compare_models(...)`, for notebooks and training scripts.

Imports torch (through `app`'s evaluation path); `import regress_action` reaches this module
only when `compare_models` is first used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .app import Outputs, evaluate_models, finish
from .compare import ReportContext
from .errors import ConfigError
from .report import DatasetInfo, RunInfo
from .spec import EvalConfig, TaskSpec, VerdictConfig

if TYPE_CHECKING:
    import torch

    from .adapters import Adapter
    from .store import ExperimentDB


def compare_models(
    baseline_model: torch.nn.Module,
    candidate_model: torch.nn.Module,
    adapter: Adapter | None,
    task_spec: TaskSpec,
    eval_cfg: EvalConfig,
    db: ExperimentDB | str | None = None,
    comparison_name: str | None = None,
    threshold: float = 0.01,
    *,
    verdict: VerdictConfig | None = None,
    baseline_run_id: int | None = None,
    candidate_run_id: int | None = None,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate both models on the same eval set in one pass and return the report as a dict.

    The dict has `status` (overall), `metrics` → name → `{baseline, candidate, delta, rel_delta,
    status, higher_is_better, ...}`, `dataset` (name, fingerprint, n) and, when `db` is given,
    `comparison_id`. Run ids come from the arguments or a `run_id` attribute on each model.
    `verdict` (tolerances, metrics, significance) overrides `threshold` when given.
    `adapter` may be None: the task's own adapter is used.
    """
    from .adapters import adapter_for

    verdict = verdict or VerdictConfig(threshold=threshold)
    if adapter is not None and adapter.task != task_spec.task:
        raise ConfigError(f"adapter for {adapter.task!r} does not fit task {task_spec.task!r}")
    adapter_for(task_spec)  # validates the task's sizes
    baseline_id = baseline_run_id or getattr(baseline_model, "run_id", None)
    candidate_id = candidate_run_id or getattr(candidate_model, "run_id", None)
    store = _open_db(db)
    if store is not None:
        if baseline_id is None or candidate_id is None:
            raise ConfigError(
                "recording a comparison needs baseline_run_id and candidate_run_id (or a "
                "`run_id` attribute on each model); register checkpoints with "
                "`regress-action runs add`"
            )
        store.get_run(int(baseline_id))  # unknown ids fail before the evaluation
        store.get_run(int(candidate_id))
    context = ReportContext(
        task=task_spec,
        dataset=DatasetInfo(name=eval_cfg.display_name(), fingerprint="", n=0),
        verdict=verdict,
        baseline=RunInfo(run_id=baseline_id),
        candidate=RunInfo(run_id=candidate_id),
        report_name=comparison_name or "default",
    )
    if eval_cfg.dataset_name is None and not isinstance(eval_cfg.dataset, str | Path):
        eval_cfg = eval_cfg.model_copy(update={"dataset_name": eval_cfg.display_name()})
    report = evaluate_models(baseline_model, candidate_model, eval_cfg, task_spec, context, adapter)
    outputs = Outputs(
        db=store,
        json_path=Path(json_path) if json_path else None,
        markdown_path=Path(markdown_path) if markdown_path else None,
    )
    return finish(report, outputs).report.to_dict()


def _open_db(db: ExperimentDB | str | None) -> ExperimentDB | None:
    if db is None or not isinstance(db, str):
        return db
    from .store import ExperimentDB

    return ExperimentDB(db)
