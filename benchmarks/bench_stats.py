"""Benchmark: paired statistics, flips and the per-class table at n = 100,000 examples, and
`paired_statistics` at scale.

Run: `.venv/bin/python benchmarks/bench_stats.py [--n N] [--resamples R] [--repeat K]`.
Prints JSON: the best-of-K wall time of each step, and a bare numpy pass over the same data
(one sum per column) as the ratio baseline, so numbers from a loaded machine stay comparable.
Target: each `paired_statistics` call ≤ 2 s on the 2-core CI machine.

`--scale 100000 1000000` instead times `paired_statistics` alone at each n, for 10 and 1000
classes and the LM metrics, each in a fresh process so that its peak RSS
(`resource.getrusage`) is its own; every case twice, with all of the task's metrics and with
only the bootstrapped ones (no `binary` or `mean` metric: those get O(n) tests). Targets:
≤ 2 s at n = 100,000; ≤ 10 s and ≤ 2 GB peak RSS at n = 1,000,000.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
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


def classification_records(
    n: int, rng: np.random.Generator, num_classes: int = NUM_CLASSES
) -> PairedRecords:
    label = rng.integers(0, num_classes, n)
    difficulty = rng.random(n)  # shared: the sides err on the same hard examples

    def side(accuracy: float) -> dict[str, np.ndarray]:
        correct = difficulty + 0.15 * rng.standard_normal(n) < accuracy
        wrong = (label + rng.integers(1, num_classes, n)) % num_classes
        confidence = np.clip(rng.beta(6, 2, n), 1 / num_classes, 1.0)
        return {
            "label": label,
            "prediction": np.where(correct, label, wrong),
            "correct": correct.astype(np.float64),
            "loss": rng.exponential(0.4, n) + (~correct) * 1.5,
            "confidence": confidence,
            "top5_correct": (correct | (rng.random(n) < 0.6)).astype(np.float64),
        }

    ids = np.arange(n, dtype=np.int64)
    return PairedRecords("classification", ids, side(0.80), side(0.79), num_classes)


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


CASES = ("classes_10", "classes_1000", "lm")


def scale_case(case: str, n: int, resamples: int, bootstrapped_only: bool) -> dict[str, object]:
    """One `paired_statistics` call at scale (run in a fresh process: its peak RSS is its own)."""
    rng = np.random.default_rng(0)
    if case == "lm":
        records, specs = lm_records(n, rng), dict(LM_METRICS)
    else:
        classes = int(case.split("_")[1])
        records, specs = classification_records(n, rng, classes), dict(CLASSIFICATION_METRICS)
    if bootstrapped_only:
        specs = {k: m for k, m in specs.items() if m.kind not in ("binary", "mean")}
    start = time.perf_counter()
    paired_statistics(records, specs, resamples=resamples)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(peak_kib / 1024, 1)}


def scale(sizes: list[int], resamples: int) -> dict[str, object]:
    out: dict[str, object] = {"resamples": resamples, "cpus": os.cpu_count()}
    for n in sizes:
        for case in CASES:
            for only in (False, True):
                command = [sys.executable, __file__, "--one", case, str(n), str(resamples)]
                run = subprocess.run(command + (["only"] if only else []), capture_output=True)
                run.check_returncode()
                key = f"{case}{'_bootstrapped_only' if only else ''}"
                out.setdefault(str(n), {})[key] = json.loads(run.stdout)  # type: ignore[index]
    out["load_average_1m"] = os.getloadavg()[0]
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":  # one scale case, in its own process
        case, n, resamples = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(scale_case(case, n, resamples, sys.argv[5:] == ["only"])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=int, nargs="+", metavar="N", help="sizes to time")
    args = parser.parse_args()
    if args.scale:
        print(json.dumps(scale(args.scale, args.resamples), indent=2))
        return
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
