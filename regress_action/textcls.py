"""Text classification eval sets: texts with labels, tokenized into one TensorDataset.

Layout of the examples (what `tasks.classification.text_forward` feeds the model): item i is
`(inputs[i], label[i])` with `inputs` a (N, 2, T) int64 tensor, row 0 the token ids and row 1
the attention mask (1 on tokens, 0 on padding), and `label` int64. Keeping two tensors keeps
the engine's slicing path and the eval-set fingerprint (ids, mask and labels are all hashed)
exactly as for every other TensorDataset.

- Tokenizer: `vocab.load_tokenizer(options.tokenizer)` (`bytes`, a `tokenizer.json`, or a model
  folder; `model` arrives resolved to the baseline's folder). A Hugging Face tokenizer adds its
  special tokens (its post-processor, e.g. BERT's `[CLS] … [SEP]`): a classifier was trained
  with them. Bytes add none.
- Length: each text is truncated to `options.context_length` tokens (default 512, special
  tokens included, so they survive truncation) and padded with the tokenizer's pad id to the
  longest example of the set (T).
- Labels: all ints (ids, >= 0; num_classes = max + 1, unless `class_names` is given) or all
  strings (class names, sorted → ids 0..K-1, recorded in `Loaded.class_names`); mixed kinds
  are refused. A `class_names` list (e.g. a `datasets` ClassLabel) maps names to its own order.
- References: `describe(i)` is the caller's key (`line L`, `row i`) and the text, cut to
  `sources.TEXT_SHOWN` characters.

Costs: every text is tokenized once at load, and the (N, 2, T) tensor is 16·N·T bytes.
Torch layer (builds tensors); `tokenizers` only through `vocab`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import TensorDataset

from .errors import DataError
from .sources import ExampleRef, Loaded, shorten
from .spec import DataOptions, TaskSpec
from .vocab import load_tokenizer

DEFAULT_CONTEXT = 512


def load_jsonl(path: Path, max_examples: int | None, options: DataOptions) -> Loaded:
    """A `.jsonl` of `{"text": ..., "label": ...}` lines as a text classification set.

    An optional `"group"` (a string or an int: the conversation, document or user an example
    came from) makes examples of one group one cluster for the statistics, which then resample
    groups. An optional `"slice"` names the example's slice (each slice is judged on its own).
    Blank lines are skipped; the first `max_examples` lines are used, but every line is
    parsed, so the label ids and class count are the same whatever the cut. A line without
    a string `text` or without a `label`, or a label that is neither an int nor a string, is a
    DataError naming `file:line`."""
    path = Path(path)
    texts: list[str] = []
    labels: list[Any] = []
    lines: list[int] = []
    groups: list[Any] = []
    slices: list[Any] = []
    try:
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                row = _row(path, lineno, raw)
                if row is None:
                    continue
                labels.append(row[1])  # every line's: class ids must not depend on the cut
                if max_examples is None or len(texts) < max_examples:
                    texts.append(row[0])
                    lines.append(lineno)
                    groups.append(row[2])
                    slices.append(row[3])
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not texts:
        raise DataError(
            f'{path} has no examples; each line must be {{"text": "...", "label": ...}}'
        )
    ids, names = class_ids(labels, str(path))
    keys = [f"line {lineno}" for lineno in lines]
    loaded = text_classification(texts, ids, names, keys, options, str(path))
    if any(group is not None for group in groups):
        if any(group is None for group in groups):
            missing = lines[groups.index(None)]
            raise DataError(
                f'{path}:{missing}: no "group", but other lines have one; give every line a '
                "group or none"
            )
        _, cluster = np.unique(np.array([str(group) for group in groups]), return_inverse=True)
        loaded.columns = {"group": cluster.reshape(-1).astype(np.int64)}
    if any(value is not None for value in slices):
        from .slices import slice_labels

        if any(value is None for value in slices):
            missing = lines[slices.index(None)]
            raise DataError(
                f'{path}:{missing}: no "slice", but other lines have one; give every line a '
                "slice or none"
            )
        loaded.columns = {**(loaded.columns or {}), "slice": slice_labels(slices, str(path))}
    return loaded


def _row(path: Path, lineno: int, raw: bytes) -> tuple[str, Any, Any, Any] | None:
    if not raw.strip():
        return None
    where = f"{path}:{lineno}"
    if lineno == 1:
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(
            f'{where}: not valid JSON ({exc.msg}); each line must be {{"text": "...", '
            '"label": ...}'
        ) from None
    except UnicodeDecodeError:
        raise DataError(f"{where}: not UTF-8; save the file as UTF-8") from None
    except RecursionError:
        raise DataError(
            f"{where}: JSON nested too deeply to read; each line is one flat object"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DataError(f'{where}: expected an object with a string "text" field')
    if "label" not in record:
        raise DataError(f'{where}: no "label"; every line of a classification set needs one')
    group = record.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, str | int)):
        raise DataError(f'{where}: "group" is {group!r}; use a string or an integer id')
    value = record.get("slice")
    if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
        raise DataError(f'{where}: "slice" is {value!r}; use a string slice name')
    return record["text"], record["label"], group, value


def class_ids(
    labels: Sequence[Any], where: str, class_names: Sequence[str] | None = None
) -> tuple[NDArray[np.int64], list[str] | None]:
    """Label values → (int64 ids, class names or None).

    All ints: the ids themselves (>= 0; below len(class_names) when names are given). All
    strings: `class_names`' order when given (an unknown name is a DataError), else the sorted
    distinct names. Booleans, floats, None and mixed kinds are refused."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        kinds = {"int"}  # an integer column (a table's): no per-value check needed
    else:
        kinds = {_kind(value) for value in labels}
    if kinds == {"int"}:
        ids = np.asarray(labels, dtype=np.int64)
        if ids.size and int(ids.min()) < 0:
            raise DataError(f"{where}: label {int(ids.min())} is negative; labels must be >= 0")
        names = list(class_names) if class_names else None
        if names is not None and ids.size and int(ids.max()) >= len(names):
            raise DataError(
                f"{where}: label {int(ids.max())} has no class name ({len(names)} names); "
                "name every class"
            )
        return ids, names
    if kinds == {"str"}:
        names = list(class_names) if class_names else sorted(set(labels))
        index = {name: i for i, name in enumerate(names)}
        unknown = next((value for value in labels if value not in index), None)
        if unknown is not None:
            raise DataError(
                f"{where}: label {unknown!r} is not one of the class names {names[:10]}; fix it"
            )
        return np.asarray([index[value] for value in labels], dtype=np.int64), names
    shown = ", ".join(sorted(kinds))
    raise DataError(
        f"{where}: labels must be all integers or all class-name strings (found {shown}); "
        "use one kind"
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, str):
        return "str"
    return "null" if value is None else type(value).__name__


def num_classes_of(ids: NDArray[np.int64], names: list[str] | None, where: str) -> int:
    """len(names) when known, else the largest label + 1; fewer than 2 is a DataError."""
    count = len(names) if names else int(ids.max(initial=0)) + 1
    if count < 2:
        raise DataError(
            f"{where}: only one class ({count}); a classification set needs at least two "
            "(name them all, e.g. with string labels or class names)"
        )
    return count


def text_classification(
    texts: Iterable[str],
    ids: NDArray[np.int64],
    class_names: list[str] | None,
    keys: Sequence[str],
    options: DataOptions,
    where: str,
) -> Loaded:
    """Tokenize `texts` (see the module docstring) into a text classification `Loaded`, each
    example known by `keys[i]` and its text. `ids` may be longer than `texts` (labels of the
    whole set, examples cut by max_examples): it sets the class count, the first len(texts)
    are the examples' labels."""
    tokenizer = load_tokenizer(options.tokenizer)
    length = options.context_length or DEFAULT_CONTEXT
    encoded: list[NDArray[np.int64]] = []
    shown: list[str] = []
    for text in texts:  # one pass: `texts` may be read lazily (a table's column)
        encoded.append(tokenizer.encode_sequence(text, length))
        shown.append(shorten(text))
    for key, tokens in zip(keys, encoded, strict=True):
        if tokens.size == 0:
            raise DataError(f"{where}: {key} has no tokens (an empty text); remove it")
    width = max(tokens.size for tokens in encoded)
    inputs = torch.zeros((len(encoded), 2, width), dtype=torch.int64)
    inputs[:, 0] = tokenizer.pad_id
    for row, tokens in enumerate(encoded):
        inputs[row, 0, : tokens.size] = torch.from_numpy(tokens)
        inputs[row, 1, : tokens.size] = 1
    labels = torch.from_numpy(np.ascontiguousarray(ids[: len(encoded)]))
    dataset = TensorDataset(inputs, labels)
    spec = TaskSpec(
        modality="text", task="classification", num_classes=num_classes_of(ids, class_names, where)
    )
    keys = list(keys)
    return Loaded(
        dataset, spec, class_names, lambda i: ExampleRef(keys[i], shown[i]), tokenizer=tokenizer
    )
