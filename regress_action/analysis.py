"""Per-example analysis helpers shared by the tasks: per-example deltas, the largest increases,
and `FlipExample` rows.

Each task decides what it shows (classification flips and per-class table, an LM's largest loss
increases, a regressor's largest error increases: see `tasks/`); this module holds the
vectorised pieces they share. Imports numpy and the contract modules only (no torch, SQL, GitHub
or templates). n = 100,000 takes milliseconds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .records import PairedRecords
from .report import TOP_EXAMPLES, FlipExample

Rows = dict[str, list[int] | list[float] | list[None]]


def column_delta(records: PairedRecords, column: str) -> NDArray[np.float64] | None:
    """candidate - baseline of a per-example column; None when a side lacks it."""
    if column not in records.baseline or column not in records.candidate:
        return None
    base = np.asarray(records.baseline[column], dtype=np.float64)
    return np.asarray(records.candidate[column], dtype=np.float64) - base


def largest_increases(
    records: PairedRecords,
    baseline: NDArray[np.float64],
    candidate: NDArray[np.float64],
    valid: NDArray[np.bool_],
    top: int | None = TOP_EXAMPLES,
) -> tuple[list[FlipExample], int]:
    """The `top` examples whose per-example loss rose most, largest rise first (ties: example
    order), and how many rose in all."""
    delta = candidate - baseline
    index = np.flatnonzero(valid & (delta > 0))
    index = index[largest_first(delta[index], top)]
    rows: Rows = {
        "example_id": records.example_ids[index].tolist(),
        "baseline_loss": baseline[index].tolist(),
        "candidate_loss": candidate[index].tolist(),
        "loss_delta": delta[index].tolist(),
    }
    return examples(rows, len(index)), int(np.count_nonzero(valid & (delta > 0)))


def largest_first(values: NDArray[np.float64], top: int | None) -> NDArray[np.intp]:
    """Positions of the `top` largest `values`, largest first, ties in position order: a
    partial selection (O(n)) before sorting only what is kept."""
    values = np.where(np.isnan(values), -np.inf, values)  # a NaN change is the smallest
    if top is None or top >= values.size:
        return np.argsort(-values, kind="stable")
    if top <= 0:
        return np.empty(0, dtype=np.intp)
    cut = np.partition(values, values.size - top)[values.size - top]
    keep = np.flatnonzero(values >= cut)  # every tie of the cut, in position order
    return keep[np.argsort(-values[keep], kind="stable")][:top]


def examples(rows: Rows, n: int) -> list[FlipExample]:
    """`FlipExample`s from columns of values (.tolist() converts numpy scalars once)."""
    return [
        FlipExample.model_validate({key: values[i] for key, values in rows.items()})
        for i in range(n)
    ]
