"""Simulation: false alarms, CI coverage and CI width of the paired calibration tests.

Run: `.venv/bin/python benchmarks/sim_calibration.py [--sims S] [--resamples R] [--n N ...]`.

Two scenarios, each example shared by both models (one uniform draw U per example decides
both models' correctness, correct = U < p, so the sides err on the same hard examples):
- `calibrated A/A`: two perfectly calibrated models with different confidence spreads, baseline
  confidence ~ Beta(20, 1.5), candidate ~ Beta(5, 2), p = confidence. The true delta of every
  calibration metric is 0: a p < 0.05 is a false alarm.
- `calibrated vs overconfident`: the same baseline; the candidate reports c ~ Beta(5, 2) but is
  right with p = clip(c − 0.05, 0, 1). The true deltas are computed once from 2,000,000
  confidences and their expected (noise-free) per-bin gaps.

For `calibration_error_sq` (debiased squared ℓ2 CE) and the plug-in `ece` (L1) it prints the
rate of p < 0.05, the coverage of the true delta by the 95 % CI, the mean CI width, and, over
the simulations, the estimate's bias (mean estimated delta − true delta) and the width of
± 1.96 of its standard deviation (what an exact 95 % CI's width would be, near normality).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from regress_action.metrics import Metric
from regress_action.records import PairedRecords
from regress_action.stats import paired_statistics
from regress_action.tasks.calibration import METRIC, calibration_bins
from regress_action.tasks.classification import METRICS as CLASSIFICATION_METRICS

SPECS: dict[str, Metric] = {"calibration_error_sq": METRIC, "ece": CLASSIFICATION_METRICS["ece"]}
BASE = (20.0, 1.5)
CAND = (5.0, 2.0)
SHIFT = 0.05


def accuracy_of(confidence: np.ndarray, overconfident: bool) -> np.ndarray:
    return np.clip(confidence - SHIFT, 0.0, 1.0) if overconfident else confidence


def simulate(n: int, rng: np.random.Generator, overconfident: bool) -> PairedRecords:
    u = rng.random(n)
    conf_b, conf_c = rng.beta(*BASE, n), rng.beta(*CAND, n)
    base: dict[str, Any] = {"correct": u < conf_b, "confidence": conf_b}
    cand: dict[str, Any] = {"correct": u < accuracy_of(conf_c, overconfident), "confidence": conf_c}
    return PairedRecords("classification", np.arange(n), base, cand, 10)


def population(confidence: np.ndarray, accuracy: np.ndarray) -> dict[str, float]:
    """Binned population CE² and L1 ECE from confidences and their expected accuracies."""
    bins = calibration_bins(confidence)
    share = np.bincount(bins, minlength=15) / confidence.size
    gap_sum = np.bincount(bins, weights=confidence - accuracy, minlength=15)
    count = np.bincount(bins, minlength=15)
    gap = np.divide(gap_sum, count, out=np.zeros(15), where=count > 0)
    return {
        "calibration_error_sq": float((share * gap**2).sum()),
        "ece": float(np.abs(gap_sum).sum() / confidence.size),
    }


def true_deltas(overconfident: bool, n: int = 2_000_000) -> dict[str, float]:
    rng = np.random.default_rng(12345)
    conf_b, conf_c = rng.beta(*BASE, n), rng.beta(*CAND, n)
    base = population(conf_b, conf_b)
    cand = population(conf_c, accuracy_of(conf_c, overconfident))
    return {name: cand[name] - base[name] for name in SPECS}


def run(n: int, sims: int, resamples: int, overconfident: bool) -> dict[str, tuple[float, ...]]:
    truth = true_deltas(overconfident)
    reject = {name: 0 for name in SPECS}
    cover = {name: 0 for name in SPECS}
    width = {name: 0.0 for name in SPECS}
    estimates: dict[str, list[float]] = {name: [] for name in SPECS}
    for sim in range(sims):
        records = simulate(n, np.random.default_rng([n, sim, overconfident]), overconfident)
        stats = paired_statistics(records, SPECS, resamples=resamples, seed=sim)
        for name, s in stats.items():
            reject[name] += s.p_value < 0.05
            cover[name] += s.ci_low <= truth[name] <= s.ci_high
            width[name] += s.ci_high - s.ci_low
            metric = SPECS[name]
            estimates[name].append(metric.value(records.candidate) - metric.value(records.baseline))
    return {
        name: (
            truth[name],
            float(np.mean(estimates[name])) - truth[name],
            reject[name] / sims,
            cover[name] / sims,
            width[name] / sims,
            float(np.std(estimates[name], ddof=1)) * 2 * 1.96,
        )
        for name in SPECS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 5000, 20000])
    args = parser.parse_args()
    print(f"{args.sims} simulations per row, {args.resamples} resamples, 95 % CI, p < 0.05")
    print(
        f"{'scenario':<28} {'metric':<21} {'n':>6} {'true delta':>11} {'p<.05':>6} "
        f"{'coverage':>8} {'CI width':>9} {'bias':>9} {'±1.96 SD':>9}"
    )
    for overconfident in (False, True):
        scenario = "calibrated vs overconfident" if overconfident else "calibrated A/A"
        for n in args.n:
            start = time.perf_counter()
            rows = run(n, args.sims, args.resamples, overconfident)
            for name, (truth, bias, reject, cover, width, spread) in rows.items():
                print(
                    f"{scenario:<28} {name:<21} {n:>6} {truth:>11.6f} {reject:>6.3f} "
                    f"{cover:>8.3f} {width:>9.6f} {bias:>9.6f} {spread:>9.6f}"
                )
            print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
