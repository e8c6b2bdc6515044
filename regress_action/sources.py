"""The eval-set sources: one entry per kind of input, each saying how it is recognised and
loaded. `data.load_eval_set` asks them in order; a new source is one new entry in `SOURCES`
(and its tests), in the style of pydantic-settings' sources.

| source         | recognised by                | examples (item i -> (input, target))       |
|----------------|------------------------------|--------------------------------------------|
| `dataset`      | a `torch.utils.data.Dataset` | the user's own; the caller gives the task  |
| `builtin`      | a name a task registers      | generated (`tasks.builtin_datasets`)       |
| `table`        | `.parquet` / `.arrow` /      | rows: text + label, text, or image + label |
|                | `.feather`, a `save_to_disk` | (`regress_action.tables`)                  |
|                | folder                       |                                            |
| `image_folder` | a directory                  | `root/<class_name>/*.png` (jpg, jpeg, bmp) |
| `jsonl`        | a `.jsonl` file              | `{"text": ...}` lines: LM sliding windows  |
|                |                              | (`{"text", "label"}`: text classification) |
| `tokens`       | a `.npy` / `.bin` file       | token ids, memory-mapped: LM windows       |
| `npz`          | a `.npz` file                | the arrays of the task that reads them     |

Details per source:
- `jsonl`: decided by the first non-blank line: with a `"label"` key, text classification
  (`textcls.load_jsonl`); else each line's text is an LM document (`textlm.load_jsonl`),
  tokenized with `DataOptions.tokenizer` and cut into sliding windows of `context_length`
  tokens moving by `stride` (each token after a document's first predicted once); per-window
  data columns `bytes` and `doc`; keys `line L, chars A–B`. Blank lines, and texts under 2
  tokens (nothing to predict), are skipped.
- `tokens`: a `.npy` (its header's dtype) or raw `.bin` (`DataOptions.token_dtype`) of token ids
  (nanoGPT style), memory-mapped and read in chunks, windowed as one document; the task's
  vocab_size must exceed the largest id; keys `tokens A–B`; no bytes (no bits per byte).
- `npz`: the task whose arrays the file holds (`images` + `labels` for classification, `inputs`
  + `targets` for regression; see each task's `read_npz`), or the task the caller names; an
  optional `slices` array (one name per example) is the data column `slice`; so is an image
  folder's `slices.csv` (`path,slice` rows, paths relative to the folder).
  Classification: `images` (N, C, H, W) or (N, H, W) (channels-last (N, H, W, C) with C in
  1/3/4 is transposed); uint8 is scaled to [0, 1], floats are kept; `labels` (N,) non-negative
  ints; num_classes = len(class_names) when the file has a `class_names` array, else max label
  + 1 (a class above the largest label present cannot be known otherwise: store `class_names`).
- `image_folder`: class names sorted -> label ids; all images must share one size; grayscale
  sets stay 1-channel, any RGB image makes all 3-channel. Examples are ordered round-robin over
  the classes (the i-th file of each class, files sorted by name), so the first `max_examples`
  cover the classes evenly. Loading reads only the files' headers (size and mode: the size
  check and the channel rule); each file is decoded when its item is read (`ImageFiles`), by the
  engine's DataLoader workers, whose batches also feed the fingerprint (`Fingerprint`). Keys:
  the file's path in the folder (`cat/001.png`).
- `dataset`: a user's Dataset, or the one `DataOptions.dataset_factory` builds
  (`data.dataset_from_factory`). Keys: its `example_id(i)` / `key(i)` when it has one, else
  `#i`. Fingerprint: its own `fingerprint` (a str attribute or method) combined with n when it
  has one, else one pass reading every example used.
- `table`: see `regress_action.tables` (columns, lazy reading, keys `row i` or the `id` column).

Images (folders, `.npz`, tables): uint8 is scaled by 1/255 to [0, 1], floats are kept. A
decoded file's gray modes stay one channel and every other mode is read as RGB, an alpha
channel dropped (its colour values kept, not composited); a folder (or table) with any colour
image is all RGB. Arrays (`.npz`, table pixel lists) keep their channels. Then
`DataOptions.image_size` resizes to (H, W) (bilinear, antialiased; in the workers for decoded
images, at load for arrays; mixed sizes are then allowed) and `DataOptions.normalize` applies
(x - mean) / std per channel (`finish_images`; a mean count that is not the channel count is a
DataError).

Torch layer: imports torch, numpy and (lazily, for image folders) Pillow; never SQLAlchemy,
PyGithub or jinja2.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset, Subset, TensorDataset

from .errors import DataError
from .spec import DataOptions, TaskSpec
from .tasks import TASKS, builtin_datasets, get_task

_FINGERPRINT_VERSION = b"regress-action eval set v1\n"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


TEXT_SHOWN = 200  # characters of an example's text shown with a flipped example


def shorten(text: str) -> str:
    """An example's text as a report shows it: at most TEXT_SHOWN characters, '…' when cut."""
    return text if len(text) <= TEXT_SHOWN else text[: TEXT_SHOWN - 1] + "…"


@dataclass(frozen=True)
class ExampleRef:
    """How a user finds one example in their data: a key they recognise (a file path, `line
    12`, `row 7`, the dataset's own id) and, for text, the text around it (raw: the report
    escapes it)."""

    key: str
    text: str | None = None


@dataclass
class Loaded:
    """What a source read: the examples, the task they show (None: the caller's), class names,
    and `describe(i)`, the reference of example i (None: examples are known by index only)."""

    dataset: Dataset[Any]
    task: TaskSpec | None
    class_names: list[str] | None = None
    describe: Callable[[int], ExampleRef] | None = None
    # Per-example data columns (the data's, not a model's: e.g. an LM window's `bytes`), joined
    # to both sides' records by id; None: the source has none to say (a byte-level vocabulary
    # then counts one byte per token), {}: known to have none (token arrays: no bytes).
    columns: dict[str, NDArray[Any]] | None = None
    tokenizer: Any = None  # the `vocab.Tokenizer` that made a text eval set's tokens


class Source:
    """One kind of eval-set input."""

    name: ClassVar[str]
    # True: reading an example decodes it (costly), so the fingerprint is taken from the
    # evaluation pass's batches (`Fingerprint`) rather than from a reading pass of its own.
    decodes_on_read: ClassVar[bool] = False

    def detect(self, source: Any) -> bool:
        raise NotImplementedError

    def load(self, source: Any, max_examples: int | None, options: DataOptions) -> Loaded:
        raise NotImplementedError

    def label(self, source: Any) -> str:
        """The eval set's default name in reports."""
        return Path(source).name if isinstance(source, str | Path) else str(source)

    def fingerprint(self, dataset: Dataset[Any], n: int) -> str:
        """The content fingerprint of the `n` examples used (a source with a cheaper stable
        identity may override it)."""
        return fingerprint_dataset(dataset, n)


class UserDataset(Source):
    name = "dataset"

    def detect(self, source: Any) -> bool:
        return isinstance(source, Dataset)

    def label(self, source: Any) -> str:
        return type(source).__name__

    def load(self, source: Any, max_examples: int | None, options: DataOptions) -> Loaded:
        try:
            size = len(source)
        except TypeError:
            raise DataError(
                f"dataset {self.label(source)!r} has no len(); an eval set must be a map-style "
                "Dataset with __len__ and __getitem__"
            ) from None
        describe = _dataset_keys(source)
        if max_examples is not None and max_examples < size:
            source = Subset(source, range(max_examples))
        return Loaded(source, None, describe=describe)

    def fingerprint(self, dataset: Dataset[Any], n: int) -> str:
        """The dataset's own stable `fingerprint` (a str attribute or a method returning one),
        combined with n, when it has one (no reading pass); else the content fingerprint, one
        pass reading every example used."""
        own = getattr(
            dataset.dataset if isinstance(dataset, Subset) else dataset, "fingerprint", None
        )
        value = own() if callable(own) else own
        if not isinstance(value, str) or not value:
            return fingerprint_dataset(dataset, n)
        digest = hashlib.sha256(_FINGERPRINT_VERSION + b"dataset's own fingerprint\n")
        digest.update(f"{value}\n{n}\n".encode())
        return digest.hexdigest()


def _dataset_keys(dataset: Any) -> Callable[[int], ExampleRef] | None:
    """A user Dataset's references: its `example_id(i)` or `key(i)` method when it has one
    (str() of what it returns; an error there falls back to `#i`), else None (`#i`)."""
    method = getattr(dataset, "example_id", None) or getattr(dataset, "key", None)
    if not callable(method):
        return None

    def describe(index: int) -> ExampleRef:
        try:
            return ExampleRef(str(method(index)))
        except Exception:  # a report annotation is not worth failing the comparison for
            return ExampleRef(f"#{index}")

    return describe


class Builtin(Source):
    name = "builtin"

    def detect(self, source: Any) -> bool:
        return isinstance(source, str) and source in builtin_datasets()

    def label(self, source: Any) -> str:
        return str(source)

    def load(self, source: Any, max_examples: int | None, options: DataOptions) -> Loaded:
        builtin = builtin_datasets()[source]
        dataset = builtin.load("eval", None)
        if max_examples is not None and isinstance(dataset, TensorDataset):
            dataset = TensorDataset(*(tensor[:max_examples] for tensor in dataset.tensors))
        names = list(builtin.class_names) if builtin.class_names else None
        return Loaded(dataset, TaskSpec.model_validate(builtin.spec), names)


class ImageFolder(Source):
    name = "image_folder"
    decodes_on_read = True

    def detect(self, source: Any) -> bool:
        return isinstance(source, str | Path) and Path(source).is_dir()

    def load(self, source: Any, max_examples: int | None, options: DataOptions) -> Loaded:
        return _load_image_folder(Path(source), max_examples, options)


class TableSource(Source):
    """Parquet / Arrow files and `datasets.save_to_disk` folders (`regress_action.tables`).
    Asked before the image folder: a `save_to_disk` folder is a directory too."""

    name = "table"
    # Image rows decode on read (the workers); a text table is tokenized at load, and its
    # batches feed the fingerprint all the same.
    decodes_on_read = True

    def detect(self, source: Any) -> bool:
        from .tables import is_table

        return is_table(source)

    def load(self, source: Any, max_examples: int | None, options: DataOptions) -> Loaded:
        from .tables import load_table

        return load_table(Path(source), max_examples, options)


class Jsonl(Source):
    name = "jsonl"

    def detect(self, source: Any) -> bool:
        return isinstance(source, str | Path) and Path(source).suffix.lower() == ".jsonl"

    def load(self, source: Any, max_examples: int | None, options: DataOptions) -> Loaded:
        from . import textlm  # lazily, like the text classification loader

        path = Path(source)
        first = textlm.first_jsonl_record(path)
        if isinstance(first, dict) and "label" in first:
            from . import textcls

            return textcls.load_jsonl(path, max_examples, options)
        return textlm.load_jsonl(path, max_examples, options)


class TokenArray(Source):
    name = "tokens"

    def detect(self, source: Any) -> bool:
        return isinstance(source, str | Path) and Path(source).suffix.lower() in (".npy", ".bin")

    def load(self, source: Any, max_examples: int | None, options: DataOptions) -> Loaded:
        from . import textlm

        return textlm.load_tokens(Path(source), max_examples, options)

    def fingerprint(self, dataset: Dataset[Any], n: int) -> str:
        """Taken while loading, over the chunks of ids the windows use (no pass of its own)."""
        known = getattr(dataset, "fingerprint", None)
        return known if isinstance(known, str) else fingerprint_dataset(dataset, n)


class Npz(Source):
    name = "npz"

    def detect(self, source: Any) -> bool:
        return isinstance(source, str | Path) and Path(source).suffix.lower() == ".npz"

    def load(self, source: Any, max_examples: int | None, options: DataOptions) -> Loaded:
        return _load_npz(Path(source), max_examples, options)


# Asked in this order: the first that recognises the input loads it.
SOURCES: tuple[Source, ...] = (
    UserDataset(),
    Builtin(),
    TableSource(),
    ImageFolder(),
    Jsonl(),
    TokenArray(),
    Npz(),
)


def source_for(source: Any) -> Source | None:
    return next((entry for entry in SOURCES if entry.detect(source)), None)


# ---------------------------------------------------------------- fingerprints


def fingerprint_dataset(dataset: Dataset[Any], n: int) -> str:
    """sha256 hex over (dtype, shape, raw bytes) of each input and target of items 0..n-1.

    Costs one pass over the data (reads every item once; ~ms for the built-ins). Byte order is
    the machine's (little-endian everywhere this runs).
    """
    digest = hashlib.sha256(_FINGERPRINT_VERSION)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        _fingerprint_tensors(digest, dataset.tensors, n)
        return digest.hexdigest()
    for index in range(n):
        for tensor in _as_pair(dataset[index], index):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{flat.dtype}{tuple(tensor.shape)}\n".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Fingerprint:
    """An eval set's fingerprint (`fingerprint_dataset`'s digest), known when loaded, or fed by
    the evaluation pass: `observe` takes each collated (inputs, targets) batch in dataset order,
    so a source that decodes on read is read once, in the DataLoader's workers. Read before a
    complete pass fed it (or after a partial one: a shard), it costs a reading pass of its own.
    """

    def __init__(self, compute: Callable[[], str], n: int, *, value: str | None = None) -> None:
        self._compute, self._n, self._value = compute, n, value
        self._digest: Any = hashlib.sha256(_FINGERPRINT_VERSION) if value is None else None
        self._seen = 0

    @classmethod
    def known(cls, value: str) -> Fingerprint:
        return cls(lambda: value, 0, value=value)

    def observe(self, batch: Any) -> None:
        if self._digest is None:
            return
        tensors = tuple(batch) if isinstance(batch, tuple | list) else ()
        if len(tensors) != 2 or not all(isinstance(t, torch.Tensor) for t in tensors):
            self._digest = None  # not (inputs, targets) tensors: computed on demand instead
            return
        rows = int(tensors[0].shape[0])
        if self._seen + rows > self._n:
            self._digest = None
            return
        _fingerprint_tensors(self._digest, tensors, rows)
        self._seen += rows

    def hexdigest(self) -> str:
        if self._value is None:
            complete = self._digest is not None and self._seen == self._n
            self._value = self._digest.hexdigest() if complete else self._compute()
            self._digest = None
        return self._value


# Rows hashed per update: a chunk of rows is laid out as the per-item loop would feed them.
_FINGERPRINT_CHUNK_BYTES = 8 * 2**20


def _fingerprint_tensors(digest: Any, tensors: tuple[torch.Tensor, ...], n: int) -> None:
    """The same digest as the per-item loop, fed from row views of whole tensors (no
    per-example indexing): each chunk of rows is one buffer laid out as the loop would feed it
    (each row's header then bytes, tensor after tensor), hashed in one update (sha256 only sees
    the concatenated bytes)."""
    rows = []
    for tensor in tensors:
        flat = tensor[:n].detach().cpu().contiguous()
        header = np.frombuffer(f"{flat.dtype}{tuple(flat.shape[1:])}\n".encode(), np.uint8)
        data = flat.reshape(n, -1).view(torch.uint8).numpy()
        rows.append((header, data))
    width = sum(header.size + data.shape[1] for header, data in rows)
    step = max(1, _FINGERPRINT_CHUNK_BYTES // width)
    for start in range(0, n, step):
        count = min(step, n - start)
        chunk = np.empty((count, width), dtype=np.uint8)
        column = 0
        for header, data in rows:
            chunk[:, column : column + header.size] = header
            column += header.size
            chunk[:, column : column + data.shape[1]] = data[start : start + count]
            column += data.shape[1]
        digest.update(chunk)


def _as_pair(item: Any, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise DataError(
            f"dataset item {index} is a {type(item).__name__}, not an (input, target) pair; "
            "make __getitem__ return (input, target)"
        )
    try:
        return torch.as_tensor(item[0]), torch.as_tensor(item[1])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"dataset item {index} does not convert to tensors ({exc}); return tensors or numbers"
        ) from None


# ---------------------------------------------------------------- .npz arrays


def _load_npz(path: Path, max_examples: int | None, options: DataOptions) -> Loaded:
    try:
        # Our own handle: np.load leaks the one it opens when the archive is corrupt.
        with path.open("rb") as handle:
            check_npz_sizes(path, handle)
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as archive:
                arrays: dict[str, NDArray[Any]] = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path} as .npz ({exc}); save it with numpy.savez") from None
    readers = [task for task in TASKS.values() if task.npz_keys]
    task = next((t for t in readers if all(key in arrays for key in t.npz_keys)), None)
    if task is None:
        # Name what is missing for the layout the file comes closest to.
        closest = max(readers, key=lambda t: sum(key in arrays for key in t.npz_keys))
        missing = [key for key in closest.npz_keys if key not in arrays]
        found = ", ".join(sorted(arrays)) or "none"
        example = ", ".join(f"{key}=..." for key in closest.npz_keys)
        others = "; or ".join(f"{', '.join(t.npz_keys)} ({t.name})" for t in readers)
        raise DataError(
            f"{path} has no {' / '.join(missing)} array (found: {found}); save it with "
            f"numpy.savez(path, {example}) — arrays by task: {others}"
        )
    read = get_task(task.name).read_npz(arrays, str(path))
    end = read.targets.shape[0] if max_examples is None else max_examples
    inputs = torch.from_numpy(read.inputs[:end])
    if read.spec.get("modality") == "vision" and resizes_or_normalizes(options):
        check_image_options(int(inputs.shape[1]), options, str(path))
        parts = range(0, inputs.shape[0], 256)  # bounded memory for the resize
        inputs = torch.cat([finish_images(inputs[i : i + 256], options) for i in parts])
    dataset = TensorDataset(inputs, torch.from_numpy(read.targets[:end]))
    spec = TaskSpec.model_validate(read.spec)
    loaded = Loaded(dataset, spec, read.class_names, lambda i: ExampleRef(f"row {i}"))
    if "slices" in arrays:
        from .slices import slice_labels

        slices = arrays["slices"]
        if slices.ndim != 1 or slices.shape[0] != read.targets.shape[0]:
            raise DataError(
                f"{path}: slices has shape {slices.shape} but there are "
                f"{read.targets.shape[0]} examples; give one slice name per example"
            )
        loaded.columns = {"slice": slice_labels(slices[: len(dataset)], f"{path} slices")}
    return loaded


# Deflate's largest compression ratio is about 1032:1: a member claiming more is forged.
_DEFLATE_RATIO = 1032


def check_npz_sizes(path: Path, handle: Any) -> None:
    """Refuse, before anything is allocated, an `.npz` member whose header declares more bytes
    than the archive holds for it (numpy allocates the declared shape first, then reads), or
    whose zip entry claims more uncompressed bytes than its compressed ones can give."""
    with zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            stored = info.compress_type == zipfile.ZIP_STORED
            most = info.compress_size if stored else _DEFLATE_RATIO * info.compress_size + 1024
            if info.file_size > most:
                raise DataError(
                    f"{path}: array {key!r} claims {_human_bytes(info.file_size)} from "
                    f"{_human_bytes(info.compress_size)} in the archive, which is forged or "
                    "corrupt; save the file again with numpy.savez"
                )
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                shape, dtype = _npy_header(member)
                data = info.file_size - member.tell()
            declared = math.prod(shape) * dtype.itemsize
            if declared > data:
                raise DataError(
                    f"{path}: array {key!r} declares shape {tuple(shape)} of {dtype} "
                    f"({_human_bytes(declared)}) but holds {_human_bytes(max(data, 0))}; the "
                    "file is truncated or forged: save it again with numpy.savez"
                )


def _npy_header(member: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype an `.npy` header declares (a ValueError if it is malformed)."""
    from numpy.lib import format as npy

    version = npy.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(member)
    else:  # version 3.0 (UTF-8 field names), read by numpy's own reader
        from numpy.lib._format_impl import _read_array_header  # type: ignore[attr-defined]

        shape, _, dtype = _read_array_header(member, version)
    return tuple(shape), dtype


def _human_bytes(count: int) -> str:
    for power, unit in ((5, "PiB"), (4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if count >= 1024**power:
            return f"{count / 1024**power:.3g} {unit}"
    return f"{count} bytes"


# ---------------------------------------------------------------- image folders

# Modes read as one gray channel; every other mode (RGB, RGBA, P, CMYK, ...) as RGB.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


class ImageFiles(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """An image folder's examples, each file opened and decoded when its item is read (so a
    DataLoader's workers do the decoding): (C, H, W) float32 in [0, 1], and an int64 label.

    The files were listed and their headers checked by `_load_image_folder`; a file that fails
    to decode, or changed size or channels since, is a DataError naming it. Picklable (paths,
    labels and two numbers), so it reaches workers started by spawn or forkserver too.
    """

    def __init__(
        self,
        root: Path,
        files: list[Path],
        labels: list[int],
        channels: int,
        size: tuple[int, int] | None,
        options: DataOptions | None = None,
    ) -> None:
        self.root, self.files, self.channels, self.size = root, files, channels, size
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.options = options if options is not None and resizes_or_normalizes(options) else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        file = self.files[index]
        pixels = _decode(file)
        height, width = pixels.shape[1:]
        if self.size is not None and (width, height) != self.size:
            raise _size_error(self.root, file, width, height, self.files[0], self.size)
        if pixels.shape[0] > self.channels:
            raise DataError(f"image {file} became RGB after the folder was listed; run again")
        pixels = np.broadcast_to(pixels, (self.channels, height, width))
        # The same correctly-rounded division as a whole stacked array: identical bytes.
        image = torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0))
        if self.options is not None:
            image = finish_images(image, self.options)
        return image, self.labels[index]

    @staticmethod
    def collate_fn(items: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """A batch (the engine's DataLoader uses it): images in channels-last memory, the
        layout decoded (H, W, C) pixels have and the folder's batches always had; CPU
        convolutions run about twice as fast on it as on a plainly stacked batch."""
        first = items[0][0]
        images = torch.empty(
            (len(items), *first.shape), dtype=first.dtype, memory_format=torch.channels_last
        )
        for row, (image, _) in enumerate(items):
            images[row] = image
        return [images, torch.stack([label for _, label in items])]


def _load_image_folder(root: Path, max_examples: int | None, options: DataOptions) -> Loaded:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"image folder {root} has {len(classes)} class sub-folder(s); lay it out as "
            f"{root}/<class_name>/*.png with at least two classes"
        )
    per_class = [_class_files(root / name) for name in classes]
    depth = max(len(files) for files in per_class)
    # Round-robin: the first max_examples cover every class, not just the first ones.
    order = [
        (files[i], label)
        for i in range(depth)
        for label, files in enumerate(per_class)
        if i < len(files)
    ][:max_examples]
    files = [file for file, _ in order]
    channels, size = _scan_headers(root, files, same_size=options.image_size is None)
    check_image_options(channels, options, str(root))
    labels = [label for _, label in order]
    dataset = ImageFiles(root, files, labels, channels, size, options)
    task = TaskSpec(modality="vision", task="classification", num_classes=len(classes))
    keys = [file.relative_to(root).as_posix() for file in files]
    loaded = Loaded(dataset, task, classes, lambda i: ExampleRef(keys[i]))
    if (root / SLICES_CSV).is_file():
        loaded.columns = {"slice": _folder_slices(root / SLICES_CSV, keys)}
    return loaded


# An image folder's slices: `path,slice` rows, the path relative to the folder (`cat/001.png`).
SLICES_CSV = "slices.csv"


def _folder_slices(path: Path, keys: list[str]) -> NDArray[np.str_]:
    """Each image's slice from the folder's slices.csv; a DataError naming the file when it is
    unreadable, lacks the `path` / `slice` columns or misses an image."""
    import csv

    from .slices import slice_labels

    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"path", "slice"} <= set(reader.fieldnames or ()):
                raise DataError(
                    f"{path}: expected a header row `path,slice`, found "
                    f"{','.join(reader.fieldnames or ()) or 'none'}; add it"
                )
            mapping = {row["path"].strip(): row["slice"] for row in reader if row.get("path")}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path} ({exc}); save it as UTF-8 CSV") from None
    missing = next((key for key in keys if key not in mapping), None)
    if missing is not None:
        raise DataError(f"{path} has no row for {missing!r}; give every image a slice")
    return slice_labels([mapping[key] for key in keys], str(path))


def _class_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); "
            "add images or remove the folder"
        )
    return files


def _scan_headers(
    root: Path, files: list[Path], *, same_size: bool = True
) -> tuple[int, tuple[int, int] | None]:
    """The channel count (1 when every image is gray, else 3) and the (width, height) all
    images share (None, unchecked, when not `same_size`: `image_size` resizes them), from the
    files' headers alone (Pillow opens lazily: no pixel is decoded)."""
    from PIL import Image  # lazily: only image folders need Pillow

    size: tuple[int, int] | None = None
    channels = 1
    for file in files:
        header = _png_header(file)
        if header is not None:
            found, gray = header
        else:
            try:
                with _no_bombs(file), Image.open(file) as image:
                    found, gray = image.size, image.mode in _GRAY_MODES
            except (OSError, ValueError, SyntaxError) as exc:  # SyntaxError: a broken file
                raise DataError(f"cannot read image {file} ({exc}); fix or remove it") from None
        check_pixels(file, found)
        if size is None:
            size = found
        elif found != size and same_size:
            raise _size_error(root, file, found[0], found[1], files[0], size)
        if not gray:
            channels = 3
    assert size is not None, "a class folder without images is refused when listed"
    return channels, size if same_size else None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG (colour type, bit depths) -> whether Pillow opens it in a gray mode: 0 gray (1, L, I;16),
# 4 gray + alpha (LA); 2 RGB, 3 palette (P), 6 RGBA are colour.
_PNG_GRAY = {0: True, 4: True, 2: False, 3: False, 6: False}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _png_header(file: Path) -> tuple[tuple[int, int], bool] | None:
    """A PNG's (width, height) and whether it is gray, from its IHDR chunk (the first 33 bytes:
    a few microseconds, where Pillow's open parses every chunk before the pixels); None for any
    other file, or a header that is not a well-formed IHDR (Pillow then reads it and says why)."""
    if file.suffix.lower() != ".png":
        return None
    try:
        with open(file, "rb") as handle:
            head = handle.read(33)
    except OSError:
        return None
    if len(head) < 33 or head[:8] != _PNG_SIGNATURE or head[8:16] != b"\0\0\0\rIHDR":
        return None
    if zlib.crc32(head[12:29]) != struct.unpack(">I", head[29:33])[0]:
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    if width == 0 or height == 0 or depth not in _PNG_DEPTHS.get(colour, ()):
        return None
    return (width, height), _PNG_GRAY[colour]


def check_pixels(file: Path | str, size: tuple[int, int]) -> None:
    """A DataError for an image declaring more pixels than Pillow decodes safely
    (`Image.MAX_IMAGE_PIXELS`): a decompression bomb, refused from its header alone."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise DataError(
            f"image {file} is {size[0]}x{size[1]} pixels, more than the {limit:,} Pillow "
            "decodes safely (a decompression bomb, or far too large for an eval set); "
            "resize or remove it"
        )


@contextlib.contextmanager
def _no_bombs(file: Path | str) -> Iterator[None]:
    """Pillow's decompression-bomb warning and error, as a DataError naming `file`."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"image {file}: {_first_sentence(exc)}; resize or remove it") from None


def _first_sentence(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def _decode(file: Path | Any, name: str | None = None) -> NDArray[np.uint8]:
    """One image (a path, or a binary file object named `name`) as (C, H, W) uint8: gray modes
    as one channel, every other mode as RGB (an alpha channel is dropped, as Pillow's RGB
    conversion does: the colour values are kept, not composited on a background)."""
    from PIL import Image

    try:
        with _no_bombs(name or file), Image.open(file) as image:
            gray = image.mode in _GRAY_MODES
            pixels = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {name or file} ({exc}); fix or remove it") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


# ---------------------------------------------------------------- image options


def resizes_or_normalizes(options: DataOptions) -> bool:
    return options.image_size is not None or options.normalize is not None


def check_image_options(channels: int, options: DataOptions, where: str) -> None:
    """A DataError when `options.normalize` does not give one mean and std per channel."""
    if options.normalize is not None and len(options.normalize[0]) != channels:
        raise DataError(
            f"{where}: the images have {channels} channel(s) but normalize gives "
            f"{len(options.normalize[0])} mean(s); give one mean and std per channel"
        )


def finish_images(images: torch.Tensor, options: DataOptions) -> torch.Tensor:
    """Scaled float images, (C, H, W) or (N, C, H, W), resized to `options.image_size`
    (bilinear, antialiased, corners not aligned: what torchvision's Resize does on tensors)
    then normalised per channel, `(x - mean) / std`. Either step is skipped when unset (and
    the resize when the size already matches). Runs where the images are read: in the
    DataLoader workers for decoded images, once at load for arrays."""
    batch = images if images.ndim == 4 else images[None]
    if options.image_size is not None and tuple(batch.shape[-2:]) != options.image_size:
        batch = torch.nn.functional.interpolate(
            batch.float(), size=options.image_size, mode="bilinear", antialias=True,
            align_corners=False,
        )  # fmt: skip
    if options.normalize is not None:
        mean = torch.tensor(options.normalize[0], dtype=batch.dtype).view(1, -1, 1, 1)
        std = torch.tensor(options.normalize[1], dtype=batch.dtype).view(1, -1, 1, 1)
        batch = (batch - mean) / std
    return batch if images.ndim == 4 else batch[0]


def _size_error(
    root: Path, file: Path, width: int, height: int, first: Path, size: tuple[int, int]
) -> DataError:
    return DataError(
        f"image {file} is {width}x{height} but {first} is {size[0]}x{size[1]}; all images in "
        f"{root} must share one size (resize them)"
    )
