"""Pairing two models' records is a join on example id; the one-model pass feeds it from any
dataset, with batches of any structure the adapter understands."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from regress_action.engine import PassOptions, evaluate
from regress_action.errors import DataError
from regress_action.records import Records, pair


def _records(ids: list[int], values: list[float], label: list[int]) -> Records:
    return Records(
        np.array(ids, dtype=np.int64),
        {"loss": np.array(values), "label": np.array(label, dtype=np.int64)},
    )


def test_pairing_joins_on_example_id_whatever_the_order() -> None:
    baseline = _records([0, 1, 2], [0.1, 0.2, 0.3], [5, 6, 7])
    candidate = _records([2, 0, 1], [3.0, 1.0, 2.0], [7, 5, 6])  # e.g. gathered from shards
    paired = pair(baseline, candidate, task="classification", shared=("label",))
    assert paired.example_ids.tolist() == [0, 1, 2]
    assert paired.candidate["loss"].tolist() == [1.0, 2.0, 3.0]
    assert paired.candidate["label"] is paired.baseline["label"]  # one array, shared


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        (_records([0, 1, 3], [1, 2, 3], [5, 6, 7]), "not the same ones"),
        (_records([0, 1], [1, 2], [5, 6]), "not the same ones"),
        (_records([0, 2, 2], [1, 2, 3], [5, 7, 7]), "ids must be unique"),
        (_records([0, 1, 2], [1, 2, 3], [5, 6, 0]), "different labels"),
    ],
)
def test_records_of_different_examples_are_refused(candidate: Records, message: str) -> None:
    baseline = _records([0, 1, 2], [0.1, 0.2, 0.3], [5, 6, 7])
    with pytest.raises(DataError, match=message):
        pair(baseline, candidate, task="classification", shared=("label",))


class Mapping(Dataset[dict[str, torch.Tensor]]):
    """A user dataset whose items are mappings: the DataLoader path, dict batches."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": torch.full((2,), float(index)), "y": torch.tensor(index % 2)}


class MappingAdapter:
    task = "classification"
    shared = ("label",)

    def forward(self, model: nn.Module, batch: Any) -> Any:
        return model(batch["x"])

    def records(self, output: Any, batch: Any, side: str) -> dict[str, torch.Tensor]:
        return {"label": batch["y"], "score": output[:, 0], "flag": output[:, 0] > 2}


def test_the_one_model_pass_reads_any_dataset_and_keeps_dtypes() -> None:
    model = nn.Identity()
    result = evaluate(model, Mapping(), MappingAdapter(), PassOptions(batch_size=2, device="cpu"))
    records = result.records
    assert records.example_ids.tolist() == [0, 1, 2, 3, 4]
    assert records.columns["label"].dtype == np.int64
    assert records.columns["label"].tolist() == [0, 1, 0, 1, 0]
    assert records.columns["score"].dtype == np.float32  # the adapter's dtype, kept
    assert records.columns["flag"].tolist() == [False, False, False, True, True]
    assert result.device == "cpu" and result.duration_s >= 0
