"""The verdict: deltas, direction-aware statuses, significance gating and the overall status.

Pure Python plus `metrics`, `tasks`, `report`, `spec` (no torch, SQL or GitHub).

Rules (DESIGN §4), for each metric with tolerance `tol` (the per-metric absolute/relative
tolerance, else the threshold):
- `delta = candidate - baseline`; `improvement = delta` if higher is better, else `-delta`;
- `improved` if improvement > tol, `regressed` if improvement < -tol, otherwise `neutral`.
  A difference equal to the tolerance up to float rounding (0.71 - 0.70 vs 0.01) is not beyond it;
- missing on the baseline side: `new` (not gated); missing on the candidate side, or a NaN/inf
  on either side: `failed`, which gates like a regression;
- a bound (`VerdictConfig.bounds`: a floor and / or a ceiling on the candidate's point value,
  whatever the baseline): a finite candidate outside it is `failed_bound`, which wins over the
  change's status and fails the job even when the metric is not in `gate`; a missing or
  non-finite candidate of a bounded metric is `failed` and fails the job too;
- overall: `regressed` if a metric fails the job (`fails_job`: a gated metric regressed or
  failed, or a bound was violated), else `improved` if any metric improved, else `neutral`.

Then the significance mode (`apply_significance`): the gated, tested metrics form one family,
corrected by Bonferroni over its hypotheses; under `gate` a change beyond the tolerance must
also be significant, under `margin` its whole interval must lie beyond the tolerance.
docs/statistics.md says why and what error rates that gives.
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
    @property
    def se(self) -> float: ...
    @property
    def mde(self) -> float: ...
    @property
    def level(self) -> float: ...
    @property
    def clusters(self) -> int | None: ...


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
    return _apply_bound(result, config)


def _apply_bound(result: MetricResult, config: VerdictConfig) -> MetricResult:
    """The metric's floor / ceiling on the candidate's point value, when it has one."""
    bound = config.bounds.get(result.name)
    if bound is None:
        return result
    result.bound = bound
    candidate = result.candidate
    if candidate is None or not math.isfinite(candidate):
        result.reason += f"; the bound {bound.describe()} cannot be checked"
        return result
    violation = bound.violation(candidate)
    if violation is None:
        result.reason += f"; within its bound {bound.describe()}"
        return result
    change = f"; {result.reason}" if result.reason else ""
    result.status = "failed_bound"
    result.reason = f"{result.name} is outside its bound: {violation}{change}"
    return result


def fails_job(result: MetricResult) -> bool:
    """Whether the metric fails the job: a gated metric that regressed or failed, a violated
    bound, or a bounded metric whose value is missing or not finite (gated by its bound)."""
    if result.status == "failed_bound":
        return True
    if result.status == "failed" and result.bound is not None:
        return True
    return result.gated and result.status in ("regressed", "failed")


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
        if result.status in ("regressed", "failed", "failed_bound"):
            log.warning("%s", result.reason)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    A NaN p-value is no test: it stays NaN and does not count in the family size."""
    finite = [i for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(finite)
    order = sorted(finite, key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def bonferroni(p_value: float, family_size: int) -> float:
    """m · p, capped at 1 (NaN stays NaN)."""
    return min(1.0, family_size * p_value) if not math.isnan(p_value) else math.nan


def family(
    results: Mapping[str, MetricResult],
    specs: Mapping[str, Metric],
    hypotheses: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The gated, tested metrics → their hypothesis: the family the correction runs over
    (metrics sharing a hypothesis, e.g. an LM's loss and perplexity, are one test)."""
    return {
        name: (hypotheses or {}).get(name, name)
        for name, result in results.items()
        if result.gated and (spec := specs.get(name)) is not None and spec.tested
    }


def family_size(members: Mapping[str, str]) -> int:
    """m, the number of hypotheses of the gated family (at least 1)."""
    return max(1, len(set(members.values())))


def family_alphas(
    members: Mapping[str, str], specs: Iterable[str], alpha: float
) -> dict[str, float]:
    """Each metric's level: α / m for the m hypotheses of the gated family (Bonferroni), α for
    a metric outside it. Its interval is at 1 - that level, so interval and adjusted p agree."""
    size = family_size(members)
    return {name: alpha / size if name in members else alpha for name in specs}


def apply_significance(
    results: Mapping[str, MetricResult],
    stats: Mapping[str, PairedStats],
    config: VerdictConfig,
    members: Mapping[str, str] | None = None,
    *,
    size: int | None = None,
) -> None:
    """Attach paired statistics, adjust across the gated family, and apply the mode.

    `members` maps each metric of the gated family to its hypothesis (`family`); the family
    size m is its number of hypotheses, a member's p_adjusted is Bonferroni's min(1, m·p) and
    its interval (computed by `stats` at level 1 - α/m) excludes 0 exactly when p_adjusted < α.
    A metric outside the family is judged on its own p at α. `size` overrides m (a slice's
    family counts every gated slice's hypotheses, see `regress_action.slices`).

    - `report`: statuses stay as the threshold rule says; a change whose p is not below α is
      marked not significant.
    - `gate`: a change beyond the tolerance also needs p < α (adjusted), else it is neutral.
    - `margin`: a change counts only when the whole interval lies beyond the tolerance (a test
      of "the change is within the tolerance"), else it is neutral.
    A metric without a valid test (`tested=False`) is neutral under `gate` and `margin`.
    Each gated metric whose minimum detectable effect exceeds its tolerance is `underpowered`.
    """
    members = members or {}
    size = family_size(members) if size is None else size
    for name, stat in stats.items():
        result = results.get(name)
        if result is None:
            continue
        result.test, result.p_value, result.n = stat.test, stat.p_value, stat.n
        result.ci_low, result.ci_high = stat.ci_low, stat.ci_high
        result.n_fixed, result.n_broken = stat.n_fixed, stat.n_broken
        result.se, result.mde, result.ci_level = _real(stat.se), _real(stat.mde), stat.level
        result.clusters = stat.clusters
        if name in members and math.isfinite(stat.p_value):
            result.p_adjusted = bonferroni(stat.p_value, size)
        if result.gated and result.mde is not None and result.mde > result.tolerance:
            result.underpowered = True
    for result in results.values():
        if result.status not in ("improved", "regressed"):
            continue
        if result.test is None:
            if config.significance in ("gate", "margin"):
                result.reason += "; no valid paired test for this metric, neutral"
                result.status = "neutral"
            continue
        p = result.p_adjusted if result.p_adjusted is not None else result.p_value
        if p is None or not math.isfinite(p):
            continue
        result.significant = p < config.alpha
        shown = f"p_adj={p:.3g}" if result.p_adjusted is not None else f"p={p:.3g}"
        if config.significance == "margin":
            if not _interval_beyond(result):
                result.reason += (
                    f"; the {_level(result)} CI reaches inside the tolerance "
                    f"{result.tolerance:.6g}, neutral"
                )
                result.status = "neutral"
        elif not result.significant:
            if config.significance == "gate":
                result.reason += f"; not significant ({shown} ≥ α={config.alpha:g}), neutral"
                result.status = "neutral"
            else:
                result.reason += f"; not significant ({shown} ≥ α={config.alpha:g})"


def _interval_beyond(result: MetricResult) -> bool:
    """Whether the whole CI of the improvement lies beyond the tolerance, on the side of the
    status (`margin` mode)."""
    low, high = result.ci_low, result.ci_high
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return False
    if not result.higher_is_better:
        low, high = -high, -low
    if result.status == "improved":
        return _beyond(low, result.tolerance)
    return _beyond(-high, result.tolerance)


def _level(result: MetricResult) -> str:
    return f"{(result.ci_level or 0.95) * 100:.4g} %"


def _real(value: float) -> float | None:
    return value if math.isfinite(value) else None


def overall_status(results: Iterable[MetricResult]) -> OverallStatus:
    results = list(results)
    if any(fails_job(r) for r in results):
        return "regressed"
    if any(r.status == "improved" for r in results):
        return "improved"
    return "neutral"


def regressed_metrics(results: Iterable[MetricResult]) -> list[str]:
    """The metrics that fail the job (`fails_job`): regressed, failed or outside their bound."""
    return [r.name for r in results if fails_job(r)]


def notes(results: Iterable[MetricResult]) -> str:
    """The DB row's notes, e.g. "accuracy: +0.04, loss: -0.02" (deltas to 2 significant places;
    a metric outside its bound is marked "(failed_bound)")."""
    parts = []
    for r in results:
        if r.delta is None:
            parts.append(f"{r.name}: {r.status}")
        else:
            outside = " (failed_bound)" if r.status == "failed_bound" else ""
            parts.append(f"{r.name}: {_signed(r.delta)}{outside}")
    return ", ".join(parts)


def _signed(delta: float) -> str:
    if delta == 0:
        return "+0"
    digits = max(2, 1 - math.floor(math.log10(abs(delta))))
    return f"{delta:+.{digits}f}".rstrip("0").rstrip(".") if abs(delta) < 1 else f"{delta:+.3g}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
