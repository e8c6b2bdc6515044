"""The verdict: deltas, direction-aware statuses, significance gating and the overall status.

Pure Python plus `metrics`, `tasks`, `report`, `spec` (no torch, SQL or GitHub).

Rules (DESIGN §4), for each metric with tolerance `tol` (the per-metric absolute/relative
tolerance, else the threshold):
- `delta = candidate - baseline`; `improvement = delta` if higher is better, else `-delta`;
- `improved` if improvement > tol, `regressed` if improvement < -tol, otherwise `neutral`.
  A difference equal to the tolerance up to float rounding (0.71 - 0.70 vs 0.01) is not beyond it;
- missing on the baseline side: `new` (not gated); missing on the candidate side, or a NaN/inf
  on either side: `failed`, which gates like a regression;
- overall: `regressed` if a gated metric regressed or failed, else `improved` if any metric
  improved, else `neutral`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from .errors import ConfigError
from .metrics import Metric, MetricKind, TestName
from .report import MetricResult
from .spec import OverallStatus, Status, VerdictConfig
from .tasks import TASKS, unknown_metric_message

log = logging.getLogger("regress_action")

# Direction by name, from the task registry (a name has the same direction in every task).
DIRECTIONS: dict[str, bool] = {
    name: metric.higher_is_better
    for task in TASKS.values()
    for name, metric in task.all_metrics().items()
}
KINDS: dict[str, MetricKind] = {
    name: metric.kind for task in TASKS.values() for name, metric in task.all_metrics().items()
}


class PairedStats(Protocol):
    """What the statistics module computes for one metric (see `stats.MetricStats`)."""

    @property
    def test(self) -> TestName: ...
    @property
    def p_value(self) -> float: ...
    @property
    def ci_low(self) -> float: ...
    @property
    def ci_high(self) -> float: ...
    @property
    def n(self) -> int: ...
    @property
    def n_fixed(self) -> int | None: ...
    @property
    def n_broken(self) -> int | None: ...


def _beyond(improvement: float, tolerance: float) -> bool:
    return improvement > tolerance and not math.isclose(
        improvement, tolerance, rel_tol=1e-9, abs_tol=1e-12
    )


def classify(improvement: float, tolerance: float) -> Status:
    """The user's rule: improved / regressed beyond the tolerance, else neutral."""
    if _beyond(improvement, tolerance):
        return "improved"
    if _beyond(-improvement, tolerance):
        return "regressed"
    return "neutral"


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.6g}"


def judge_metric(
    name: str,
    baseline: float | None,
    candidate: float | None,
    config: VerdictConfig,
    spec: Metric | None = None,
) -> MetricResult:
    """Compare one metric's baseline and candidate values."""
    higher_is_better = spec.higher_is_better if spec else DIRECTIONS.get(name)
    kind = spec.kind if spec else KINDS.get(name, "mean")
    if higher_is_better is None:
        raise ConfigError(unknown_metric_message(name, "any", sorted(DIRECTIONS)))
    reference = baseline if baseline is not None and math.isfinite(baseline) else 0.0
    tolerance = config.tolerance_for(name, reference)
    result = MetricResult(
        name=name,
        higher_is_better=higher_is_better,
        kind=kind,
        baseline=baseline,
        candidate=candidate,
        delta=None,
        rel_delta=None,
        tolerance=tolerance,
        status="neutral",
        gated=config.is_gated(name),
    )
    if candidate is None:
        result.status = "failed"
        result.reason = f"{name} is missing on the candidate"
    elif not math.isfinite(candidate):
        result.status = "failed"
        result.reason = f"{name} is not finite: {_fmt(baseline)} → {_fmt(candidate)}"
    elif baseline is None:
        result.status = "new"
        result.gated = False
        result.reason = f"{name} is new: {_fmt(candidate)} (no baseline value)"
    elif not (_finite(baseline) and _finite(candidate)):
        result.status = "failed"
        result.reason = f"{name} is not finite: {_fmt(baseline)} → {_fmt(candidate)}"
    else:
        delta = candidate - baseline
        result.delta = delta
        result.rel_delta = delta / abs(baseline) if baseline != 0 else None
        improvement = delta if higher_is_better else -delta
        result.status = classify(improvement, tolerance)
        better = "higher" if higher_is_better else "lower"
        change = f"{_fmt(baseline)} → {_fmt(candidate)} ({delta:+.6g}, {better} is better)"
        if result.status == "neutral":
            result.reason = f"{name} is within the tolerance {tolerance:.6g}: {change}"
        else:
            result.reason = f"{name} {result.status} beyond the tolerance {tolerance:.6g}: {change}"
    return result


def judge(
    baseline: Mapping[str, float | None],
    candidate: Mapping[str, float | None],
    config: VerdictConfig,
    specs: Mapping[str, Metric] | None = None,
    *,
    log_regressions: bool = True,
) -> dict[str, MetricResult]:
    """Compare every metric present on either side, in a stable order, and log regressions."""
    names = list(dict.fromkeys([*baseline, *candidate]))
    if specs is not None:
        names = [n for n in specs if n in names] + [n for n in names if n not in specs]
    results = {
        name: judge_metric(
            name, baseline.get(name), candidate.get(name), config, (specs or {}).get(name)
        )
        for name in names
    }
    if log_regressions:
        warn_regressions(results.values())
    return results


def warn_regressions(results: Iterable[MetricResult]) -> None:
    """Log one warning per regressed or failed metric, with its readable reason."""
    for result in results:
        if result.status in ("regressed", "failed"):
            log.warning("%s", result.reason)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def apply_significance(
    results: Mapping[str, MetricResult],
    stats: Mapping[str, PairedStats],
    config: VerdictConfig,
    hypotheses: Mapping[str, str] | None = None,
) -> None:
    """Attach paired statistics, Holm-adjust across gated metrics, and apply the mode.

    `report`: statuses stay as the threshold rule says; a threshold change whose adjusted p is
    not below alpha is marked not significant. `gate`: a non-neutral status also needs
    p_adjusted < alpha, otherwise it becomes neutral.

    The Holm family is the gated metrics with a finite p-value, one member per hypothesis
    (`hypotheses` maps metric → hypothesis; metrics sharing one are a single test). A NaN
    p-value (non-finite per-example values) stays out of the family and stays NaN.
    """
    for name, stat in stats.items():
        result = results.get(name)
        if result is None:
            continue
        result.test, result.p_value, result.n = stat.test, stat.p_value, stat.n
        result.ci_low, result.ci_high = stat.ci_low, stat.ci_high
        result.n_fixed, result.n_broken = stat.n_fixed, stat.n_broken
    _holm_adjust(results, hypotheses or {})
    for result in results.values():
        p = result.p_adjusted if result.p_adjusted is not None else result.p_value
        if p is None or not math.isfinite(p) or result.status not in ("improved", "regressed"):
            continue
        result.significant = p < config.alpha
        if result.significant:
            continue
        if config.significance == "gate":
            result.reason += f"; not significant (p_adj={p:.3g} ≥ α={config.alpha:g}), neutral"
            result.status = "neutral"
        else:
            result.reason += f"; not significant (p_adj={p:.3g} ≥ α={config.alpha:g})"


def _holm_adjust(results: Mapping[str, MetricResult], hypotheses: Mapping[str, str]) -> None:
    family: dict[str, list[MetricResult]] = {}
    for result in results.values():
        if result.gated and result.p_value is not None and math.isfinite(result.p_value):
            family.setdefault(hypotheses.get(result.name, result.name), []).append(result)
    groups = list(family.values())
    p_values = [min(r.p_value or 0.0 for r in group) for group in groups]
    for group, p_adj in zip(groups, holm(p_values), strict=True):
        for result in group:
            result.p_adjusted = p_adj


def overall_status(results: Iterable[MetricResult]) -> OverallStatus:
    results = list(results)
    if any(r.gated and r.status in ("regressed", "failed") for r in results):
        return "regressed"
    if any(r.status == "improved" for r in results):
        return "improved"
    return "neutral"


def regressed_metrics(results: Iterable[MetricResult]) -> list[str]:
    return [r.name for r in results if r.gated and r.status in ("regressed", "failed")]


def notes(results: Iterable[MetricResult]) -> str:
    """The DB row's notes, e.g. "accuracy: +0.04, loss: -0.02" (deltas to 2 significant places)."""
    parts = []
    for r in results:
        if r.delta is None:
            parts.append(f"{r.name}: {r.status}")
        else:
            parts.append(f"{r.name}: {_signed(r.delta)}")
    return ", ".join(parts)


def _signed(delta: float) -> str:
    if delta == 0:
        return "+0"
    digits = max(2, 1 - math.floor(math.log10(abs(delta))))
    return f"{delta:+.{digits}f}".rstrip("0").rstrip(".") if abs(delta) < 1 else f"{delta:+.3g}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
