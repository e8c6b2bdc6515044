"""Paired significance tests and confidence intervals on metric deltas (DESIGN §4).

Owns `paired_statistics`: for every metric, a two-sided p-value for "baseline and candidate do
not differ", a confidence interval on `delta = candidate - baseline` in the metric's units that
is the dual of that test (0 lies outside the 1 - α interval exactly when p < α), the standard
error of the delta and the minimum detectable effect (the smallest true change the test finds
with 80 % power at this n and level). The family correction and gating live in `verdict`, which
asks for each metric's interval at its own (adjusted) level. Imports numpy, scipy, the contract
modules `records` and `metrics`, and `resampling` only (never torch, SQLAlchemy, PyGithub or
jinja2). docs/statistics.md explains the choices and their measured error rates.

Methods by metric kind:
- binary: exact McNemar, `binomtest(n_fixed, n_fixed + n_broken, 0.5)`; the interval is the
  Clopper-Pearson interval of the fixed share of the discordant pairs, mapped to the accuracy
  delta `(discordant / n) · (2π - 1)`: conditional on the discordant count, like the exact
  test, and dual to it (both are the central exact binomial test).
- mean: below STUDENTIZED_MAX_UNITS units, the studentised bootstrap (bootstrap-t): p and
  interval from the resampled t statistics, dual to each other, and covering skewed
  differences at n = 100 where the t interval and the percentile bootstrap under-cover; from
  there on the paired t-test and t interval (O(n), the CLT makes them accurate).
- ratio: paired bootstrap over whole examples, Σnum/Σden recomputed for both sides per resample;
  p from the bootstrap distribution of log(candidate / baseline), CI on the transformed delta.
- corpus: paired bootstrap over examples through the metric's own resampler (`WeightedSums`:
  resampled weighted column sums, e.g. ECE's bins; `CellCounts`: multinomial cell counts, e.g.
  macro-F1 over (label, baseline prediction, candidate prediction) with the full label set), or,
  for a metric without one, the generic index bootstrap recomputing its `whole_set`.
Bootstrap p and percentile CI are dual by construction (`resampling.bootstrap_p`).

Clusters: when the records carry `groups` (windows of one document), examples of a cluster are
not independent. The bootstraps resample whole clusters (`resampling`), and binary and mean
metrics get the cluster-robust paired t-test (cluster sums of the differences, G - 1 degrees
of freedom) instead of McNemar / the plain t-test.

Non-finite per-example values (NaN, ±inf, inf - inf) make that metric's statistics p = NaN and
CI = (NaN, NaN), whatever its kind: the verdict fails the metric and keeps it out of the family.
A metric with `tested=False` gets no statistics. A metric's p and CI do not depend on which
other metrics are requested. Deterministic given `seed`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from .metrics import STUDENTIZED_MAX_N, Metric, TestName, all_finite, f64
from .records import PairedRecords
from .resampling import (
    BootstrapPlan,
    CellCounts,
    bootstrap_p,
    cell_deltas,
    index_deltas,
    multinomial_weights,
    percentile_ci,
)

Array = NDArray[np.float64]

POWER = 0.80  # the power at which the minimum detectable effect is quoted
# Mean metrics: the studentised bootstrap below this many units (examples or clusters), where a
# skewed difference makes the t interval under-cover; the t-test from here on.
STUDENTIZED_MAX_UNITS = STUDENTIZED_MAX_N
STUDENTIZED_STREAM = 5  # its streams: [seed, STUDENTIZED_STREAM, crc32(metric name)]


@dataclass(frozen=True)
class MetricStats:
    """One metric's paired test: what `verdict.apply_significance` consumes."""

    test: TestName
    p_value: float  # two-sided, H0: no difference between baseline and candidate
    ci_low: float  # CI on delta = candidate - baseline, in the metric's own units
    ci_high: float
    n: int
    n_fixed: int | None = None  # binary: baseline wrong and candidate right
    n_broken: int | None = None  # binary: baseline right and candidate wrong
    se: float = math.nan  # standard error of the delta
    mde: float = math.nan  # smallest |delta| found with 80 % power at this n and level
    level: float = 0.95  # the interval's confidence level (1 - its α)
    clusters: int | None = None  # resampled clusters, when the records carry groups


def paired_statistics(
    records: PairedRecords,
    specs: Mapping[str, Metric],
    *,
    alpha: float = 0.05,
    alphas: Mapping[str, float] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, MetricStats]:
    """Paired test and CI for every tested metric in `specs` whose columns are in `records`.

    Each metric's interval is at level 1 - alphas[name] (default 1 - alpha), the level its
    p-value is judged at after the family correction, so interval and p agree about 0."""
    base, cand = records.baseline, records.candidate
    groups = _cluster_index(records)
    clusters = None if groups is None else int(groups.max()) + 1
    units = records.n if clusters is None else clusters
    plan = BootstrapPlan()
    level_of = {name: (alphas or {}).get(name, alpha) for name in specs}
    out: dict[str, MetricStats] = {}
    resampled: dict[str, tuple[TestName, Callable[[], Array]]] = {}
    for name, metric in specs.items():
        if not metric.tested or not all(c in base and c in cand for c in metric.columns):
            continue
        a = level_of[name]
        test = metric.test_name(records.n)
        if not all(all_finite(side[c]) for side in (base, cand) for c in metric.columns):
            out[name] = MetricStats(test, *_NAN_STATS, records.n, level=1 - a)
        elif metric.kind == "binary" and groups is None:
            column = metric.columns[0]
            out[name] = mcnemar(base[column], cand[column], 1 - a)
        elif metric.kind in ("binary", "mean"):
            column = metric.columns[0]
            with np.errstate(over="ignore"):  # finite values whose difference overflows
                diff = f64(cand[column]) - f64(base[column])
            stream = np.random.default_rng([seed, STUDENTIZED_STREAM, zlib.crc32(name.encode())])
            out[name] = paired_t(diff, 1 - a, groups, resamples=resamples, rng=stream)
        elif units < 2:  # no resample to draw (one example or one cluster): no evidence
            out[name] = MetricStats(test, 1.0, math.nan, math.nan, records.n, level=1 - a)
        elif metric.kind == "ratio":
            plan.add_ratio(name, metric, records)
        elif isinstance(metric.resampler, CellCounts):
            resampled[name] = (
                "paired_bootstrap",
                partial(cell_deltas, metric.resampler, records, resamples, seed),
            )
        elif metric.resampler is None:  # the generic bootstrap: whole_set on every resample
            resampled[name] = (
                "paired_bootstrap",
                partial(index_deltas, metric, records, resamples, seed),
            )
        else:
            plan.add_block(name, metric.resampler.block(records), test)
    deltas = plan.run(records.n, resamples, np.random.default_rng(seed), records.groups)
    for name, delta_star in deltas.items():
        out[name] = _bootstrap_stats(
            plan.tests[name], delta_star, records.n, level_of[name], clusters
        )
    for name, (test, draw) in resampled.items():
        out[name] = _bootstrap_stats(test, draw(), records.n, level_of[name], clusters)
    return {name: out[name] for name in specs if name in out}


_NAN_STATS = (math.nan, math.nan, math.nan)  # p, ci_low, ci_high


def minimum_detectable_effect(se: float, alpha: float, power: float = POWER) -> float:
    """The smallest true |delta| a two-sided level-α test with standard error `se` detects with
    probability `power` (normal approximation): (z_{1-α/2} + z_power) · se."""
    if not math.isfinite(se):
        return math.nan
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * se)


def _cluster_index(records: PairedRecords) -> NDArray[np.int64] | None:
    """0..G-1 cluster index per example, or None without groups (or one example per group: then
    the examples are the units, as without groups)."""
    if records.groups is None:
        return None
    _, index = np.unique(np.asarray(records.groups), return_inverse=True)
    index = index.reshape(-1).astype(np.int64)
    return None if index.size and int(index.max()) + 1 == index.size else index


def _bootstrap_stats(
    test: TestName, delta: Array, n: int, alpha: float, clusters: int | None
) -> MetricStats:
    low, high = percentile_ci(delta, alpha)
    se = float(np.std(delta, ddof=1)) if delta.size > 1 else math.nan
    return MetricStats(
        test,
        bootstrap_p(delta),
        low,
        high,
        n,
        se=se,
        mde=minimum_detectable_effect(se, alpha),
        level=1 - alpha,
        clusters=clusters,
    )


# --- binary: exact McNemar -------------------------------------------------------------------


def mcnemar(
    baseline_correct: NDArray[np.float64] | NDArray[np.int64],
    candidate_correct: NDArray[np.float64] | NDArray[np.int64],
    confidence: float = 0.95,
) -> MetricStats:
    """Exact McNemar test on paired 0/1 outcomes, and the dual exact CI on the accuracy delta."""
    n = int(np.size(baseline_correct))
    if not (all_finite(baseline_correct) and all_finite(candidate_correct)):
        return MetricStats("mcnemar_exact", *_NAN_STATS, n, level=confidence)
    base = f64(baseline_correct) > 0.5
    cand = f64(candidate_correct) > 0.5
    n_fixed = int(np.count_nonzero(cand & ~base))
    n_broken = int(np.count_nonzero(base & ~cand))
    low, high = mcnemar_ci(n_fixed, n_broken, n, confidence)
    alpha = round(1 - confidence, 12)
    # Under H0 the accuracy delta's variance is discordant / n²; one discordant pair at least,
    # so two models that agree everywhere do not claim to see every change.
    se = math.sqrt(max(n_fixed + n_broken, 1)) / n if n else math.nan
    return MetricStats(
        "mcnemar_exact",
        mcnemar_p(n_fixed, n_broken),
        low,
        high,
        n,
        n_fixed,
        n_broken,
        se=se,
        mde=minimum_detectable_effect(se, alpha),
        level=confidence,
    )


def mcnemar_p(n_fixed: int, n_broken: int) -> float:
    """Two-sided exact McNemar p; 1 without discordant pairs (`binomtest(0, 0)` raises).

    Bin(d, ½) is symmetric, so scipy's two-sided p equals twice the smaller tail: the central
    test that `mcnemar_ci` inverts."""
    discordant = n_fixed + n_broken
    if discordant == 0:
        return 1.0
    return float(sps.binomtest(n_fixed, discordant, 0.5).pvalue)


def mcnemar_ci(
    n_fixed: int, n_broken: int, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """CI on delta = (fixed - broken) / n, conditional on the d = fixed + broken discordant pairs.

    The Clopper-Pearson interval [π_lo, π_hi] of π = P(fixed | discordant) inverts the central
    exact binomial test, so ½ lies outside it exactly when the McNemar p < 1 - confidence;
    delta = (d / n)(2π - 1) maps it to the accuracy scale. Without discordant pairs the two
    models agree on every example and the interval is [0, 0] (p = 1)."""
    discordant = n_fixed + n_broken
    if n == 0:
        return math.nan, math.nan
    if discordant == 0:
        return 0.0, 0.0
    tail = (1 - confidence) / 2  # Clopper-Pearson: the beta quantiles of the exact test
    low = float(sps.beta.ppf(tail, n_fixed, n_broken + 1)) if n_fixed else 0.0
    high = float(sps.beta.ppf(1 - tail, n_fixed + 1, n_broken)) if n_broken else 1.0
    scale = discordant / n
    return scale * (2 * low - 1), scale * (2 * high - 1)


# --- mean: paired t-test ---------------------------------------------------------------------


def paired_t(
    diff: Array,
    confidence: float = 0.95,
    groups: NDArray[np.int64] | None = None,
    *,
    resamples: int = 0,
    rng: np.random.Generator | None = None,
) -> MetricStats:
    """Paired test of mean(diff) = 0 and its dual interval on the mean difference.

    With fewer than STUDENTIZED_MAX_UNITS units and `resamples` given: the studentised
    (bootstrap-t) test, whose interval covers skewed differences at the nominal rate where the
    t interval does not (Hall 1988; Efron & Tibshirani 1993, ch. 12); from there on, or without
    resamples, the t-test and t interval (`paired_t` names both). With `groups` (a 0..G-1 cluster
    index per example) the standard error is cluster-robust: the mean is ΣD_g / n over cluster
    sums D_g, its variance G/(G-1) · Σ(D_g - mean·n_g)² / n², with G - 1 degrees of freedom,
    and the bootstrap resamples clusters. NaN when a difference is not finite."""
    n = diff.size
    alpha = round(1 - confidence, 12)  # 1 - 0.95 is 0.05000000000000004 in floats
    clusters = None if groups is None else int(groups.max()) + 1 if groups.size else 0
    nan = MetricStats("paired_t", *_NAN_STATS, n, level=confidence, clusters=clusters)
    if not all_finite(diff):
        return nan
    if n < 2:
        return MetricStats("paired_t", 1.0, math.nan, math.nan, n, level=confidence)
    with np.errstate(over="ignore", invalid="ignore"):
        if groups is None:
            sums, sizes = diff, np.ones(n)
        else:
            sums = f64(np.bincount(groups, weights=diff, minlength=clusters or 0))
            sizes = np.bincount(groups, minlength=clusters or 0).astype(np.float64)
        units = sums.size
        mean = float(diff.mean())
        se = _robust_se(sums, sizes, mean)
    if not math.isfinite(mean):
        return nan
    if units < 2 or not np.any(diff):
        return MetricStats(
            "paired_t", 1.0, mean, mean, n, se=0.0, mde=0.0, level=confidence, clusters=clusters
        )
    if not math.isfinite(se):  # finite values whose squares overflow
        return nan
    if se == 0.0:  # zero variance: the shift is certain
        return MetricStats(
            "paired_t", 0.0, mean, mean, n, se=0.0, mde=0.0, level=confidence, clusters=clusters
        )
    dof = units - 1
    mde = float((sps.t.ppf(1 - alpha / 2, dof) + sps.t.ppf(POWER, dof)) * se)
    if units < STUDENTIZED_MAX_UNITS and resamples > 0 and rng is not None:
        u = _studentised(sums, sizes, mean, se, resamples, rng)
        low, high = percentile_ci(u, alpha)
        return MetricStats(
            "paired_bootstrap_t", bootstrap_p(u), se * low, se * high, n,
            se=se, mde=mde, level=confidence, clusters=clusters,
        )  # fmt: skip
    t = mean / se
    p_value = float(2 * sps.t.sf(abs(t), dof))
    half = float(sps.t.ppf(1 - alpha / 2, dof)) * se
    return MetricStats(
        "paired_t", p_value, mean - half, mean + half, n,
        se=se, mde=mde, level=confidence, clusters=clusters,
    )  # fmt: skip


def _robust_se(sums: Array, sizes: Array, mean: float) -> float:
    """SE of ΣD/Σn over i.i.d. units (clusters, or single examples: then s/√n)."""
    units = sums.size
    if units < 2:
        return math.nan
    resid = sums - mean * sizes
    return math.sqrt(units / (units - 1) * float(resid @ resid)) / float(sizes.sum())


def _studentised(
    sums: Array, sizes: Array, mean: float, se: float, resamples: int, rng: np.random.Generator
) -> Array:
    """u* = t_obs - t*, t* = (mean* - mean) / se* over bootstrap resamples of the units: the
    interval is se · [k-th smallest u*, k-th largest u*] and p = bootstrap_p(u*), dual to it."""
    units = sums.size
    w = multinomial_weights(rng, units, resamples)
    x = np.column_stack([sizes, sums, sums * sums, sums * sizes, sizes * sizes])
    total, s_d, s_dd, s_dn, s_nn = (w @ x).T
    drawn = w.sum(axis=1)  # = units for multinomial weights
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_star = s_d / total
        resid_sq = s_dd - 2 * mean_star * s_dn + mean_star * mean_star * s_nn
        se_star = np.sqrt(np.maximum(drawn / (drawn - 1) * resid_sq, 0.0)) / total
        u = mean / se - (mean_star - mean) / se_star
    finite: Array = u[np.isfinite(u)]
    return finite
