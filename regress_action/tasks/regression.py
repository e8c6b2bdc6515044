"""The regression task: one scalar prediction per example, (B,) or (B, 1), against float targets.

Owns its metrics (`mse` ↓ and `mae` ↓, means of the per-example squared / absolute errors,
tested with the paired t / permutation test on those errors; `r2` ↑ = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²,
a whole-set statistic resampled through weighted sums), its adapter, its analysis (the largest
squared-error increases), its `.npz` layout (`inputs` (N, ...), `targets` (N,)) and the built-in
`regression_tiny`. Torch only inside the adapter.

Record columns: `target` (shared by both sides), `prediction`, `sq_error`, `abs_error` (float64).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..analysis import largest_increases
from ..errors import DataError, ModelOutputError
from ..metrics import Array, Metric, f64
from ..records import Columns, PairedRecords
from ..report import TOP_EXAMPLES, Flips
from ..resampling import Block, WeightedSums
from .base import Analysis, BuiltinDataset, NpzArrays, Task, forward_inputs

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from ..spec import TaskSpec


def r2(target: Array, sq_error: Array) -> float:
    """Coefficient of determination; NaN when the targets do not vary."""
    target, sq_error = f64(target), f64(sq_error)
    total = float(np.sum((target - target.mean()) ** 2)) if target.size else 0.0
    return 1.0 - float(sq_error.sum()) / total if total > 0 else math.nan


def _r2_value(columns: Columns, num_classes: int | None) -> float:
    return r2(f64(columns["target"]), f64(columns["sq_error"]))


def _r2_block(records: PairedRecords) -> Block:
    # With weights w: SST = Σw·y² − (Σw·y)² / Σw, and R²_c − R²_b = (SSE_b − SSE_c) / SST.
    target = f64(records.baseline["target"])
    columns = np.column_stack(
        [
            np.ones(records.n),
            target,
            target * target,
            f64(records.baseline["sq_error"]),
            f64(records.candidate["sq_error"]),
        ]
    )

    def delta(sums: Array) -> Array:
        total = sums[:, 2] - sums[:, 1] ** 2 / sums[:, 0]
        r2_delta: Array = (sums[:, 3] - sums[:, 4]) / total
        return r2_delta

    return columns, delta


METRICS: dict[str, Metric] = {
    "mse": Metric("mse", False, "mean", "mean squared error", ("sq_error",)),
    "mae": Metric("mae", False, "mean", "mean absolute error", ("abs_error",)),
    "r2": Metric(
        "r2",
        True,
        "corpus",
        "coefficient of determination",
        ("target", "sq_error"),
        whole_set=_r2_value,
        resampler=WeightedSums(_r2_block),
    ),
}


class RegressionAdapter:
    """Predictions (B,) or (B, 1) and float targets (B,) → squared and absolute errors."""

    task: str = "regression"
    shared: tuple[str, ...] = ("target",)
    forward = staticmethod(forward_inputs)

    def records(self, output: Any, batch: Any, side: str) -> dict[str, torch.Tensor]:
        import torch

        target = batch[1].to(torch.float64)
        # A Hugging Face model (num_labels=1, problem_type "regression") returns its values as
        # `.logits`, shape (batch, 1).
        logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
        prediction = logits if isinstance(logits, torch.Tensor) else None
        if prediction is not None and prediction.ndim == 2 and prediction.shape[1] == 1:
            prediction = prediction[:, 0]
        if prediction is None or prediction.shape != target.shape:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)
            raise ModelOutputError(
                f"the {side} model returned {shape} for {tuple(target.shape)} targets; a "
                "regression model returns one value per example, shape (batch,) or (batch, 1)"
            )
        error = prediction.to(torch.float64) - target
        return {
            "target": target,
            "prediction": prediction.to(torch.float64),
            "sq_error": error * error,
            "abs_error": error.abs(),
        }


def error_increases(records: PairedRecords, *, top: int | None = TOP_EXAMPLES) -> Flips:
    """The examples whose squared error rose most (shown as their per-example loss)."""
    base, cand = f64(records.baseline["sq_error"]), f64(records.candidate["sq_error"])
    valid = np.isfinite(base) & np.isfinite(cand)
    listed, count = largest_increases(records, base, cand, valid, top)
    return Flips(loss_increases=listed, loss_increases_count=count)


# --- the built-in regression_tiny ------------------------------------------------------------

FEATURES = 8
_SIZES = {"eval": 512, "train": 2048}
_SEEDS = {"eval": 5005, "train": 6006}


@cache
def _arrays(split: str, n: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Features uniform in [-1, 1] on a 1/1000 grid (raw PCG64 output: the same bytes on every
    machine) and y = x0 − 2·x1 + x2·x3 + x4² + noise, with only +, − and × (exact IEEE)."""
    raw = np.random.PCG64(_SEEDS[split]).random_raw(n * (FEATURES + 1))
    grid = (raw % np.uint64(2001)).astype(np.int64).reshape(n, FEATURES + 1) - 1000
    x = grid[:, :FEATURES].astype(np.float64) / 1000.0
    noise = grid[:, FEATURES].astype(np.float64) / 5000.0
    y = x[:, 0] - 2.0 * x[:, 1] + x[:, 2] * x[:, 3] + x[:, 4] * x[:, 4] + noise
    return x.astype(np.float32), y.astype(np.float32)


def regression_tiny(split: str, n: int | None = None) -> Dataset[Any]:
    """A split of `regression_tiny` (`eval`: 512 examples, `train`: 2048) as a TensorDataset."""
    import torch
    from torch.utils.data import TensorDataset

    inputs, targets = _arrays(split, _SIZES[split] if n is None else n)
    return TensorDataset(torch.from_numpy(inputs.copy()), torch.from_numpy(targets.copy()))


# --- the task --------------------------------------------------------------------------------


class RegressionTask(Task):
    name = "regression"
    primary = ("mse",)
    description = "regression: one scalar prediction per example, float targets"
    modalities = ("tabular", "vision", "text")
    report_fragments = ("flips.md.j2",)
    example_loss = "squared error"
    npz_keys = ("inputs", "targets")
    columns = ("target", "prediction", "sq_error", "abs_error")
    builtin = (
        BuiltinDataset(
            "regression_tiny", {"modality": "tabular", "task": "regression"}, regression_tiny
        ),
    )

    def all_metrics(self) -> dict[str, Metric]:
        return dict(METRICS)

    def adapter(self, spec: TaskSpec) -> RegressionAdapter:
        return RegressionAdapter()

    def analyse(self, records: PairedRecords, class_names: list[str] | None) -> Analysis:
        return Analysis(flips=error_increases(records))

    def read_npz(self, arrays: Mapping[str, NDArray[Any]], where: str) -> NpzArrays:
        inputs, targets = arrays["inputs"], arrays["targets"]
        numeric = all(np.issubdtype(a.dtype, np.number) for a in (inputs, targets))
        if not numeric or inputs.ndim < 2 or targets.ndim != 1:
            raise DataError(
                f"{where}: inputs {inputs.shape} {inputs.dtype} and targets {targets.shape} "
                f"{targets.dtype}; expected numeric inputs (N, features...) and targets (N,)"
            )
        if inputs.shape[0] != targets.shape[0] or targets.shape[0] == 0:
            raise DataError(
                f"{where}: {inputs.shape[0]} inputs but {targets.shape[0]} targets; they must "
                "match and be at least one"
            )
        spec = {"modality": "tabular", "task": self.name}
        return NpzArrays(
            np.ascontiguousarray(inputs, dtype=np.float32),
            np.ascontiguousarray(targets, dtype=np.float32),
            spec,
        )


TASK = RegressionTask()
