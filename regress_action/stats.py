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
- mean: paired t-test and t interval for n ≥ 1000 (the CLT makes them accurate there, they cost
  O(n) and are dual to each other); below that, a sign-flip permutation test (exact enumeration
  when 2^m ≤ resamples), which is exact under H0's exchangeability of the two sides, with a
  percentile bootstrap CI of the mean difference. These two are different procedures, so near
  the boundary a small-n mean metric's p and CI can disagree.
- ratio: paired bootstrap over whole examples, Σnum/Σden recomputed for both sides per resample;
  p from the bootstrap distribution of log(candidate / baseline), CI on the transformed delta.
- corpus: paired bootstrap over examples with the full label set (macro-F1) or bins (ECE).
All CIs are percentile intervals: BCa needs an O(n²) jackknife at n = 100,000.

Bootstrap p and CI are dual by construction (`bootstrap_p`, `_percentile_ci`): with B finite
resampled deltas and m = min(#(δ* ≤ 0), #(δ* ≥ 0)) (a δ* exactly 0 counts on both sides),
p = min(1, max(2m, 1) / B), and the 1 - α interval is [k-th smallest δ*, k-th largest δ*] with
k the smallest integer ≥ 1 such that 2k / B ≥ α (about ⌈αB/2⌉; unbounded when 1/B ≥ α, where
no p can fall below α). The interval is closed, so for every resample vector
p < α ⇔ 0 ∉ [ci_low, ci_high]; a bound exactly at 0 counts as "0 inside, not significant".

Non-finite per-example values (NaN, ±inf, inf - inf) make that metric's statistics p = NaN and
CI = (NaN, NaN), whatever its kind: the verdict fails the metric and keeps it out of Holm.

Resampling is vectorised as a weight matrix W (resamples × n) times a column block X (n × k):
one GEMM gives every resampled sum a block's metrics need. W rows are multinomial bootstrap
counts for n ≤ 10,000 and Poisson(1) weights above (the Poisson bootstrap, Hanley & MacGibbon
2006; Chamandy et al. 2012), which converges to the same distribution, costs O(1) per weight and
is what makes n = 100,000 × 2000 resamples fit in about a second. Mean and ECE statistics divide
by the resample's own total weight; in Σnum/Σden it cancels. W is drawn once, in example order,
and no block depends on which other metrics are requested (a mean metric's block is its own,
all ratio metrics share the block of every finite record column, ECE has its per-bin block), so
a metric's resampled deltas, p and CI are bit-identical whatever else is requested; each
permutation test draws from a stream keyed by its metric's name. Macro-F1 depends on the
examples only through the cell (label, baseline prediction, candidate prediction), so its
bootstrap draws exact multinomial cell counts from its own stream. Deterministic given `seed`.
"""

from __future__ import annotations

import math
import zlib
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
    alpha = round(1.0 - confidence, 12)  # 1 - 0.95 is 0.05000000000000004 in floats
    base, cand = records.baseline, records.candidate
    plan = _BootstrapPlan()
    out: dict[str, MetricStats] = {}
    for name, spec in specs.items():
        needed = _needed_columns(name, spec)
        if not all(c is not None and c in base and c in cand for c in needed):
            continue
        if not all(_all_finite(side[c]) for side in (base, cand) for c in needed if c):
            out[name] = MetricStats(_test_name(name, spec, records.n), *_NAN_STATS, records.n)
        elif spec.kind == "binary":
            assert spec.column is not None
            out[name] = mcnemar(base[spec.column], cand[spec.column], confidence)
        elif spec.kind == "mean":
            assert spec.column is not None
            with np.errstate(over="ignore"):  # finite values whose difference overflows
                diff = _f64(cand[spec.column]) - _f64(base[spec.column])
            if not _all_finite(diff):
                out[name] = MetricStats(_test_name(name, spec, records.n), *_NAN_STATS, records.n)
            elif diff.size >= T_TEST_MIN_N:
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
    for name, delta_star in deltas.items():
        rng_perm = np.random.default_rng([seed, 1, zlib.crc32(name.encode())])
        p_value = plan.p_value(name, delta_star, resamples, rng_perm) if records.n >= 2 else 1.0
        low, high = _percentile_ci(delta_star, alpha)
        out[name] = MetricStats(plan.tests[name], p_value, low, high, records.n)
    return {name: out[name] for name in specs if name in out}


_NAN_STATS = (math.nan, math.nan, math.nan)  # p, ci_low, ci_high


def _needed_columns(name: str, spec: MetricSpec) -> list[str | None]:
    """The per-example columns (both sides) a metric is computed from; None: unknown."""
    if spec.kind in ("binary", "mean"):
        return [spec.column]
    if spec.kind == "ratio":
        return list(spec.ratio or (None,))
    corpus: dict[str, list[str | None]] = {
        "macro_f1": ["label", "prediction"],
        "ece": ["correct", "confidence"],
    }
    return corpus.get(name, [None])


def _test_name(name: str, spec: MetricSpec, n: int) -> str:
    if spec.kind == "binary":
        return "mcnemar_exact"
    if spec.kind == "mean":
        return "paired_t" if n >= T_TEST_MIN_N else "paired_permutation"
    return "paired_bootstrap_log_ratio" if spec.kind == "ratio" else "paired_bootstrap"


def _all_finite(values: NDArray[np.float64] | NDArray[np.int64]) -> bool:
    return bool(np.isfinite(values).all())


def _f64(values: NDArray[np.float64] | NDArray[np.int64]) -> Array:
    return np.asarray(values, dtype=np.float64)


# --- binary: exact McNemar -------------------------------------------------------------------


def mcnemar(
    baseline_correct: NDArray[np.float64] | NDArray[np.int64],
    candidate_correct: NDArray[np.float64] | NDArray[np.int64],
    confidence: float = 0.95,
) -> MetricStats:
    """Exact McNemar test on paired 0/1 outcomes, and Newcombe's CI on the accuracy delta."""
    n = int(np.size(baseline_correct))
    if not (_all_finite(baseline_correct) and _all_finite(candidate_correct)):
        return MetricStats("mcnemar_exact", *_NAN_STATS, n)
    base = _f64(baseline_correct) > 0.5
    cand = _f64(candidate_correct) > 0.5
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
    if not _all_finite(diff):
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


# --- bootstrap over examples (ratio, ECE, mean CI) -------------------------------------------


@dataclass
class _BootstrapPlan:
    """Per metric: the column block to resample and how its resampled sums become a delta.

    No block depends on which other metrics are requested, so neither do a metric's resampled
    sums (a GEMM's bits can depend on the matrix's other columns). A mean metric has its own
    block [diff, 1] (the ones give the resample's total weight); every ratio metric reads the
    shared block of all distinct finite columns of the records (one pass over W for all of
    them; the total weight cancels in Σnum/Σden); ECE has its per-(side, bin) block.
    """

    blocks: dict[tuple[str, ...], Array] = field(default_factory=dict)
    # name -> (kind, block key, transform, the metric's columns' positions in its block)
    metrics: dict[str, tuple[str, tuple[str, ...], str, list[int]]] = field(default_factory=dict)
    tests: dict[str, str] = field(default_factory=dict)
    diffs: dict[str, Array] = field(default_factory=dict)
    record_columns: dict[tuple[str, str], int] = field(default_factory=dict)
    ece_base_bins: int = 0  # ECE block: how many of its bin columns are the baseline's

    def add_mean(self, name: str, diff: Array) -> None:
        self.blocks[("mean", name)] = np.column_stack([diff, np.ones(diff.size)])
        self.metrics[name] = ("mean", ("mean", name), "identity", [0, 1])
        self.diffs[name] = diff
        self.tests[name] = "paired_t" if diff.size >= T_TEST_MIN_N else "paired_permutation"

    def add_ratio(self, name: str, spec: MetricSpec, records: PairedRecords) -> None:
        assert spec.ratio is not None
        num, den = spec.ratio
        if ("records",) not in self.blocks:
            self.blocks[("records",)] = self._record_block(records)
        cols = [self.record_columns[side, c] for side in ("b", "c") for c in (num, den)]
        self.metrics[name] = ("ratio", ("records",), spec.transform, cols)
        self.tests[name] = "paired_bootstrap_log_ratio"

    def _record_block(self, records: PairedRecords) -> Array:
        """Every finite column of both sides, each distinct array once (`tokens` is shared)."""
        distinct: list[Array] = []
        for side, columns in (("b", records.baseline), ("c", records.candidate)):
            for name in sorted(columns):
                values = _f64(columns[name])
                if values.shape != (records.n,) or not _all_finite(values):
                    continue
                same = [j for j, seen in enumerate(distinct) if np.array_equal(seen, values)]
                if not same:
                    distinct.append(values)
                self.record_columns[side, name] = same[0] if same else len(distinct) - 1
        return np.column_stack(distinct)

    def add_ece(self, name: str, records: PairedRecords) -> None:
        # ECE = Σ_bins |Σ_{i in bin} (confidence_i - correct_i)| / n (metrics.ece); an
        # example's bin is fixed, only its weight is resampled. Block: [1, one column per
        # occupied baseline bin, one per occupied candidate bin], a bin's column holding
        # (confidence - correct) for the examples in it and 0 elsewhere.
        columns = [np.ones(records.n)]
        for side in (records.baseline, records.candidate):
            confidence, correct = _f64(side["confidence"]), _f64(side["correct"])
            bins = np.clip(np.ceil(confidence * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
            gap = confidence - correct
            occupied = np.unique(bins)
            columns.extend(np.where(bins == b, gap, 0.0) for b in occupied)
            if side is records.baseline:
                self.ece_base_bins = occupied.size
        self.blocks[("ece",)] = np.column_stack(columns)
        self.metrics[name] = ("ece", ("ece",), "identity", list(range(len(columns))))
        self.tests[name] = "paired_bootstrap"

    def run(self, n: int, resamples: int, rng: np.random.Generator) -> dict[str, Array]:
        """Resampled deltas per metric (non-finite resamples dropped); empty when n < 2."""
        if not self.metrics or n < 2:
            return {name: np.empty(0) for name in self.metrics}
        chunks: dict[tuple[str, ...], list[Array]] = {key: [] for key in self.blocks}
        out = {}
        # Overflow (finite values near float max) and 0/0 give non-finite resamples, dropped.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for w in weight_chunks(rng, n, resamples):
                for key, x in self.blocks.items():
                    chunks[key].append(w @ x)
            sums = {key: np.concatenate(parts) for key, parts in chunks.items()}
            for name, (kind, key, transform, cols) in self.metrics.items():
                delta = _resampled_delta(kind, transform, sums[key][:, cols], self.ece_base_bins)
                out[name] = delta[np.isfinite(delta)]
        return out

    def p_value(self, name: str, delta: Array, resamples: int, rng: np.random.Generator) -> float:
        if name in self.diffs:
            return mean_test_p(self.diffs[name], resamples, rng)[1]
        return bootstrap_p(delta)


def _resampled_delta(kind: str, transform: str, sums: Array, ece_base_bins: int) -> Array:
    """A metric's delta per resample from its resampled column sums (resamples × columns):
    mean [diff, 1], ratio [num_b, den_b, num_c, den_c], ECE [1, baseline bins, candidate bins]."""
    if kind == "ece":
        split = 1 + ece_base_bins
        base, cand = np.abs(sums[:, 1:split]).sum(axis=1), np.abs(sums[:, split:]).sum(axis=1)
        ece_delta: Array = (cand - base) / sums[:, 0]
        return ece_delta
    if kind == "mean":
        mean_delta: Array = sums[:, 0] / sums[:, 1]
        return mean_delta
    base_ratio = _transform(sums[:, 0] / sums[:, 1], transform)
    cand_ratio = _transform(sums[:, 2] / sums[:, 3], transform)
    return cand_ratio - base_ratio


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

    p = min(1, max(2m, 1) / B) with m = min(#(δ* ≤ 0), #(δ* ≥ 0)): a δ* exactly 0 counts on
    both sides, and the floor 1/B is the resolution of B resamples (never p = 0). This is the
    dual of `_percentile_ci`: p < α ⇔ 0 ∉ [ci_low, ci_high] for every vector of deltas. It
    counts signs only, so it is the same whether computed on the delta or on log(cand/base):
    the transforms are increasing and both ratios are positive. NaN without finite resamples.
    """
    size = delta.size
    if size == 0 or not _all_finite(delta):
        return math.nan
    below = int(np.count_nonzero(delta <= 0))
    above = int(np.count_nonzero(delta >= 0))
    return min(1.0, max(2 * min(below, above), 1) / size)


def _tail_rank(alpha: float, size: int) -> int:
    """k: the 1 - α interval runs from the k-th smallest to the k-th largest of `size` deltas.

    The smallest k ≥ 1 with 2k / size ≥ α, computed with the very float expression
    `bootstrap_p` uses, so `m < k ⇔ bootstrap_p < α` holds exactly; 0 when 1/size ≥ α (no
    bootstrap p can fall below α, so the interval is unbounded).
    """
    if not 1 / size < alpha:
        return 0
    k = max(1, math.ceil(alpha * size / 2))
    while k > 1 and 2 * (k - 1) / size >= alpha:
        k -= 1
    while 2 * k / size < alpha:
        k += 1
    return min(k, (size + 1) // 2)  # only binds for α ≥ 1


def _percentile_ci(delta: Array, alpha: float) -> tuple[float, float]:
    """Closed percentile interval [k-th smallest, k-th largest] of the resampled deltas.

    The lower end is `np.quantile(delta, α/2, method="inverted_cdf")` up to float rounding of
    αB/2, the upper end its mirror image; see `_tail_rank` for k and `bootstrap_p` for the dual
    p-value. 0 lies outside exactly when fewer than k deltas are ≤ 0 or fewer than k are ≥ 0.
    """
    size = delta.size
    if size == 0 or not _all_finite(delta):
        return math.nan, math.nan
    k = _tail_rank(alpha, size)
    if k == 0:
        return -math.inf, math.inf
    ends = np.partition(delta, [k - 1, size - k])
    return float(ends[k - 1]), float(ends[size - k])


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
