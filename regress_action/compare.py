"""From paired records to a Report: metric values, verdict, statistics, flips, per-class.

The task (from the registry) says which metrics and which analysis; `stats` tests every metric
the same way whatever its task. Imports numpy and the torch-free modules (`tasks`, `verdict`,
`stats`, `report`); never torch, SQL, GitHub or templates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import __version__
from .errors import ConfigError
from .metrics import Metric, TestName
from .records import PairedRecords
from .report import DatasetInfo, MetricResult, Report, RunInfo, SliceResult, StatsInfo
from .slices import gating, judge_slice, judge_slices, slice_failures, slices_family_size
from .spec import GATE_PRIMARY, Precision, TaskSpec, VerdictConfig
from .stats import paired_statistics
from .tasks import get_task, metrics_for, select_metrics, unknown_metric_message
from .verdict import (
    PairedStats,
    apply_significance,
    family,
    family_alphas,
    family_size,
    judge,
    notes,
    overall_status,
    regressed_metrics,
    warn_regressions,
)


@dataclass(frozen=True)
class ReportContext:
    """What a report says besides the metrics: task, data, runs and presentation."""

    task: TaskSpec
    dataset: DatasetInfo
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    baseline: RunInfo = field(default_factory=RunInfo)
    candidate: RunInfo = field(default_factory=RunInfo)
    report_name: str = "default"
    commit: str | None = None
    device: str | None = None
    world_size: int = 1  # processes that evaluated shards of the eval set (torchrun)
    precision: Precision = "fp32"


def metric_specs(task: TaskSpec, verdict: VerdictConfig) -> dict[str, Metric]:
    """The metrics to report for `task` (with the verdict's metrics module's); fails early on
    unknown metric or gate names."""
    specs = select_metrics(task, verdict.metrics, verdict.metrics_module)
    every = metrics_for(task, verdict.metrics_module)
    named_gate = () if verdict.gate_keyword() else (verdict.gate or ())
    for name in [*named_gate, *verdict.tolerances, *verdict.bounds]:
        if name not in every:
            raise ConfigError(unknown_metric_message(name, task.task, list(every)))
        if name not in specs:
            raise ConfigError(
                f"metric {name!r} has a gate, tolerance or bound but is not among the reported "
                f"metrics ({', '.join(specs)}); add it to --metrics / metrics"
            )
    return specs


def resolve_gate(task: TaskSpec, verdict: VerdictConfig, specs: dict[str, Metric]) -> VerdictConfig:
    """The verdict with `gate` as metric names: "all" → every reported metric; "primary" →
    the task's primary metrics that are reported, or every reported metric when none is
    (e.g. `--metrics ece,loss`, or bits per byte alone across tokenizers)."""
    keyword = verdict.gate_keyword()
    if keyword is None:
        return verdict
    names = tuple(specs)
    if keyword == GATE_PRIMARY:
        primary = tuple(name for name in get_task(task.task).primary if name in specs)
        names = primary or names
    return verdict.model_copy(update={"gate": names})


def build_report(records: PairedRecords, context: ReportContext, duration_s: float) -> Report:
    specs = metric_specs(context.task, context.verdict)
    verdict = resolve_gate(context.task, context.verdict, specs)
    num_classes = context.task.num_classes
    baseline = {name: m.value(records.baseline, num_classes) for name, m in specs.items()}
    candidate = {name: m.value(records.candidate, num_classes) for name, m in specs.items()}
    results = judge(baseline, candidate, verdict, specs, log_regressions=False)
    hypotheses = {name: spec.hypothesis or name for name, spec in specs.items()}
    members = family(results, specs, hypotheses)
    if verdict.significance != "off":
        stats = paired_statistics(
            records,
            specs,
            alpha=verdict.alpha,
            alphas=family_alphas(members, specs, verdict.alpha),
            resamples=verdict.resamples,
            seed=verdict.seed,
        )
        apply_significance(results, stats, verdict, members)
    warn_regressions(results.values())
    slices = judge_slices(records, specs, verdict, members)
    failures = slice_failures(slices)
    analysis = get_task(context.task.task).analyse(records, context.dataset.class_names)
    return Report(
        tool_version=__version__,
        report_name=context.report_name,
        status="regressed" if failures else overall_status(results.values()),
        regressed_metrics=regressed_metrics(results.values()) + failures,
        notes=notes(results.values()),
        task=context.task,
        dataset=context.dataset,
        baseline=context.baseline,
        candidate=context.candidate,
        threshold=verdict.threshold,
        stats=StatsInfo(
            significance=verdict.significance,
            alpha=verdict.alpha,
            confidence=1 - verdict.alpha,
            resamples=verdict.resamples,
            seed=verdict.seed,
            family_size=family_size(members),
        ),
        metrics=results,
        flips=analysis.flips,
        per_class=analysis.per_class,
        commit=context.commit,
        device=context.device,
        world_size=context.world_size,
        precision=context.precision,
        duration_s=duration_s,
        slices=slices,
    )


@dataclass(frozen=True)
class _Given:
    """A report's recorded statistics of one metric, as `verdict.apply_significance` reads them."""

    test: TestName
    p_value: float
    ci_low: float
    ci_high: float
    n: int
    n_fixed: int | None
    n_broken: int | None
    se: float
    mde: float
    level: float
    clusters: int | None

    @classmethod
    def of(cls, metric: MetricResult, level: float) -> _Given | None:
        """The metric's statistics; its interval only when the run computed it at `level`, the
        level this verdict gives it (another family size gives another level: such an
        interval would be shown and used under a label it does not have)."""
        if metric.test is None or metric.test == "paired_permutation" or metric.p_value is None:
            return None
        nan = math.nan
        same_level = metric.ci_level is not None and math.isclose(metric.ci_level, level)
        return cls(
            test=metric.test,
            p_value=metric.p_value,
            ci_low=nan if metric.ci_low is None or not same_level else metric.ci_low,
            ci_high=nan if metric.ci_high is None or not same_level else metric.ci_high,
            n=metric.n or 0,
            n_fixed=metric.n_fixed,
            n_broken=metric.n_broken,
            se=nan if metric.se is None else metric.se,
            mde=nan if metric.mde is None else metric.mde,
            level=metric.ci_level or 0.95,
            clusters=metric.clusters,
        )


def rejudge(report: Report, verdict: VerdictConfig) -> Report:
    """The report judged again from its metric values and recorded statistics under `verdict`,
    for a report that comes from a run this process does not trust (a fork's artifact): every
    status, the gated set, the corrections and the overall status are derived here, none is
    taken from the report. Directions and test validity come from the task registry (and the
    verdict's metrics module), not from the report; p-values are adjusted over this verdict's
    family, and an interval the run computed at another level than this verdict gives it is
    dropped (under `margin` the change then stays neutral). `gate: primary` means the task's primary
    metrics whether the report carries them or not: a gated metric missing from the report
    fails. The verdict's bounds are checked on the candidate values (a bounded metric missing
    from the report fails). A metric the registry does not know is kept for display, neutral
    and never gated."""
    every = metrics_for(report.task, verdict.metrics_module)
    specs = {name: every[name] for name in report.metrics if name in every}
    keyword = verdict.gate_keyword()
    if keyword == GATE_PRIMARY:
        gate = tuple(get_task(report.task.task).primary) or tuple(specs)
    elif keyword is not None:
        gate = tuple(specs)
    else:
        gate = tuple(verdict.gate or ())
    config = verdict.model_copy(update={"gate": gate})
    values = {name: report.metrics[name] for name in specs}
    results = judge(
        {name: m.baseline for name, m in values.items()},
        {name: m.candidate for name, m in values.items()},
        config,
        specs,
        log_regressions=False,
    )
    for name in (*gate, *config.bounds):
        if name not in results:
            results[name] = _missing(name, every.get(name), config)
    hypotheses = {name: spec.hypothesis or name for name, spec in specs.items()}
    members = family(results, specs, hypotheses)
    slices = _rejudge_slices(report, config, specs, members)
    failures = slice_failures(slices)
    if config.significance != "off":
        alphas = family_alphas(members, specs, config.alpha)
        given = {
            name: _Given.of(m, 1 - alphas[name]) for name, m in values.items() if specs[name].tested
        }
        stats = {name: g for name, g in given.items() if g is not None}
        apply_significance(results, stats, config, members)
        for name, stat in stats.items():
            if math.isnan(stat.ci_low):  # recorded at another level: not shown as this one
                results[name].ci_low = results[name].ci_high = None
    for name, metric in report.metrics.items():
        if name not in results:
            reason = f"{name} is not a metric of the task {report.task.task}; not judged"
            results[name] = metric.model_copy(
                update={"status": "neutral", "gated": False, "reason": reason, "bound": None}
            )
    stats_info = report.stats.model_copy(
        update={
            "significance": config.significance,
            "alpha": config.alpha,
            "confidence": 1 - config.alpha,
            "family_size": family_size(members),
        }
    )
    return report.model_copy(
        update={
            "metrics": results,
            "status": "regressed" if failures else overall_status(results.values()),
            "regressed_metrics": regressed_metrics(results.values()) + failures,
            "notes": notes(results.values()),
            "threshold": config.threshold,
            "stats": stats_info,
            "slices": slices,
        }
    )


def _rejudge_slices(
    report: Report, config: VerdictConfig, specs: dict[str, Metric], members: dict[str, str]
) -> list[SliceResult]:
    """The report's slices judged again from their values, sizes and recorded statistics under
    `config` (which slices gate, the family size, every status): nothing is taken from the
    report's verdicts. A gated metric missing from a gated slice fails it."""
    if not report.slices:
        return []
    why = gating({item.name: item.n for item in report.slices}, config, strict=False)
    size = slices_family_size(sum(reason is None for reason in why.values()), members)
    out = []
    for item in report.slices:
        values = {name: item.metrics[name] for name in specs if name in item.metrics}

        def stats_of(
            _: str, alphas: Mapping[str, float], values: dict[str, MetricResult] = values
        ) -> dict[str, PairedStats]:
            given = {
                name: _Given.of(m, 1 - alphas[name])
                for name, m in values.items()
                if specs[name].tested
            }
            return {name: g for name, g in given.items() if g is not None}

        judged = judge_slice(
            item.name,
            item.n,
            (
                {name: m.baseline for name, m in values.items()},
                {name: m.candidate for name, m in values.items()},
            ),
            config,
            {name: specs[name] for name in values},
            members,
            why[item.name],
            size,
            stats_of,
        )
        for name in (*(config.gate or ()), *config.bounds):
            if name not in judged.metrics and name in specs and judged.gated:
                judged.metrics[name] = _missing(name, specs[name], config)
        for metric in judged.metrics.values():
            if metric.ci_low is not None and math.isnan(metric.ci_low):  # another level's
                metric.ci_low = metric.ci_high = None
        if judged.gated:
            judged.status = overall_status(judged.metrics.values())
        out.append(judged)
    return out


def _missing(name: str, spec: Metric | None, config: VerdictConfig) -> MetricResult:
    """A gated metric the report does not carry: failed."""
    return MetricResult(
        name=name,
        higher_is_better=True if spec is None else spec.higher_is_better,
        kind="mean" if spec is None else spec.kind,
        baseline=None,
        candidate=None,
        delta=None,
        rel_delta=None,
        tolerance=config.tolerance_for(name, 0.0),
        status="failed",
        reason=f"{name} is gated but missing from the report",
        bound=config.bounds.get(name),
    )
