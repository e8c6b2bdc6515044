#!/usr/bin/env python3
"""Input-pipeline benchmark; prints JSON.

Writes an image folder of small PNGs (10 classes of 32x32 RGB, drawn with numpy) into a
temporary directory, then times `compare_models` of two `regress_action.zoo:tiny_cnn` models on
it with `workers=0` (every file decoded in the main process, between the forward passes) and
with the default workers (decoded in DataLoader workers while the models run). Both are the
whole comparison (header scan, pass, fingerprint), statistics off; best of `--repeats`,
interleaved so drift on a shared machine affects both alike. Goal: ratio (with ÷ without)
≤ 0.6 on the 2-core CI machine. The two runs' reports must agree (checked). `phases` breaks
the best run of each down, as seen from the main process: `scan` (the folder's header scan),
`forward` (both models' forward calls), `batches` (waiting for / decoding the next batch,
fingerprint included), `fingerprint` (hashing the batches) and `other` (the rest: records,
report). `--size 96 --resize 32` stores larger PNGs and resizes them when read (the
`image-size` input), so decoding and preprocessing weigh more against the models.

On 2 cores the goal is out of reach whenever the models use both cores without workers: the
total CPU work (decode D + forward F on two threads, ≈ 2F' CPU-seconds on one) cannot finish in
less than (D + F') / 2, so ratio ≥ (D + F') / 2 / (D + F); with the default workload (D ≈ 0.7 s,
F ≈ 1.0 s, F' ≈ 1.6–1.9 s) that is ≈ 0.7, and with F' ≈ 2F it stays above 0.6 unless decoding
costs more than four times the forward (D > 4F).

    python benchmarks/bench_pipeline.py [--images 5000] [--batch-size 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from regress_action import compare_models, engine, sources
from regress_action.engine import default_workers
from regress_action.spec import EvalConfig, TaskSpec, VerdictConfig
from regress_action.zoo import tiny_cnn

CLASSES = 10
SIZE = 32
TASK = TaskSpec(modality="vision", task="classification", num_classes=CLASSES)


def write_folder(root: Path, n: int, seed: int = 0, size: int = SIZE) -> None:
    """n PNGs of size x size, round-robin over the classes: a class-coloured stripe pattern plus
    noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    for label in range(CLASSES):
        (root / f"class_{label}").mkdir(parents=True)
    for i in range(n):
        label = i % CLASSES
        stripes = ((x * (label % 3 + 1) + y * (label // 3)) // 4 % 2).astype(np.int64)
        colour = np.array([25 * label, 255 - 25 * label, 128], dtype=np.int64)
        noise = rng.integers(-40, 41, (size, size, 3))
        pixels = np.clip(60 + stripes[..., None] * colour[None, None] // 2 + noise, 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"class_{label}" / f"{i:06d}.png")


def model(seed: int, width: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tiny_cnn(num_classes=CLASSES, width=width)


PHASES: collections.defaultdict[str, float] = collections.defaultdict(float)


def _clocked(function: Any, phase: str) -> Any:
    @functools.wraps(function)
    def clocked(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            PHASES[phase] += time.perf_counter() - started

    return clocked


def _clocked_batches(batches: Any) -> Any:
    @functools.wraps(batches)
    def clocked(*args: Any, **kwargs: Any) -> Any:
        iterator = batches(*args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                PHASES["batches"] += time.perf_counter() - started
            yield batch

    return clocked


def clock_phases() -> None:
    """Time the pipeline's phases (`PHASES`) by wrapping the functions that run them."""
    sources._scan_headers = _clocked(sources._scan_headers, "scan")
    sources.Fingerprint.observe = _clocked(sources.Fingerprint.observe, "fingerprint")  # type: ignore[method-assign]
    engine._forward = _clocked(engine._forward, "forward")
    engine._batches = _clocked_batches(engine._batches)


def timed(
    folder: Path, workers: int, args: argparse.Namespace
) -> tuple[float, dict[str, Any], dict[str, float]]:
    resize = None if args.resize is None else (args.resize, args.resize)
    cfg = EvalConfig(
        dataset=folder,
        batch_size=args.batch_size,
        device="cpu",
        workers=workers,
        image_size=resize,
    )
    verdict = VerdictConfig(significance="off")
    models = model(0, args.width), model(1, args.width)
    PHASES.clear()
    started = time.perf_counter()
    report = compare_models(*models, None, TASK, cfg, verdict=verdict)
    seconds = time.perf_counter() - started
    phases = {name: PHASES[name] for name in ("scan", "forward", "batches", "fingerprint")}
    phases["other"] = seconds - phases["scan"] - phases["forward"] - phases["batches"]
    return seconds, report, {name: round(value, 3) for name, value in phases.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="tiny_cnn's width (its default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=SIZE, help="side of the stored PNGs")
    parser.add_argument(
        "--resize", type=int, help="side every image is resized to when read (image-size)"
    )
    args = parser.parse_args()
    logging.getLogger("regress_action").setLevel(logging.ERROR)  # no per-metric warnings
    workers = default_workers()
    clock_phases()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        folder = Path(tmp) / "images"
        started = time.perf_counter()
        write_folder(folder, args.images, size=args.size)
        written = time.perf_counter() - started
        times: dict[int, list[float]] = {0: [], workers: []}
        reports: dict[int, dict[str, Any]] = {}
        phases: dict[int, dict[str, float]] = {}
        for _ in range(args.repeats):
            for count in times:
                seconds, reports[count], clocked = timed(folder, count, args)
                if seconds < min(times[count], default=float("inf")):
                    phases[count] = clocked
                times[count].append(seconds)
    same = all(reports[0][key] == reports[workers][key] for key in ("metrics", "dataset", "status"))
    without, with_workers = min(times[0]), min(times[workers])
    result = {
        "images": args.images,
        "image_size": [3, args.size, args.size],
        "resized_to": args.resize,
        "batch_size": args.batch_size,
        "cnn_width": args.width,
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "default_workers": workers,
        "write_folder_s": round(written, 3),
        "workers_0_s": round(without, 3),
        f"workers_{workers}_s": round(with_workers, 3),
        "all_s": {f"workers_{k}": [round(t, 3) for t in v] for k, v in times.items()},
        "ratio": round(with_workers / without, 3),
        "phases": {f"workers_{k}": v for k, v in phases.items()},
        "reports_identical": same,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
