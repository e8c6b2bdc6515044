"""Tables as eval sets: Parquet files, Arrow IPC files (`.arrow` / `.feather`, file or stream
format) and folders written by Hugging Face `datasets.Dataset.save_to_disk` (`state.json`,
`dataset_info.json` and `data-*.arrow` shards in the Arrow stream format), read with pyarrow
alone (the `arrow` extra; `datasets` is not needed).

The columns decide the task:
- `text` + `label`: text classification (`textcls.text_classification`: tokenized at load);
- `text` alone: language modelling (`textlm.lm_documents`: each row a document);
- `image` + `label`: image classification. `image` is the `datasets` Image struct
  `{"bytes": PNG/JPEG bytes, "path": str}` (a row without bytes reads its path, relative to
  the table's folder) or nested lists of pixels (H, W), (H, W, C) or (C, H, W). Encoded images
  follow the image folder's rules (gray stays 1 channel, any colour image makes all RGB, alpha
  dropped); pixel lists are taken as stored (uint8 scaled by 1/255, floats kept). Both take
  `image_size` and `normalize` (`sources.finish_images`).
`label` holds ints or strings (names → sorted ids); the folder's `dataset_info.json`
`features.label.names` (a ClassLabel) gives the names and their order when present. Other
columns are ignored, except `id`, which names the examples (else `row i`), and `slice`, the
example's slice name (an LM window takes its document's row's).

Reading is lazy: the table is opened by its metadata; a column is read one row group (Parquet)
or record batch (Arrow, memory-mapped) at a time; the labels are read whole (one small array).
Image rows are decoded when their item is read, in the DataLoader workers (`TableImages`,
picklable: each process reopens the table). Costs: text is tokenized once at load (one pass
over the text column); encoded images cost a pass over the image column's headers at load
(no pixel decoded) for their size and channels.
"""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from .errors import DataError
from .sources import (
    _GRAY_MODES,
    ExampleRef,
    Loaded,
    _decode,
    check_image_options,
    finish_images,
    resizes_or_normalizes,
)
from .spec import DataOptions, TaskSpec
from .tasks.base import first_line

TABLE_SUFFIXES = (".parquet", ".arrow", ".feather")


def is_table(source: Any) -> bool:
    """A `.parquet` / `.arrow` / `.feather` path, or a `save_to_disk` folder (`state.json`)."""
    if not isinstance(source, str | Path):
        return False
    path = Path(source)
    if path.is_dir():
        return (path / "state.json").is_file() and any(path.glob("*.arrow"))
    return path.suffix.lower() in TABLE_SUFFIXES


def _pyarrow() -> Any:
    try:
        pyarrow = importlib.import_module("pyarrow")
        for module in ("compute", "ipc", "parquet"):
            importlib.import_module(f"pyarrow.{module}")
    except ImportError:
        raise DataError(
            "Parquet / Arrow eval sets need the 'pyarrow' package; install regress-action[arrow]"
        ) from None
    return pyarrow


class Table:
    """A table opened lazily: its schema, row count and chunks (row groups of a Parquet file,
    record batches of Arrow files, over every shard of a `save_to_disk` folder).

    Picklable: only the path travels; each process reopens the files on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._open()

    def _open(self) -> None:
        pa = _pyarrow()
        self._cached: tuple[int, str, Any] | None = None
        self._parquet: Any = None
        self._batches: list[Any] = []
        self.schema: Any = None
        path = self.path
        try:
            if path.is_dir():
                for shard in _shards(path):
                    self._batches.extend(_arrow_batches(pa, shard))
                self.schema = self._batches[0].schema if self._batches else None
            elif path.suffix.lower() == ".parquet":
                self._parquet = pa.parquet.ParquetFile(str(path))
                self.schema = self._parquet.schema_arrow
            else:
                self._batches = _arrow_batches(pa, path)
                self.schema = self._batches[0].schema if self._batches else None
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"cannot read {path} as a table ({first_line(exc)}); write it with "
                "pyarrow / pandas (Parquet, Arrow IPC) or datasets' save_to_disk"
            ) from None
        if self.schema is None:
            raise DataError(f"{path} holds no record batch; write the table with its rows")
        if self._parquet is not None:
            metadata = self._parquet.metadata
            sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        else:
            sizes = [batch.num_rows for batch in self._batches]
        self.starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        self.num_rows = int(self.starts[-1])
        self.columns: list[str] = list(self.schema.names)

    def chunk(self, name: str, k: int) -> Any:
        """Column `name` of chunk k, a pyarrow Array (the last one read is kept)."""
        if self._cached is not None and self._cached[:2] == (k, name):
            return self._cached[2]
        if self._parquet is not None:
            array = self._parquet.read_row_group(k, columns=[name]).column(0).combine_chunks()
        else:
            array = self._batches[k].column(name)
        self._cached = (k, name, array)
        return array

    def chunks(self, name: str, rows: int | None = None) -> Iterator[Any]:
        """Column `name` chunk by chunk, up to `rows` rows."""
        end = self.num_rows if rows is None else min(rows, self.num_rows)
        for k in range(len(self.starts) - 1):
            start = int(self.starts[k])
            if start >= end:
                return
            array = self.chunk(name, k)
            yield array if start + len(array) <= end else array.slice(0, end - start)

    def value(self, name: str, row: int) -> Any:
        """One cell as a Python value."""
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.chunk(name, k)[row - int(self.starts[k])].as_py()


class _Texts(Sequence[str]):
    """A table's text column as a lazy sequence (read chunk by chunk when iterated)."""

    def __init__(self, table: Table, rows: int) -> None:
        self.table, self.rows = table, rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.rows))]
        return _text(self.table.value("text", int(index)), int(index), self.table.path)

    def __iter__(self) -> Iterator[str]:
        row = 0
        for chunk in self.table.chunks("text", self.rows):
            for value in chunk.to_pylist():
                yield _text(value, row, self.table.path)
                row += 1


def _text(value: Any, row: int, path: Path) -> str:
    if not isinstance(value, str):
        raise DataError(f"{path}: row {row} has a {type(value).__name__} text; give a string")
    return value


def load_table(path: Path, max_examples: int | None, options: DataOptions) -> Loaded:
    """The eval set a table holds (see the module docstring)."""
    path = Path(path)
    table = Table(path)
    where = str(path)
    if table.num_rows == 0:
        raise DataError(f"eval set {where!r} has no rows; give it at least one")
    rows = table.num_rows if max_examples is None else min(max_examples, table.num_rows)
    keys = _keys(table, rows)
    columns = set(table.columns)
    if "text" in columns and "label" in columns:
        from .textcls import text_classification

        ids, names = _labels(table, path)
        loaded = text_classification(_Texts(table, rows), ids, names, keys, options, where)
        return _with_slices(loaded, table, None)
    if "text" in columns:
        try:
            from .textlm import lm_documents
        except ImportError:
            raise DataError(
                f"{where} holds text without labels (language modelling), which this version "
                "cannot read from a table; add a label column or use a .jsonl"
            ) from None
        documents = _Texts(table, table.num_rows)  # max_examples counts windows
        loaded = lm_documents(documents, _key_of(table), options, max_examples, where)
        return _with_slices(loaded, table, (loaded.columns or {}).get("doc"))
    if "image" in columns and "label" in columns:
        return _with_slices(_image_table(table, rows, keys, options), table, None)
    found = ", ".join(table.columns) or "none"
    raise DataError(
        f"{where} has no text / image column with a label (found: {found}); give it columns "
        "text + label (text classification), text (language modelling) or image + label"
    )


def _with_slices(loaded: Loaded, table: Table, rows: NDArray[np.int64] | None) -> Loaded:
    """The loaded set with the table's `slice` column as its data column `slice`, when it has
    one: example i's slice is row i's, or row `rows[i]`'s (an LM window's document)."""
    if "slice" not in table.columns:
        return loaded
    from .slices import slice_labels

    n = len(loaded.dataset)  # type: ignore[arg-type]
    last = n if rows is None else int(rows.max(initial=-1)) + 1
    values: list[Any] = []
    for chunk in table.chunks("slice", last):
        values.extend(chunk.to_pylist())
    labels = slice_labels(values, f"{table.path} column slice")
    loaded.columns = {**(loaded.columns or {}), "slice": labels if rows is None else labels[rows]}
    return loaded


def _key_of(table: Table) -> Any:
    """Row i's key, read on demand: its `id` cell, else `row i`."""
    if "id" in table.columns:
        return lambda i: str(table.value("id", i))
    return lambda i: f"row {i}"


def _keys(table: Table, rows: int) -> list[str]:
    if "id" not in table.columns:
        return [f"row {i}" for i in range(rows)]
    keys: list[str] = []
    for chunk in table.chunks("id", rows):
        keys.extend(str(value) for value in chunk.to_pylist())
    return keys


def _labels(table: Table, path: Path) -> tuple[NDArray[np.int64], list[str] | None]:
    """Every row's label id (the whole column: the class count must not depend on the cut)
    and the class names."""
    pa = _pyarrow()
    from .textcls import class_ids

    column = pa.chunked_array(list(table.chunks("label")), type=table.schema.field("label").type)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    names = _class_label_names(path)
    where = f"{path} column label"
    if column.null_count:
        raise DataError(f"{where} has {column.null_count} empty label(s); label every row")
    if pa.types.is_integer(column.type):
        return class_ids(column.to_numpy().astype(np.int64), where, names)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        distinct = sorted(pa.compute.unique(column).to_pylist())
        order = names or distinct
        index = pa.compute.index_in(column, value_set=pa.array(order, type=column.type))
        if index.null_count:
            unknown = pa.compute.filter(column, pa.compute.is_null(index))[0].as_py()
            raise DataError(f"{where}: label {unknown!r} is not one of the class names; fix it")
        return index.to_numpy().astype(np.int64), list(order)
    raise DataError(f"{where} has type {column.type}; store integer ids or class-name strings")


def _class_label_names(path: Path) -> list[str] | None:
    """`features.label.names` of a `save_to_disk` folder's `dataset_info.json` (a ClassLabel)."""
    info = path / "dataset_info.json" if path.is_dir() else None
    if info is None or not info.is_file():
        return None
    try:
        label = json.loads(info.read_text(encoding="utf-8")).get("features", {}).get("label", {})
    except (OSError, ValueError, AttributeError):
        return None
    names = label.get("names") if isinstance(label, dict) else None
    return [str(name) for name in names] if isinstance(names, list) and names else None


def _shards(folder: Path) -> list[Path]:
    """The folder's Arrow shards in `state.json`'s order (else sorted by name)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        files = sorted(folder.glob("*.arrow"))
    missing = next((file for file in files if not file.is_file()), None)
    if missing is not None:
        raise DataError(f"{folder}: shard {missing.name} listed in state.json is missing")
    return files


def _arrow_batches(pa: Any, path: Path) -> list[Any]:
    """The record batches of an Arrow IPC file or stream, memory-mapped (zero-copy: the pages
    are read when a batch's column is)."""
    source = pa.memory_map(str(path))
    try:
        reader = pa.ipc.open_file(source)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
    except pa.ArrowInvalid:
        source.seek(0)
        return list(pa.ipc.open_stream(source))


# ---------------------------------------------------------------- image tables


class TableImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A table's image rows, each decoded when its item is read (in the DataLoader workers):
    (C, H, W) float32 (see the module docstring), and an int64 label."""

    def __init__(
        self,
        table: Table,
        labels: NDArray[np.int64],
        channels: int | None,
        options: DataOptions,
        pixel_dtype: str = "float32",
    ) -> None:
        self.table, self.channels, self.pixel_dtype = table, channels, pixel_dtype
        self.labels = torch.from_numpy(np.ascontiguousarray(labels))
        self.options = options if resizes_or_normalizes(options) else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        value = self.table.value("image", index)
        where = f"{self.table.path} row {index}"
        if isinstance(value, dict):
            pixels = _decode_cell(value, self.table.path, where)
            if self.channels is not None:
                pixels = np.broadcast_to(pixels, (self.channels, *pixels.shape[1:]))
            image = torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0))
        else:
            image = _pixels(value, where, self.pixel_dtype)
        if self.options is not None:
            image = finish_images(image, self.options)
        return image, self.labels[index]


def _decode_cell(value: dict[str, Any], root: Path, where: str) -> NDArray[np.uint8]:
    data, name = value.get("bytes"), value.get("path")
    if data:
        return _decode(io.BytesIO(data), where)
    if name:
        path = Path(name) if Path(name).is_absolute() else root.parent / name
        return _decode(path, where)
    raise DataError(f"{where}: the image has neither bytes nor a path; store the image bytes")


def _pixels(value: Any, where: str, dtype: str) -> torch.Tensor:
    """Nested lists of pixels as (C, H, W) float32: (H, W) is one channel; a 3-D image is
    channels-last when its last axis is 1, 3 or 4 long (the NumPy / PIL layout `datasets`
    stores), else channels-first when its first is."""
    try:
        array = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError):
        array = np.asarray([], dtype=np.float32)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array.transpose(2, 0, 1)
    elif array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3, 4) or array.dtype.kind not in "uif":
        raise DataError(
            f"{where}: the image is not (H, W), (H, W, C) or (C, H, W) pixels; store nested "
            "lists of numbers or encoded image bytes"
        )
    pixels = np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype == np.uint8:
        pixels /= np.float32(255.0)
    return torch.from_numpy(pixels)


def _image_table(table: Table, rows: int, keys: list[str], options: DataOptions) -> Loaded:
    pa = _pyarrow()
    ids, names = _labels(table, table.path)
    image_type = table.schema.field("image").type
    channels: int | None
    pixel_dtype = "float32"
    if pa.types.is_struct(image_type):
        channels = _scan_encoded(table, rows, same_size=options.image_size is None)
    else:
        inner = image_type
        while hasattr(inner, "value_type"):  # list, large list, fixed-size list
            inner = inner.value_type
        try:
            pixel_dtype = np.dtype(inner.to_pandas_dtype()).name
        except (NotImplementedError, TypeError):
            pixel_dtype = "float32"
        first = _pixels(table.value("image", 0), f"{table.path} row 0", pixel_dtype)
        channels = int(first.shape[0])
    check_image_options(channels, options, str(table.path))
    num_classes = len(names) if names else int(ids.max(initial=0)) + 1
    if num_classes < 2:
        raise DataError(f"{table.path}: only one class; name every class (string labels)")
    dataset = TableImages(table, ids[:rows], channels, options, pixel_dtype)
    spec = TaskSpec(modality="vision", task="classification", num_classes=num_classes)
    return Loaded(dataset, spec, names, lambda i: ExampleRef(keys[i]))


def _scan_encoded(table: Table, rows: int, *, same_size: bool) -> int:
    """The channel count (1 when every image is gray, else 3) from the images' headers (no
    pixel decoded); a DataError for an unreadable image or, when `same_size`, one of another
    size than the first."""
    from PIL import Image

    size: tuple[int, int] | None = None
    channels, row = 1, 0
    for chunk in table.chunks("image", rows):
        for value in chunk.to_pylist():
            where = f"{table.path} row {row}"
            data = (value or {}).get("bytes")
            try:
                if data:
                    opened = Image.open(io.BytesIO(data))
                else:
                    opened = Image.open(table.path.parent / str((value or {}).get("path")))
                with opened as image:
                    mode, found = image.mode, image.size
            except (OSError, ValueError, SyntaxError) as exc:
                raise DataError(f"cannot read image {where} ({exc}); fix or remove it") from None
            if size is None:
                size = found
            elif same_size and found != size:
                raise DataError(
                    f"image {where} is {found[0]}x{found[1]} but row 0 is {size[0]}x{size[1]}; "
                    "all images must share one size (or set image_size to resize them)"
                )
            channels = 1 if channels == 1 and mode in _GRAY_MODES else 3
            row += 1
    return channels
