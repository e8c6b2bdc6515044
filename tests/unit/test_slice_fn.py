"""`slice_fn`: the eval set's `slice` column computed by the user's function over the examples
(`app.slice_column`), its spelling on every surface (DataOptions, the CLI, the Action, the
config file), its errors, and the baseline cache key it leaves alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from regress_action.app import slice_column
from regress_action.config_file import ConfigFile, apply_to_namespace, read_config
from regress_action.data import EvalSet, load_eval_set
from regress_action.errors import ConfigError, UserError
from regress_action.evaluation import records_key
from regress_action.report import DatasetInfo
from regress_action.spec import DataOptions, EvalConfig, TaskSpec

TASK = TaskSpec(modality="vision", task="classification", num_classes=3)

MODULE = """
def by_label(index, input, target):
    return ["cat", "dog", "bird"][int(target)]


def by_index(index, input, target):
    return index % 2


def nothing(index, input, target):
    return None


def empty(index, input, target):
    return " "


def broken(index, input, target):
    if index == 4:
        raise ValueError("pixel out of range\\nsecond line")
    return "a"
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "unit_slicing.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def eval_set() -> EvalSet:
    inputs = torch.arange(6 * 4, dtype=torch.float32).reshape(6, 4)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    return load_eval_set(TensorDataset(inputs, targets), task=TASK, name="six")


def test_the_function_names_every_example_s_slice(workdir: Path) -> None:
    data = eval_set()
    columns = slice_column(data, "unit_slicing:by_label")
    assert columns["slice"].tolist() == ["cat", "dog", "bird", "cat", "dog", "bird"]
    assert slice_column(data, "unit_slicing:by_index")["slice"].tolist() == ["0", "1"] * 3
    data.columns = {"bytes": np.ones(6)}
    kept = slice_column(data, "unit_slicing:by_label")
    assert set(kept) == {"bytes", "slice"}


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        ("unit_slicing:nothing", ["--slice-fn", "example 0", "None"]),
        ("unit_slicing:empty", ["--slice-fn", "example 0", "empty"]),
        ("unit_slicing:broken", ["--slice-fn", "example 4", "ValueError", "pixel out of range"]),
        ("unit_slicing:missing", ["--slice-fn", "missing"]),
        ("not_a_module_here:fn", ["--slice-fn", "not_a_module_here"]),
    ],
)
def test_a_bad_function_is_one_line_naming_the_flag(
    workdir: Path, fn: str, words: list[str]
) -> None:
    with pytest.raises(UserError) as caught:
        slice_column(eval_set(), fn)
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_a_slice_key_in_the_data_and_a_function_are_refused(workdir: Path) -> None:
    data = eval_set()
    data.columns = {"slice": np.asarray(["a"] * 6)}
    with pytest.raises(ConfigError, match=r"--slice-fn.*slice key of six"):
        slice_column(data, "unit_slicing:by_label")


def test_the_spelling_is_checked_on_every_surface(workdir: Path) -> None:
    from regress_action.cli_args import build_parser
    from regress_action.config import data_options

    assert DataOptions(slice_fn="pkg.mod:fn").slice_fn == "pkg.mod:fn"
    assert EvalConfig(dataset="x", slice_fn="pkg.mod:fn").data_options().slice_fn == "pkg.mod:fn"
    with pytest.raises(ValueError, match=r"package\.module:callable"):
        DataOptions(slice_fn="pkg.mod.fn")
    args = build_parser().parse_args(
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "x.npz",
         "--slice-fn", "unit_slicing:by_label"]
    )  # fmt: skip
    assert data_options(args, {}).slice_fn == "unit_slicing:by_label"
    assert ConfigFile.model_validate({"slice_fn": "a.b:c"}).slice_fn == "a.b:c"
    with pytest.raises(ValueError, match=r"package\.module:callable"):
        ConfigFile.model_validate({"slice_fn": "a b"})
    (workdir / "conf.yml").write_text("slice_fn: unit_slicing:by_index\n")
    args = build_parser().parse_args(
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "x.npz"]
    )
    apply_to_namespace(args, read_config(workdir / "conf.yml"), ())
    assert data_options(args, {}).slice_fn == "unit_slicing:by_index"


def test_the_action_input(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from regress_action.config import data_options
    from regress_action.settings import ActionInputs, load

    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "vision_tiny")
    monkeypatch.setenv("INPUT_SLICE-FN", "unit_slicing:by_label")
    assert data_options(load(ActionInputs), {}).slice_fn == "unit_slicing:by_label"


def test_the_baseline_cache_key_leaves_the_slice_function_out() -> None:
    dataset = DatasetInfo(name="six", fingerprint="f" * 64, n=6)
    keys = {
        records_key({}, TASK, dataset, options, engine_version="1", device="cpu", precision="fp32")
        for options in (DataOptions(), DataOptions(slice_fn="a:b"), DataOptions(slice_fn="c:d"))
    }
    assert len(keys) == 1
    other = records_key({}, TASK, dataset, DataOptions(tokenizer="model"),
                        engine_version="1", device="cpu", precision="fp32")  # fmt: skip
    assert other not in keys
