"""Eval sets built by the user's own code: `DataOptions.dataset_factory` ("module:callable"
imported from the working directory, called with `dataset_kwargs`), and what a user Dataset
may say about itself (`example_id`, `fingerprint`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from regress_action import compare_models
from regress_action.data import dataset_from_factory, load_eval_set
from regress_action.errors import DataError
from regress_action.spec import DataOptions, EvalConfig, TaskSpec

TASK = TaskSpec(modality="vision", task="classification", num_classes=3)

MODULE = """
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

READS = []


def build(n=4, offset=0):
    inputs = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2) + offset
    return TensorDataset(inputs, torch.arange(n) % 3)


class Named(Dataset):
    fingerprint = "release-2024-06"

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        READS.append(i)
        return torch.full((2,), float(i)), torch.tensor(i % 3)

    def example_id(self, i):
        return f"clip-{i:03d}"


def named(n=5):
    return Named(n)


def broken(**kwargs):
    raise ValueError("no such split: 'validation'\\nmore detail")


def a_list():
    return [(torch.zeros(2), 0)]


class Stream(IterableDataset):
    def __iter__(self):
        return iter([])


def stream():
    return Stream()


NOT_CALLABLE = 3
"""


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    name = f"userdata_{tmp_path.name[-8:].replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    yield tmp_path / name
    sys.modules.pop(name, None)


def _options(repo: Path, factory: str, **kwargs: object) -> DataOptions:
    return DataOptions(dataset_factory=f"{repo.name}:{factory}", dataset_kwargs=kwargs)


def test_a_factory_builds_the_eval_set_with_its_kwargs(repo: Path) -> None:
    options = _options(repo, "build", n=6, offset=1)
    eval_set = load_eval_set(None, task=TASK, options=options)
    assert eval_set.n == 6 and eval_set.name == f"{repo.name}:build"
    direct = sys.modules[repo.name].build(n=6, offset=1)
    assert eval_set.fingerprint == load_eval_set(direct, task=TASK).fingerprint
    assert eval_set.describe(2).key == "#2"
    assert load_eval_set(None, task=TASK, options=options, max_examples=2).n == 2


def test_own_fingerprint_and_example_ids_are_used(repo: Path) -> None:
    eval_set = load_eval_set(None, task=TASK, options=_options(repo, "named", n=5))
    reads = sys.modules[repo.name].READS
    assert reads == []  # its own fingerprint: no reading pass
    assert eval_set.describe(3).key == "clip-003"
    again = load_eval_set(None, task=TASK, options=_options(repo, "named", n=5))
    shorter = load_eval_set(None, task=TASK, options=_options(repo, "named", n=5), max_examples=4)
    assert again.fingerprint == eval_set.fingerprint != shorter.fingerprint
    assert shorter.describe(1).key == "clip-001"


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("no_such_module_xyz:build", "cannot import 'no_such_module_xyz'"),
        ("{repo}:missing", "has no callable 'missing'"),
        ("{repo}:NOT_CALLABLE", "has no callable 'NOT_CALLABLE'"),
        ("{repo}:broken", "raised ValueError: no such split: 'validation'; fix"),
        ("{repo}:a_list", "returned a list, not a map-style torch Dataset"),
        ("{repo}:stream", "returned a Stream, not a map-style"),
    ],
)
def test_factory_failures_are_one_line_data_errors(repo: Path, factory: str, message: str) -> None:
    options = DataOptions(dataset_factory=factory.format(repo=repo.name))
    with pytest.raises(DataError, match=message) as caught:
        load_eval_set(None, task=TASK, options=options)
    assert "\n" not in str(caught.value)


def test_no_source_and_no_factory_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no eval set"):
        load_eval_set(None, task=TASK)
    with pytest.raises(DataError, match=r"is not of the form 'package\.module:callable'"):
        dataset_from_factory("just_a_module")


class Half(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x[:, 0].long() % 3, 3).float()


def test_compare_models_reads_a_factory_and_names_its_examples(repo: Path) -> None:
    eval_cfg = EvalConfig(dataset_factory=f"{repo.name}:named", dataset_kwargs={"n": 9})
    eval_cfg = eval_cfg.model_copy(update={"device": "cpu", "workers": 0})
    result = compare_models(Half(), Half(), None, TASK, eval_cfg)
    assert result["dataset"]["n"] == 9 and result["dataset"]["name"] == f"{repo.name}:named"
