"""Per-example records: the one source every metric, statistic and flip comes from.

`Records` are one model's columns over an eval set, keyed by example id (the example's index in
the frozen eval set); `pair` joins a baseline's and a candidate's records on those ids into
`PairedRecords`. The engine fills records from torch tensors; everything downstream reads plain
numpy arrays. Imports numpy and `errors` only.

The columns are the task adapter's (see `tasks/`): e.g. classification `label`, `prediction`,
`correct`, `loss`, `confidence`, `brier`, `top5_correct`; lm `nll_sum`, `tokens`, `correct_tokens`,
`bytes`; regression `target`, `prediction`, `sq_error`, `abs_error`. Each column keeps the dtype
its adapter chose (booleans for 0/1 outcomes, int32 class ids, float32 for values computed in
float32): readers convert to float64 / int64 where they compute (`metrics.f64`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import DataError

Columns = Mapping[str, NDArray[np.float64] | NDArray[np.int64]]


@dataclass
class Records:
    """One model's per-example columns, aligned with `example_ids`."""

    example_ids: NDArray[np.int64]
    columns: dict[str, NDArray[np.float64] | NDArray[np.int64]]

    @property
    def n(self) -> int:
        return int(self.example_ids.shape[0])


@dataclass
class PairedRecords:
    """Per-example columns for the baseline and the candidate over the same examples."""

    task: str
    example_ids: NDArray[np.int64]
    baseline: dict[str, NDArray[np.float64] | NDArray[np.int64]] = field(default_factory=dict)
    candidate: dict[str, NDArray[np.float64] | NDArray[np.int64]] = field(default_factory=dict)
    num_classes: int | None = None
    # A cluster id per example (e.g. the document a text window came from), aligned with
    # `example_ids`; None: every example is its own cluster. Examples of one cluster are not
    # independent, so the statistics resample whole clusters.
    groups: NDArray[np.int64] | None = None
    # A slice name per example (the data's `slice` key), aligned with `example_ids`; None: the
    # eval set has no slices. Each slice is judged on its own (see `regress_action.slices`).
    slices: NDArray[np.str_] | None = None

    @property
    def n(self) -> int:
        return int(self.example_ids.shape[0])

    def subset(self, mask: NDArray[np.bool_]) -> PairedRecords:
        """The records of the examples where `mask` is true: every column of both sides, the
        clusters and the slices, masked the same way (no model is run again)."""
        return PairedRecords(
            self.task,
            self.example_ids[mask],
            {name: values[mask] for name, values in self.baseline.items()},
            {name: values[mask] for name, values in self.candidate.items()},
            self.num_classes,
            None if self.groups is None else self.groups[mask],
            None if self.slices is None else self.slices[mask],
        )

    def side(self, which: str) -> dict[str, NDArray[np.float64] | NDArray[np.int64]]:
        return self.baseline if which == "baseline" else self.candidate


def pair(
    baseline: Records,
    candidate: Records,
    *,
    task: str,
    shared: tuple[str, ...] = (),
    num_classes: int | None = None,
) -> PairedRecords:
    """Join two models' records on example id (both sorted by id).

    Both must cover the same examples. `shared` columns (the targets) are the same data on both
    sides: the baseline's array is kept once, for both (the candidate may omit them); a
    difference means the two passes did not read the same eval set, which is refused.
    """
    base_ids, base_cols = _by_id(baseline)
    cand_ids, cand_cols = _by_id(candidate)
    if not np.array_equal(base_ids, cand_ids):
        raise DataError(
            f"the baseline's records cover {base_ids.size} examples and the candidate's "
            f"{cand_ids.size}, not the same ones; evaluate both on the same eval set"
        )
    for name in shared:
        if name not in base_cols:
            continue
        if name in cand_cols and not np.array_equal(base_cols[name], cand_cols[name]):
            raise DataError(
                f"the baseline and the candidate were evaluated on different {name}s; "
                "evaluate both on the same eval set"
            )
        cand_cols[name] = base_cols[name]
    return PairedRecords(task, base_ids, base_cols, cand_cols, num_classes)


def _by_id(
    records: Records,
) -> tuple[NDArray[np.int64], dict[str, NDArray[np.float64] | NDArray[np.int64]]]:
    ids = records.example_ids
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return ids, dict(records.columns)  # already in id order (the engine's own output)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if bool(np.any(ids[1:] == ids[:-1])):
        raise DataError("example ids must be unique; each example is evaluated once")
    return ids, {name: values[order] for name, values in records.columns.items()}


_IDS = "example_ids"
_COLUMN = "column:"


def records_to_npz(records: Records) -> bytes:
    """The records as the bytes of a compressed `.npz` (each column in its own dtype), as the
    ExperimentDB stores an evaluation's records."""
    import io

    buffer = io.BytesIO()
    arrays: dict[str, NDArray[Any]] = {_IDS: records.example_ids}
    arrays.update({_COLUMN + name: column for name, column in records.columns.items()})
    np.savez_compressed(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def records_from_npz(data: bytes) -> Records:
    """The records stored by `records_to_npz` (no pickled objects are read)."""
    import io

    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        columns = {
            name[len(_COLUMN) :]: archive[name]
            for name in archive.files
            if name.startswith(_COLUMN)
        }
        return Records(archive[_IDS], columns)
