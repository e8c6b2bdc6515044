"""One model on one eval set, without a comparison: `regress-action evaluate`.

The one-model pass of the engine (sharded under torchrun, as a comparison is), each requested
metric's value over the eval set, and one ExperimentDB row holding the report and the model's
per-example records (a compressed `.npz`) under `cache_key`: the hash of everything that can
change those records (the checkpoint's bytes and loader, the eval set's fingerprint, the task
and the data options, the engine's version, the device type and the precision). A job on the
default branch evaluates its model once; the stored records are what a later comparison needs
of that side: `RecordsCache` is how `app.run_compare` reads them (and stores the sides it
evaluated, with the comparison).

Like `app`, receives the ExperimentDB as a parameter and imports the torch layer only inside
its functions. Order: output paths checked → evaluation → one transaction → JSON → Markdown.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .app import (
    check_outputs,
    data_columns,
    dataset_info,
    eval_config,
    lm_verdict,
    pass_options,
    run_folder,
    run_info,
    text_options,
    write_staged,
)
from .compare import metric_specs
from .errors import ConfigError
from .render import render_evaluation
from .report import BaselineSource, DatasetInfo, EvaluationReport, MetricValue, Report, RunInfo
from .spec import (
    DataOptions,
    EvalConfig,
    MetricBound,
    Precision,
    RunRecord,
    TaskSpec,
    VerdictConfig,
)

log = logging.getLogger("regress_action")

if TYPE_CHECKING:
    import torch

    from .data import EvalSet
    from .engine import EngineResult, PassOptions
    from .records import Records
    from .store import ExperimentDB
    from .tasks import Adapter


@dataclass(frozen=True)
class EvaluateRequest:
    """One evaluation of a registered run."""

    run_id: int
    dataset: str
    metrics: tuple[str, ...] | None = None  # None: the task's default set
    metrics_module: str | None = None
    # Floors / ceilings on the metric values: a value outside its bound fails the evaluation.
    bounds: dict[str, MetricBound] = field(default_factory=dict)
    batch_size: int = 64
    max_examples: int | None = None
    device: str = "auto"
    precision: Precision = "fp32"
    workers: int | None = None
    data: DataOptions = field(default_factory=DataOptions)
    json_path: Path | None = None
    markdown_path: Path | None = None
    commit: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    record: bool = True  # record the evaluation (report and records) in the ExperimentDB


@dataclass
class EvaluateOutcome:
    report: EvaluationReport
    markdown: str


def run_evaluate(request: EvaluateRequest, db: ExperimentDB) -> EvaluateOutcome:
    """Evaluate a registered run on an eval set, record it and write the artifacts."""
    from .models import load_model

    paths = {"--json-out": request.json_path, "--markdown-out": request.markdown_path}
    check_outputs(paths, db)
    run = db.get_run(request.run_id)
    model = load_model(
        run.source,
        allow_pickle=request.allow_pickle,
        trust_remote_code=request.trust_remote_code,
        task=run.task,
    )
    eval_cfg = eval_config(request)
    verdict = VerdictConfig(
        metrics=request.metrics, metrics_module=request.metrics_module, bounds=request.bounds
    )
    report, records = evaluate_model(
        model, eval_cfg, run.task, verdict, run_info(run), model_dir=run_folder(run)
    )
    report.commit = request.commit
    report.cache_key = cache_key(run.source.model_dump(), report, request.data)
    stored = db if request.record else None
    return finish_evaluation(report, records, stored, request.json_path, request.markdown_path)


def evaluate_model(
    model: torch.nn.Module,
    eval_cfg: EvalConfig,
    task: TaskSpec,
    verdict: VerdictConfig,
    run: RunInfo,
    *,
    adapter: Adapter | None = None,
    model_dir: Path | None = None,
) -> tuple[EvaluationReport, Records]:
    """Load the eval set, run the model over it (this rank's shard under torchrun; the other
    ranks stop with FollowerDone once their records are sent) and compute each metric."""
    from .data import load_eval_set
    from .tasks import adapter_for

    specs = metric_specs(task, verdict)  # unknown metric names fail before any work
    options = eval_cfg.data_options()
    if task.modality == "text":
        options = text_options(options, (model, model), (model_dir, model_dir), task)
    eval_set = load_eval_set(
        eval_cfg.dataset,
        task=task,
        max_examples=eval_cfg.max_examples,
        name=eval_cfg.dataset_name,
        options=options,
    )
    if task.task == "lm":
        specs = metric_specs(task, lm_verdict(eval_set, task, verdict))
    records, device, duration_s, world_size = _one_pass(
        model, eval_set, adapter or adapter_for(task), pass_options(eval_cfg, eval_set.observe)
    )
    columns = data_columns(records.columns, records.example_ids, eval_set)
    missing = sorted({c for spec in specs.values() for c in spec.columns} - set(columns))
    if missing:
        raise ConfigError(
            f"the records of this {task.task} eval set have no column(s) {', '.join(missing)}; "
            "drop the metrics that need them from --metrics"
        )
    metrics = {
        name: MetricValue(
            name=name,
            value=spec.value(columns, task.num_classes),
            higher_is_better=spec.higher_is_better,
            kind=spec.kind,
            description=spec.description,
        )
        for name, spec in specs.items()
    }
    failed = judge_bounds(metrics, verdict)
    report = EvaluationReport(
        task=task,
        dataset=dataset_info(eval_set),
        run=run,
        metrics=metrics,
        status=("failed" if failed else "passed") if verdict.bounds else None,
        failed_metrics=failed,
        engine_version=__version__,
        device=device,
        world_size=world_size,
        precision=eval_cfg.precision,
        duration_s=duration_s,
    )
    return report, records


def judge_bounds(metrics: dict[str, MetricValue], verdict: VerdictConfig) -> list[str]:
    """Check each bounded metric's value against its floor / ceiling (the point value, no
    statistics); set its bound, status and reason; return the metrics that fail: outside their
    bound, or not finite."""
    failed: list[str] = []
    for name, bound in verdict.bounds.items():
        metric = metrics.get(name)
        if metric is None:  # not computed (metric_specs checked the names): cannot pass
            raise ConfigError(f"metric {name!r} has a bound but was not evaluated")
        metric.bound = bound
        if not math.isfinite(metric.value):
            metric.status = "failed"
            metric.reason = f"{name} is {metric.value}, not finite: it fails its bound"
        elif (violation := bound.violation(metric.value)) is not None:
            metric.status = "failed_bound"
            metric.reason = f"{name} is outside its bound: {violation}"
        else:
            metric.status = "passed"
            metric.reason = f"{name} {metric.value:.6g} is within its bound {bound.describe()}"
        if metric.status != "passed":
            log.warning("%s", metric.reason)
            failed.append(name)
    return failed


def _one_pass(
    model: torch.nn.Module, eval_set: EvalSet, adapter: Adapter, options: Any
) -> tuple[Records, str, float, int]:
    """The model's records over the whole eval set: in this process, or each torchrun rank
    over its shard, joined on rank 0."""
    from .distributed import current, evaluate_sharded_one, shard_of
    from .engine import evaluate

    session = current()
    if session is None:
        result = evaluate(model, eval_set.dataset, adapter, options)
        return result.records, result.device, result.duration_s, 1
    options = replace(options, device=session.device(options.device))

    def shard(start: int, stop: int) -> Any:
        return evaluate(
            model, shard_of(eval_set.dataset, start, stop), adapter, options, first_id=start
        )

    records, local = evaluate_sharded_one(session, eval_set.n, shard)
    return records, local.device, local.duration_s, session.world_size


def cache_key(source: dict[str, Any], report: EvaluationReport, data: DataOptions) -> str:
    """sha256 of everything that can change a model's records on an eval set: the checkpoint
    (bytes, format, loader), the eval set's fingerprint and size, the task, how examples become
    inputs, the engine's version, the device type and the precision."""
    return records_key(
        source,
        report.task,
        report.dataset,
        data,
        engine_version=report.engine_version,
        device=report.device,
        precision=report.precision,
    )


def records_key(
    source: dict[str, Any],
    task: TaskSpec,
    dataset: DatasetInfo,
    data: DataOptions,
    *,
    engine_version: str,
    device: str | None,
    precision: Precision,
) -> str:
    """`cache_key` from its parts (a comparison's side has no EvaluationReport yet)."""
    device_type = (device or "cpu").split(":")[0]
    key = {
        "checkpoint": {k: source.get(k) for k in ("sha256", "format", "factory", "factory_kwargs")},
        "dataset": {"fingerprint": dataset.fingerprint, "n": dataset.n},
        "task": task.model_dump(mode="json"),
        # slice_fn only names slices: the records are the same with or without it
        "data": data.model_dump(
            mode="json", exclude={"dataset_factory", "dataset_kwargs", "slice_fn"}
        )
        | {"factory": data.dataset_factory, "factory_kwargs": data.dataset_kwargs},
        "tokenizer": dataset.tokenizer,
        "engine": engine_version,
        "device": device_type,
        "precision": precision,
    }
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def finish_evaluation(
    report: EvaluationReport,
    records: Records,
    db: ExperimentDB | None,
    json_path: Path | None,
    markdown_path: Path | None,
) -> EvaluateOutcome:
    """Record the evaluation (one transaction: its row with the records), then write JSON and
    Markdown (`app.write_staged`: a path that cannot be written records nothing)."""
    from .records import records_to_npz

    def record() -> tuple[str, str]:
        if db is not None:
            report.evaluation_id = db.create_evaluation(report, records_to_npz(records))
            report.records_stored = True
        return report.to_json(), render_evaluation(report)

    markdown = write_staged(json_path, markdown_path, record)
    return EvaluateOutcome(report=report, markdown=markdown)


SIDES = ("baseline", "candidate")


class RecordsCache:
    """A comparison's two sides against the evaluations stored in the ExperimentDB.

    With `lookup`, the candidate is evaluated first (its pass also takes an image folder's
    fingerprint), then the baseline's `cache_key` is looked up: a stored evaluation with its
    records stands in for the baseline's pass (`records.pair`), and only a miss evaluates the
    baseline. Without it (`--no-cache`, or under torchrun, where every rank makes the same
    choice without the database) both models run in the one paired pass. Either way the records
    computed here become evaluation rows (`evaluations`), recorded in the comparison's
    transaction so that the next comparison against the same baseline finds them.
    """

    def __init__(
        self, db: ExperimentDB, runs: tuple[RunRecord, RunRecord], data: DataOptions, lookup: bool
    ) -> None:
        self.db, self.runs, self.data, self.lookup = db, runs, data, lookup
        self.source: BaselineSource | None = None  # set when the baseline came from the DB
        self.fresh: dict[str, Records] = {}  # each side evaluated here: its own records
        self.keys: dict[str, str] = {}

    def _key(
        self, side: str, eval_set: EvalSet, task: TaskSpec, device: str, precision: Precision
    ) -> str:
        from .app import dataset_info

        run = self.runs[SIDES.index(side)]
        return records_key(
            run.source.model_dump(),
            task,
            dataset_info(eval_set),
            self.data,
            engine_version=__version__,
            device=device,
            precision=precision,
        )

    def run_pass(
        self,
        models: tuple[torch.nn.Module, torch.nn.Module],
        eval_set: EvalSet,
        adapter: Adapter,
        options: PassOptions,
        task: TaskSpec,
    ) -> tuple[EngineResult, int]:
        """`app`'s paired pass, or the candidate's pass paired with the baseline's stored
        records (the baseline's own pass only on a miss)."""
        from .app import _run_pass
        from .distributed import current
        from .engine import EngineResult, evaluate, resolve_device
        from .records import Records, pair, records_from_npz

        def paired_pass() -> tuple[EngineResult, int]:
            result, world_size = _run_pass(models, eval_set, adapter, options, task)
            both = result.records
            for side in SIDES:
                self.fresh[side] = Records(both.example_ids, dict(both.side(side)))
                self.keys[side] = self._key(side, eval_set, task, result.device, options.precision)
            return result, world_size

        if not self.lookup or current() is not None:
            return paired_pass()
        if eval_set.fingerprint_known:
            # The key is known before any pass: a miss runs the one paired pass (each example
            # read once for both models), a hit only the candidate's.
            device = str(resolve_device(options.device))
            key = self._key("baseline", eval_set, task, device, options.precision)
            if self.db.cached_evaluation(key) is None:
                return paired_pass()
        candidate = evaluate(models[1], eval_set.dataset, adapter, options, side="candidate")
        self.fresh["candidate"] = candidate.records
        duration = candidate.duration_s
        for side in SIDES:  # the candidate's pass made the fingerprint known
            self.keys[side] = self._key(side, eval_set, task, candidate.device, options.precision)
        stored = self.db.cached_evaluation(self.keys["baseline"])
        if stored is not None:
            evaluation, data = stored
            baseline = records_from_npz(data)
            assert evaluation.evaluation_id is not None
            self.source = BaselineSource(
                evaluation_id=evaluation.evaluation_id,
                created_at=evaluation.created_at,
                device=evaluation.device,
                precision=evaluation.precision,
            )
            log.info("baseline records from evaluation #%d", evaluation.evaluation_id)
        else:
            # The fingerprint is known: the baseline's pass need not feed it again.
            own = evaluate(
                models[0],
                eval_set.dataset,
                adapter,
                replace(options, observe=None),
                side="baseline",
            )
            baseline, duration = own.records, duration + own.duration_s
            self.fresh["baseline"] = baseline
        paired = pair(
            baseline,
            candidate.records,
            task=adapter.task,
            shared=adapter.shared,
            num_classes=task.num_classes,
        )
        return EngineResult(paired, candidate.device, duration), 1

    def evaluations(self, report: Report) -> list[tuple[EvaluationReport, bytes | None]]:
        """An evaluation row for each side evaluated here, its metric values the report's, to
        record with the comparison; a side whose key already has stored records is left out
        (unless the cache is off: `--no-cache` records its fresh passes)."""
        from .records import records_to_npz

        rows: list[tuple[EvaluationReport, bytes | None]] = []
        for side, records in self.fresh.items():
            key = self.keys[side]
            if self.lookup and self.db.cached_evaluation(key) is not None:
                continue
            metrics = {
                name: MetricValue(
                    name=name,
                    value=value,
                    higher_is_better=metric.higher_is_better,
                    kind=metric.kind,
                )
                for name, metric in report.metrics.items()
                if (value := getattr(metric, side)) is not None
            }
            evaluation = EvaluationReport(
                task=report.task,
                dataset=report.dataset,
                run=report.baseline if side == "baseline" else report.candidate,
                metrics=metrics,
                cache_key=key,
                engine_version=__version__,
                commit=report.commit,
                device=report.device,
                world_size=report.world_size,
                precision=report.precision,
            )
            rows.append((evaluation, records_to_npz(records)))
        return rows
