"""Eval sets: pinned deterministic built-ins, user files, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

from regress_action import sources
from regress_action.data import load_eval_set
from regress_action.errors import DataError
from regress_action.sources import fingerprint_dataset
from regress_action.spec import IGNORE_INDEX, TaskSpec
from regress_action.tasks import builtin_datasets
from regress_action.textlm import DEFAULT_CONTEXT

BUILTIN_DATASETS = tuple(builtin_datasets())

# Pinned: a change here means every recorded comparison on the built-ins stops matching.
PINNED_FINGERPRINTS = {
    "lm_tiny": "2d6a8e27063083004c84e87c5e49520b6254af3061396c814bd28a0d508ed722",
    "vision_tiny": "8ffdba8761f9311a16165cfe761a47066ba5dabab4418326e0356ab177be7471",
    "regression_tiny": "c04f7a660685728ec4b81313113a9ba37f62ae1a9ba9242a8ff0343d2b2612c9",
}
VISION = TaskSpec(modality="vision", task="classification", num_classes=3)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


class Pairs(Dataset[tuple[torch.Tensor, int]]):
    """A user Dataset returning (tensor, python int) pairs."""

    def __init__(self, inputs: torch.Tensor, labels: list[int]) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], self.labels[index]


# ---------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_builtin_fingerprints_are_pinned(name: str) -> None:
    assert load_eval_set(name).fingerprint == PINNED_FINGERPRINTS[name]


def test_lm_tiny_examples_are_next_token_pairs() -> None:
    eval_set = load_eval_set("lm_tiny")
    assert (eval_set.n, eval_set.name, eval_set.class_names) == (256, "lm_tiny", None)
    assert eval_set.task == TaskSpec(modality="text", task="lm", vocab_size=256)
    inputs, targets = eval_set.dataset[0]
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.shape == targets.shape == (64,)
    assert torch.equal(inputs[1:], targets[:-1])
    text = bytes(inputs.tolist()).decode("ascii")
    assert text.count(" ") >= 8 and "." in text


def test_vision_tiny_examples() -> None:
    eval_set = load_eval_set("vision_tiny")
    assert eval_set.n == 1000
    assert eval_set.task == TaskSpec(modality="vision", task="classification", num_classes=10)
    assert eval_set.class_names is not None and len(eval_set.class_names) == 10
    image, label = eval_set.dataset[0]
    assert (image.dtype, image.shape, label.dtype, label.shape) == (
        torch.float32,
        (3, 16, 16),
        torch.int64,
        (),
    )
    images, labels = eval_set.dataset.tensors  # type: ignore[attr-defined]
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    counts = torch.bincount(labels, minlength=10)
    assert int(counts.min()) >= 70  # every class is well represented


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_builtins_are_deterministic_and_copies(name: str) -> None:
    first, second = load_eval_set(name), load_eval_set(name)
    a, b = first.dataset.tensors, second.dataset.tensors  # type: ignore[attr-defined]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    a[0].zero_()  # a caller modifying its copy cannot change the next load
    assert load_eval_set(name).fingerprint == first.fingerprint


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_train_split_is_disjoint_from_eval(name: str) -> None:
    evaluated = load_eval_set(name).dataset.tensors[0]  # type: ignore[attr-defined]
    train = builtin_datasets()[name].load("train", None).tensors[0]  # type: ignore[attr-defined]
    assert len(train) > len(evaluated)
    seen = {row.numpy().tobytes() for row in evaluated}
    assert not any(row.numpy().tobytes() in seen for row in train)
    assert len(builtin_datasets()[name].load("train", 10)) == 10  # type: ignore[arg-type]


def test_max_examples_takes_the_first_and_changes_the_fingerprint() -> None:
    full, part = load_eval_set("vision_tiny"), load_eval_set("vision_tiny", max_examples=100)
    assert part.n == 100 and part.fingerprint != full.fingerprint
    assert torch.equal(part.dataset[99][0], full.dataset[99][0])
    # The fingerprint is content-only: the same examples from a user Dataset hash the same.
    images, labels = full.dataset.tensors  # type: ignore[attr-defined]
    mine = Pairs(images[:100], labels[:100].tolist())
    assert load_eval_set(mine, task=full.task).fingerprint == part.fingerprint


def test_max_examples_must_be_positive() -> None:
    with pytest.raises(DataError, match="at least 1"):
        load_eval_set("lm_tiny", max_examples=0)


def test_unknown_dataset_suggests_a_builtin() -> None:
    with pytest.raises(DataError) as exc:
        load_eval_set("lm_tiy")
    assert _one_line(exc) == (
        "unknown dataset 'lm_tiy'; did you mean 'lm_tiny'? Built-in datasets: lm_tiny, "
        "regression_tiny, vision_tiny; or pass a path to a .jsonl file, an .npz file or an "
        "image folder"
    )
    with pytest.raises(DataError, match=r"^unknown dataset 'cifar'; Built-in"):
        load_eval_set("cifar")


def test_missing_file_and_unsupported_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_eval_set(tmp_path / "eval.jsonl")
    assert "not found" in _one_line(exc)
    with pytest.raises(DataError, match="not found"):
        load_eval_set("data/eval.npz")
    csv = tmp_path / "eval.csv"
    csv.write_text("a,b\n")
    with pytest.raises(DataError, match="is not a supported eval set"):
        load_eval_set(csv)


def test_task_must_fit_the_data() -> None:
    with pytest.raises(DataError) as exc:
        load_eval_set("vision_tiny", task=TaskSpec(modality="text", task="lm", vocab_size=256))
    assert "vision_tiny is a vision eval set" in _one_line(exc)
    assert "text lm models, which take token ids" in _one_line(exc)
    with pytest.raises(DataError, match="num_classes >= 10"):
        load_eval_set("vision_tiny", task=VISION)
    wider = TaskSpec(modality="vision", task="classification", num_classes=12)
    assert load_eval_set("vision_tiny", task=wider, max_examples=5).task == wider


# ---------------------------------------------------------------- user Datasets


def test_user_dataset_needs_a_task_and_keeps_it() -> None:
    data = Pairs(torch.rand(5, 2), [0, 1, 2, 1, 0])
    with pytest.raises(DataError) as exc:
        load_eval_set(data)
    assert "pass task=TaskSpec" in _one_line(exc)
    eval_set = load_eval_set(data, task=VISION, max_examples=3, name="mine")
    assert (eval_set.name, eval_set.n, eval_set.task) == ("mine", 3, VISION)
    assert eval_set.dataset[2][1] == 2
    assert eval_set.fingerprint == fingerprint_dataset(data, 3)
    assert eval_set.fingerprint != fingerprint_dataset(data, 4)


def test_fingerprint_covers_dtype_and_shape() -> None:
    flat = Pairs(torch.zeros(2, 4), [0, 1])
    square = Pairs(torch.zeros(2, 2, 2), [0, 1])
    doubles = Pairs(torch.zeros(2, 4, dtype=torch.float64), [0, 1])
    prints = {fingerprint_dataset(d, 2) for d in (flat, square, doubles)}
    assert len(prints) == 3


def test_user_dataset_with_bad_items() -> None:
    class Bad(Dataset[Any]):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> Any:
            return {"x": index}

    with pytest.raises(DataError) as exc:
        load_eval_set(Bad(), task=VISION)
    assert "dataset item 0 is a dict, not an (input, target) pair" in _one_line(exc)
    with pytest.raises(DataError, match="has no examples"):
        load_eval_set(Pairs(torch.zeros(0, 2), []), task=VISION)


# ---------------------------------------------------------------- JSONL


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_pads_inputs_and_ignores_padded_targets(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "eval.jsonl",
        [json.dumps({"text": "hello"}), "", json.dumps({"text": "a"}), '{"text": "héllo!"}'],
    )
    eval_set = load_eval_set(path)
    assert (eval_set.name, eval_set.n) == ("eval.jsonl", 2)  # blank and 1-byte lines skipped
    assert eval_set.task == TaskSpec(modality="text", task="lm", vocab_size=256)
    inputs, targets = eval_set.dataset[0]
    pad = DEFAULT_CONTEXT - 4  # every window is context_length long
    assert inputs.tolist() == [*b"hell"] + [0] * pad
    assert targets.tolist() == [*b"ello"] + [IGNORE_INDEX] * pad
    inputs, targets = eval_set.dataset[1]
    size = len("héllo!".encode()) - 1
    assert bytes(inputs[:size].tolist()) + bytes(targets[size - 1 : size].tolist()) == (
        "héllo!".encode()
    )


def test_jsonl_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "hi there"}\n')
    assert bytes(load_eval_set(path).dataset[0][0][:7].tolist()) == b"hi ther"


def test_jsonl_truncates_long_lines(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "long.jsonl", [json.dumps({"text": "ab" * 500})])
    inputs, targets = load_eval_set(path).dataset[0]
    assert inputs.shape == targets.shape == (DEFAULT_CONTEXT,)


def test_jsonl_max_examples(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"line {i}"}) for i in range(5)] + ["not json"]
    eval_set = load_eval_set(_jsonl(tmp_path / "e.jsonl", lines), max_examples=2)
    assert eval_set.n == 2  # reading stops before the bad line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", ":2: not valid JSON"),
        ('{"txt": "hello"}', ':2: expected an object with a string "text" field'),
        ('["hello"]', ':2: expected an object with a string "text" field'),
        ('{"text": 5}', ':2: expected an object with a string "text" field'),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path, line: str, expected: str) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", ['{"text": "fine line"}', line])
    with pytest.raises(DataError) as exc:
        load_eval_set(path)
    assert f"{path}{expected}" in _one_line(exc)


def test_jsonl_not_utf8_and_empty(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl:1: not (UTF-8|valid JSON)"):
        load_eval_set(latin)
    empty = _jsonl(tmp_path / "empty.jsonl", ["", '{"text": "x"}'])
    with pytest.raises(DataError) as exc:
        load_eval_set(empty)
    assert "has no usable text" in _one_line(exc)


# ---------------------------------------------------------------- .npz


def _npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_uint8_nchw_is_scaled(tmp_path: Path) -> None:
    images = np.arange(4 * 3 * 2 * 2, dtype=np.uint8).reshape(4, 3, 2, 2)
    eval_set = load_eval_set(_npz(tmp_path / "e.npz", images=images, labels=np.array([0, 2, 1, 2])))
    assert eval_set.task == TaskSpec(modality="vision", task="classification", num_classes=3)
    image, label = eval_set.dataset[1]
    assert image.dtype == torch.float32 and image.shape == (3, 2, 2)
    torch.testing.assert_close(image, torch.from_numpy(images[1] / np.float32(255)))
    assert label.dtype == torch.int64 and int(label) == 2


def test_npz_layouts(tmp_path: Path) -> None:
    labels = np.array([0, 1])
    gray = load_eval_set(_npz(tmp_path / "g.npz", images=np.zeros((2, 5, 5)), labels=labels))
    assert gray.dataset[0][0].shape == (1, 5, 5)
    last = np.random.default_rng(0).random((2, 6, 5, 3)).astype(np.float32)
    nhwc = load_eval_set(_npz(tmp_path / "c.npz", images=last, labels=labels))
    assert torch.equal(nhwc.dataset[1][0], torch.from_numpy(last[1].transpose(2, 0, 1).copy()))


def test_npz_class_names_set_num_classes(tmp_path: Path) -> None:
    path = _npz(
        tmp_path / "n.npz",
        images=np.zeros((2, 1, 2, 2), dtype=np.uint8),
        labels=np.array([0, 1]),
        class_names=np.array(["cat", "dog", "eel"]),
    )
    eval_set = load_eval_set(path)
    assert eval_set.class_names == ["cat", "dog", "eel"]
    assert eval_set.task.num_classes == 3


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": np.zeros((2, 2, 2)), "y": np.zeros(2)}, "no images / labels array (found: x, y)"),
        ({"images": np.zeros((2, 2, 2))}, "no labels array (found: images)"),
        ({"images": np.zeros((3, 2, 2)), "labels": np.array([0, 1])}, "3 images but 2 labels"),
        ({"images": np.zeros((2, 2, 2)), "labels": np.array([0.0, 1.0])}, "1-D integer array"),
        ({"images": np.zeros((2, 2, 2)), "labels": np.array([0, -1])}, "labels must be >= 0"),
        ({"images": np.zeros((2, 2, 2)), "labels": np.array([0, 0])}, "all labels are 0"),
        (
            {"images": np.zeros((2, 2), np.int32), "labels": np.array([0, 1])},
            "expected (N, C, H, W)",
        ),
        ({"images": np.zeros((2, 2, 2), np.int32), "labels": np.array([0, 1])}, "save uint8"),
        (
            {
                "images": np.zeros((2, 2, 2)),
                "labels": np.array([0, 2]),
                "class_names": np.array(["a", "b"]),
            },
            "label 2 has no entry in class_names",
        ),
    ],
)
def test_npz_bad_input(tmp_path: Path, arrays: dict[str, Any], expected: str) -> None:
    path = _npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as exc:
        load_eval_set(path)
    message = _one_line(exc)
    assert expected in message and str(path) in message


def test_npz_corrupt_and_empty(tmp_path: Path) -> None:
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="cannot read"):
        load_eval_set(broken)
    empty = _npz(tmp_path / "empty.npz", images=np.zeros((0, 2, 2)), labels=np.zeros(0, np.int64))
    with pytest.raises(DataError):
        load_eval_set(empty)


# ---------------------------------------------------------------- image folders


def _png(path: Path, value: int, size: tuple[int, int] = (4, 3), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color: Any = (value, 0, 255 - value) if mode == "RGB" else value
    Image.new(mode, size, color).save(path)


def test_image_folder_classes_and_round_robin_order(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "cat" / f"{i}.png", 10 * i)
    _png(tmp_path / "bird" / "only.png", 200)
    (tmp_path / "bird" / "notes.txt").write_text("ignored")
    eval_set = load_eval_set(tmp_path)
    assert eval_set.class_names == ["bird", "cat"]
    assert eval_set.task.num_classes == 2
    labels = [int(eval_set.dataset[i][1]) for i in range(eval_set.n)]
    assert labels == [0, 1, 1, 1]
    image = eval_set.dataset[0][0]
    assert image.shape == (3, 3, 4) and image.dtype == torch.float32
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([200, 0, 55]) / 255)
    assert load_eval_set(tmp_path, max_examples=2).dataset.labels.tolist() == [0, 1]  # type: ignore[attr-defined]


def test_image_folder_grayscale_and_mixed(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "1.png", 51, mode="L")
    _png(tmp_path / "b" / "1.png", 102, mode="L")
    assert load_eval_set(tmp_path).dataset[0][0].shape == (1, 3, 4)
    _png(tmp_path / "b" / "2.png", 0, mode="RGB")
    mixed = load_eval_set(tmp_path)
    assert mixed.dataset[0][0].shape == (3, 3, 4)
    torch.testing.assert_close(mixed.dataset[0][0], torch.full((3, 3, 4), 0.2))


def test_image_folder_size_mismatch_names_the_file(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "1.png", 0)
    _png(tmp_path / "b" / "big.png", 0, size=(8, 8))
    with pytest.raises(DataError) as exc:
        load_eval_set(tmp_path)
    message = _one_line(exc)
    assert f"image {tmp_path / 'b' / 'big.png'} is 8x8" in message
    assert "must share one size" in message


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ({"a/1.png": "png"}, "has 1 class sub-folder(s)"),
        ({"a/1.png": "png", "b/readme.txt": "text"}, "class folder"),
        ({"a/1.png": "png", "b/broken.png": "text"}, "cannot read image"),
    ],
)
def test_image_folder_bad_layout(tmp_path: Path, layout: dict[str, str], expected: str) -> None:
    for name, kind in layout.items():
        if kind == "png":
            _png(tmp_path / name, 0)
        else:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("not an image")
    with pytest.raises(DataError) as exc:
        load_eval_set(tmp_path)
    assert expected in _one_line(exc)


def test_a_long_jsonl_text_is_evaluated_whole_in_windows(tmp_path: Path) -> None:
    text = "the quick brown fox jumps over the lazy dog. " * 20  # 900 bytes
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": text}) + "\n")
    eval_set = load_eval_set(path)
    _, targets = eval_set.dataset.tensors  # type: ignore[attr-defined]
    assert eval_set.n == 7  # 256 bytes predicted, then 128 per window (stride: half of 256)
    assert int((targets != -100).sum()) == len(text) - 1  # every byte but the first, once
    # The second window predicts bytes 257.. with the 128 bytes before them as context.
    assert bytes(targets[1, 128:133].tolist()) == text.encode()[257:262]
    assert int((targets[1] != -100).sum()) == 128


def test_each_input_kind_has_its_source(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    cases = {
        "vision_tiny": "builtin",
        str(folder): "image_folder",
        str(tmp_path / "a.jsonl"): "jsonl",
        str(tmp_path / "a.NPZ"): "npz",
    }
    for given, name in cases.items():
        found = sources.source_for(given)
        assert found is not None and found.name == name, given
    assert sources.source_for(TensorDataset(torch.zeros(1))).name == "dataset"  # type: ignore[union-attr]
    assert sources.source_for(str(tmp_path / "a.csv")) is None


def test_a_new_source_is_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Csv(sources.Source):
        name = "csv"

        def detect(self, source: object) -> bool:
            return isinstance(source, str | Path) and str(source).endswith(".csv")

        def load(self, source: object, max_examples: int | None, options: object) -> sources.Loaded:
            rows = np.loadtxt(str(source), delimiter=",", ndmin=2)[:max_examples]
            data = TensorDataset(torch.from_numpy(rows[:, :-1]), torch.from_numpy(rows[:, -1]))
            return sources.Loaded(data, TaskSpec(modality="tabular", task="regression"))

    path = tmp_path / "houses.csv"
    path.write_text("1,2,3\n4,5,6\n7,8,9\n")
    monkeypatch.setattr(sources, "SOURCES", (*sources.SOURCES, Csv()))
    eval_set = load_eval_set(str(path), max_examples=2)
    assert (eval_set.name, eval_set.n, eval_set.task.task) == ("houses.csv", 2, "regression")
    assert eval_set.fingerprint == fingerprint_dataset(eval_set.dataset, 2)
