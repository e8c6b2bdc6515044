#!/usr/bin/env python3
"""Cached-baseline benchmark; prints JSON.

Two comparisons of `regress_action.zoo:tiny_cnn` checkpoints (safetensors + factory, `--width`
channels) on a `.npz` of random 3x32x32 images, through `app.run_compare` on a SQLite
ExperimentDB, default statistics:

- **cold**: a fresh database: the candidate's pass, the baseline's pass (its key misses), the
  report, and both sides' records stored with the comparison;
- **cached**: the same baseline against another candidate, after a cold comparison stored the
  baseline's records: the candidate's pass alone, the baseline's records read from the database.

Best of `--repeats` each (interleaved, each cold run on a database of its own; each cached run
after its own cold one). Goal: cached ÷ cold ≤ 0.55. The cached report must equal the cold one
for the same pair (checked, timestamps and provenance aside). The ratio is (F + S) / (2F + S)
for one model's pass F and the rest S (the statistics' resamples, ≈ 0.4 s here, loading the
models, the database): a model whose forward weighs more than the statistics gets closer to
0.5. On the 2-core CI machine, width 64: cold ≈ 10.6 s, cached ≈ 5.6 s, ratio ≈ 0.53.

    python benchmarks/bench_cache.py [--examples 4096] [--width 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regress_action.app import CheckpointRequest, CompareRequest, register_checkpoint, run_compare
from regress_action.models import save_checkpoint
from regress_action.spec import TaskSpec
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_cnn

TASK = TaskSpec(modality="vision", task="classification", num_classes=10)
VOLATILE = {"created_at", "duration_s", "comparison_id", "baseline_source", "trend"}


def setup(root: Path, examples: int, width: int) -> tuple[Path, list[Path]]:
    rng = np.random.default_rng(0)
    images = rng.random((examples, 3, 32, 32), dtype=np.float32)
    labels = rng.integers(0, 10, size=examples)
    dataset = root / "eval.npz"
    np.savez(dataset, images=images, labels=labels)
    checkpoints = []
    for seed in range(3):
        torch.manual_seed(seed)
        path = root / f"cnn_{seed}.safetensors"
        save_checkpoint(tiny_cnn(width=width), path, "safetensors")
        checkpoints.append(path)
    return dataset, checkpoints


def compare(
    db_path: Path, dataset: Path, checkpoints: list[Path], width: int, candidate: int
) -> tuple[float, dict[str, Any]]:
    with ExperimentDB(db_path) as db:
        ids = [
            register_checkpoint(
                db,
                CheckpointRequest(
                    checkpoint=str(path),
                    task=TASK,
                    factory="regress_action.zoo:tiny_cnn",
                    factory_kwargs={"width": width},
                ),
            ).id
            for path in (checkpoints[0], checkpoints[candidate])
        ]
        request = CompareRequest(
            baseline_run_id=ids[0],
            candidate_run_id=ids[1],
            dataset=str(dataset),
            batch_size=256,
            device="cpu",
        )
        started = time.perf_counter()
        outcome = run_compare(request, db)
        elapsed = time.perf_counter() - started
    return elapsed, outcome.report.model_dump(mode="json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("regress_action").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset, checkpoints = setup(root, args.examples, args.width)
        cold, cached = [], []
        for repeat in range(args.repeats):
            db_path = root / f"regress-{repeat}.db"
            seconds, first = compare(db_path, dataset, checkpoints, args.width, 1)
            cold.append(seconds)
            assert first["baseline_source"] is None
            seconds, other = compare(db_path, dataset, checkpoints, args.width, 2)
            cached.append(seconds)
            assert other["baseline_source"] is not None, "the baseline's records were not reused"
            _, again = compare(db_path, dataset, checkpoints, args.width, 1)
            assert again["baseline_source"] is not None
            same = {k: v for k, v in first.items() if k not in VOLATILE}
            assert same == {k: v for k, v in again.items() if k not in VOLATILE}, "reports differ"
    result = {
        "examples": args.examples,
        "width": args.width,
        "threads": torch.get_num_threads(),
        "cold_s": min(cold),
        "cached_s": min(cached),
        "ratio": min(cached) / min(cold),
        "goal": 0.55,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
