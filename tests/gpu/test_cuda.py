"""The engine on a CUDA device: the same verdicts as on the CPU, every precision, the pinned,
read-ahead loader, and `torchrun` with the nccl backend. Skipped where there is no CUDA device
(CI has none); `benchmarks/gpu.sh` is the companion benchmark.

    python -m pytest tests/gpu -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from regress_action import compare_models
from regress_action.data import load_eval_set
from regress_action.engine import PassOptions, evaluate_pair
from regress_action.models import save_checkpoint
from regress_action.spec import EvalConfig, TaskSpec, VerdictConfig
from regress_action.tasks import adapter_for
from regress_action.zoo import tiny_cnn, tiny_lm

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

VISION = TaskSpec(modality="vision", task="classification", num_classes=10)
LM = TaskSpec(modality="text", task="lm", vocab_size=256)
VERDICT = VerdictConfig(significance="gate")


def _models(task: TaskSpec) -> tuple[torch.nn.Module, torch.nn.Module]:
    pair = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        pair.append(tiny_cnn() if task.task == "classification" else tiny_lm())
    return pair[0], pair[1]


def _compare(task: TaskSpec, dataset: str, **eval_kwargs: Any) -> dict[str, Any]:
    baseline, candidate = _models(task)
    cfg = EvalConfig(dataset=dataset, batch_size=32, **eval_kwargs)
    return compare_models(baseline, candidate, None, task, cfg, verdict=VERDICT)


@pytest.mark.parametrize(("task", "dataset"), [(VISION, "vision_tiny"), (LM, "lm_tiny")])
def test_cuda_fp32_gives_the_cpus_verdict(task: TaskSpec, dataset: str) -> None:
    cpu = _compare(task, dataset, device="cpu")
    gpu = _compare(task, dataset, device="cuda")
    assert gpu["device"] == "cuda:0" and gpu["precision"] == "fp32"
    assert gpu["dataset"]["fingerprint"] == cpu["dataset"]["fingerprint"]
    assert gpu["dataset"]["n"] == cpu["dataset"]["n"]
    for name, metric in cpu["metrics"].items():
        other = gpu["metrics"][name]
        assert other["status"] == metric["status"], name
        for side in ("baseline", "candidate"):
            # TF32 convolutions and another reduction order: close, not bit-equal.
            assert other[side] == pytest.approx(metric[side], rel=2e-3, abs=2e-3), (name, side)
    assert gpu["status"] == cpu["status"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize(("task", "dataset"), [(VISION, "vision_tiny"), (LM, "lm_tiny")])
def test_cuda_autocast_runs_and_is_recorded(task: TaskSpec, dataset: str, precision: str) -> None:
    fp32 = _compare(task, dataset, device="cuda")
    low = _compare(task, dataset, device="cuda", precision=precision)
    assert low["precision"] == precision and low["device"] == "cuda:0"
    primary = "accuracy" if task.task == "classification" else "loss"
    for side in ("baseline", "candidate"):
        value = low["metrics"][primary][side]
        assert np.isfinite(value)
        assert value == pytest.approx(fp32["metrics"][primary][side], rel=0.05, abs=0.02)


def _folder(root: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


def test_pinned_read_ahead_workers_give_the_same_records_on_cuda(tmp_path: Path) -> None:
    eval_set = load_eval_set(_folder(tmp_path / "images"))
    baseline, candidate = _models(VISION)
    records = []
    for workers in (0, 3):
        options = PassOptions(batch_size=32, device="cuda", workers=workers)
        result = evaluate_pair(baseline, candidate, eval_set.dataset, adapter_for(VISION), options)
        records.append(result.records)
    a, b = records
    assert np.array_equal(a.example_ids, b.example_ids)
    for side in ("baseline", "candidate"):
        for name, column in a.side(side).items():
            assert column.tobytes() == b.side(side)[name].tobytes(), (side, name)


def _cli(tmp_path: Path, launcher: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *launcher, "regress_action", "--verbose", *args]
    command += ["--db", f"sqlite:///{tmp_path / 'regress.db'}"]
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE"}}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)


def test_torchrun_on_cuda_agrees_with_one_process(tmp_path: Path) -> None:
    baseline, candidate = _models(VISION)
    example = torch.zeros((2, 3, 16, 16))
    for name, model in (("a", baseline), ("b", candidate)):
        save_checkpoint(model, tmp_path / f"{name}.pt2", "export", example)
        added = _cli(tmp_path, ["-m"], "runs", "add", f"{name}.pt2", "--task", "classification",
                     "--num-classes", "10")  # fmt: skip
        assert added.returncode == 0, added.stderr
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    reports = []
    for launcher in (["-m"], torchrun):
        out = tmp_path / f"report-{len(launcher)}.json"
        runs = ["--baseline-run-id", "1", "--candidate-run-id", "2"]
        done = _cli(
            tmp_path, launcher, "compare", *runs, "--dataset", "vision_tiny", "--json-out", str(out)
        )
        assert done.returncode in (0, 1), done.stderr[-3000:]
        if launcher is torchrun:
            assert "backend cpu:gloo,cuda:nccl" in done.stderr, done.stderr[-3000:]
        reports.append(json.loads(out.read_text()))
    single, launched = reports
    assert launched["device"] == single["device"] == "cuda:0"
    assert launched["world_size"] == 2  # two ranks share the one GPU if need be
    for name, metric in single["metrics"].items():
        assert launched["metrics"][name]["status"] == metric["status"]
        delta = pytest.approx(metric["delta"], rel=1e-6, abs=1e-9)
        assert launched["metrics"][name]["delta"] == delta
