"""Resampling machinery for the paired statistics (DESIGN §4): bootstrap weights, the chunked
weighted sums, the percentile CI and its dual bootstrap p, and the three ways a whole-set
(corpus) metric is resampled.

Owns how resampled deltas are drawn and summarised; `stats` decides which test each metric gets
and builds its `MetricStats`. Holds no metric: a corpus metric brings its own `WeightedSums` or
`CellCounts` (defined with the metric, in its task), or none (`index_deltas`). Imports numpy,
scipy and the contract modules `records` and `metrics` only (never torch, SQLAlchemy, PyGithub
or jinja2).

Bootstrap p and CI are dual by construction (`bootstrap_p`, `percentile_ci`): with B finite
resampled deltas and m = min(#(δ* ≤ 0), #(δ* ≥ 0)) (a δ* exactly 0 counts on both sides),
p = min(1, max(2m, 1) / B), and the 1 - α interval is [k-th smallest δ*, k-th largest δ*] with
k the smallest integer ≥ 1 such that 2k / B ≥ α (about ⌈αB/2⌉; unbounded when 1/B ≥ α, where
no p can fall below α). The interval is closed, so for every resample vector
p < α ⇔ 0 ∉ [ci_low, ci_high]; a bound exactly at 0 counts as "0 inside, not significant".

Resampling is vectorised as a weight matrix W (resamples × U) times a column block X (U × k) of
the resampling units' column sums: one GEMM gives every resampled sum a block's metrics need.
W rows are multinomial bootstrap counts for U ≤ 10,000 and Poisson(1) weights above (the Poisson
bootstrap, Hanley & MacGibbon 2006; Chamandy et al. 2012), which converges to the same
distribution and costs O(1) per weight. Mean statistics divide by the resample's own total
weight; in Σnum/Σden it cancels.

Resampling units (`resampling_units`). Without `PairedRecords.groups` a unit is an example.
With groups it is a cluster (e.g. the document a text window came from): examples of a cluster
are not independent, so every bootstrap here draws whole clusters, a cluster's weight applying
to all its examples (equivalently, W over clusters times the clusters' column sums; the cell
counts of a cluster; `index_deltas` takes all examples of each drawn cluster). Ignoring a
shared per-document effect makes an A/A comparison "significant" about half the time at
100 documents × 10 windows; resampling documents keeps it near α.

Blocks. Above `BLOCK_MIN_UNITS` (20,000) units, the units are dealt by a seeded permutation into
G = `BLOCKS` (10,000) blocks of near-equal size, each block's column sums (or cell counts) are
the sums of its units', and the blocks are resampled (Poisson weights): O(n) to aggregate, then
O(B·G·k) instead of O(B·n·k). It keeps the bootstrap distribution because every statistic here
is self-normalising, f(cT) = f(T) for the vector T of sums (Σnum/Σden, a mean ÷ Σw, ECE,
R² = 1 − SSE/SST, F1 = 2tp/(support + predicted), AUROC = pairs/(right · wrong)): then its
linearisation Σ_u (w_u − 1) ∇f·t_u has Σ_u ∇f·t_u = 0 (Euler), and for a random partition the
block residual sums e_b = Σ_{u∈b} ∇f·t_u satisfy E Σ_b e_b² = (1 − O(1/G)) Σ_u (∇f·t_u)²: the
variance is kept, up to a relative O(√(2/G)) (≈ 1.4 % at G = 10,000) set by the seed. The
second-order term gains only T·Tᵀ/G, the scale direction, which f ignores (its Hessian H has
TᵀHT = 0). Clusters are blocked the same way (units → blocks). Checked by simulation: blocked
and unblocked 95 % intervals agree to a few % in width and position (tests).

W is drawn once (after the block permutation, from the same stream), in unit order, and no
block depends on which other metrics are requested (a mean metric's block is its own, all ratio
metrics share the block of every finite record column, a `WeightedSums` metric has its own
block), so a metric's resampled deltas, p and CI are bit-identical whatever else is requested.
A `CellCounts` metric depends on the examples only through a discrete cell per example (for
macro-F1: label, baseline prediction, candidate prediction), so without groups its bootstrap
draws exact multinomial cell counts from its own stream (up to `MULTINOMIAL_MAX_CELLS` cells, or
index draws up to `BLOCK_MIN_UNITS` examples). With groups, or many cells at large n, it
resamples units: resampled counts = W @ (per-unit cell counts, sparse). A `CellFeatures` delta
(macro-F1, confidence AUROC) reads the counts only through linear features (per class and side:
true positives and support + predicted; per confidence level and side: right and wrong counts),
so then W multiplies the per-unit features instead: the number of distinct cells, which grows
with n for 1000 classes or continuous confidences, never sizes a matrix. A wide metric gets
fewer blocks (G = BLOCK_CELLS / features, at least `MIN_BLOCKS`: 2,000 for 1000-class
macro-F1). Counts and weights are whole numbers, so while every resampled sum stays below 2^24
the GEMM runs in float32 with the very same result.

A corpus metric without a resampler of its own (a user's metric: nothing is known about it but
its `whole_set`) gets the generic paired bootstrap `index_deltas`: each resample draws n example
indices with replacement, the same for both sides, and recomputes `whole_set` on both sides'
resampled columns. It is exact and general, and slow: 2 × resamples calls of `whole_set` on n
examples, from a stream keyed by the metric's name.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .metrics import Metric, TestName, all_finite, f64, transform_array
from .records import PairedRecords

__all__ = [
    "BLOCKS",
    "BLOCK_MIN_UNITS",
    "CHUNK_WEIGHTS",
    "MULTINOMIAL_MAX_CELLS",
    "MULTINOMIAL_MAX_N",
    "BootstrapPlan",
    "CellCounts",
    "CellFeatures",
    "WeightedSums",
    "bootstrap_p",
    "cell_deltas",
    "group_sum",
    "index_deltas",
    "multinomial_weights",
    "percentile_ci",
    "poisson_weights",
    "resampling_units",
    "unit_sums",
    "weight_chunks",
]

Array = NDArray[np.float64]

MULTINOMIAL_MAX_N = 10_000  # classic multinomial bootstrap up to here, Poisson weights above
CHUNK_WEIGHTS = 8_000_000  # weights per chunk: 64 MB of float64 whatever n is
MULTINOMIAL_MAX_CELLS = 4096  # cell counts: multinomial over cells up to here, index draws above
BLOCK_MIN_UNITS = 20_000  # more resampling units (examples or clusters) than this: blocks
BLOCKS = 10_000  # blocks of a plan's sums (and of a narrow cell-count metric)
MIN_BLOCKS = 2_000  # the fewest blocks of a wide cell-count metric (1000-class macro-F1)
BLOCK_CELLS = 4_000_000  # blocks × columns of a cell-count metric at most, above MIN_BLOCKS


# A block of per-example columns (n × k: a float64 array, or a scipy.sparse matrix) and how its
# resampled sums (B × k) become B deltas.
Block = tuple[Any, Callable[[Array], Array]]


@dataclass(frozen=True)
class WeightedSums:
    """A corpus metric whose resampled value follows from weighted sums of per-example columns.

    `block(records)` returns the columns and the function from their resampled sums to the
    resampled deltas (e.g. ECE: one column per occupied confidence bin and side; R²: squared
    errors, the target and its square). The sums come from the shared weight matrix W.
    """

    block: Callable[[PairedRecords], Block]


@dataclass(frozen=True)
class CellCounts:
    """A corpus metric that depends on each example only through a discrete cell.

    `cells(records)` returns one integer key per example and a context; `delta(counts, keys,
    context)` maps resampled counts of the distinct keys (B × u, keys sorted) to B deltas.
    Resampling n examples is then an exact multinomial draw over the cells, from the metric's
    own stream `[seed, stream]`.
    """

    cells: Callable[[PairedRecords], tuple[NDArray[np.int64], Any]]
    delta: Callable[[Array, NDArray[np.int64], Any], Array]
    stream: int = 2


@dataclass(frozen=True)
class CellFeatures:
    """A `CellCounts` delta that reads the counts only through linear features of them.

    `features(cells, context)` is a sparse (u × f) matrix: what one example of each cell adds to
    each feature (macro-F1: per class and side, true positives and support + predicted).
    `finish(sums, context)` maps resampled feature sums (B × f) to B deltas. Called as a
    `CellCounts` delta it is `finish(counts @ features)`; `cell_deltas` uses the features
    directly when it resamples clusters or blocks, so that the number of distinct cells (which
    grows with n for a large label set or continuous confidences) never sizes a matrix.
    """

    features: Callable[[NDArray[np.int64], Any], Any]  # -> scipy.sparse (u × f)
    finish: Callable[[Array, Any], Array]

    def __call__(self, counts: Array, cells: NDArray[np.int64], context: Any) -> Array:
        matrix = self.features(cells, context).tocsr()
        sums = np.asarray((matrix.T @ counts.T).T, dtype=np.float64)
        return self.finish(sums, context)


# --- bootstrap over examples (ratio, weighted sums, mean CI) --------------------------------


@dataclass
class BootstrapPlan:
    """Per metric: the column block to resample and how its resampled sums become a delta.

    No block depends on which other metrics are requested, so neither do a metric's resampled
    sums (a GEMM's bits can depend on the matrix's other columns). Every ratio metric reads the
    shared block of all distinct finite columns of the records (one pass over W for all of
    them; the total weight cancels in Σnum/Σden); a `WeightedSums` metric has its own. `tests`
    names each metric's test. (Mean metrics are tested in `stats`: bootstrap-t or t-test.)
    """

    blocks: dict[tuple[str, ...], Any] = field(default_factory=dict)  # dense or sparse
    # name -> (block key, the metric's columns' positions in its block, sums -> deltas)
    metrics: dict[str, tuple[tuple[str, ...], list[int], Callable[[Array], Array]]] = field(
        default_factory=dict
    )
    tests: dict[str, TestName] = field(default_factory=dict)
    record_columns: dict[tuple[str, str], int] = field(default_factory=dict)

    def add_ratio(self, name: str, metric: Metric, records: PairedRecords) -> None:
        num, den = metric.columns
        if ("records",) not in self.blocks:
            self.blocks[("records",)] = self._record_block(records)
        cols = [self.record_columns[side, c] for side in ("b", "c") for c in (num, den)]
        transform = metric.transform

        def delta(sums: Array) -> Array:
            base = transform_array(sums[:, 0] / sums[:, 1], transform)
            return transform_array(sums[:, 2] / sums[:, 3], transform) - base

        self.metrics[name] = (("records",), cols, delta)
        self.tests[name] = metric.test_name(records.n)

    def add_block(self, name: str, block: Block, test: TestName) -> None:
        """A `WeightedSums` metric: its own block (dense, or scipy.sparse for a block of mostly
        zeros such as one column per bin) and its own sums -> deltas function."""
        columns, delta = block
        self.blocks[("block", name)] = columns
        self.metrics[name] = (("block", name), list(range(columns.shape[1])), delta)
        self.tests[name] = test

    def _record_block(self, records: PairedRecords) -> Array:
        """Every finite column of both sides, each distinct array once (`tokens` is shared)."""
        distinct: list[Array] = []
        for side, columns in (("b", records.baseline), ("c", records.candidate)):
            for name in sorted(columns):
                values = f64(columns[name])
                if values.shape != (records.n,) or not all_finite(values):
                    continue
                same = [j for j, seen in enumerate(distinct) if np.array_equal(seen, values)]
                if not same:
                    distinct.append(values)
                self.record_columns[side, name] = same[0] if same else len(distinct) - 1
        return np.column_stack(distinct)

    def run(
        self,
        n: int,
        resamples: int,
        rng: np.random.Generator,
        groups: NDArray[np.int64] | None = None,
    ) -> dict[str, Array]:
        """Resampled deltas per metric (non-finite resamples dropped); empty when n < 2."""
        if not self.metrics or n < 2:
            return {name: np.empty(0) for name in self.metrics}
        unit, units, blocked = resampling_units(n, groups, rng, BLOCKS)
        if units < 2:  # one cluster: nothing to resample
            return {name: np.empty(0) for name in self.metrics}
        blocks = {key: unit_sums(x, unit, units) for key, x in self.blocks.items()}
        chunks: dict[tuple[str, ...], list[Array]] = {key: [] for key in self.blocks}
        out = {}
        # Overflow (finite values near float max) and 0/0 give non-finite resamples, dropped.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for w in weight_chunks(rng, units, resamples, poisson=blocked):
                for key, x in blocks.items():
                    chunks[key].append(w @ x)
            sums = {key: np.concatenate(parts) for key, parts in chunks.items()}
            for name, (key, cols, to_delta) in self.metrics.items():
                delta = to_delta(sums[key][:, cols])
                out[name] = delta[np.isfinite(delta)]
        return out


def resampling_units(
    n: int, groups: NDArray[np.int64] | None, rng: np.random.Generator, blocks: int
) -> tuple[NDArray[np.intp] | None, int, bool]:
    """Which resampling unit each example's weight comes from (None: its own), how many units
    there are, and whether they are blocks.

    The units are the examples, or the clusters of `groups` (ids need not be contiguous). With
    more than `BLOCK_MIN_UNITS` of them, the units are dealt at random into `blocks` blocks of
    near-equal size (a permutation drawn from `rng`, before any weight), and the blocks are
    resampled instead (see the module docstring). Without groups and at most `BLOCK_MIN_UNITS`
    examples, nothing is drawn and every example is its own unit, as it always was.
    """
    unit: NDArray[np.intp] | None = None
    units = n
    if groups is not None:
        _, inverse = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
        unit = inverse.reshape(-1).astype(np.intp)
        units = int(unit.max(initial=-1)) + 1
    if units <= max(BLOCK_MIN_UNITS, blocks):
        return unit, units, False
    block_of = np.empty(units, dtype=np.intp)
    block_of[rng.permutation(units)] = np.arange(units) % blocks
    return (block_of if unit is None else block_of[unit]), blocks, True


def unit_sums(x: Any, unit: NDArray[np.intp] | None, units: int) -> Array:
    """Column sums of `x` (examples × k, dense or scipy.sparse) per resampling unit -> a dense
    units × k (`x` itself, densified, when every example is its own unit)."""
    if unit is None:
        return x if isinstance(x, np.ndarray) else np.asarray(x.toarray(), dtype=np.float64)
    from scipy import sparse  # only for clusters and large n; the task registry imports this

    n = unit.size
    # One pass over the rows of x, each added to its unit's row (a cache-friendly CSR product).
    membership = sparse.csr_matrix((np.ones(n), (unit, np.arange(n))), shape=(units, n))
    return np.asarray((membership @ x).toarray() if sparse.issparse(x) else membership @ x)


def weight_chunks(
    rng: np.random.Generator, n: int, resamples: int, *, poisson: bool = False
) -> Iterator[Array]:
    """Bootstrap weight matrices (rows: resamples, columns: examples), memory-bounded chunks;
    Poisson weights above `MULTINOMIAL_MAX_N` columns, or always with `poisson` (blocks).

    The Poisson chunks reuse one buffer: a fresh 64 MB array per chunk costs more in page
    faults than the draws themselves.
    """
    rows = max(1, CHUNK_WEIGHTS // n)
    buffer = np.empty((min(rows, resamples), n)) if poisson or n > MULTINOMIAL_MAX_N else None
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
    # Quantiles at the 65,536 mid-points: P(w = k) is matched to within 2^-16. The quantile of
    # q is the smallest k with CDF(k) ≥ q (scipy's `poisson.ppf(q, 1)`, to the bit: no mid-point
    # lies within 6e-7 of a CDF value; the CDF is summed exactly, `ppf` costs 0.2 s).
    cdf = [
        math.exp(-1.0) * math.fsum(1 / math.factorial(j) for j in range(k + 1)) for k in range(30)
    ]
    mid = (np.arange(1 << 16) + 0.5) / (1 << 16)
    return np.searchsorted(np.array(cdf), mid, side="left").astype(np.float64)


def bootstrap_p(delta: Array) -> float:
    """Two-sided bootstrap p: twice the smaller share of resampled deltas on either side of 0.

    p = min(1, max(2m, 1) / B) with m = min(#(δ* ≤ 0), #(δ* ≥ 0)): a δ* exactly 0 counts on
    both sides, and the floor 1/B is the resolution of B resamples (never p = 0). This is the
    dual of `percentile_ci`: p < α ⇔ 0 ∉ [ci_low, ci_high] for every vector of deltas. It
    counts signs only, so it is the same whether computed on the delta or on log(cand/base):
    the transforms are increasing and both ratios are positive. NaN without finite resamples.
    """
    size = delta.size
    if size == 0 or not all_finite(delta):
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


def percentile_ci(delta: Array, alpha: float) -> tuple[float, float]:
    """Closed percentile interval [k-th smallest, k-th largest] of the resampled deltas.

    The lower end is `np.quantile(delta, α/2, method="inverted_cdf")` up to float rounding of
    αB/2, the upper end its mirror image; see `_tail_rank` for k and `bootstrap_p` for the dual
    p-value. 0 lies outside exactly when fewer than k deltas are ≤ 0 or fewer than k are ≥ 0.
    """
    size = delta.size
    if size == 0 or not all_finite(delta):
        return math.nan, math.nan
    k = _tail_rank(alpha, size)
    if k == 0:
        return -math.inf, math.inf
    ends = np.partition(delta, [k - 1, size - k])
    return float(ends[k - 1]), float(ends[size - k])


# --- cell counts: exact multinomial over each example's discrete cell ---------------------------


def cell_deltas(metric: CellCounts, records: PairedRecords, resamples: int, seed: int) -> Array:
    """Resampled deltas (candidate - baseline) of a `CellCounts` metric; needs n ≥ 2.
    Non-finite resamples (a statistic undefined on that resample) are dropped."""
    keys, context = metric.cells(records)
    cells, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    rng = np.random.default_rng([seed, metric.stream])
    n = records.n
    if records.groups is None and (n <= BLOCK_MIN_UNITS or cells.size <= MULTINOMIAL_MAX_CELLS):
        parts: Iterator[Array] = (
            metric.delta(c, cells, context)
            for c in _cell_count_chunks(rng, counts, inverse, resamples)
        )
    else:
        parts = _unit_cell_deltas(metric, cells, inverse, context, records, resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        deltas: Array = np.concatenate([np.empty(0), *parts])
    finite: Array = deltas[np.isfinite(deltas)]
    return finite


def _unit_cell_deltas(
    metric: CellCounts,
    cells: NDArray[np.int64],
    inverse: NDArray[np.int64],
    context: Any,
    records: PairedRecords,
    resamples: int,
    rng: np.random.Generator,
) -> Iterator[Array]:
    """Cell counts resampled by unit (cluster or block): resampled counts are unit weights @
    per-unit counts, or, for a `CellFeatures` delta, unit weights @ per-unit feature sums."""
    from scipy import sparse  # only for clusters and large n; the task registry imports this

    n, u = records.n, cells.size
    delta = metric.delta
    matrix = delta.features(cells, context).tocsr() if isinstance(delta, CellFeatures) else None
    width = u if matrix is None else int(matrix.shape[1])
    blocks = max(MIN_BLOCKS, min(BLOCKS, BLOCK_CELLS // max(width, 1)))
    unit, units, blocked = resampling_units(n, records.groups, rng, blocks)
    if units < 2:  # one cluster: nothing to resample
        return
    rows = np.arange(n) if unit is None else unit
    per_unit = sparse.csr_matrix((np.ones(n), (rows, inverse)), shape=(units, u), dtype=np.float64)
    if matrix is not None:
        per_unit = (per_unit @ matrix).tocsr()
    dense = per_unit.nnz > 0.02 * units * width  # BLAS beats a sparse product above ~2 %
    x: Any = per_unit.toarray() if dense else per_unit.T.tocsr()
    # Counts and weights are whole numbers: while every resampled sum stays below 2^24, float32
    # holds each partial sum exactly, so the float32 GEMM (twice as fast) gives the same bits.
    largest = float(np.asarray(per_unit.sum(axis=0)).max(initial=0.0))
    single = dense and largest * float(_poisson_table().max()) < 2**24
    if single:
        x = x.astype(np.float32)
    chunk = max(1, CHUNK_WEIGHTS // max(units, width))
    poisson = blocked or units > MULTINOMIAL_MAX_N
    for start in range(0, resamples, chunk):
        m = min(chunk, resamples - start)
        w = poisson_weights(rng, units, m) if poisson else multinomial_weights(rng, units, m)
        if single and poisson:  # Poisson weights: ≤ table max
            sums = (w.astype(np.float32) @ x).astype(np.float64)
        else:
            sums = w @ x.astype(np.float64, copy=False) if dense else np.asarray((x @ w.T).T)
        if isinstance(delta, CellFeatures):
            yield delta.finish(sums, context)
        else:
            yield delta(sums, cells, context)


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


# --- the generic bootstrap of a whole-set metric without a resampler ---------------------------

INDEX_STREAM = 4  # the generic bootstrap's streams: [seed, INDEX_STREAM, crc32(metric name)]


def index_deltas(metric: Metric, records: PairedRecords, resamples: int, seed: int) -> Array:
    """Resampled deltas (candidate - baseline) of any corpus metric, by recomputing its
    `whole_set` on both sides of each index resample; needs n ≥ 2.

    Resample b draws n indices uniformly with replacement (one `integers` call per resample, in
    order, from `default_rng([seed, INDEX_STREAM, crc32(name)])`); both sides are indexed with
    the same draw, so the pairing is kept. With `records.groups`, resample b draws as many
    clusters as there are, with replacement, and takes all their examples. Non-finite resamples
    are dropped.
    """
    n = records.n
    rng = np.random.default_rng([seed, INDEX_STREAM, zlib.crc32(metric.name.encode())])
    draw = _cluster_draw(records.groups) if records.groups is not None else None
    sides: list[dict[str, NDArray[np.float64] | NDArray[np.int64]]] = [
        {c: side[c] for c in metric.columns} for side in (records.baseline, records.candidate)
    ]
    deltas = np.empty(resamples)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for b in range(resamples):
            index = rng.integers(0, n, size=n) if draw is None else draw(rng)
            base, cand = ({c: v[index] for c, v in side.items()} for side in sides)
            deltas[b] = metric.value(cand, records.num_classes) - metric.value(
                base, records.num_classes
            )
    return deltas[np.isfinite(deltas)]


def _cluster_draw(
    groups: NDArray[np.int64],
) -> Callable[[np.random.Generator], NDArray[np.intp]]:
    """Example indices of one cluster bootstrap: clusters drawn with replacement, all of each."""
    order = np.argsort(np.asarray(groups).reshape(-1), kind="stable")
    sorted_groups = np.asarray(groups).reshape(-1)[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, sorted_groups.size])

    def draw(rng: np.random.Generator) -> NDArray[np.intp]:
        chosen = rng.integers(0, starts.size, size=starts.size)
        size = sizes[chosen]
        ends = np.cumsum(size)
        # position within the resample -> position in `order`: each chosen cluster's run
        offsets = np.repeat(starts[chosen] - (ends - size), size)
        picked: NDArray[np.intp] = order[offsets + np.arange(int(ends[-1]))]
        return picked

    return draw


def group_sum(values: Array, group: NDArray[np.int64], k: int) -> Array:
    """Column sums of `values` (rows × cells) by the cells' group (a class) -> rows × k."""
    out = np.zeros((values.shape[0], k))
    if group.size == 0:
        return out
    order = np.argsort(group, kind="stable")
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    out[:, sorted_group[starts]] = np.add.reduceat(values[:, order], starts, axis=1)
    return out
