"""Parquet / Arrow files and `datasets.save_to_disk` folders as eval sets (`tables`), written
here with pyarrow in the layouts pandas, pyarrow and `datasets` produce."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch import nn

from regress_action import compare_models
from regress_action.data import load_eval_set
from regress_action.errors import DataError
from regress_action.spec import DataOptions, EvalConfig, TaskSpec
from regress_action.tables import Table

TEXTS = ["good fun", "awful", "great", "dull stuff", "lovely", "bad", "superb day", "meh"]
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"]


def _png(pixels: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _save_to_disk(folder: Path, table: pa.Table, features: dict[str, object]) -> Path:
    """The layout of datasets' save_to_disk: stream-format shards, state.json, dataset_info."""
    folder.mkdir()
    half = table.num_rows // 2
    names = ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    for name, part in zip(names, (table.slice(0, half), table.slice(half)), strict=True):
        with (
            pa.OSFile(str(folder / name), "wb") as sink,
            pa.ipc.new_stream(sink, table.schema) as writer,
        ):
            for batch in part.to_batches(max_chunksize=2):
                writer.write_batch(batch)
    state = {"_data_files": [{"filename": name} for name in names], "_split": "test"}
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}))
    return folder


def test_a_parquet_of_text_and_names_is_text_classification(tmp_path: Path) -> None:
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"text": TEXTS, "label": LABELS}), path, row_group_size=3)
    assert Table(path).starts.tolist() == [0, 3, 6, 8]
    eval_set = load_eval_set(path, options=DataOptions(context_length=8))
    assert eval_set.task == TaskSpec(modality="text", task="classification", num_classes=2)
    assert eval_set.class_names == ["neg", "pos"] and eval_set.n == 8
    inputs, labels = eval_set.dataset.tensors  # type: ignore[attr-defined]
    assert inputs.shape == (8, 2, 8) and labels.tolist() == [1, 0] * 4
    assert bytes(inputs[7, 0, :3].tolist()) == b"meh"
    assert eval_set.describe(6).key == "row 6" and eval_set.describe(6).text == "superb day"
    short = load_eval_set(path, max_examples=1)  # one example, both classes still known
    assert short.n == 1 and short.task.num_classes == 2


def test_arrow_files_and_streams_with_ids_and_integer_labels(tmp_path: Path) -> None:
    table = pa.table({"id": [f"r{i}" for i in range(8)], "text": TEXTS, "label": [1, 0] * 4})
    file_path, stream_path = tmp_path / "a.arrow", tmp_path / "b.feather"
    with pa.OSFile(str(file_path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=3)
    with pa.OSFile(str(stream_path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=5)
    a, b = load_eval_set(file_path), load_eval_set(stream_path)
    assert a.fingerprint == b.fingerprint and a.class_names is None and a.task.num_classes == 2
    assert b.describe(4).key == "r4" and b.describe(4).text == "lovely"


def _images(rng: np.random.Generator) -> list[dict[str, object]]:
    rows = []
    for i in range(6):
        if i == 2:
            rows.append(
                {"bytes": _png(rng.integers(0, 256, (4, 5), dtype=np.uint8), "L"), "path": None}
            )
        else:
            pixels = rng.integers(0, 256, (4, 5, 4 if i == 3 else 3), dtype=np.uint8)
            rows.append({"bytes": _png(pixels, "RGBA" if i == 3 else "RGB"), "path": f"{i}.png"})
    return rows


def test_a_save_to_disk_folder_of_images_with_class_label_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = _images(rng)
    table = pa.table({"image": images, "label": [0, 1, 2, 0, 1, 2]})
    features = {
        "image": {"_type": "Image"},
        "label": {"_type": "ClassLabel", "names": ["cat", "dog", "eel", "fox"]},
    }
    folder = _save_to_disk(tmp_path / "ds", table, features)
    eval_set = load_eval_set(folder)
    assert eval_set.task == TaskSpec(modality="vision", task="classification", num_classes=4)
    assert eval_set.class_names == ["cat", "dog", "eel", "fox"]
    first, label = eval_set.dataset[0]
    decoded = np.asarray(Image.open(io.BytesIO(images[0]["bytes"])))  # type: ignore[arg-type]
    assert torch.equal(first, torch.from_numpy(decoded.transpose(2, 0, 1) / np.float32(255)))
    gray, rgba = eval_set.dataset[2][0], eval_set.dataset[3][0]
    assert gray.shape == rgba.shape == (3, 4, 5) and torch.equal(gray[0], gray[2])
    assert int(label) == 0 and eval_set.describe(5).key == "row 5"
    copy = pickle.loads(pickle.dumps(eval_set.dataset))  # what a spawned worker receives
    assert torch.equal(copy[4][0], eval_set.dataset[4][0])
    sized = load_eval_set(
        folder, options=DataOptions(image_size=(8, 8), normalize=((0.5,) * 3, (0.5,) * 3))
    )
    assert sized.dataset[1][0].shape == (3, 8, 8) and sized.dataset[1][0].min() < 0


def test_pixel_lists_and_string_labels_in_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (4, 3, 3, 1), dtype=np.uint8)
    image_type = pa.list_(pa.list_(pa.list_(pa.uint8())))  # datasets' Array3D(dtype="uint8")
    images = pa.array([p.tolist() for p in pixels], type=image_type)
    table = pa.table({"image": images, "label": ["b", "a", "b", "c"]})
    path = tmp_path / "px.parquet"
    pq.write_table(table, path)
    eval_set = load_eval_set(path)
    assert eval_set.class_names == ["a", "b", "c"]
    image, label = eval_set.dataset[1]
    assert int(label) == 0 and image.shape == (1, 3, 3)
    assert torch.equal(image, torch.from_numpy(pixels[1].transpose(2, 0, 1) / np.float32(255)))


def test_text_alone_is_language_modelling(tmp_path: Path) -> None:
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["some words to predict here", "more text"]}), path)
    assert load_eval_set(path).task.task == "lm"


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"x": [1, 2]}, "no text / image column with a label .found: x."),
        ({"text": ["a", "b"], "label": [0.5, 1.0]}, "column label has type double"),
        ({"text": ["a", "b"], "label": [0, None]}, "1 empty label"),
        ({"text": ["a", "b"], "label": [0, 0]}, "only one class"),
    ],
)
def test_bad_tables_are_one_line_data_errors(
    tmp_path: Path, columns: dict[str, list[object]], message: str
) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(DataError, match=message) as caught:
        load_eval_set(path)
    assert "\n" not in str(caught.value)


def test_a_corrupt_file_and_mixed_image_sizes_are_data_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .* as a table"):
        load_eval_set(bad)
    rng = np.random.default_rng(2)
    images = [
        {"bytes": _png(rng.integers(0, 256, shape, dtype=np.uint8), "L"), "path": None}
        for shape in ((4, 4), (5, 4))
    ]
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.table({"image": images, "label": [0, 1]}), path)
    with pytest.raises(DataError, match="row 1 is 4x5 but row 0 is 4x4"):
        load_eval_set(path)
    assert load_eval_set(path, options=DataOptions(image_size=(4, 4))).dataset[1][0].shape == (
        1,
        4,
        4,
    )


class Counts(nn.Module):
    """Class 1 when the text has more than `cut` tokens (plain module: ids and mask)."""

    def __init__(self, cut: int) -> None:
        super().__init__()
        self.cut = cut

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        long = (mask.sum(dim=1) > self.cut).float()
        return torch.stack([1 - long, long], dim=1) * 4


def test_compare_models_names_flipped_rows_of_a_table(tmp_path: Path) -> None:
    path = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"text": TEXTS, "label": LABELS}), path)
    eval_cfg = EvalConfig(dataset=str(path), device="cpu", workers=0)
    task = TaskSpec(modality="text", task="classification", num_classes=2)
    report = tmp_path / "report.md"
    result = compare_models(Counts(4), Counts(6), None, task, eval_cfg, markdown_path=report)
    assert result["dataset"]["n"] == 8
    flipped = result["flips"]["newly_wrong"] + result["flips"]["newly_right"]
    assert flipped and all(row["key"].startswith("row ") for row in flipped)
    assert all(row["text"] == TEXTS[int(row["key"][4:])] for row in flipped)
    assert flipped[0]["text"] in report.read_text()
