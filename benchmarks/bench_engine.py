#!/usr/bin/env python3
"""Engine benchmark; prints JSON.

(a) `compare_models` time ÷ a bare hand-written `inference_mode` loop over both models on the
    same pre-built batches (the reference), for a classifier big enough that the forward pass
    dominates; with statistics off and with the default statistics;
(b) peak RSS growth per eval example (child processes evaluating n and 4n examples of a lazily
    generated dataset with a tiny model, so neither data nor activations grow with n: what grows
    is the per-example records);
(c) `import regress_action` and `regress-action --help` wall time, and whether torch got imported.

    python benchmarks/bench_engine.py [--examples 4096] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from regress_action import compare_models
from regress_action.spec import EvalConfig, TaskSpec, VerdictConfig

TASK = TaskSpec(modality="vision", task="classification", num_classes=10)
DIM = 3 * 32 * 32


class Synthetic(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Small inputs computed from the index on access: the dataset holds no memory of its own."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((16,), float(i % 97) / 97.0), torch.tensor(i % 10)


def small(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def mlp(seed: int, width: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(DIM, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 10),
    ).eval()


def bare_loop(models: list[nn.Module], batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for inputs, _ in batches:
            for model in models:
                model(inputs)
    return time.perf_counter() - started


def overhead(examples: int, repeats: int, width: int) -> dict[str, Any]:
    images = torch.rand(examples, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(examples) % 10
    dataset = torch.utils.data.TensorDataset(images, labels)
    batch = 256
    batches = [(images[i : i + batch], labels[i : i + batch]) for i in range(0, examples, batch)]
    baseline, candidate = mlp(0, width), mlp(1, width)
    cfg = EvalConfig(dataset=dataset, dataset_name="synthetic", batch_size=batch, device="cpu")
    result: dict[str, Any] = {"examples": examples, "width": width, "batch_size": batch}
    for label, significance in (("stats_off", "off"), ("stats_report", "report")):
        verdict = VerdictConfig(significance=significance)  # type: ignore[arg-type]
        bare, ours = [], []
        for _ in range(repeats):  # interleaved, so drift affects both alike
            bare.append(bare_loop([baseline, candidate], batches))
            started = time.perf_counter()
            compare_models(baseline, candidate, None, TASK, cfg, verdict=verdict)
            ours.append(time.perf_counter() - started)
        result[label] = {
            "bare_loop_s": min(bare),
            "compare_models_s": min(ours),
            "ratio": min(ours) / min(bare),
        }
    return result


CHILD = """
import sys, torch
sys.path.insert(0, {here!r})
from bench_engine import Synthetic, small, TASK
from regress_action.engine import PassOptions, evaluate_pair
from regress_action.tasks import adapter_for

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

n = int(sys.argv[1])
evaluate_pair(small(0), small(1), Synthetic(64), adapter_for(TASK), PassOptions(device="cpu"))
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current RSS
    f.write("5")
result = evaluate_pair(small(0), small(1), Synthetic(n), adapter_for(TASK),
                       PassOptions(batch_size=256, device="cpu"))
print(status("VmHWM:") - before)
"""


def memory_per_example(n: int) -> dict[str, Any]:
    """Peak RSS growth of one evaluation, at n and 4n examples; the slope is per example."""
    code = CHILD.format(here=str(Path(__file__).parent))
    growth = {}
    for count in (n, 4 * n):
        out = subprocess.run(
            [sys.executable, "-c", code, str(count)], capture_output=True, text=True, check=True
        )
        growth[count] = int(out.stdout.strip().splitlines()[-1])
    slope = (growth[4 * n] - growth[n]) / (3 * n)
    return {
        "examples": [n, 4 * n],
        "peak_growth_bytes": list(growth.values()),
        "bytes_per_example": slope,
    }


def startup() -> dict[str, Any]:
    def timed(args: list[str]) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(args, capture_output=True, check=True)
            best = min(best, time.perf_counter() - started)
        return best

    script = Path(sys.executable).with_name("regress-action")
    torch_loaded = subprocess.run(
        [sys.executable, "-c", "import sys, regress_action.cli; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {
        "python_bare_s": timed([sys.executable, "-c", "pass"]),
        "import_regress_action_s": timed([sys.executable, "-c", "import regress_action"]),
        "help_s": timed([str(script), "--help"]),
        "import_torch_s": timed([sys.executable, "-c", "import torch"]),
        "cli_imports_torch": torch_loaded == "True",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("regress_action").setLevel(logging.ERROR)  # no per-metric warnings
    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "overhead": overhead(args.examples, args.repeats, args.width),
        "memory": memory_per_example(50_000),
        "startup": startup(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
