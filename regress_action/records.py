"""Paired per-example records: the one source every metric, statistic and flip comes from.

The engine fills them (from torch tensors); everything downstream reads plain numpy arrays.
Imports numpy only.

Columns by task (each a 1-D array of length n, aligned with `example_ids`):
- classification: `label` (int64, the same array on both sides), `prediction` (int64),
  `correct` (0/1 float64), `loss` (per-example NLL, float64), `confidence` (max softmax
  probability, float64), `top5_correct` (0/1 float64; only when num_classes > 5).
- lm: `nll_sum` (summed token NLL in nats), `tokens`, `correct_tokens`, `bytes` (float64).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Columns = dict[str, NDArray[np.float64] | NDArray[np.int64]]


@dataclass
class PairedRecords:
    """Per-example columns for the baseline and the candidate over the same examples."""

    task: str
    example_ids: NDArray[np.int64]
    baseline: Columns = field(default_factory=dict)
    candidate: Columns = field(default_factory=dict)
    num_classes: int | None = None

    @property
    def n(self) -> int:
        return int(self.example_ids.shape[0])

    def side(self, which: str) -> Columns:
        return self.baseline if which == "baseline" else self.candidate
