"""Each eval-set source yields its slice key as the data column `slice`: a JSONL line's
`"slice"` (text classification; an LM document's windows inherit it), a table's `slice`
column, an `.npz`'s `slices` array; joined to the paired records as their slices, not as a
records column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from regress_action.app import join_data_columns
from regress_action.data import load_eval_set
from regress_action.errors import DataError
from regress_action.records import PairedRecords
from regress_action.spec import DataOptions


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_text_classification_lines_carry_their_slice(tmp_path: Path) -> None:
    rows = [
        {"text": "good", "label": "pos", "slice": "short"},
        {"text": "a long and bad one", "label": "neg", "slice": "long"},
        {"text": "fine", "label": "pos", "slice": "short"},
    ]
    eval_set = load_eval_set(_jsonl(tmp_path / "eval.jsonl", rows))
    assert eval_set.columns is not None
    assert eval_set.columns["slice"].tolist() == ["short", "long", "short"]
    cut = load_eval_set(_jsonl(tmp_path / "eval.jsonl", rows), max_examples=2)
    assert cut.columns is not None and cut.columns["slice"].tolist() == ["short", "long"]


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"text": "b", "label": 1}, r'eval.jsonl:2: no "slice", but other lines have one'),
        ({"text": "b", "label": 1, "slice": [1]}, r'eval.jsonl:2: "slice" is \[1\]'),
        ({"text": "b", "label": 1, "slice": " "}, "empty slice name"),
    ],
)
def test_bad_slices_in_jsonl_are_one_line_data_errors(
    tmp_path: Path, second: dict[str, object], message: str
) -> None:
    path = _jsonl(tmp_path / "eval.jsonl", [{"text": "a", "label": 0, "slice": "x"}, second])
    with pytest.raises(DataError, match=message):
        load_eval_set(path)


def test_lm_windows_inherit_their_document_s_slice(tmp_path: Path) -> None:
    rows = [
        {"text": "the first document is long enough for several windows", "slice": "news"},
        {"text": ""},
        {"text": "a second, shorter text of its own", "slice": "chat"},
    ]
    rows[1] = {"text": "", "slice": "blank"}
    eval_set = load_eval_set(
        _jsonl(tmp_path / "docs.jsonl", rows), options=DataOptions(context_length=8, stride=4)
    )
    assert eval_set.task.task == "lm" and eval_set.columns is not None
    docs, slices = eval_set.columns["doc"], eval_set.columns["slice"]
    assert len(slices) == eval_set.n and (docs == 0).sum() > 1
    assert set(slices[docs == 0].tolist()) == {"news"}
    assert set(slices[docs == 2].tolist()) == {"chat"}


def test_parquet_slice_column_for_classification_and_lm(tmp_path: Path) -> None:
    path = tmp_path / "reviews.parquet"
    table = {"text": ["good", "bad", "meh", "great"], "label": ["pos", "neg", "neg", "pos"]}
    pq.write_table(pa.table({**table, "slice": ["a", "b", "a", "c"]}), path, row_group_size=3)
    eval_set = load_eval_set(path)
    assert eval_set.columns is not None
    assert eval_set.columns["slice"].tolist() == ["a", "b", "a", "c"]
    docs = tmp_path / "docs.parquet"
    texts = ["one document long enough for windows", "another document here too"]
    pq.write_table(pa.table({"text": texts, "slice": ["x", "y"]}), docs)
    lm = load_eval_set(docs, options=DataOptions(context_length=8, stride=4))
    assert lm.columns is not None
    assert lm.columns["slice"].tolist() == np.where(lm.columns["doc"] == 0, "x", "y").tolist()


def test_npz_slices_array(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    images = np.zeros((4, 1, 2, 2), dtype=np.float32)
    slices = np.array(["day", "night", "day", "night"])
    np.savez(path, images=images, labels=np.array([0, 1, 0, 1]), slices=slices)
    eval_set = load_eval_set(path)
    assert eval_set.columns is not None
    assert eval_set.columns["slice"].tolist() == slices.tolist()
    assert load_eval_set(path, max_examples=3).columns["slice"].tolist() == ["day", "night", "day"]  # type: ignore[index]
    np.savez(path, images=images, labels=np.array([0, 1, 0, 1]), slices=slices[:3])
    with pytest.raises(DataError, match=r"slices has shape \(3,\) but there are 4 examples"):
        load_eval_set(path)


def test_the_slice_column_becomes_the_records_slices_not_a_column(tmp_path: Path) -> None:
    rows = [{"text": t, "label": t[0], "slice": t[-1]} for t in ("ax", "by", "az", "bx")]
    eval_set = load_eval_set(_jsonl(tmp_path / "eval.jsonl", rows))
    ids = np.arange(4)
    records = PairedRecords("classification", ids, {"correct": ids % 2 == 0}, {"correct": ids > 0})
    join_data_columns(records, eval_set)
    assert records.slices is not None and records.slices.tolist() == ["x", "y", "z", "x"]
    assert "slice" not in records.baseline and "slice" not in records.candidate


def test_an_image_folder_s_slices_csv(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "images"
    rows = ["path,slice"]
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (4, 4), (i * 60, 0, 0)).save(root / label / f"{i}.png")
            rows.append(f"{label}/{i}.png,{'night' if i else 'day'}")
    (root / "slices.csv").write_text("\n".join(rows) + "\n")
    eval_set = load_eval_set(root)
    assert eval_set.columns is not None
    by_key = {eval_set.describe(i).key: eval_set.columns["slice"][i] for i in range(eval_set.n)}
    assert by_key == {"cat/0.png": "day", "cat/1.png": "night", "dog/0.png": "day",
                      "dog/1.png": "night"}  # fmt: skip
    (root / "slices.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(DataError, match=r"slices.csv has no row for 'dog/1.png'"):
        load_eval_set(root)
    (root / "slices.csv").write_text("file,name\n")
    with pytest.raises(DataError, match="expected a header row `path,slice`"):
        load_eval_set(root)
