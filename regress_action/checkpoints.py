"""Checkpoint files: detecting their format from their content, and their sha256.

Owns `detect_format`, `sha256_file` and the helpers that the loaders in `models` share with
detection (`existing_file`, `state_from`, `corrupt`, `describe`). Torch layer: imports torch and
the contract modules (`errors`, `spec`); never SQLAlchemy, PyGithub or jinja2, nor the app, cli,
store or render modules.

Safety: detection never runs the file's code; it only runs `torch.load(weights_only=True)`,
which refuses any pickled object that is not a tensor or a plain container.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError, RegressActionError
from .spec import CheckpointFormat

__all__ = [
    "corrupt",
    "describe",
    "detect_format",
    "existing_file",
    "sha256_file",
    "state_from",
]

# Keys under which training frameworks nest the weights inside a saved dict.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detect_format(path: Path) -> CheckpointFormat:
    """The checkpoint's format, from its content (not its name), without running its code."""
    path = existing_file(path)
    with path.open("rb") as handle:
        head = handle.read(9)
    if head.startswith(b"PK\x03\x04"):
        return _detect_zip(path)
    if _looks_like_safetensors(path, head):
        return "safetensors"
    if path.suffix.lower() in {".safetensors", ".pt2"} or not head.startswith(b"\x80"):
        raise corrupt(path, "not a safetensors, torch.save, TorchScript or torch.export file")
    return _classify_torch_save(path, mmap=False)  # legacy (pre-zip) torch.save file


def state_from(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping in a torch.load result, also when nested under a 'state_dict' key."""
    if isinstance(loaded, Mapping):
        for key in _NESTED_STATE_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
        if all(isinstance(v, torch.Tensor) for v in loaded.values()):
            return {str(k): v for k, v in loaded.items()}
    raise ModelLoadError(
        f"checkpoint {path} holds a {type(loaded).__name__} but not a mapping of tensors; "
        "save model.state_dict()"
    )


# ---------------------------------------------------------------- detection


def _detect_zip(path: Path) -> CheckpointFormat:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            marker = [n for n in names if n.endswith("archive_format")]
            if marker and archive.read(marker[0]).strip() == b"pt2":
                return "export"
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise corrupt(path, f"a damaged zip archive ({exc})") from None
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return _classify_torch_save(path, mmap=True)
    raise corrupt(path, "a zip archive that is neither torch.save, TorchScript nor torch.export")


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    """True for a complete safetensors file; a ModelLoadError for a truncated one."""
    # Layout: 8-byte little-endian header length, a JSON header starting with "{", the data.
    if len(head) < 9 or head[8:9] != b"{":
        return False
    header_len, size = int.from_bytes(head[:8], "little"), path.stat().st_size
    if 8 + header_len > size:
        raise corrupt(path, "a safetensors header longer than the file")
    try:
        with path.open("rb") as handle:
            handle.seek(8)
            header = json.loads(handle.read(header_len))
        data_len = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise corrupt(path, f"an unreadable safetensors header ({describe(exc)})") from None
    if 8 + header_len + data_len != size:
        raise corrupt(path, f"safetensors data of {size - 8 - header_len} bytes, not {data_len}")
    return True


def _classify_torch_save(path: Path, *, mmap: bool) -> CheckpointFormat:
    """state_dict if `weights_only=True` loads a mapping of tensors; pickle if it refuses."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        return "pickle"  # weights_only refused a non-tensor global: a pickled object
    except Exception as exc:
        raise corrupt(path, describe(exc)) from None
    state_from(loaded, path)
    return "state_dict"


# ---------------------------------------------------------------- errors


def existing_file(path: Path) -> Path:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise ModelLoadError(f"checkpoint {path} {what}; check the path")
    return path


def corrupt(path: Path, detail: str) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load checkpoint {path}: {detail}; the file may be truncated or corrupt, "
        "re-save or re-download it"
    )


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, short: error messages stay on one line."""
    if isinstance(exc, RegressActionError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"
