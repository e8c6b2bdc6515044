"""Debiased squared top-label calibration error, and its paired bootstrap.

The plug-in ECE (`classification.ece`: Σ_b (n_b / n) |ḡ_b| over equal-width confidence bins,
g = confidence − correct) is biased upwards by the sampling noise of each bin's mean gap, and
the bias depends on how the confidences spread over the bins (about Σ_b σ_b / √(n_b) for a
calibrated model). Two perfectly calibrated models with different confidence spreads therefore
differ in expected plug-in ECE, and a paired test on it detects that difference in bias, not a
difference in calibration, more surely the larger n.

`calibration_error_sq` is the debiased estimator of the squared ℓ2 top-label calibration
error (Kumar, Liang & Ma, "Verified Uncertainty Calibration", NeurIPS 2019), on the same 15
equal-width bins:

    CE² = Σ_b (n_b / n) · [ḡ_b² − s_b² / n_b],    g_i = confidence_i − correct_i,

with ḡ_b the bin's mean gap and s_b² its sample variance (ddof = 1); a bin with n_b < 2
contributes 0. Given the bin counts, E[ḡ_b²] = gap_b² + σ_b² / n_b and E[s_b²] = σ_b², so each
bracket is exactly unbiased for the bin's squared population gap and E[CE²] is the binned
population CE² (0 for a calibrated model). An estimate can be slightly negative; it is not
clipped at 0, since clipping would bring back a bias that grows with the number of occupied
bins, the very effect removed. Lower is better.

The paired bootstrap (`_block`, a `resampling.WeightedSums`): per side and occupied bin the
block holds the columns (in-bin indicator, g, g²), plus one column of ones; a resample's
weighted sums give n_b* = Σ w·1_bin, ḡ_b* = Σ w·g / n_b*, s_b²* = (Σ w·g² − n_b* ḡ_b*²) /
(n_b* − 1) and n* = Σ w, hence the resample's debiased CE² on each side. Only those weighted
column sums are used, so the weights may be multinomial counts, Poisson or fractional, and rows
may be summed into clusters before weighting.

Centring. In the bootstrap world the population is the sample itself, whose binned CE² is the
*plug-in* value Σ_b (n_b / n) ḡ_b² (each resample's debiased estimate is unbiased for it), so the
resampled deltas δ* scatter around the sample's plug-in delta δ̂_plugin, not around the debiased
estimate δ̂. Their spread is the estimator's sampling spread; their centre carries the very bias
the estimator removes. Each resampled delta is therefore shifted by the constant
δ̂ − δ̂_plugin (computed once, from the full sample): the deltas handed to `stats` are
δ* + (δ̂ − δ̂_plugin), centred on the unbiased estimate, and so are the percentile CI and the
bootstrap p that `stats` derives from them (dual to each other, as for every corpus metric).

At a true squared gap of 0 the statistic is degenerate (a sum of centred χ²-like terms): the
bootstrap then overstates its spread, so the test is conservative for calibrated models rather
than anti-conservative. `benchmarks/sim_calibration.py` measures false-alarm rates and CI
coverage.

Plug-in ECE (`classification.ece`) uses the same bins, `calibration_bins`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ..metrics import Array, Metric, f64
from ..records import Columns, PairedRecords
from ..resampling import Block, WeightedSums

__all__ = ["CALIBRATION_BINS", "METRIC", "calibration_bins", "calibration_error_sq"]

CALIBRATION_BINS = 15


def calibration_bins(confidence: Array) -> NDArray[np.int64]:
    """Equal-width confidence bins 0..CALIBRATION_BINS-1 (a confidence on a bin edge goes below
    it), shared with plug-in ECE."""
    return np.clip(
        np.ceil(confidence * CALIBRATION_BINS).astype(np.int64) - 1, 0, CALIBRATION_BINS - 1
    )


def _debiased(count: Array, gap_sum: Array, gap_sq: Array, total: Array | float) -> Array:
    """Debiased CE² from per-bin (weighted) sums, bins along the last axis:
    Σ_b [G_b² / n_b − s_b²] / n with s_b² = (Q_b − G_b² / n_b) / (n_b − 1); 0 where n_b < 2."""
    usable = count >= 2
    mean_sq = np.divide(gap_sum * gap_sum, count, out=np.zeros_like(count), where=usable)
    variance = np.divide(gap_sq - mean_sq, count - 1, out=np.zeros_like(count), where=usable)
    terms = np.where(usable, mean_sq - variance, 0.0)
    return np.asarray(terms.sum(axis=-1) / total, dtype=np.float64)


def _plugin(count: Array, gap_sum: Array, total: Array | float) -> Array:
    """Plug-in binned CE², Σ_b (n_b / n) ḡ_b² = Σ_b G_b² / n_b / n, every occupied bin."""
    occupied = count > 0
    mean_sq = np.divide(gap_sum * gap_sum, count, out=np.zeros_like(count), where=occupied)
    return np.asarray(mean_sq.sum(axis=-1) / total, dtype=np.float64)


def _bin_sums(correct: Array, confidence: Array) -> tuple[Array, Array, Array]:
    """Per bin: the count, Σ g and Σ g² (g = confidence − correct)."""
    index = calibration_bins(confidence)
    gap = confidence - correct
    count = f64(np.bincount(index, minlength=CALIBRATION_BINS))
    gap_sum = f64(np.bincount(index, weights=gap, minlength=CALIBRATION_BINS))
    gap_sq = f64(np.bincount(index, weights=gap * gap, minlength=CALIBRATION_BINS))
    return count, gap_sum, gap_sq


def calibration_error_sq(correct: Array, confidence: Array) -> float:
    """Debiased squared ℓ2 top-label calibration error (15 equal-width bins; see the module
    docstring). Unbiased for the binned population value, so it can be slightly negative; NaN
    for empty or non-finite input."""
    correct, confidence = f64(correct), f64(confidence)
    n = confidence.size
    if n == 0 or not np.isfinite(confidence).all() or not np.isfinite(correct).all():
        return math.nan
    count, gap_sum, gap_sq = _bin_sums(correct, confidence)
    return float(_debiased(count, gap_sum, gap_sq, float(n)))


def _value(columns: Columns, num_classes: int | None) -> float:
    return calibration_error_sq(f64(columns["correct"]), f64(columns["confidence"]))


def _block(records: PairedRecords) -> Block:
    """Columns [1, then per side and occupied bin: 1_bin, g·1_bin, g²·1_bin] and the map from
    their resampled sums to the centred resampled deltas δ* + (δ̂ − δ̂_plugin)."""
    n = records.n
    index = np.arange(n)
    rows, cols, vals = [index], [np.zeros(n, dtype=np.int64)], [np.ones(n)]
    bins_per_side: list[int] = []
    for side in (records.baseline, records.candidate):
        confidence, correct = f64(side["confidence"]), f64(side["correct"])
        gap = confidence - correct
        occupied, slot = np.unique(calibration_bins(confidence), return_inverse=True)
        first = 1 + 3 * sum(bins_per_side) + 3 * slot.reshape(-1)
        for j, value in enumerate((np.ones(n), gap, gap * gap)):
            rows.append(index)
            cols.append(first + j)
            vals.append(value)
        bins_per_side.append(int(occupied.size))
    base_bins, cand_bins = bins_per_side
    split = 1 + 3 * base_bins
    end = split + 3 * cand_bins

    def per_side(sums: Array) -> tuple[Array, Array, Array, Array, Array, Array]:
        rows = sums.shape[0]
        base = sums[:, 1:split].reshape(rows, base_bins, 3)
        cand = sums[:, split:end].reshape(rows, cand_bins, 3)
        return base[..., 0], base[..., 1], base[..., 2], cand[..., 0], cand[..., 1], cand[..., 2]

    def debiased_delta(sums: Array) -> Array:
        nb, gb, qb, nc, gc, qc = per_side(sums)
        total = sums[:, 0]
        return _debiased(nc, gc, qc, total) - _debiased(nb, gb, qb, total)

    from scipy import sparse

    block = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, end)
    )
    full = np.asarray(block.sum(axis=0))  # the sample's own sums (every weight 1)
    nb, gb, _, nc, gc, _ = per_side(full)
    plugin_delta = _plugin(nc, gc, full[:, 0]) - _plugin(nb, gb, full[:, 0])
    shift = float(debiased_delta(full)[0] - plugin_delta[0])

    def delta(sums: Array) -> Array:
        centred: Array = debiased_delta(sums) + shift
        return centred

    return block, delta


METRIC = Metric(
    "calibration_error_sq",
    False,
    "corpus",
    f"debiased squared top-label calibration error ({CALIBRATION_BINS} bins; Kumar et al. "
    "2019): Σ_bins (n_b/n)·(mean gap² − its sampling variance), unbiased, can be slightly < 0",
    ("correct", "confidence"),
    unit_interval=False,
    whole_set=_value,
    resampler=WeightedSums(_block),
)
