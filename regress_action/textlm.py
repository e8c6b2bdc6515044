"""Language-model eval sets from text and from token arrays: documents → tokens → sliding windows.

A document is tokenized once (`vocab.Tokenizer`), into one token buffer shared by every
document; windows are index ranges over that buffer (`plan_windows`), materialised as
fixed-size `(context,)` rows: `input_ids` padded with the tokenizer's pad id, `target_ids` with
the ignore index.

Sliding windows (the Hugging Face perplexity guide's method, `context` C, `stride` S): every
token of a document after its first is predicted exactly once. The first window predicts
tokens 1..C from tokens 0..C-1; window k reads tokens kS..kS+C (C + 1 tokens, fewer at the
end) and predicts those the previous window did not reach, so each predicted token sees at
least C - S tokens of left context (all of them when the document is shorter). Targets
another window already predicted are the ignore index. S = C gives disjoint chunks; a
document of at most C + 1 tokens is one full-context pass. Each row is independent of the
others (causal models, right padding), so the metrics do not depend on the batch size.

Per-window data columns (joined to both sides' records by `app`, not computed by the models):
- `bytes`: the UTF-8 bytes the window's predicted tokens cover (`Encoded.byte_ends`), so
  Σbytes over a document's windows = its bytes after its first token: bits per byte for any
  tokenizer. Token arrays have no text, so no bytes.
- `doc`: the document (JSONL line / table row) each window belongs to, for the per-document
  sums of a comparison across tokenizers.

Keys (`ExampleRef`): `line L, chars A–B` (JSONL; A–B the characters of the window's predicted
text) or `row R, chars A–B` (tables), `tokens A–B` (token arrays); the text is the window's
predicted text, cut to about 200 characters.

Token arrays (`.npy`, `.bin` of raw ids, nanoGPT style) are memory-mapped and never read whole:
the ids are scanned in chunks (the largest id sets the vocabulary the task must have, and the
fingerprint is taken over the same chunks), and each batch gathers its windows from the map
(`TokenWindows.__getitems__`).

Torch layer: imports torch and numpy; `tokenizers` / `transformers` only through `vocab`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset, TensorDataset

from .errors import DataError
from .sources import ExampleRef, Loaded, shorten
from .spec import IGNORE_INDEX, DataOptions, TaskSpec
from .vocab import load_tokenizer

DEFAULT_CONTEXT = 256
_CHUNK = 1 << 22  # token ids per chunk when scanning a token array
_ROWS = 4096  # windows materialised per chunk
_VERSION = b"regress-action lm windows v2\n"


# ---------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """Window k reads inputs buffer[start[k] : start[k] + length[k]] and predicts targets
    buffer[start[k] + 1 + skip[k] : start[k] + 1 + length[k]] (the first `skip[k]` targets
    were predicted by an earlier window); `doc[k]` is its document, `first[k]` / `end[k]` the
    absolute buffer indices of its first and past-last predicted token."""

    start: NDArray[np.int64]
    length: NDArray[np.int64]
    skip: NDArray[np.int64]
    doc: NDArray[np.int64]

    # Computed once: describing each of n examples reads one element of them.
    @cached_property
    def first(self) -> NDArray[np.int64]:
        return self.start + 1 + self.skip

    @cached_property
    def end(self) -> NDArray[np.int64]:
        return self.start + 1 + self.length

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def head(self, n: int | None) -> Windows:
        if n is None or n >= len(self):
            return self
        return Windows(self.start[:n], self.length[:n], self.skip[:n], self.doc[:n])


def resolve_window(options: DataOptions) -> tuple[int, int]:
    """(context, stride) from the options: context default 256 (`app` sets the model's maximum
    positions first when it knows them), stride default half the context; a DataError when the
    stride exceeds the context (tokens would go unpredicted)."""
    context = options.context_length or DEFAULT_CONTEXT
    stride = options.stride or max(1, context // 2)
    if stride > context:
        raise DataError(
            f"stride {stride} is larger than context-length {context}, so some tokens would "
            "never be predicted; pass a stride of at most the context length"
        )
    return context, stride


def plan_windows(
    doc_starts: NDArray[np.int64], doc_lengths: NDArray[np.int64], context: int, stride: int
) -> Windows:
    """The windows of every document (buffer offsets `doc_starts`, `doc_lengths` tokens), in
    document order; documents under 2 tokens have none. Vectorised: no Python loop per window."""
    n = doc_lengths.astype(np.int64)
    # Windows per document: one for the first C targets, then one per S more.
    rest = np.maximum(n - 1 - context, 0)
    counts = np.where(n >= 2, 1 + -(-rest // stride), 0)
    total = int(counts.sum())
    doc = np.repeat(np.arange(n.size, dtype=np.int64), counts)
    offsets = np.cumsum(counts) - counts
    k = np.arange(total, dtype=np.int64) - np.repeat(offsets, counts)  # window index in its doc
    size = n[doc]
    # Window k reads tokens [s, b) with s = k·S, b = min(s + C + 1, n) and predicts those after
    # the previous window's end: [a, b) (doc-relative token indices; a = 1 for the first).
    s = k * stride
    b = np.minimum(s + context + 1, size)
    a = np.where(k == 0, 1, np.minimum(s - stride + context + 1, size))
    base = doc_starts.astype(np.int64)[doc]
    return Windows(base + s, b - 1 - s, a - 1 - s, doc)


def window_tensors(
    buffer: NDArray[Any], windows: Windows, context: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows as (n, context) int64 input and target rows (pads: `pad_id` / ignore index),
    gathered from `buffer` (an array or a memory map) in chunks of rows."""
    n = len(windows)
    inputs = torch.full((n, context), pad_id, dtype=torch.int64)
    targets = torch.full((n, context), IGNORE_INDEX, dtype=torch.int64)
    columns = np.arange(context, dtype=np.int64)
    last = max(int(buffer.shape[0]) - 1, 0)
    for lo in range(0, n, _ROWS):
        hi = min(lo + _ROWS, n)
        start, length, skip = windows.start[lo:hi], windows.length[lo:hi], windows.skip[lo:hi]
        index = start[:, None] + columns[None, :]
        valid = columns[None, :] < length[:, None]
        ids = np.asarray(buffer[np.minimum(index, last)], dtype=np.int64)
        nxt = np.asarray(buffer[np.minimum(index + 1, last)], dtype=np.int64)
        scored = valid & (columns[None, :] >= skip[:, None])
        inputs[lo:hi] = torch.from_numpy(np.where(valid, ids, pad_id))
        targets[lo:hi] = torch.from_numpy(np.where(scored, nxt, IGNORE_INDEX))
    return inputs, targets


# ---------------------------------------------------------------- text documents


def lm_documents(
    texts: Iterable[str],
    keys: Callable[[int], str],
    options: DataOptions,
    max_examples: int | None,
    where: str,
) -> Loaded:
    """An LM eval set from documents: `texts` (a sequence or any iterable, read in order and
    only as far as `max_examples` windows need), `keys(i)` naming document i as the user knows
    it (`line 3`, `row 7`), tokenized with `options.tokenizer`, cut into sliding windows.

    Returns a TensorDataset of (context,) rows, the task `lm` with the tokenizer's vocabulary,
    the per-window data columns `bytes` and `doc`, and each window's reference. Costs one
    tokenization per document (kept: one int64 buffer) and 2 · 8 · context bytes per window.
    A DataError naming `where` when no document has 2 tokens.
    """
    tokenizer = load_tokenizer(options.tokenizer)
    context, stride = resolve_window(options)
    ids_parts: list[NDArray[np.int64]] = []
    byte_parts: list[NDArray[np.int64]] = []
    kept: list[int] = []  # index in `texts` of each kept document
    kept_texts: list[str] = []
    windows_so_far = 0
    for index, text in enumerate(texts):
        if max_examples is not None and windows_so_far >= max_examples:
            break  # a lazy sequence is read no further
        if not text:
            continue
        encoded = tokenizer.encode(text)
        if encoded.ids.size < 2:
            continue
        ids_parts.append(encoded.ids)
        byte_parts.append(encoded.byte_ends)
        kept.append(index)
        kept_texts.append(text)
        rest = max(encoded.ids.size - 1 - context, 0)
        windows_so_far += 1 + -(-rest // stride)
    if not kept:
        raise DataError(
            f'{where} has no usable text; each document needs at least 2 tokens of "text" '
            f"(tokenizer {tokenizer.name})"
        )
    lengths = np.asarray([part.size for part in ids_parts], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    buffer = np.concatenate(ids_parts)
    byte_ends = np.concatenate(byte_parts)
    windows = plan_windows(starts, lengths, context, stride).head(max_examples)
    inputs, targets = window_tensors(buffer, windows, context, tokenizer.pad_id)
    # Bytes covered by tokens [first, end) of a document: byte_ends[end-1] - byte_ends[first-1].
    covered = byte_ends[windows.end - 1] - byte_ends[windows.first - 1]
    original = np.asarray(kept, dtype=np.int64)
    describe = _TextRefs(kept_texts, [keys(i) for i in kept], original, byte_ends, windows)
    return Loaded(
        TensorDataset(inputs, targets),
        TaskSpec(modality="text", task="lm", vocab_size=tokenizer.vocab_size),
        describe=describe,
        # `doc`: the document's index in `texts` (skipped ones included), the same whatever
        # the tokenizer, so two tokenizers' windows pair on it.
        columns={"bytes": covered.astype(np.int64), "doc": original[windows.doc]},
        tokenizer=tokenizer,
    )


class _TextRefs:
    """`describe(i)` of text windows: the document's key and the window's predicted text."""

    def __init__(
        self,
        texts: list[str],
        keys: list[str],
        original: NDArray[np.int64],
        byte_ends: NDArray[np.int64],
        windows: Windows,
    ) -> None:
        self.texts, self.keys, self.original = texts, keys, original
        self.byte_ends, self.windows = byte_ends, windows

    def __call__(self, index: int) -> ExampleRef:
        doc = int(self.windows.doc[index])
        first, end = int(self.windows.first[index]), int(self.windows.end[index])
        lo, hi = int(self.byte_ends[first - 1]), int(self.byte_ends[end - 1])
        data = self.texts[doc].encode("utf-8")
        while 0 < lo < len(data) and data[lo] & 0xC0 == 0x80:  # whole characters (bytes
            lo -= 1  # tokenizers may split one)
        while hi < len(data) and data[hi] & 0xC0 == 0x80:
            hi += 1
        chars_before = len(data[:lo].decode("utf-8", errors="ignore"))
        text = data[lo:hi].decode("utf-8", errors="replace")
        return ExampleRef(
            f"{self.keys[doc]}, chars {chars_before}–{chars_before + len(text)}",
            shorten(text),
        )

    def document(self, index: int) -> ExampleRef:
        """Document `index` (its index in the source's texts: the `doc` column) as a whole."""
        doc = int(np.searchsorted(self.original, index))
        return ExampleRef(self.keys[doc], shorten(self.texts[doc]))


# ---------------------------------------------------------------- JSONL


def load_jsonl(path: Path, max_examples: int | None, options: DataOptions) -> Loaded:
    """`{"text": ...}` lines as LM documents (keys `line L`); blank lines and texts under 2
    tokens are skipped; a malformed line is a DataError naming file:line. A line's optional
    `"slice"` is the slice of every window cut from it (data column `slice`)."""
    slices: list[Any] = []
    try:
        with path.open("rb") as handle:
            loaded = lm_documents(
                _jsonl_texts(path, handle, slices), lambda i: f"line {i + 1}", options,
                max_examples, str(path),
            )  # fmt: skip
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    assert loaded.columns is not None
    docs = loaded.columns["doc"]
    used = sorted(set(docs.tolist()))
    if any(slices[i] is not None for i in used):
        from .slices import slice_labels

        missing = next((i for i in used if slices[i] is None), None)
        if missing is not None:
            raise DataError(
                f'{path}:{missing + 1}: no "slice", but other lines have one; give every line a '
                "slice or none"
            )
        labels = slice_labels([slices[i] for i in used], str(path))
        by_doc = dict(zip(used, labels.tolist(), strict=True))
        loaded.columns["slice"] = np.asarray([by_doc[d] for d in docs.tolist()], dtype=np.str_)
    return loaded


def _jsonl_texts(path: Path, handle: Any, slices: list[Any]) -> Iterator[str]:
    """Each line's text in order ("" for a blank line: index + 1 is the line number); each
    line's `"slice"` (None without one) is appended to `slices`."""
    for lineno, raw in enumerate(handle, start=1):
        slices.append(None)
        yield _jsonl_row(path, lineno, raw, slices) or ""


def _jsonl_row(path: Path, lineno: int, raw: bytes, slices: list[Any] | None = None) -> str | None:
    """The line's text, None for a blank line; a DataError naming file:line if bad."""
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
    except RecursionError:
        raise DataError(
            f"{where}: JSON nested too deeply to read; each line is one flat object"
        ) from None
    text = record.get("text") if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise DataError(f'{where}: expected an object with a string "text" field')
    if slices is not None:
        slices[-1] = record.get("slice")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: text contains an unpaired surrogate escape; fix it") from None
    return text


def first_jsonl_record(path: Path) -> Any:
    """The first non-blank line of a JSONL file, parsed (None when unreadable or not JSON: the
    loader then reports it with its line number)."""
    try:
        with path.open("rb") as handle:
            for raw in handle:
                if raw.strip():
                    return json.loads(raw.removeprefix(b"\xef\xbb\xbf"))
    except (OSError, ValueError, RecursionError):
        return None
    return None


# ---------------------------------------------------------------- token arrays


TOKEN_SUFFIXES = (".npy", ".bin")


class TokenWindows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Windows over a memory-mapped token array; a batch gathers its rows from the map in one
    indexing (`__getitems__`, which the DataLoader calls with a batch's indices)."""

    def __init__(self, path: Path, dtype: str | None, windows: Windows, context: int) -> None:
        self.path, self.dtype, self.windows, self.context = path, dtype, windows, context
        self._map: NDArray[Any] | None = None

    def _tokens(self) -> NDArray[Any]:
        if self._map is None:  # opened in the process that reads (a DataLoader worker too)
            self._map = open_tokens(self.path, self.dtype)
        return self._map

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_map": None}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.__getitems__([index])
        return inputs[0], targets[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        w = self.windows
        picked = Windows(w.start[rows], w.length[rows], w.skip[rows], w.doc[rows])
        return window_tensors(self._tokens(), picked, self.context, 0)

    @staticmethod
    def collate_fn(batch: Any) -> list[torch.Tensor]:
        """The batch `__getitems__` built (already collated)."""
        if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
            return list(batch)
        return [torch.stack([item[0] for item in batch]), torch.stack([item[1] for item in batch])]


def open_tokens(path: Path, dtype: str | None) -> NDArray[Any]:
    """The token ids of a `.npy` (its header's dtype, must be 1-D integers) or a raw `.bin`
    (`dtype` required), memory-mapped read-only."""
    tokens: NDArray[Any]
    try:
        if path.suffix.lower() == ".npy":
            tokens = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            if dtype is None:
                raise DataError(
                    f"{path} is a raw token file, which does not say its dtype; pass "
                    "token-dtype (uint16 for nanoGPT's GPT-2 tokens, or uint32 / int32 / int64)"
                )
            tokens = np.memmap(path, dtype=np.dtype(dtype), mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as token ids ({exc}); check the file") from None
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise DataError(
            f"{path} holds a {tokens.dtype} array of shape {tokens.shape}; a token file must "
            "be one 1-D array of integer token ids"
        )
    return tokens


def load_tokens(path: Path, max_examples: int | None, options: DataOptions) -> Loaded:
    """A token array as one stream windowed like a document; the task's vocabulary must exceed
    its largest id (the loaded task says max id + 1: `data` refuses a smaller one). One chunked
    pass over the ids used (the range check and the fingerprint)."""
    tokens = open_tokens(path, options.token_dtype)
    context, stride = resolve_window(options)
    if tokens.shape[0] < 2:
        raise DataError(f"{path} holds {tokens.shape[0]} token(s); it needs at least 2")
    windows = plan_windows(
        np.zeros(1, dtype=np.int64), np.asarray([tokens.shape[0]], np.int64), context, stride
    ).head(max_examples)
    used = int(windows.end[-1])
    digest = hashlib.sha256(_VERSION)
    digest.update(f"tokens {context} {stride} {len(windows)}\n".encode())
    largest = 0
    for lo in range(0, used, _CHUNK):
        chunk = np.asarray(tokens[lo : min(lo + _CHUNK, used)], dtype=np.int64)
        if chunk.size and int(chunk.min()) < 0:
            at = lo + int(np.argmax(chunk < 0))
            raise DataError(f"{path} has a negative token id at index {at}; ids start at 0")
        largest = max(largest, int(chunk.max()) if chunk.size else 0)
        digest.update(chunk.tobytes())
    dataset = TokenWindows(path, options.token_dtype, windows, context)
    dataset.fingerprint = digest.hexdigest()  # type: ignore[attr-defined]

    def describe(index: int) -> ExampleRef:
        return ExampleRef(f"tokens {int(windows.first[index])}–{int(windows.end[index])}")

    return Loaded(
        dataset,
        TaskSpec(modality="text", task="lm", vocab_size=largest + 1),
        describe=describe,
        columns={},
    )
