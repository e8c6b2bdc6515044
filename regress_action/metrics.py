"""The metric protocol: what a metric says about itself, and the maths all metrics share.

Imports numpy and the contract modules `errors` and `records` only (no torch, scipy, SQL,
GitHub or templates). The metrics themselves are defined by their task (`tasks/`), and the
statistical machinery that tests them lives in `stats` and `resampling`, which read a metric's
`kind`, `columns` and `resampler` and never switch on its name.

A metric states, once:
- `name`, `higher_is_better` (direction is never guessed from a name), a `description`;
- `kind`, which decides its paired test:
  `binary`  mean of a 0/1 column        → exact McNemar, Newcombe CI;
  `mean`    mean of a per-example column → paired t / sign-flip permutation;
  `ratio`   transform(Σnum / Σden) over whole examples → paired bootstrap in log space;
  `corpus`  a whole-set statistic         → paired bootstrap through its `resampler`;
- `columns`: the per-example record columns it is computed from (`ratio`: numerator, denominator);
- for `corpus`: `whole_set` (its value on one side's columns) and `resampler` (how a bootstrap
  recomputes it: `resampling.WeightedSums` or `resampling.CellCounts`);
- `hypothesis`: metrics naming the same hypothesis are one test for the multiple-testing
  correction (an LM's loss, perplexity and bits per byte are monotone maps of ΣNLL / Σtokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .records import Columns

MetricKind = Literal["binary", "mean", "ratio", "corpus"]
Transform = Literal["identity", "exp", "bits"]
TestName = Literal[
    "mcnemar_exact", "paired_t", "paired_permutation", "paired_bootstrap_log_ratio",
    "paired_bootstrap",
]  # fmt: skip
Array = NDArray[np.float64]

T_TEST_MIN_N = 1000  # mean metrics: paired t-test from here on, sign-flip permutation below
_COLUMNS_BY_KIND = {"binary": 1, "mean": 1, "ratio": 2}


@dataclass(frozen=True)
class Metric:
    """One metric, described completely: direction, kind, columns, value and test path."""

    name: str
    higher_is_better: bool
    kind: MetricKind
    description: str
    columns: tuple[str, ...]
    transform: Transform = "identity"  # ratio: applied to Σnum / Σden
    hypothesis: str | None = None
    unit_interval: bool = False  # every value lies in [0, 1] (accuracies, F1, ECE)
    whole_set: Callable[[Columns, int | None], float] | None = None  # corpus: the value
    resampler: Any = None  # corpus: a resampling.WeightedSums or resampling.CellCounts

    def __post_init__(self) -> None:
        expected = _COLUMNS_BY_KIND.get(self.kind)
        if expected is not None and len(self.columns) != expected:
            raise ValueError(f"metric {self.name}: a {self.kind} metric reads {expected} column(s)")
        if self.kind == "corpus" and (self.whole_set is None or self.resampler is None):
            raise ValueError(f"metric {self.name}: a corpus metric needs whole_set and resampler")

    def value(self, columns: Columns, num_classes: int | None = None) -> float:
        """The metric over all examples of one side, in float64."""
        if self.kind in ("binary", "mean"):
            values = f64(columns[self.columns[0]])
            return float(values.mean()) if values.size else math.nan
        if self.kind == "ratio":
            num = float(np.sum(columns[self.columns[0]], dtype=np.float64))
            den = float(np.sum(columns[self.columns[1]], dtype=np.float64))
            return apply_transform(num / den, self.transform) if den > 0 else math.nan
        assert self.whole_set is not None
        return self.whole_set(columns, num_classes)

    def test_name(self, n: int) -> TestName:
        """The paired test this metric gets on `n` examples."""
        if self.kind == "binary":
            return "mcnemar_exact"
        if self.kind == "mean":
            return "paired_t" if n >= T_TEST_MIN_N else "paired_permutation"
        return "paired_bootstrap_log_ratio" if self.kind == "ratio" else "paired_bootstrap"


def apply_transform(value: float, transform: Transform) -> float:
    """`transform_array` on one ratio (an exp that overflows is inf)."""
    with np.errstate(over="ignore"):
        return float(transform_array(np.float64(value), transform))


def transform_array(ratio: Array | np.float64, transform: Transform) -> Array:
    """The metric's transform of Σnum / Σden: identity, exp (perplexity) or nats → bits."""
    if transform == "exp":
        return np.asarray(np.exp(ratio), dtype=np.float64)
    if transform == "bits":
        return np.asarray(ratio / math.log(2.0), dtype=np.float64)
    return np.asarray(ratio, dtype=np.float64)


def all_finite(values: NDArray[Any]) -> bool:
    return bool(np.isfinite(values).all())


def f64(values: NDArray[Any]) -> Array:
    return np.asarray(values, dtype=np.float64)
