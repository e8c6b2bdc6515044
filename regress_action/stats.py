"""Paired significance tests and confidence intervals on metric deltas (DESIGN §4).

Owns `paired_statistics`: for every metric, a two-sided p-value for "baseline and candidate do
not differ" and a confidence interval on `delta = candidate - baseline` in the metric's units,
computed from the paired per-example records. Holm adjustment and gating live in `verdict`.
Imports numpy, scipy, the contract modules `records` and `metrics`, and `resampling` only
(never torch, SQLAlchemy, PyGithub or jinja2).

Methods by metric kind:
- binary: exact McNemar, `binomtest(n_fixed, n_fixed + n_broken, 0.5)`; the CI is Newcombe's
  unconditional hybrid score interval on the accuracy delta (`newcombe_ci`), so at the boundary
  it may disagree with the conditional McNemar p on whether 0 is inside.
- mean: paired t-test and t interval for n ≥ 1000 (the CLT makes them accurate there, they cost
  O(n) and are dual to each other); below that, a sign-flip permutation test (exact enumeration
  when 2^m ≤ resamples), which is exact under H0's exchangeability of the two sides, with a
  percentile bootstrap CI of the mean difference. These two are different procedures, so near
  the boundary a small-n mean metric's p and CI can disagree.
- ratio: paired bootstrap over whole examples, Σnum/Σden recomputed for both sides per resample;
  p from the bootstrap distribution of log(candidate / baseline), CI on the transformed delta.
- corpus: paired bootstrap over examples through the metric's own resampler (`WeightedSums`:
  resampled weighted column sums, e.g. ECE's bins; `CellCounts`: multinomial cell counts, e.g.
  macro-F1 over (label, baseline prediction, candidate prediction) with the full label set), or,
  for a metric without one, the generic index bootstrap recomputing its `whole_set`.
All CIs are percentile intervals: BCa needs an O(n²) jackknife at n = 100,000.

Non-finite per-example values (NaN, ±inf, inf - inf) make that metric's statistics p = NaN and
CI = (NaN, NaN), whatever its kind: the verdict fails the metric and keeps it out of Holm.

The resampling itself (weights, chunked sums, percentile CI and its dual bootstrap p, cell
counts) lives in `resampling`; no metric name appears here. A metric's p and CI do not depend
on which other metrics are requested; each permutation test draws from a stream keyed by its
metric's name. Deterministic given `seed`.
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

from .metrics import T_TEST_MIN_N, Metric, TestName, all_finite, f64
from .records import PairedRecords
from .resampling import (
    BootstrapPlan,
    CellCounts,
    bootstrap_p,
    cell_deltas,
    index_deltas,
    percentile_ci,
)

Array = NDArray[np.float64]


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


def paired_statistics(
    records: PairedRecords,
    specs: Mapping[str, Metric],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, MetricStats]:
    """Paired test and CI for every metric in `specs` whose columns are in `records`."""
    alpha = round(1.0 - confidence, 12)  # 1 - 0.95 is 0.05000000000000004 in floats
    base, cand = records.baseline, records.candidate
    plan = BootstrapPlan()
    out: dict[str, MetricStats] = {}
    for name, metric in specs.items():
        if not all(c in base and c in cand for c in metric.columns):
            continue
        test = metric.test_name(records.n)
        if not all(all_finite(side[c]) for side in (base, cand) for c in metric.columns):
            out[name] = MetricStats(test, *_NAN_STATS, records.n)
        elif metric.kind == "binary":
            column = metric.columns[0]
            out[name] = mcnemar(base[column], cand[column], confidence)
        elif metric.kind == "mean":
            column = metric.columns[0]
            with np.errstate(over="ignore"):  # finite values whose difference overflows
                diff = f64(cand[column]) - f64(base[column])
            if not all_finite(diff):
                out[name] = MetricStats(test, *_NAN_STATS, records.n)
            elif diff.size >= T_TEST_MIN_N:
                out[name] = _paired_t(diff, confidence)
            else:
                plan.add_mean(name, diff, test)
        elif metric.kind == "ratio":
            plan.add_ratio(name, metric, records)
        elif isinstance(metric.resampler, CellCounts):
            resampled = partial(cell_deltas, metric.resampler, records, resamples, seed)
            out[name] = _corpus_stats(records, alpha, resampled)
        elif metric.resampler is None:  # the generic bootstrap: whole_set on every resample
            resampled = partial(index_deltas, metric, records, resamples, seed)
            out[name] = _corpus_stats(records, alpha, resampled)
        else:
            plan.add_block(name, metric.resampler.block(records), test)
    deltas = plan.run(records.n, resamples, np.random.default_rng(seed), records.groups)
    for name, delta_star in deltas.items():
        rng_perm = np.random.default_rng([seed, 1, zlib.crc32(name.encode())])
        if records.n < 2:
            p_value = 1.0
        elif name in plan.diffs:  # mean: the permutation test, not the bootstrap
            p_value = mean_test_p(plan.diffs[name], resamples, rng_perm)[1]
        else:
            p_value = bootstrap_p(delta_star)
        low, high = percentile_ci(delta_star, alpha)
        out[name] = MetricStats(plan.tests[name], p_value, low, high, records.n)
    return {name: out[name] for name in specs if name in out}


_NAN_STATS = (math.nan, math.nan, math.nan)  # p, ci_low, ci_high


def _corpus_stats(
    records: PairedRecords, alpha: float, resampled: Callable[[], Array]
) -> MetricStats:
    """A corpus metric resampled on its own (cell counts or the generic bootstrap)."""
    n = records.n
    if n < 2:
        return MetricStats("paired_bootstrap", 1.0, math.nan, math.nan, n)
    delta = resampled()
    low, high = percentile_ci(delta, alpha)
    return MetricStats("paired_bootstrap", bootstrap_p(delta), low, high, n)


# --- binary: exact McNemar -------------------------------------------------------------------


def mcnemar(
    baseline_correct: NDArray[np.float64] | NDArray[np.int64],
    candidate_correct: NDArray[np.float64] | NDArray[np.int64],
    confidence: float = 0.95,
) -> MetricStats:
    """Exact McNemar test on paired 0/1 outcomes, and Newcombe's CI on the accuracy delta."""
    n = int(np.size(baseline_correct))
    if not (all_finite(baseline_correct) and all_finite(candidate_correct)):
        return MetricStats("mcnemar_exact", *_NAN_STATS, n)
    base = f64(baseline_correct) > 0.5
    cand = f64(candidate_correct) > 0.5
    n_fixed = int(np.count_nonzero(cand & ~base))
    n_broken = int(np.count_nonzero(base & ~cand))
    both = int(np.count_nonzero(base & cand))
    low, high = newcombe_ci(both, n_broken, n_fixed, n - both - n_broken - n_fixed, confidence)
    return MetricStats(
        "mcnemar_exact", mcnemar_p(n_fixed, n_broken), low, high, n, n_fixed, n_broken
    )


def mcnemar_p(n_fixed: int, n_broken: int) -> float:
    """Two-sided exact McNemar p; 1 without discordant pairs (`binomtest(0, 0)` raises)."""
    discordant = n_fixed + n_broken
    if discordant == 0:
        return 1.0
    return float(sps.binomtest(n_fixed, discordant, 0.5).pvalue)


def newcombe_ci(
    both: int, broken: int, fixed: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """CI on delta = (fixed - broken) / n for paired 0/1 outcomes: Newcombe's hybrid score
    interval (Stat. Med. 1998, method 10), from the Wilson intervals of both accuracies and
    their correlation.

    Unconditional on the number of discordant pairs, unlike the Clopper-Pearson interval of
    the McNemar proportion: with few or no discordant examples the delta is still uncertain
    (two models agreeing on all of 100 examples may disagree on ~3 % of the population), so
    the interval never collapses to [0, 0]. The McNemar p-value is the exact conditional test;
    at the boundary the two may differ in whether 0 is inside.
    """
    n = both + broken + fixed + neither
    if n == 0:
        return math.nan, math.nan
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p_cand, p_base = (both + fixed) / n, (both + broken) / n
    l_cand, u_cand = _wilson(both + fixed, n, z)
    l_base, u_base = _wilson(both + broken, n, z)
    spread = (both + broken) * (fixed + neither) * (both + fixed) * (broken + neither)
    # The correlation of the two accuracies, with Newcombe's continuity correction: without it,
    # perfect agreement (phi = 1) would collapse the interval to a point again.
    cross = both * neither - broken * fixed
    corrected = max(cross - n / 2, 0.0) if cross > 0 else min(cross + n / 2, 0.0)
    phi = 0.0 if spread == 0 else corrected / math.sqrt(spread)
    lower = math.sqrt(max(
        (p_cand - l_cand) ** 2 - 2 * phi * (p_cand - l_cand) * (u_base - p_base)
        + (u_base - p_base) ** 2, 0.0,
    ))  # fmt: skip
    upper = math.sqrt(max(
        (u_cand - p_cand) ** 2 - 2 * phi * (u_cand - p_cand) * (p_base - l_base)
        + (p_base - l_base) ** 2, 0.0,
    ))  # fmt: skip
    delta = p_cand - p_base
    return max(delta - lower, -1.0), min(delta + upper, 1.0)


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


# --- mean: paired t-test / sign-flip permutation ---------------------------------------------


def mean_test_p(diff: Array, resamples: int, rng: np.random.Generator) -> tuple[str, float]:
    """Two-sided p for mean(diff) = 0: paired t for large n, sign-flip permutation below.

    NaN when a difference is not finite (NaN, ±inf, inf - inf): there is no test to run."""
    n = diff.size
    test = "paired_t" if n >= T_TEST_MIN_N else "paired_permutation"
    if not all_finite(diff):
        return test, math.nan
    if n < 2 or not np.any(diff):
        return test, 1.0
    if n >= T_TEST_MIN_N:
        if np.all(diff == diff[0]):  # zero variance: t is ±inf, the shift is certain
            return test, 0.0
        # ttest_rel(cand, base) is the one-sample t-test of the differences against 0.
        with np.errstate(over="ignore", invalid="ignore"):  # |diff| near float max
            p_value = float(sps.ttest_1samp(diff, 0.0).pvalue)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            p_value = _sign_flip_p(diff[diff != 0], resamples, rng)
    return test, p_value if math.isfinite(p_value) else math.nan


def _paired_t(diff: Array, confidence: float) -> MetricStats:
    """Paired t-test and the matching t interval on the mean difference: O(n), no resampling
    (at n ≥ T_TEST_MIN_N the sampling distribution of the mean is close to normal)."""
    n = diff.size
    _, p_value = mean_test_p(diff, 0, np.random.default_rng(0))
    if math.isnan(p_value):
        return MetricStats("paired_t", *_NAN_STATS, n)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(diff.mean())
        sd = float(diff.std(ddof=1))
    if not (math.isfinite(mean) and math.isfinite(sd)):  # finite values whose sum overflows
        return MetricStats("paired_t", *_NAN_STATS, n)
    if sd == 0.0:
        return MetricStats("paired_t", p_value, mean, mean, n)
    half = float(sps.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    return MetricStats("paired_t", p_value, mean - half, mean + half, n)


def _sign_flip_p(diff: Array, resamples: int, rng: np.random.Generator) -> float:
    # Under H0 the two sides are exchangeable within an example, so each difference's sign is
    # a fair coin; zero differences do not move the sum and are dropped. `diff` is finite.
    m = diff.size
    observed = abs(float(diff.sum()))
    tol = 1e-9 * float(np.abs(diff).sum())  # float ties must count as "as extreme"
    if 2**m <= resamples:  # small m: enumerate every sign vector (exact p)
        signs = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1) * 2.0 - 1.0
        return float(np.mean(np.abs(signs @ diff) >= observed - tol))
    signs = rng.integers(0, 2, size=(resamples, m)) * 2.0 - 1.0
    extreme = int(np.count_nonzero(np.abs(signs @ diff) >= observed - tol))
    return (extreme + 1) / (resamples + 1)  # Phipson & Smyth: a Monte Carlo p is never 0
