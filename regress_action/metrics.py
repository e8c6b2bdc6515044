"""The metric protocol: what a metric says about itself, and the maths all metrics share.

Imports numpy and the contract modules `errors` and `records` only (no torch, scipy, SQL,
GitHub or templates). The metrics themselves are defined by their task (`tasks/`), and the
statistical machinery that tests them lives in `stats` and `resampling`, which read a metric's
`kind`, `columns` and `resampler` and never switch on its name.

A metric states, once:
- `name`, `higher_is_better` (direction is never guessed from a name), a `description`;
- `kind`, which decides its paired test:
  `binary`  mean of a 0/1 column        → exact McNemar and its dual exact CI;
  `mean`    mean of a per-example column → studentised bootstrap (n < 1000) / paired t-test;
  `ratio`   transform(Σnum / Σden) over whole examples → paired bootstrap in log space;
  `corpus`  a whole-set statistic         → paired bootstrap through its `resampler`;
- `columns`: the per-example record columns it is computed from (`ratio`: numerator, denominator);
- for `corpus`: `whole_set` (its value on one side's columns) and optionally `resampler` (how a
  bootstrap recomputes it fast: `resampling.WeightedSums` or `resampling.CellCounts`; without
  one, the generic `resampling.index_deltas` recomputes `whole_set` on every resample);
- `default`: reported when no metric list is given (an opt-in metric is reported when named);
- `hypothesis`: metrics naming the same hypothesis are one test for the multiple-testing
  correction (an LM's loss, perplexity and bits per byte are monotone maps of ΣNLL / Σtokens);
- `tested`: False for a metric with no valid paired test (plug-in ECE, whose bias depends on
  the confidence spread): reported with its delta but no p-value or CI, and never judged
  significant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .records import Columns

MetricKind = Literal["binary", "mean", "ratio", "corpus"]
Transform = Literal["identity", "exp", "bits"]
TestName = Literal[
    "mcnemar_exact", "paired_t", "paired_bootstrap_t", "paired_bootstrap_log_ratio",
    "paired_bootstrap",
]  # fmt: skip
STUDENTIZED_MAX_N = 1000  # mean metrics: the studentised bootstrap below, the t-test from here
Array = NDArray[np.float64]

METRIC_KINDS: tuple[MetricKind, ...] = ("binary", "mean", "ratio", "corpus")
TRANSFORMS: tuple[Transform, ...] = ("identity", "exp", "bits")
_COLUMNS_BY_KIND = {"binary": 1, "mean": 1, "ratio": 2}
# A metric name is safe in a comma-separated --metrics / --gate list, a `name=value` tolerance,
# a DB row and a Markdown table.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


class MetricDefinitionError(ValueError):
    """A `Metric` that does not describe itself completely (raised when it is built)."""


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
    # corpus: a resampling.WeightedSums or resampling.CellCounts; None: the generic bootstrap
    resampler: Any = None
    default: bool = True  # reported when no metric list is given
    tested: bool = True  # has a valid paired test (see the module docstring)

    def __post_init__(self) -> None:
        if isinstance(self.columns, list):  # a list reads as naturally; keep the tuple contract
            object.__setattr__(self, "columns", tuple(self.columns))
        check_definition(self)

    def value(self, columns: Columns, num_classes: int | None = None) -> float:
        """The metric over all examples of one side, in float64 (a corpus metric's `whole_set`
        sees only its own `columns`)."""
        if self.kind in ("binary", "mean"):
            values = f64(columns[self.columns[0]])
            return float(values.mean()) if values.size else math.nan
        if self.kind == "ratio":
            num = float(np.sum(columns[self.columns[0]], dtype=np.float64))
            den = float(np.sum(columns[self.columns[1]], dtype=np.float64))
            return apply_transform(num / den, self.transform) if den > 0 else math.nan
        assert self.whole_set is not None
        return self.whole_set({c: columns[c] for c in self.columns}, num_classes)

    def test_name(self, n: int) -> TestName:
        """The paired test this metric gets on `n` examples."""
        if self.kind == "binary":
            return "mcnemar_exact"
        if self.kind == "mean":
            return "paired_bootstrap_t" if n < STUDENTIZED_MAX_N else "paired_t"
        return "paired_bootstrap_log_ratio" if self.kind == "ratio" else "paired_bootstrap"


def check_definition(metric: Metric) -> None:
    """Raise MetricDefinitionError unless the metric states a usable name, a direction, a known
    kind and transform, its columns, and (corpus) a `whole_set` function."""
    name = metric.name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MetricDefinitionError(
            f"metric name {name!r}: use 1-64 letters, digits, _ . - (starting with a letter or _)"
        )
    if not isinstance(metric.higher_is_better, bool):
        raise MetricDefinitionError(
            f"metric {name}: higher_is_better is {metric.higher_is_better!r}; say its direction "
            "with True (higher is better) or False (lower is better)"
        )
    if metric.kind not in METRIC_KINDS:
        raise MetricDefinitionError(
            f"metric {name}: unknown kind {metric.kind!r}; use one of {', '.join(METRIC_KINDS)}"
        )
    columns = metric.columns
    if (
        not isinstance(columns, tuple)
        or not columns
        or not all(isinstance(c, str) and c for c in columns)
    ):
        raise MetricDefinitionError(
            f"metric {name}: columns is {columns!r}; give a tuple of record column names"
        )
    expected = _COLUMNS_BY_KIND.get(metric.kind)
    if expected is not None and len(columns) != expected:
        raise MetricDefinitionError(
            f"metric {name}: a {metric.kind} metric reads {expected} column(s)"
        )
    if metric.transform not in TRANSFORMS:
        raise MetricDefinitionError(
            f"metric {name}: unknown transform {metric.transform!r}; use one of "
            f"{', '.join(TRANSFORMS)}"
        )
    if metric.kind == "corpus" and not callable(metric.whole_set):
        raise MetricDefinitionError(
            f"metric {name}: a corpus metric needs whole_set, a function (columns, num_classes) "
            "-> float giving its value on one side's columns"
        )


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
