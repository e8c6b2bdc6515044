#!/usr/bin/env python3
"""Simulation of the slice verdicts: false alarms and power of gating every slice.

Each simulation draws paired per-example records of two synthetic classification models over
an eval set of 8 slices × 1,000 examples and runs them through the real decision path,
`compare.build_report` (which masks the records per slice and calls `paired_statistics` on each),
under `significance="gate"` with `gate_slices=("all",)`; the job fails when the report's status
is `regressed`.

    .venv/bin/python benchmarks/sim_slices.py [--sims 200] [--seed 0] [--processes 2]

Scenarios (one JSON object each, printed as one JSON document):
- `aa`: two different models of equal quality; 5 gated metrics (accuracy, loss, top5_accuracy,
  brier, macro_f1) on 8 gated slices: a family of 40 tests, each at α / 40. The job-failure
  rate must be at most α (0.05).
- `power_5pt_one_slice`: the candidate loses 5 points of accuracy in one slice of 1,000 and is
  otherwise as good: how often the gated run fails (with the 5 metrics gated, m = 40, and with
  accuracy alone, m = 8), and how often the whole set's accuracy alone (slices not gated)
  would have caught it.

Deterministic given `--seed`. Measured on 2 cores (`--processes 2`): 65 s for 200 simulations.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from regress_action.compare import ReportContext, build_report
from regress_action.records import PairedRecords
from regress_action.report import DatasetInfo
from regress_action.spec import TaskSpec, VerdictConfig

SLICES, PER_SLICE, CLASSES = 8, 1000, 10
METRICS = ("accuracy", "loss", "top5_accuracy", "brier", "macro_f1")
TASK = TaskSpec(modality="vision", task="classification", num_classes=CLASSES)
ALPHA = 0.05
RESAMPLES = 500


def records(rng: np.random.Generator, drop: float = 0.0) -> PairedRecords:
    """Two models of equal quality (80 % right, agreeing on the easy examples: each is right
    when a shared difficulty plus its own noise is low) over 8 slices of 1,000; with `drop`,
    the candidate is wrong on that share of slice 0's examples it would have got right."""
    n = SLICES * PER_SLICE
    slices = np.repeat(np.asarray([f"s{i}" for i in range(SLICES)], dtype=np.str_), PER_SLICE)
    label = rng.integers(0, CLASSES, n)
    hard = rng.normal(0, 1, n)
    sides: list[dict[str, Any]] = []
    for side in range(2):
        score = hard + rng.normal(0, 0.6, n)
        correct = score < np.quantile(score, 0.8)
        if side == 1 and drop:
            inside = np.flatnonzero((slices == "s0") & correct)
            lost = rng.random(inside.size) < drop / correct[slices == "s0"].mean()
            correct[inside[lost]] = False
        wrong = (label + rng.integers(1, CLASSES, n)) % CLASSES
        confidence = 1 / (1 + np.exp(score))
        p_true = np.where(correct, confidence, (1 - confidence) / 2)
        sides.append(
            {
                "label": label,
                "prediction": np.where(correct, label, wrong),
                "correct": correct,
                "top5_correct": correct | (rng.random(n) < 0.6),
                "confidence": confidence,
                "loss": -np.log(np.clip(p_true, 1e-6, 1)),
                "brier": (1 - p_true) ** 2 + (1 - p_true) ** 2 / (CLASSES - 1),
            }
        )
    return PairedRecords("classification", np.arange(n), sides[0], sides[1], CLASSES, slices=slices)


def fails(recs: PairedRecords, verdict: VerdictConfig) -> tuple[bool, list[str]]:
    dataset = DatasetInfo(name="synthetic", n=recs.n, fingerprint="0" * 64)
    report = build_report(recs, ReportContext(task=TASK, dataset=dataset, verdict=verdict), 0.0)
    return report.status == "regressed", report.regressed_metrics


def one(args: tuple[int, int]) -> dict[str, Any]:
    index, seed = args
    base = VerdictConfig(
        significance="gate", metrics=METRICS, alpha=ALPHA, resamples=RESAMPLES, seed=index
    )
    every = base.model_copy(update={"gate": ("all",), "gate_slices": ("all",)})
    accuracy = base.model_copy(update={"gate": ("accuracy",), "gate_slices": ("all",)})
    whole = base.model_copy(update={"gate": ("accuracy",)})
    aa = records(np.random.default_rng([seed, 0, index]))
    drop = records(np.random.default_rng([seed, 1, index]), drop=0.05)
    aa_fails, aa_names = fails(aa, every)
    return {
        "aa": aa_fails,
        "aa_names": aa_names,
        "power_all": fails(drop, every)[0],
        "power_accuracy": fails(drop, accuracy)[0],
        "power_whole_set": fails(drop, whole)[0],
    }


def interval(hits: int, n: int) -> list[float]:
    """The 95 % Wilson interval of a rate."""
    if n == 0:
        return [math.nan, math.nan]
    z, p = 1.959964, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    logging.getLogger("regress_action").setLevel(logging.ERROR)
    started = time.perf_counter()
    jobs = [(i, args.seed) for i in range(args.sims)]
    if args.processes > 1:
        with multiprocessing.Pool(args.processes) as pool:
            rows = pool.map(one, jobs, chunksize=4)
    else:
        rows = [one(job) for job in jobs]
    n = len(rows)

    def rate(key: str) -> dict[str, Any]:
        hits = sum(bool(row[key]) for row in rows)
        return {"rate": hits / n, "ci95": interval(hits, n), "hits": hits}

    aa = rate("aa")
    out = {
        "sims": n,
        "slices": SLICES,
        "examples_per_slice": PER_SLICE,
        "alpha": ALPHA,
        "resamples": RESAMPLES,
        "aa": {
            "gated_metrics": list(METRICS),
            "family_size": SLICES * len(METRICS),
            "job_fails": aa,
            "within_alpha": aa["rate"] <= ALPHA,
            "failing": sorted({name for row in rows for name in row["aa_names"]}),
        },
        "power_5pt_one_slice": {
            "all_5_metrics_gated_m40": rate("power_all"),
            "accuracy_gated_m8": rate("power_accuracy"),
            "whole_set_accuracy_only": rate("power_whole_set"),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0 if out["aa"]["within_alpha"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
