"""Eval sets: loading a built-in name, a file, a folder or a user Dataset, and fingerprinting it.

Owns `EvalSet`, `load_eval_set` and the content fingerprint recorded with every comparison.
Imports torch, numpy and (lazily, for image folders) Pillow; never SQLAlchemy, PyGithub or jinja2.
The built-in generators live in `builtin_data`.

Sources and their examples (item i -> (input, target) tensors):
- `lm_tiny`: (input_ids, target_ids), int64 (64,), target_ids[t] = input_ids[t + 1]; 256 examples.
- `vision_tiny`: (image float32 (3, 16, 16) in [0, 1], label int64 ()), 10 classes; 1000 examples.
- `*.jsonl`: one `{"text": "..."}` object per line; the text's UTF-8 bytes are the tokens (vocab
  256). A text longer than JSONL_MAX_LEN + 1 bytes becomes several consecutive examples
  (windows overlapping by one byte, so each byte after the first is predicted once: the whole
  text is evaluated). input_ids = bytes[:-1] padded with 0, target_ids = bytes[1:] padded with
  -100 (the ignore index), to the longest example's length.
  Blank lines, and texts under 2 bytes (nothing to predict), are skipped.
- `*.npz`: `images` (N, C, H, W) or (N, H, W) (channels-last (N, H, W, C) with C in 1/3/4 is
  transposed); uint8 is scaled to [0, 1], floats are kept. `labels` (N,) non-negative ints.
  num_classes = len(class_names) when the file has a `class_names` array, else max label + 1
  (a class above the largest label present cannot be known otherwise: store `class_names`).
- an image folder `root/<class_name>/*.png|jpg|jpeg|bmp`: class names sorted -> label ids; all
  images must share one size; grayscale sets stay 1-channel, any RGB image makes all 3-channel.
  Examples are ordered round-robin over the classes (the i-th file of each class, files sorted by
  name), so the first `max_examples` cover the classes evenly.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset, Subset, TensorDataset

from .builtin_data import builtin_class_names, builtin_split, builtin_task
from .errors import DataError
from .spec import BUILTIN_DATASETS, IGNORE_INDEX, TaskSpec

JSONL_MAX_LEN = 256
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_FINGERPRINT_VERSION = b"regress-action eval set v1\n"
_SOURCES_HINT = (
    f"Built-in datasets: {', '.join(BUILTIN_DATASETS)}; "
    "or pass a path to a .jsonl file, an .npz file or an image folder"
)


@dataclass
class EvalSet:
    """A frozen eval set: exactly the examples evaluated, and the fingerprint of their content."""

    name: str
    dataset: Dataset[Any]
    fingerprint: str
    n: int
    task: TaskSpec
    class_names: list[str] | None = None


def load_eval_set(
    source: str | Path | Dataset[Any],
    *,
    task: TaskSpec | None = None,
    max_examples: int | None = None,
    name: str | None = None,
) -> EvalSet:
    """Load an eval set; keep its first `max_examples`; fingerprint exactly those.

    A built-in name wins over a file of the same name. `task` is required for a Dataset; for the
    other sources it may widen the known task (e.g. more classes than the labels show).
    """
    if max_examples is not None and max_examples < 1:
        raise DataError(f"max_examples must be at least 1 (got {max_examples})")
    if isinstance(source, Dataset):
        return _from_user_dataset(source, task, max_examples, name)
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        return _from_builtin(source, task, max_examples, name)
    path = _existing_path(source)
    if path.is_dir():
        dataset, inferred, classes = _load_image_folder(path, max_examples)
    elif path.suffix.lower() == ".jsonl":
        dataset, inferred, classes = _load_jsonl(path, max_examples), _lm_task(), None
    elif path.suffix.lower() == ".npz":
        dataset, inferred, classes = _load_npz(path, max_examples)
    else:
        raise DataError(f"{path} is not a supported eval set; {_SOURCES_HINT}")
    return _finish(name or path.name, dataset, _reconcile(inferred, task, str(path)), classes)


def builtin_train_split(name: str, n: int | None = None) -> Dataset[Any]:
    """The train split of a built-in dataset (disjoint from its eval split), for demo training."""
    if name not in BUILTIN_DATASETS:
        raise _unknown_dataset(name)
    return builtin_split(name, "train", n)


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


def _fingerprint_tensors(digest: Any, tensors: tuple[torch.Tensor, ...], n: int) -> None:
    """The same digest as the per-item loop, fed from row views of whole tensors
    (no per-example indexing or copies)."""
    rows = []
    for tensor in tensors:
        flat = tensor[:n].detach().cpu().contiguous()
        header = f"{flat.dtype}{tuple(flat.shape[1:])}\n".encode()
        data = flat.reshape(n, -1).view(torch.uint8).numpy()
        rows.append((header, data))
    for index in range(n):
        for header, data in rows:
            digest.update(header)
            digest.update(data[index])


# ---------------------------------------------------------------- sources


def _from_builtin(
    source: str, task: TaskSpec | None, max_examples: int | None, name: str | None
) -> EvalSet:
    dataset = builtin_split(source, "eval")
    if max_examples is not None:
        dataset = TensorDataset(*(tensor[:max_examples] for tensor in dataset.tensors))
    resolved = _reconcile(builtin_task(source), task, source)
    return _finish(name or source, dataset, resolved, builtin_class_names(source))


def _from_user_dataset(
    dataset: Dataset[Any], task: TaskSpec | None, max_examples: int | None, name: str | None
) -> EvalSet:
    label = name or type(dataset).__name__
    if task is None:
        raise DataError(
            f"dataset {label!r} is a torch Dataset, which does not say its task; "
            "pass task=TaskSpec(...) (modality, task and num_classes or vocab_size)"
        )
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(
            f"dataset {label!r} has no len(); an eval set must be a map-style Dataset "
            "with __len__ and __getitem__"
        ) from None
    if max_examples is not None and max_examples < size:
        dataset = Subset(dataset, range(max_examples))
    return _finish(label, dataset, task, None)


def _finish(
    name: str, dataset: Dataset[Any], task: TaskSpec, class_names: list[str] | None
) -> EvalSet:
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"eval set {name!r} has no examples; give it at least one")
    return EvalSet(name, dataset, fingerprint_dataset(dataset, n), n, task, class_names)


def _existing_path(source: str | Path) -> Path:
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    looks_like_path = isinstance(source, Path) or "/" in text or "\\" in text or path.suffix
    if looks_like_path:
        raise DataError(
            f"eval set {text!r} not found (relative paths resolve against {Path.cwd()}); "
            "check the path"
        )
    raise _unknown_dataset(text)


def _unknown_dataset(text: str) -> DataError:
    close = difflib.get_close_matches(text, BUILTIN_DATASETS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return DataError(f"unknown dataset {text!r}{hint} {_SOURCES_HINT}")


def _reconcile(inferred: TaskSpec, given: TaskSpec | None, where: str) -> TaskSpec:
    """The caller's task when it is compatible with what the data shows, else a DataError."""
    if given is None:
        return inferred
    if (given.modality, given.task) != (inferred.modality, inferred.task):
        raise DataError(
            f"{where} holds a {inferred.modality}/{inferred.task} eval set but the task says "
            f"{given.modality}/{given.task}; fix the task or the dataset"
        )
    for field in ("num_classes", "vocab_size"):
        needed, offered = getattr(inferred, field), getattr(given, field)
        if needed is not None and offered is not None and offered < needed:
            raise DataError(
                f"{where} needs {field} >= {needed} but the task says {offered}; raise it"
            )
    return given


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


def _lm_task() -> TaskSpec:
    return TaskSpec(modality="text", task="lm", vocab_size=256)


# ---------------------------------------------------------------- JSONL text


def _load_jsonl(path: Path, max_examples: int | None) -> TensorDataset:
    rows: list[bytes] = []
    try:
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if max_examples is not None and len(rows) >= max_examples:
                    break
                rows.extend(_windows(_jsonl_row(path, lineno, raw)))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not rows:
        raise DataError(
            f'{path} has no usable lines; each line must be {{"text": "..."}} '
            "with at least 2 bytes of text"
        )
    rows = rows[:max_examples]
    length = max(len(row) for row in rows) - 1
    inputs = torch.zeros((len(rows), length), dtype=torch.int64)
    targets = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.int64)
    for i, row in enumerate(rows):
        tokens = torch.frombuffer(bytearray(row), dtype=torch.uint8).to(torch.int64)
        inputs[i, : len(row) - 1] = tokens[:-1]
        targets[i, : len(row) - 1] = tokens[1:]
    return TensorDataset(inputs, targets)


def _windows(data: bytes | None) -> list[bytes]:
    """A text as consecutive examples of at most JSONL_MAX_LEN predicted tokens; windows
    overlap by one byte, so every byte after the first is predicted exactly once."""
    if data is None:
        return []
    step = JSONL_MAX_LEN
    return [data[start : start + step + 1] for start in range(0, len(data) - 1, step)]


def _jsonl_row(path: Path, lineno: int, raw: bytes) -> bytes | None:
    """The line's token bytes, None for a skipped line; a DataError naming file:line if bad."""
    if not raw.strip():
        return None
    where = f"{path}:{lineno}"
    if lineno == 1:
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (Windows editors)
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(
            f'{where}: not valid JSON ({exc.msg}); each line must be {{"text": "..."}}'
        ) from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8; save the file as UTF-8") from None
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise DataError(f'{where}: expected an object with a string "text" field')
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: text contains an unpaired surrogate escape; fix it") from None
    return data if len(data) >= 2 else None


# ---------------------------------------------------------------- .npz arrays


def _load_npz(
    path: Path, max_examples: int | None
) -> tuple[TensorDataset, TaskSpec, list[str] | None]:
    try:
        # Our own handle: np.load leaks the one it opens when the archive is corrupt.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path} as .npz ({exc}); save it with numpy.savez") from None
    missing = [key for key in ("images", "labels") if key not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        raise DataError(
            f"{path} has no {' / '.join(missing)} array (found: {found}); "
            "save it with numpy.savez(path, images=..., labels=...)"
        )
    images, labels = _npz_images(path, arrays["images"]), _npz_labels(path, arrays["labels"])
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{path}: {images.shape[0]} images but {labels.shape[0]} labels; they must match"
        )
    if labels.shape[0] == 0:
        raise DataError(f"eval set {str(path)!r} has no examples; give it at least one")
    class_names = _npz_class_names(path, arrays.get("class_names"), labels)
    num_classes = len(class_names) if class_names else int(labels.max(initial=0)) + 1
    if num_classes < 2:
        raise DataError(f"{path}: all labels are 0; add a class_names array naming every class")
    end = labels.shape[0] if max_examples is None else max_examples
    dataset = TensorDataset(torch.from_numpy(images[:end]), torch.from_numpy(labels[:end]))
    task = TaskSpec(modality="vision", task="classification", num_classes=num_classes)
    return dataset, task, class_names


def _npz_images(path: Path, images: NDArray[Any]) -> NDArray[np.float32]:
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3, 4) and images.shape[3] in (1, 3, 4):
        images = images.transpose(0, 3, 1, 2)  # channels-last -> (N, C, H, W)
    if images.ndim != 4:
        raise DataError(
            f"{path}: images has shape {images.shape}; expected (N, C, H, W) or (N, H, W)"
        )
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        return np.ascontiguousarray(images, dtype=np.float32)
    raise DataError(
        f"{path}: images has dtype {images.dtype}; save uint8 (0-255) or float (0-1) pixels"
    )


def _npz_labels(path: Path, labels: NDArray[Any]) -> NDArray[np.int64]:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: labels has shape {labels.shape} and dtype {labels.dtype}; "
            "expected a 1-D integer array (labels.astype(numpy.int64))"
        )
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: labels contain {labels.min()}; labels must be >= 0")
    return labels.astype(np.int64)


def _npz_class_names(
    path: Path, names: NDArray[Any] | None, labels: NDArray[np.int64]
) -> list[str] | None:
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"{path}: class_names must be a 1-D array of strings")
    result = [str(item) for item in names.tolist()]
    if labels.size and int(labels.max()) >= len(result):
        raise DataError(
            f"{path}: label {int(labels.max())} has no entry in class_names "
            f"({len(result)} names); name every class"
        )
    return result


# ---------------------------------------------------------------- image folders


def _load_image_folder(
    root: Path, max_examples: int | None
) -> tuple[TensorDataset, TaskSpec, list[str]]:
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
    images = _read_images(root, [file for file, _ in order])
    labels = torch.tensor([label for _, label in order], dtype=torch.int64)
    task = TaskSpec(modality="vision", task="classification", num_classes=len(classes))
    return TensorDataset(images, labels), task, classes


def _class_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); "
            "add images or remove the folder"
        )
    return files


def _read_images(root: Path, files: list[Path]) -> torch.Tensor:
    from PIL import Image  # lazily: only image folders need Pillow

    arrays: list[NDArray[np.uint8]] = []
    for file in files:
        try:
            with Image.open(file) as image:
                gray = image.mode in {"1", "L", "LA", "I", "I;16", "F"}
                pixels = np.asarray(image.convert("L" if gray else "RGB"), dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read image {file} ({exc}); fix or remove it") from None
        array = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        if arrays and array.shape[1:] != arrays[0].shape[1:]:
            raise DataError(
                f"image {file} is {array.shape[2]}x{array.shape[1]} but {files[0]} is "
                f"{arrays[0].shape[2]}x{arrays[0].shape[1]}; all images in {root} must share "
                "one size (resize them)"
            )
        arrays.append(array)
    channels = max(array.shape[0] for array in arrays)
    stacked = np.stack([np.broadcast_to(a, (channels, *a.shape[1:])) for a in arrays])
    return torch.from_numpy(stacked.astype(np.float32) / np.float32(255.0))
