"""Tokenizers for text eval sets: how a text becomes token ids, and which bytes each token covers.

`tokenizer` (an eval set option, `DataOptions.tokenizer`) is one of:
- `bytes`: the text's UTF-8 bytes are the tokens (vocab 256, no file needed);
- a path to a `tokenizer.json` (the Hugging Face `tokenizers` format, BPE / WordPiece /
  Unigram alike), read with `tokenizers` (the `hf` extra);
- `model`: the tokenizer saved in the baseline's Hugging Face model folder (its
  `tokenizer.json`, or what `transformers.AutoTokenizer` reads there, offline).

Every tokenizer reports, per token, the UTF-8 byte offset where the token's share of the text
ends (`Encoded.byte_ends`), so bits per byte (ΣNLL / (ln 2 · Σbytes)) is measured on the same
bytes whatever the vocabulary. Two tokenizers are the same when their `fingerprint`s are (a
sha256 over the vocabulary, merges and added tokens; not the file's bytes, so formatting and
unrelated settings do not matter).

Imports numpy only at module level; `tokenizers` / `transformers` inside the loaders.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import DataError

BYTES = "bytes"
FROM_MODEL = "model"
BYTE_VOCAB = 256
_BYTES_FINGERPRINT = hashlib.sha256(b"regress-action tokenizer: utf-8 bytes\n").hexdigest()


@dataclass(frozen=True)
class Encoded:
    """One text's tokens: `ids` (int64) and `byte_ends[i]`, the UTF-8 byte offset in the text
    where token i's share ends (token i covers bytes byte_ends[i-1]..byte_ends[i], the first
    from 0)."""

    ids: NDArray[np.int64]
    byte_ends: NDArray[np.int64]


class Tokenizer:
    """A text tokenizer as the text sources use it."""

    name: str  # "bytes", or where it was read from (shown in reports)
    vocab_size: int
    fingerprint: str
    pad_id: int

    def encode(self, text: str) -> Encoded:
        raise NotImplementedError

    def encode_sequence(self, text: str, max_length: int) -> NDArray[np.int64]:
        """The ids a classifier reads for `text`: with the tokenizer's own special tokens
        (e.g. BERT's [CLS] … [SEP]), truncated to `max_length` with the specials kept."""
        return self.encode(text).ids[:max_length]


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens: vocab 256, one token per byte."""

    name = BYTES
    vocab_size = BYTE_VOCAB
    fingerprint = _BYTES_FINGERPRINT
    pad_id = 0

    def encode(self, text: str) -> Encoded:
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
        return Encoded(ids, np.arange(1, ids.size + 1, dtype=np.int64))


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers.Tokenizer`; no special tokens are added (the text is scored
    as it is)."""

    def __init__(self, backend: Any, name: str) -> None:
        self._backend = backend
        self.name = name
        self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))
        self.fingerprint = _fingerprint(backend)
        self.pad_id = _pad_id(backend)

    def encode(self, text: str) -> Encoded:
        encoding = self._backend.encode(text, add_special_tokens=False)
        ids = np.asarray(encoding.ids, dtype=np.int64)
        if ids.size == 0:
            return Encoded(ids, np.zeros(0, dtype=np.int64))
        # Character offsets -> UTF-8 byte offsets; each token's share runs to the next
        # token's start (whitespace a pre-tokenizer dropped is counted with the token before),
        # the last to the end of the text.
        # byte_at[c]: the UTF-8 offset of character c (the bytes that start a character: all
        # but continuation bytes), and the text's length at the end. Vectorised, no per-char loop.
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        starts = np.flatnonzero((data & 0xC0) != 0x80).astype(np.int64)
        byte_at = np.concatenate((starts, [data.size]))
        starts = np.asarray([start for start, _ in encoding.offsets], dtype=np.int64)
        starts = np.clip(starts, 0, len(text))
        ends = np.empty_like(starts)
        ends[:-1] = byte_at[starts[1:]]
        ends[-1] = byte_at[-1]
        return Encoded(ids, np.maximum.accumulate(ends))

    def encode_sequence(self, text: str, max_length: int) -> NDArray[np.int64]:
        encoding = self._backend.encode(text, add_special_tokens=False)
        specials = int(self._backend.num_special_tokens_to_add(False))
        encoding.truncate(max(max_length - specials, 1))
        encoding = self._backend.post_process(encoding, None, True)
        return np.asarray(encoding.ids[:max_length], dtype=np.int64)


def load_tokenizer(spec: str, model_dir: Path | None = None) -> Tokenizer:
    """The tokenizer `spec` names (`bytes`, a `tokenizer.json` path, or `model` with the
    baseline's Hugging Face folder `model_dir`); a DataError naming the input otherwise."""
    if spec == BYTES:
        return ByteTokenizer()
    if spec == FROM_MODEL:
        if model_dir is None or not Path(model_dir).is_dir():
            raise DataError(
                "tokenizer 'model' reads the tokenizer saved in the baseline's Hugging Face "
                "folder, but the baseline is not a model folder; pass a tokenizer.json path "
                "or 'bytes'"
            )
        return _from_model_dir(Path(model_dir))
    path = Path(spec)
    if path.is_dir():
        return _from_model_dir(path)
    if not path.is_file():
        raise DataError(
            f"tokenizer {spec!r} not found; use 'bytes', 'model' (the baseline folder's) or the "
            "path to a tokenizer.json"
        )
    return HFTokenizer(_read_tokenizer_json(path), str(spec))


def _read_tokenizer_json(path: Path) -> Any:
    """The file's `tokenizers.Tokenizer`; one comparison asks for the same file several times
    (checks, then each eval set), so it is parsed once per (path, size, mtime)."""
    try:
        status = path.stat()
    except OSError:
        return _parse_tokenizer_json(path, str(path), -1, -1)
    return _parse_tokenizer_json(path, str(path.resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _parse_tokenizer_json(path: Path, resolved: str, size: int, mtime_ns: int) -> Any:
    tokenizers = _import("tokenizers", "tokenizer files")
    try:
        return tokenizers.Tokenizer.from_file(resolved)
    except Exception as exc:  # the Rust side raises plain Exceptions
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"tokenizer {path} is not a valid tokenizer.json ({detail}); save one with "
            "tokenizers' Tokenizer.save or a transformers tokenizer's save_pretrained"
        ) from None


def _from_model_dir(folder: Path) -> Tokenizer:
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        return HFTokenizer(_read_tokenizer_json(tokenizer_json), str(folder))
    transformers = _import("transformers", "tokenizers saved without a tokenizer.json")
    try:
        loaded = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise DataError(
            f"{folder} holds no tokenizer that loads offline ({type(exc).__name__}); save the "
            "tokenizer into the folder with save_pretrained, or pass a tokenizer.json"
        ) from None
    backend = getattr(loaded, "backend_tokenizer", None)
    if backend is None:
        raise DataError(
            f"the tokenizer in {folder} is a slow (Python) tokenizer; save a fast one "
            "(tokenizer.json) with save_pretrained, or pass a tokenizer.json"
        )
    return HFTokenizer(backend, str(folder))


def _fingerprint(backend: Any) -> str:
    """sha256 over the model (vocabulary, merges) and the added tokens: what decides the ids."""
    state = json.loads(backend.to_str())
    identity = {
        "model": state.get("model"),
        "added_tokens": state.get("added_tokens"),
        "normalizer": state.get("normalizer"),
        "pre_tokenizer": state.get("pre_tokenizer"),
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"regress-action tokenizer v1\n" + blob).hexdigest()


def _pad_id(backend: Any) -> int:
    padding = backend.padding
    if padding and padding.get("pad_id") is not None:
        return int(padding["pad_id"])
    for token in ("<pad>", "[PAD]", "<|padding|>", "<|endoftext|>", "</s>", "<unk>", "[UNK]"):
        found = backend.token_to_id(token)
        if found is not None:
            return int(found)
    return 0


def _import(module: str, what: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise DataError(f"{what} need the {module!r} package; install regress-action[hf]") from None
