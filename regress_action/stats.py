"""Paired significance tests and confidence intervals on metric deltas (DESIGN §4).

Owns `paired_statistics`: for every metric, a two-sided p-value for "baseline and candidate do
not differ" and a confidence interval on `delta = candidate - baseline` in the metric's units,
computed from the paired per-example records. Holm adjustment and gating live in `verdict`.
Imports numpy, scipy and the contract modules `records` and `metrics` only (no torch, SQL,
GitHub or templates).

Methods by metric kind:
- binary: exact McNemar, `binomtest(n_fixed, n_fixed + n_broken, 0.5)`; the CI is the
  conditional Clopper-Pearson interval on θ = n_fixed / discordant mapped to
  delta = (2θ - 1) · discordant / n. It inverts the same equal-tailed binomial test, so it
  excludes 0 exactly when the (unadjusted) McNemar p is ≤ 1 - confidence.
- mean: paired t-test for n ≥ 1000 (the CLT makes it accurate there and it costs O(n)); below
  that, a sign-flip permutation test (exact enumeration when 2^m ≤ resamples), which is exact
  under H0's exchangeability of the two sides. CI: percentile bootstrap of the mean difference.
- ratio: paired bootstrap over whole examples, Σnum/Σden recomputed for both sides per resample;
  p from the bootstrap distribution of log(candidate / baseline), CI on the transformed delta.
- corpus: paired bootstrap over examples with the full label set (macro-F1) or bins (ECE).
All CIs are percentile intervals: BCa needs an O(n²) jackknife at n = 100,000.

Resampling is vectorised as a weight matrix W (resamples × n) times a column matrix X
(n × k): one GEMM gives every resampled sum of every metric. W rows are multinomial bootstrap
counts for n ≤ 10,000 and Poisson(1) weights above (the Poisson bootstrap, Hanley & MacGibbon
2006; Chamandy et al. 2012), which converges to the same distribution, costs O(1) per weight and
is what makes n = 100,000 × 2000 resamples fit in about a second. Every statistic divides by
the resample's own total weight. Macro-F1 depends on the examples only through the cell
(label, baseline prediction, candidate prediction), so its bootstrap draws exact multinomial cell
counts. Deterministic given `seed`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from .metrics import ECE_BINS, MetricSpec
from .records import PairedRecords

Array = NDArray[np.float64]

T_TEST_MIN_N = 1000  # paired t-test from here on, sign-flip permutation test below
MULTINOMIAL_MAX_N = 10_000  # classic multinomial bootstrap up to here, Poisson weights above
CHUNK_WEIGHTS = 8_000_000  # weights per chunk: 64 MB of float64 whatever n is
MULTINOMIAL_MAX_CELLS = 4096  # macro-F1: multinomial over cells up to here, index draws above


@dataclass(frozen=True)
class MetricStats:
    """One metric's paired test: what `verdict.apply_significance` consumes."""

    test: str
    p_value: float  # two-sided, H0: no difference between baseline and candidate
    ci_low: float  # CI on delta = candidate - baseline, in the metric's own units
    ci_high: float
    n: int
    n_fixed: int | None = None  # binary: baseline wrong and candidate right
    n_broken: int | None = None  # binary: baseline right and candidate wrong


def paired_statistics(
    records: PairedRecords,
    specs: Mapping[str, MetricSpec],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, MetricStats]:
    """Paired test and CI for every metric in `specs` whose columns are in `records`."""
    alpha = 1.0 - confidence
    base, cand = records.baseline, records.candidate
    plan = _BootstrapPlan()
    out: dict[str, MetricStats] = {}
    for name, spec in specs.items():
        if not _has_columns(records, name, spec):
            continue
        if spec.kind == "binary":
            assert spec.column is not None
            out[name] = mcnemar(base[spec.column], cand[spec.column], confidence)
        elif spec.kind == "mean":
            assert spec.column is not None
            diff = _f64(cand[spec.column]) - _f64(base[spec.column])
            if diff.size >= T_TEST_MIN_N:
                out[name] = _paired_t(diff, confidence)
            else:
                plan.add_mean(name, diff)
        elif spec.kind == "ratio":
            plan.add_ratio(name, spec, records)
        elif name == "macro_f1":
            out[name] = _macro_f1_stats(records, alpha, resamples, seed)
        elif name == "ece":
            plan.add_ece(name, records)
    deltas = plan.run(records.n, resamples, np.random.default_rng(seed))
    rng_perm = np.random.default_rng([seed, 1])
    for name, delta_star in deltas.items():
        test, p_value = plan.tests[name], plan.p_value(name, delta_star, resamples, rng_perm)
        low, high = _percentile_ci(delta_star, alpha)
        out[name] = MetricStats(test, p_value, low, high, records.n)
    return {name: out[name] for name in specs if name in out}


def _has_columns(records: PairedRecords, name: str, spec: MetricSpec) -> bool:
    needed: list[str | None]
    if spec.kind in ("binary", "mean"):
        needed = [spec.column]
    elif spec.kind == "ratio":
        needed = list(spec.ratio or (None,))
    else:
        corpus: dict[str, list[str | None]] = {
            "macro_f1": ["label", "prediction"],
            "ece": ["correct", "confidence"],
        }
        needed = corpus.get(name, [None])
    return all(c in records.baseline and c in records.candidate for c in needed)


def _f64(values: NDArray[np.float64] | NDArray[np.int64]) -> Array:
    return np.asarray(values, dtype=np.float64)


# --- binary: exact McNemar -------------------------------------------------------------------


def mcnemar(
    baseline_correct: NDArray[np.float64] | NDArray[np.int64],
    candidate_correct: NDArray[np.float64] | NDArray[np.int64],
    confidence: float = 0.95,
) -> MetricStats:
    """Exact McNemar test on paired 0/1 outcomes, with the dual conditional CI on the delta."""
    base = _f64(baseline_correct) > 0.5
    cand = _f64(candidate_correct) > 0.5
    n = int(base.size)
    n_fixed = int(np.count_nonzero(cand & ~base))
    n_broken = int(np.count_nonzero(base & ~cand))
    low, high = _mcnemar_ci(n_fixed, n_broken, n, 1.0 - confidence)
    return MetricStats(
        "mcnemar_exact", mcnemar_p(n_fixed, n_broken), low, high, n, n_fixed, n_broken
    )


def mcnemar_p(n_fixed: int, n_broken: int) -> float:
    """Two-sided exact McNemar p; 1 without discordant pairs (`binomtest(0, 0)` raises)."""
    discordant = n_fixed + n_broken
    if discordant == 0:
        return 1.0
    return float(sps.binomtest(n_fixed, discordant, 0.5).pvalue)


def _mcnemar_ci(n_fixed: int, n_broken: int, n: int, alpha: float) -> tuple[float, float]:
    # Clopper-Pearson on θ given the discordant count D; delta = (2θ - 1)·D/n. With D = 0 the
    # models agree on every example and the conditional interval is the point [0, 0].
    discordant = n_fixed + n_broken
    if n == 0:
        return math.nan, math.nan
    if discordant == 0:
        return 0.0, 0.0
    low = 0.0 if n_fixed == 0 else float(sps.beta.ppf(alpha / 2, n_fixed, n_broken + 1))
    high = 1.0 if n_broken == 0 else float(sps.beta.ppf(1 - alpha / 2, n_fixed + 1, n_broken))
    scale = discordant / n
    return (2 * low - 1) * scale, (2 * high - 1) * scale


# --- mean: paired t-test / sign-flip permutation ---------------------------------------------


def mean_test_p(diff: Array, resamples: int, rng: np.random.Generator) -> tuple[str, float]:
    """Two-sided p for mean(diff) = 0: paired t for large n, sign-flip permutation below."""
    n = diff.size
    if n < 2 or not np.any(diff):
        return ("paired_t" if n >= T_TEST_MIN_N else "paired_permutation"), 1.0
    if n >= T_TEST_MIN_N:
        if np.all(diff == diff[0]):  # zero variance: t is ±inf, the shift is certain
            return "paired_t", 0.0
        # ttest_rel(cand, base) is the one-sample t-test of the differences against 0.
        result = sps.ttest_1samp(diff, 0.0)
        return "paired_t", float(result.pvalue)
    return "paired_permutation", _sign_flip_p(diff[diff != 0], resamples, rng)


def _paired_t(diff: Array, confidence: float) -> MetricStats:
    """Paired t-test and the matching t interval on the mean difference: O(n), no resampling
    (at n ≥ T_TEST_MIN_N the sampling distribution of the mean is close to normal)."""
    n = diff.size
    mean = float(diff.mean())
    _, p_value = mean_test_p(diff, 0, np.random.default_rng(0))
    sd = float(diff.std(ddof=1))
    if sd == 0.0:
        return MetricStats("paired_t", p_value, mean, mean, n)
    half = float(sps.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    return MetricStats("paired_t", p_value, mean - half, mean + half, n)


def _sign_flip_p(diff: Array, resamples: int, rng: np.random.Generator) -> float:
    # Under H0 the two sides are exchangeable within an example, so each difference's sign is
    # a fair coin; zero differences do not move the sum and are dropped.
    m = diff.size
    observed = abs(float(diff.sum()))
    tol = 1e-9 * float(np.abs(diff).sum())  # float ties must count as "as extreme"
    if 2**m <= resamples:  # small m: enumerate every sign vector (exact p)
        signs = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1) * 2.0 - 1.0
        return float(np.mean(np.abs(signs @ diff) >= observed - tol))
    signs = rng.integers(0, 2, size=(resamples, m)) * 2.0 - 1.0
    extreme = int(np.count_nonzero(np.abs(signs @ diff) >= observed - tol))
    return (extreme + 1) / (resamples + 1)  # Phipson & Smyth: a Monte Carlo p is never 0


# --- bootstrap over examples (ratio, ECE, mean CI) -------------------------------------------


@dataclass
class _BootstrapPlan:
    """Columns to resample and, per metric, how resampled sums become a delta.

    ECE needs per-(side, bin) sums; examples are grouped by their joint (baseline bin,
    candidate bin) cell, so one small GEMM per cell gives every sum without 2 × 15 mostly-zero
    columns. Bootstrap weights are exchangeable across examples, so drawing them in cell order
    instead of example order changes nothing.
    """

    columns: list[Array] = field(default_factory=list)
    metrics: dict[str, tuple[str, list[int], str]] = field(default_factory=dict)
    tests: dict[str, str] = field(default_factory=dict)
    diffs: dict[str, Array] = field(default_factory=dict)
    cell: NDArray[np.int64] | None = None

    def _add(self, values: Array) -> int:
        self.columns.append(values)
        return len(self.columns) - 1

    def add_mean(self, name: str, diff: Array) -> None:
        self.metrics[name] = ("mean", [self._add(diff)], "identity")
        self.diffs[name] = diff
        self.tests[name] = "paired_t" if diff.size >= T_TEST_MIN_N else "paired_permutation"

    def add_ratio(self, name: str, spec: MetricSpec, records: PairedRecords) -> None:
        assert spec.ratio is not None
        num, den = spec.ratio
        base, cand = records.baseline, records.candidate
        cols = [self._add(_f64(side[c])) for side in (base, cand) for c in (num, den)]
        self.metrics[name] = ("ratio", cols, spec.transform)
        self.tests[name] = "paired_bootstrap_log_ratio"

    def add_ece(self, name: str, records: PairedRecords) -> None:
        # ECE = Σ_bins |Σ_{i in bin} (confidence_i - correct_i)| / n (metrics.ece); an
        # example's bin is fixed, only its weight is resampled.
        cols, bins = [], []
        for side in (records.baseline, records.candidate):
            confidence, correct = _f64(side["confidence"]), _f64(side["correct"])
            bins.append(
                np.clip(np.ceil(confidence * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
            )
            cols.append(self._add(confidence - correct))
        self.cell = bins[0] * ECE_BINS + bins[1]
        self.metrics[name] = ("ece", cols, "identity")
        self.tests[name] = "paired_bootstrap"

    def order(self, n: int) -> NDArray[np.int64]:
        """The example order the weights are drawn in (grouped by ECE cell)."""
        if self.cell is None:
            return np.arange(n)
        return np.argsort(self.cell, kind="stable")

    def run(self, n: int, resamples: int, rng: np.random.Generator) -> dict[str, Array]:
        """Resampled deltas per metric (non-finite resamples dropped); empty when n < 2."""
        if not self.metrics or n < 2:
            return {name: np.empty(0) for name in self.metrics}
        order = self.order(n)
        x = np.column_stack([*self.columns, np.ones(n)])[order]  # last column: total weight
        cell = np.zeros(n, np.int64) if self.cell is None else self.cell[order]
        starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
        sums = np.concatenate(
            [segment_sums(w, x, starts) for w in weight_chunks(rng, n, resamples)]
        )
        out = {}
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for name, (kind, cols, transform) in self.metrics.items():
                delta = _resampled_delta(kind, cols, transform, sums, cell[starts])
                out[name] = delta[np.isfinite(delta)]
        return out

    def p_value(self, name: str, delta: Array, resamples: int, rng: np.random.Generator) -> float:
        if name in self.diffs:
            return mean_test_p(self.diffs[name], resamples, rng)[1]
        return bootstrap_p(delta)


def segment_sums(weights: Array, x: Array, starts: NDArray[np.int64]) -> Array:
    """Σ_i w_ri x_ik within each contiguous segment of examples: rows × segments × k."""
    bounds = [*starts.tolist(), x.shape[0]]
    out = np.empty((weights.shape[0], len(starts), x.shape[1]))
    for j in range(len(starts)):
        lo, hi = bounds[j], bounds[j + 1]
        out[:, j, :] = weights[:, lo:hi] @ x[lo:hi]
    return out


def _resampled_delta(
    kind: str, cols: list[int], transform: str, sums: Array, cells: NDArray[np.int64]
) -> Array:
    total: Array = sums[:, :, -1].sum(axis=1)
    if kind == "ece":
        base = _group_sum(sums[:, :, cols[0]], cells // ECE_BINS, ECE_BINS)
        cand = _group_sum(sums[:, :, cols[1]], cells % ECE_BINS, ECE_BINS)
        ece_delta: Array = (np.abs(cand).sum(axis=1) - np.abs(base).sum(axis=1)) / total
        return ece_delta
    col: Array = sums[:, :, cols].sum(axis=1)
    if kind == "mean":
        return col[:, 0] / total
    base = _transform(col[:, 0] / col[:, 1], transform)
    cand = _transform(col[:, 2] / col[:, 3], transform)
    return cand - base


def _transform(ratio: Array, transform: str) -> Array:
    if transform == "exp":
        return np.asarray(np.exp(ratio), dtype=np.float64)
    if transform == "bits":
        return np.asarray(ratio / math.log(2.0), dtype=np.float64)
    return ratio


def weight_chunks(rng: np.random.Generator, n: int, resamples: int) -> Iterator[Array]:
    """Bootstrap weight matrices (rows: resamples, columns: examples), memory-bounded chunks.

    The Poisson chunks reuse one buffer: a fresh 64 MB array per chunk costs more in page
    faults than the draws themselves.
    """
    rows = max(1, CHUNK_WEIGHTS // n)
    buffer = np.empty((min(rows, resamples), n)) if n > MULTINOMIAL_MAX_N else None
    for start in range(0, resamples, rows):
        m = min(rows, resamples - start)
        if buffer is None:
            yield multinomial_weights(rng, n, m)
        else:
            yield poisson_weights(rng, n, m, out=buffer[:m])


def multinomial_weights(rng: np.random.Generator, n: int, rows: int) -> Array:
    """Classic bootstrap: how often each example is drawn in n draws with replacement."""
    index = rng.integers(0, n, size=(rows, n))
    index += np.arange(rows)[:, None] * n  # one bincount over (resample, example) pairs
    return np.bincount(index.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def poisson_weights(rng: np.random.Generator, n: int, rows: int, out: Array | None = None) -> Array:
    """Poisson(1) weights via a 16-bit inverse-CDF table: one 2-byte draw per weight."""
    draws = rng.integers(0, 1 << 16, size=(rows, n), dtype=np.uint16)
    return np.take(_poisson_table(), draws, out=out, mode="clip")  # "raise" buffers `out`


@cache
def _poisson_table() -> Array:
    # Quantiles at the 65,536 mid-points: P(w = k) is matched to within 2^-16.
    return np.asarray(sps.poisson.ppf((np.arange(1 << 16) + 0.5) / (1 << 16), 1.0), np.float64)


def bootstrap_p(delta: Array) -> float:
    """Two-sided bootstrap p: twice the smaller share of resampled deltas on either side of 0.

    This inverts the percentile interval (p < α iff 0 is outside the 1-α interval). It counts
    signs only, so it is the same whether computed on the delta or on log(cand/base): the
    transforms are increasing and both ratios are positive. Ties at 0 count on both sides.
    """
    if delta.size == 0:
        return 1.0
    below = int(np.count_nonzero(delta <= 0))
    above = int(np.count_nonzero(delta >= 0))
    return min(1.0, 2.0 * (min(below, above) + 1) / (delta.size + 1))


def _percentile_ci(delta: Array, alpha: float) -> tuple[float, float]:
    if delta.size == 0 or not np.all(np.isfinite(delta)):
        return math.nan, math.nan
    low, high = np.quantile(delta, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# --- macro-F1: exact multinomial over (label, baseline prediction, candidate prediction) -------


def _macro_f1_stats(records: PairedRecords, alpha: float, resamples: int, seed: int) -> MetricStats:
    n, k = records.n, int(records.num_classes or 0)
    if n < 2:
        return MetricStats("paired_bootstrap", 1.0, math.nan, math.nan, n)
    label = np.asarray(records.baseline["label"], dtype=np.int64)
    pred_b = np.asarray(records.baseline["prediction"], dtype=np.int64)
    pred_c = np.asarray(records.candidate["prediction"], dtype=np.int64)
    k = max(k, int(max(label.max(), pred_b.max(), pred_c.max())) + 1)
    cells, inverse, counts = np.unique(
        (label * k + pred_b) * k + pred_c, return_inverse=True, return_counts=True
    )
    cell_label, cell_b, cell_c = cells // (k * k), (cells // k) % k, cells % k
    rng = np.random.default_rng([seed, 2])
    deltas = [
        _macro_f1(c, cell_label, cell_c, k) - _macro_f1(c, cell_label, cell_b, k)
        for c in _cell_count_chunks(rng, counts, inverse, resamples)
    ]
    delta = np.concatenate(deltas)
    low, high = _percentile_ci(delta, alpha)
    return MetricStats("paired_bootstrap", bootstrap_p(delta), low, high, n)


def _cell_count_chunks(
    rng: np.random.Generator, counts: NDArray[np.int64], inverse: NDArray[np.int64], resamples: int
) -> Iterator[Array]:
    # Resampling n examples and counting cells is a multinomial draw over the cells with their
    # observed frequencies; with many cells (large label sets) drawing indices is cheaper.
    n, u = int(counts.sum()), counts.size
    rows = max(1, CHUNK_WEIGHTS // (u if u <= MULTINOMIAL_MAX_CELLS else n))
    for start in range(0, resamples, rows):
        m = min(rows, resamples - start)
        if u <= MULTINOMIAL_MAX_CELLS:
            yield rng.multinomial(n, counts / n, size=m).astype(np.float64)
        else:
            keys = inverse[rng.integers(0, n, size=(m, n))] + np.arange(m)[:, None] * u
            yield np.bincount(keys.ravel(), minlength=m * u).reshape(m, u).astype(np.float64)


def _macro_f1(
    cell_counts: Array, cell_label: NDArray[np.int64], cell_pred: NDArray[np.int64], k: int
) -> Array:
    """Macro-F1 per resample row from cell counts (the same rule as `metrics.macro_f1`)."""
    hit = cell_label == cell_pred
    true_pos = _group_sum(cell_counts[:, hit], cell_label[hit], k)
    support = _group_sum(cell_counts, cell_label, k)
    predicted = _group_sum(cell_counts, cell_pred, k)
    denom = support + predicted
    f1 = np.divide(2.0 * true_pos, denom, out=np.zeros_like(denom), where=denom > 0)
    return np.asarray(f1.mean(axis=1), dtype=np.float64)


def _group_sum(values: Array, group: NDArray[np.int64], k: int) -> Array:
    """Column sums of `values` (rows × cells) by the cells' group (a class) -> rows × k."""
    out = np.zeros((values.shape[0], k))
    if group.size == 0:
        return out
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    out[:, sorted_group[starts]] = np.add.reduceat(values[:, order], starts, axis=1)
    return out
