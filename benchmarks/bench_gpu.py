#!/usr/bin/env python3
"""GPU benchmark of the engine; prints one JSON line per figure. Run it through
`benchmarks/gpu.sh`, which finds the GPUs.

Figures (each a JSON object with a "figure" key):

- `environment`: torch, CUDA, the GPU, the TF32 switches.
- `engine_overhead` (per model and precision): `engine.evaluate_pair` time ÷ a bare loop that
  moves each batch to the device and runs both models under `torch.inference_mode()` (and
  `torch.autocast` for bf16), then synchronises. Both take the best of `--repeats` runs,
  interleaved, after a warm-up; the models already live on the GPU, so neither moves weights.
- `bf16_speedup` (per model): the engine's fp32 time ÷ its bf16 time (and the bare loop's).
- `torchrun_scaling`: `torchrun --nproc-per-node N -m regress_action compare` on a ResNet-sized
  CNN (safetensors checkpoints, an `.npz` eval set), fp32 and bf16, with N = 1 and N =
  `--nproc`: wall time of the whole command (start-up, loading, statistics off) and the pass
  time the report records (rank 0's shard, a cold first pass). Skipped, with a JSON line saying
  so, when this regress-action has no torchrun support.

Models, built from torch.nn layers (no torchvision, no transformers, no downloads):
`resnet50` (bottleneck blocks 3-4-6-3, 25.6 M parameters, 224×224 inputs, 1000 classes) and
`gpt2_small` (12 layers, 12 heads, width 768, vocabulary 50257, 1024 tokens: 124 M
parameters, weights tied).

    benchmarks/gpu.sh                                # on a machine with a CUDA GPU
    python benchmarks/bench_gpu.py --device cpu --tiny --nproc 2   # a quick check of the script
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # regress_action from this checkout, installed or not

from regress_action.engine import PassOptions, evaluate_pair  # noqa: E402
from regress_action.spec import Precision, TaskSpec  # noqa: E402
from regress_action.tasks import adapter_for  # noqa: E402

PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")


def emit(figure: str, **values: Any) -> None:
    print(json.dumps({"figure": figure, **values}), flush=True)


# ---------------------------------------------------------------- models


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(inputs, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1, bias=False),
            nn.BatchNorm2d(out),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or inputs != out:
            self.skip = nn.Sequential(
                nn.Conv2d(inputs, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


def resnet50(
    num_classes: int = 1000, base: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)
) -> nn.Module:
    """ResNet-50's layout; `base` and `blocks` shrink it for `--tiny`."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(base),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    inputs = base
    for stage, count in enumerate(blocks):
        width = base * 2**stage
        for index in range(count):
            layers.append(Bottleneck(inputs, width, 2 if index == 0 and stage > 0 else 1))
            inputs = width * Bottleneck.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, num_classes)]
    return nn.Sequential(*layers)


def tiny_resnet(num_classes: int = 1000) -> nn.Module:
    return resnet50(num_classes, base=8, blocks=(1, 1, 1, 1))


class Block(nn.Module):
    """A GPT-2 block: pre-LayerNorm causal self-attention and a 4× GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc, self.out = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (
            part.view(b, t, self.heads, c // self.heads).transpose(1, 2)
            for part in self.qkv(self.ln1(x)).split(c, dim=2)
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, c))
        mlp: torch.Tensor = self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x + mlp


class GPT(nn.Module):
    """A GPT-2-style causal LM: (B, T) token ids -> (B, T, vocab) logits."""

    def __init__(self, vocab: int, context: int, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied, as in GPT-2
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.01)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # type: ignore[no-any-return]


# ---------------------------------------------------------------- workloads


class Workload:
    """A model family, its task and a synthetic eval set held on the CPU (the engine moves
    each batch to the device, as it does for a real eval set)."""

    def __init__(
        self,
        name: str,
        task: TaskSpec,
        build: Callable[[], nn.Module],
        dataset: TensorDataset,
        batch_size: int,
    ) -> None:
        self.name, self.task, self.build = name, task, build
        self.dataset, self.batch_size = dataset, batch_size


def workloads(tiny: bool, examples: int | None) -> list[Workload]:
    gen = torch.Generator().manual_seed(0)
    classes, size = (10, 32) if tiny else (1000, 224)
    n_images = examples or (64 if tiny else 1024)
    images = torch.rand(n_images, 3, size, size, generator=gen)
    labels = torch.arange(n_images) % classes
    if tiny:
        vocab, context, dim, layers, heads, n_docs = 512, 64, 64, 2, 4, examples or 32
    else:
        vocab, context, dim, layers, heads, n_docs = 50257, 1024, 768, 12, 12, examples or 256
    tokens = torch.randint(0, vocab, (n_docs, context + 1), generator=gen)
    return [
        Workload(
            "tiny_resnet" if tiny else "resnet50",
            TaskSpec(modality="vision", task="classification", num_classes=classes),
            (lambda: tiny_resnet(classes)) if tiny else resnet50,
            TensorDataset(images, labels),
            16 if tiny else 128,
        ),
        Workload(
            "tiny_gpt" if tiny else "gpt2_small",
            TaskSpec(modality="text", task="lm", vocab_size=vocab),
            lambda: GPT(vocab, context, dim, layers, heads),
            TensorDataset(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()),
            8 if tiny else 16,
        ),
    ]


def _models(workload: Workload, device: torch.device) -> tuple[nn.Module, nn.Module]:
    built = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        built.append(workload.build().to(device).eval())
    return built[0], built[1]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(
    models: tuple[nn.Module, nn.Module],
    workload: Workload,
    device: torch.device,
    precision: Precision,
) -> float:
    """The reference: each batch to the device, both models on it, nothing kept."""
    tensors = workload.dataset.tensors
    size = workload.batch_size
    cast: AbstractContextManager[Any] = (
        torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    )
    _synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode(), cast:
        for start in range(0, len(workload.dataset), size):
            batch = [t[start : start + size].to(device, non_blocking=True) for t in tensors]
            for model in models:
                model(batch[0])
    _synchronize(device)
    return time.perf_counter() - started


def engine_pass(
    models: tuple[nn.Module, nn.Module],
    workload: Workload,
    device: torch.device,
    precision: Precision,
) -> float:
    options = PassOptions(
        batch_size=workload.batch_size,
        device=str(device),
        progress=False,
        precision=precision,
    )
    _synchronize(device)
    started = time.perf_counter()
    evaluate_pair(
        *models,
        workload.dataset,
        adapter_for(workload.task),
        options,
        num_classes=workload.task.num_classes,
    )  # its records end on the CPU: the pass is complete when it returns
    return time.perf_counter() - started


def overhead(workload: Workload, device: torch.device, repeats: int) -> dict[str, float]:
    """engine_overhead lines for fp32 and bf16; returns the engine's and the bare loop's best
    time per precision."""
    models = _models(workload, device)
    best: dict[str, float] = {}
    n = len(workload.dataset)
    for precision in PRECISIONS:
        bare_loop(models, workload, device, precision)  # warm-up: kernels, allocator, autotune
        engine_pass(models, workload, device, precision)
        bare, ours = [], []
        for _ in range(repeats):  # interleaved, so drift affects both alike
            bare.append(bare_loop(models, workload, device, precision))
            ours.append(engine_pass(models, workload, device, precision))
        best[f"bare_{precision}"], best[f"engine_{precision}"] = min(bare), min(ours)
        emit(
            "engine_overhead",
            model=workload.name,
            precision=precision,
            examples=n,
            batch_size=workload.batch_size,
            bare_loop_s=round(min(bare), 4),
            engine_s=round(min(ours), 4),
            ratio=round(min(ours) / min(bare), 4),
            engine_examples_per_s=round(n / min(ours), 1),
        )
    del models
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return best


# ---------------------------------------------------------------- torchrun


def torchrun_support() -> str | None:
    """Why torchrun cannot be measured, or None when it can."""
    try:
        import regress_action.distributed  # noqa: F401
    except ImportError:
        return "this regress-action has no torchrun support (no regress_action.distributed)"
    return None


def _torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def scaling(tiny: bool, nproc: int, device: torch.device, precision: Precision) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="regress-gpu-bench-"))
    try:
        _scaling(workdir, tiny, nproc, device, precision)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _scaling(
    workdir: Path, tiny: bool, nproc: int, device: torch.device, precision: Precision
) -> None:
    from regress_action.models import save_checkpoint

    name = "tiny_resnet" if tiny else "resnet50"
    classes, size, n = (10, 32, 64) if tiny else (1000, 224, 2048)
    search = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": search}

    def run(command: list[str]) -> bool:
        done = subprocess.run(command, cwd=HERE, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            emit("torchrun_scaling", precision=precision, failed=done.returncode, output=tail)
        return done.returncode == 0

    db = f"sqlite:///{workdir / 'regress.db'}"
    for seed in (0, 1):  # the factory is this file, imported from its folder (cwd=HERE)
        torch.manual_seed(seed)
        path = workdir / f"cnn{seed}.safetensors"
        save_checkpoint(tiny_resnet(classes) if tiny else resnet50(classes), path, "safetensors")
        add = [sys.executable, "-m", "regress_action", "runs", "add", str(path), "--db", db]
        add += ["--task", "classification", "--num-classes", str(classes)]
        add += [
            "--factory",
            f"bench_gpu:{name}",
            "--factory-kwargs",
            f'{{"num_classes": {classes}}}',
        ]
        if not run(add):
            return
    rng = np.random.default_rng(0)
    data = workdir / "eval.npz"
    np.savez(
        data,
        images=rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
        labels=np.arange(n, dtype=np.int64) % classes,
        class_names=np.array([f"class{i}" for i in range(classes)]),
    )
    batch = 16 if tiny else 128
    wall: dict[int, float] = {}
    passes: dict[int, float] = {}
    sharded: dict[int, int] = {}
    for world in sorted({1, nproc}):
        report = workdir / f"report-{world}.json"
        command = [*_torchrun(), "--standalone", "--nproc-per-node", str(world), "-m"]
        command += ["regress_action", "compare", "--baseline-run-id", "1", "--candidate-run-id"]
        command += ["2", "--dataset", str(data), "--db", db, "--no-record", "--significance"]
        command += ["off", "--device", "auto" if device.type == "cuda" else "cpu"]
        command += ["--batch-size", str(batch), "--precision", precision, "--json-out", str(report)]
        started = time.perf_counter()
        if not run(command):
            return
        wall[world] = time.perf_counter() - started
        written = json.loads(report.read_text())
        passes[world] = float(written["duration_s"])
        sharded[world] = int(written.get("world_size", 1))  # what the report says ran
    top = max(wall)
    emit(
        "torchrun_scaling",
        model=name,
        precision=precision,
        examples=n,
        batch_size=batch,
        nproc=sorted(wall),
        wall_s={str(k): round(v, 3) for k, v in wall.items()},
        rank0_pass_s={str(k): round(v, 3) for k, v in passes.items()},
        report_world_size={str(k): v for k, v in sharded.items()},
        wall_speedup=round(wall[1] / wall[top], 3),
        pass_speedup=round(passes[1] / passes[top], 3),
        pass_efficiency=round(passes[1] / passes[top] / top, 3),
        note="one process only: nothing to scale" if top == 1 else "",
    )


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with --tiny")
    parser.add_argument("--tiny", action="store_true", help="small models and data (a check)")
    parser.add_argument("--examples", type=int, help="eval examples per workload")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=1, help="processes of the torchrun figure")
    parser.add_argument("--no-torchrun", action="store_true", help="skip the torchrun figure")
    parser.add_argument("--no-engine", action="store_true", help="the torchrun figure alone")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "no CUDA device"
        extra = {}
        if torch.version.cuda is None:
            extra["reason"] = f"torch {torch.__version__} is a CPU build; install a CUDA build"
        print(json.dumps({"skipped": why, **extra}), flush=True)
        return 0
    logging.getLogger("regress_action").setLevel(logging.ERROR)
    emit(
        "environment",
        torch=torch.__version__,
        cuda=torch.version.cuda,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        gpus=torch.cuda.device_count(),
        matmul_tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_tf32=torch.backends.cudnn.allow_tf32,
        threads=torch.get_num_threads(),
    )
    for workload in [] if args.no_engine else workloads(args.tiny, args.examples):
        best = overhead(workload, device, args.repeats)
        emit(
            "bf16_speedup",
            model=workload.name,
            engine_fp32_s=round(best["engine_fp32"], 4),
            engine_bf16_s=round(best["engine_bf16"], 4),
            speedup=round(best["engine_fp32"] / best["engine_bf16"], 3),
            bare_speedup=round(best["bare_fp32"] / best["bare_bf16"], 3),
        )
    skip = "--no-torchrun" if args.no_torchrun else torchrun_support()
    if skip is not None:
        emit("torchrun_scaling", skipped=skip)
        return 0
    for precision in PRECISIONS:
        scaling(args.tiny, args.nproc, device, precision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
