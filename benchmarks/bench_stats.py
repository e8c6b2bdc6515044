"""Benchmark: paired statistics, flips and the per-class table at n = 100,000 examples.

Run: `.venv/bin/python benchmarks/bench_stats.py [--n N] [--resamples R] [--repeat K]`.
Prints JSON: the best-of-K wall time of each step, and a bare numpy pass over the same data
(one sum per column) as the ratio baseline, so numbers from a loaded machine stay comparable.
Target (issue 4): each `paired_statistics` call ≤ 2 s on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import numpy as np

from regress_action.records import PairedRecords
from regress_action.stats import paired_statistics
from regress_action.tasks.classification import METRICS as CLASSIFICATION_METRICS
from regress_action.tasks.classification import flips, per_class
from regress_action.tasks.lm import METRICS as LM_METRICS
from regress_action.tasks.lm import loss_increases

NUM_CLASSES = 10


def classification_records(n: int, rng: np.random.Generator) -> PairedRecords:
    label = rng.integers(0, NUM_CLASSES, n)
    difficulty = rng.random(n)  # shared: the sides err on the same hard examples

    def side(accuracy: float) -> dict[str, np.ndarray]:
        correct = difficulty + 0.15 * rng.standard_normal(n) < accuracy
        wrong = (label + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES
        confidence = np.clip(rng.beta(6, 2, n), 1 / NUM_CLASSES, 1.0)
        return {
            "label": label,
            "prediction": np.where(correct, label, wrong),
            "correct": correct.astype(np.float64),
            "loss": rng.exponential(0.4, n) + (~correct) * 1.5,
            "confidence": confidence,
            "top5_correct": (correct | (rng.random(n) < 0.6)).astype(np.float64),
        }

    ids = np.arange(n, dtype=np.int64)
    return PairedRecords("classification", ids, side(0.80), side(0.79), NUM_CLASSES)


def lm_records(n: int, rng: np.random.Generator) -> PairedRecords:
    tokens = rng.integers(16, 512, n).astype(np.float64)
    text_bytes = tokens * rng.uniform(3.0, 5.0, n)
    hardness = rng.gamma(4.0, 0.75, n)

    def side(scale: float) -> dict[str, np.ndarray]:
        nll = tokens * hardness * scale * rng.lognormal(0.0, 0.1, n)
        correct = rng.binomial(tokens.astype(np.int64), 0.35).astype(np.float64)
        return {"nll_sum": nll, "tokens": tokens, "correct_tokens": correct, "bytes": text_bytes}

    ids = np.arange(n, dtype=np.int64)
    return PairedRecords("lm", ids, side(1.0), side(1.01))


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cls, lm = classification_records(args.n, rng), lm_records(args.n, rng)
    cls_specs, lm_specs = dict(CLASSIFICATION_METRICS), dict(LM_METRICS)
    columns = np.column_stack([cls.baseline["loss"]] * 8)
    result = {
        "n": args.n,
        "resamples": args.resamples,
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "bare_column_sum_s": best_of(args.repeat, lambda: columns.sum(axis=0)),
        "classification_stats_s": best_of(
            args.repeat, lambda: paired_statistics(cls, cls_specs, resamples=args.resamples)
        ),
        "lm_stats_s": best_of(
            args.repeat, lambda: paired_statistics(lm, lm_specs, resamples=args.resamples)
        ),
        "flips_per_class_s": best_of(
            args.repeat, lambda: (flips(cls), per_class(cls, [str(c) for c in range(10)]))
        ),
        "lm_flips_s": best_of(args.repeat, lambda: loss_increases(lm)),
        "metrics": {
            "classification": list(cls_specs),
            "lm": list(lm_specs),
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
