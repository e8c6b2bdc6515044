"""The engine: one pass over the eval set, both models per batch, paired per-example records.

Torch layer: imports torch, `adapters`, `records`, `spec`, `errors`; never SQL, GitHub or
templates. Each batch moves to the device once and feeds the baseline and then the candidate
under `torch.inference_mode()`. Record columns stay on the device until the end, where they are
concatenated and converted to float64 numpy once.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .adapters import Adapter
from .errors import ConfigError, DataError, ModelOutputError
from .records import Columns, PairedRecords


@dataclass
class EngineResult:
    records: PairedRecords
    device: str
    duration_s: float


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when available; an unavailable CUDA request is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu or auto")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)"
        )
    return resolved


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def _loader(dataset: Dataset[Any], batch_size: int) -> Iterable[Any]:
    """Batches in dataset order. A TensorDataset (every built-in and file eval set) is sliced
    directly: the same batches a DataLoader would collate, without per-example indexing."""
    if isinstance(dataset, TensorDataset):
        tensors = dataset.tensors
        return [
            tuple(tensor[start : start + batch_size] for tensor in tensors)
            for start in range(0, len(dataset), batch_size)
        ]
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def _batches(loader: Iterable[Any], progress: bool) -> Iterator[Any]:
    if not progress:
        yield from loader
        return
    from tqdm import tqdm  # imported only for interactive runs

    yield from tqdm(loader, desc="evaluating", unit="batch", file=sys.stderr, leave=False)


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_numpy(chunks: dict[str, list[torch.Tensor]]) -> Columns:
    """Concatenate and convert one column at a time, releasing its batch tensors first, so the
    peak stays near one copy of the records rather than three."""
    columns: Columns = {}
    for name in list(chunks):
        tensor = torch.cat(chunks.pop(name)).cpu()
        if name in ("label", "prediction"):
            columns[name] = tensor.to(torch.int64).numpy()
        else:
            columns[name] = tensor.to(torch.float64).numpy()
        del tensor
    return columns


def _append(chunks: dict[str, list[torch.Tensor]], batch: dict[str, torch.Tensor]) -> None:
    for name, tensor in batch.items():
        chunks.setdefault(name, []).append(tensor)


def evaluate_pair(
    baseline: torch.nn.Module,
    candidate: torch.nn.Module,
    dataset: Dataset[Any],
    adapter: Adapter,
    *,
    batch_size: int = 64,
    device: str = "auto",
    bf16: bool = False,
    progress: bool | None = None,
) -> EngineResult:
    """Run both models over `dataset` in one pass and return their paired records."""
    target_device = resolve_device(device)
    started = time.perf_counter()
    with _evaluating(baseline, target_device), _evaluating(candidate, target_device):
        records = _one_pass(
            baseline, candidate, dataset, adapter, _Pass(target_device, batch_size, bf16, progress)
        )
    return EngineResult(records, str(target_device), time.perf_counter() - started)


@dataclass(frozen=True)
class _Pass:
    device: torch.device
    batch_size: int
    bf16: bool
    progress: bool | None


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode on `device` for the pass; the caller's mode and device come back afterwards
    (a training script comparing mid-training must not lose dropout / batch-norm updates)."""
    training = model.training
    first = next(model.parameters(), None)
    home = first.device if first is not None else None
    model.to(device).eval()
    try:
        yield
    finally:
        model.train(training)
        if home is not None and home != device:
            model.to(home)


def _one_pass(
    baseline: torch.nn.Module,
    candidate: torch.nn.Module,
    dataset: Dataset[Any],
    adapter: Adapter,
    run: _Pass,
) -> PairedRecords:
    target_device, bf16 = run.device, run.bf16
    loader = _loader(dataset, run.batch_size)
    chunks: dict[str, dict[str, list[torch.Tensor]]] = {"baseline": {}, "candidate": {}}
    non_blocking = target_device.type == "cuda"
    n = 0
    with torch.inference_mode(), _autocast(target_device, bf16):
        for inputs, target in _batches(loader, _show_progress(run.progress)):
            inputs = inputs.to(target_device, non_blocking=non_blocking)
            target = target.to(target_device, non_blocking=non_blocking).long()
            for side, model in (("baseline", baseline), ("candidate", candidate)):
                output = _forward(model, inputs, side)
                _append(chunks[side], adapter.records(output, target, side))
            n += int(target.shape[0])
    if n == 0:
        raise DataError("the eval set has no examples; pass a dataset with at least one example")
    # Labels are the same targets on both sides: keep one array, shared.
    chunks["candidate"].pop("label", None)
    baseline_columns = _to_numpy(chunks["baseline"])
    candidate_columns = _to_numpy(chunks["candidate"])
    if "label" in baseline_columns:
        candidate_columns["label"] = baseline_columns["label"]
    return PairedRecords(
        task=adapter.task,
        example_ids=np.arange(n, dtype=np.int64),
        baseline=baseline_columns,
        candidate=candidate_columns,
        num_classes=adapter.num_classes,
    )


def _forward(model: torch.nn.Module, inputs: torch.Tensor, side: str) -> Any:
    try:
        return model(inputs)
    except torch.OutOfMemoryError:
        raise ConfigError(
            f"out of memory running the {side} model on a batch of {inputs.shape[0]} examples; "
            "lower --batch-size"
        ) from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        # A shape or dtype mismatch between the data and the model is a user error, not a bug.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelOutputError(
            f"the {side} model failed on an input batch of shape {tuple(inputs.shape)}: {first}; "
            "check that the model fits the eval set"
        ) from None
