"""Hugging Face model folders: what `format: hf` reads, hashes, loads and saves.

A model folder is what `save_pretrained` (or `huggingface-cli download ORG/NAME --local-dir DIR`)
writes: a `config.json` and the weights, `model.safetensors` or shards listed in
`model.safetensors.index.json` (pickled `pytorch_model.bin` weights load only with the
`allow_pickle` opt-in). The `formats.HuggingFace` entry delegates here; models are never
downloaded (`local_files_only=True`), and a Hub id that is not a local folder is refused with
the command that downloads it.

- `inspect_folder`: the folder's config and weights, checked without loading anything.
- `fingerprint`: the sha256 of the folder's manifest (every file's relative path and sha256):
  editing any file (config.json, tokenizer.json, a shard) changes it. It reads every byte of
  the folder once, as a file's sha256 does. Symlinks are followed only when they stay inside
  the folder; the download bookkeeping of git and huggingface_hub (`.git/`, `.cache/` at the
  top) is not part of the model and is left out.
- `load`: the `transformers` Auto class the run's task asks for (`lm` → causal LM,
  classification / regression of `vision` → image classification, of `text` → sequence
  classification), in float32, eval mode, without a KV cache for causal LMs; weights the folder
  lacks (a base model without its task head) are refused, never initialised at random.
- `output_size`: the size the loaded model's config declares (vocab_size or num_labels).

Code in the folder (`auto_map` in config.json) runs only with `trust_remote_code`.
Imports `transformers` (and so torch) only inside the functions that load or save: the package
imports and runs without the `hf` extra, and this format then says how to install it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .checkpoints import describe, sha256_file
from .errors import ModelLoadError

if TYPE_CHECKING:
    from torch import nn

    from .spec import TaskSpec

__all__ = [
    "CONFIG",
    "Folder",
    "fingerprint",
    "hub_id_refusal",
    "inspect_folder",
    "load",
    "manifest",
    "output_size",
    "require_transformers",
    "save",
]

CONFIG = "config.json"
_SAFETENSORS, _SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
_PICKLE, _PICKLE_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# Written by the tools that fetch a folder, never read by the loader.
_BOOKKEEPING = frozenset({".git", ".cache"})
_MANIFEST_HEADER = b"regress-action hf folder manifest v1\n"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_FILE_SUFFIXES = frozenset(
    {".pt", ".pth", ".bin", ".safetensors", ".pt2", ".ckpt", ".jit", ".ts", ".pkl", ".json"}
)
# The Auto class for each (task, modality); `lm` is text only.
_AUTO_CLASSES = {
    ("lm", "text"): "AutoModelForCausalLM",
    ("classification", "vision"): "AutoModelForImageClassification",
    ("classification", "text"): "AutoModelForSequenceClassification",
    ("regression", "vision"): "AutoModelForImageClassification",
    ("regression", "text"): "AutoModelForSequenceClassification",
}
_INSTALL = "install the extra: pip install 'regress-action[hf]'"


@dataclass(frozen=True)
class Folder:
    """A checked model folder: its parsed config.json and the kind of weights it holds."""

    path: Path
    config: dict[str, Any]
    weights: Literal["safetensors", "pickle"]

    @property
    def custom_code(self) -> bool:
        """config.json maps its classes to code in the folder (or on the Hub)."""
        return bool(self.config.get("auto_map"))


def inspect_folder(path: Path) -> Folder:
    """The folder's config and weights kind; a one-line ModelLoadError for a folder that could
    never load (no config.json, unreadable config, no weights, a shard missing). Reads only
    config.json and the index files."""
    if not path.is_dir():
        raise ModelLoadError(
            f"checkpoint {path} is not a folder; format hf is a Hugging Face model folder "
            "(config.json + model.safetensors, as save_pretrained writes it)"
        )
    config_path = path / CONFIG
    if not config_path.is_file():
        raise ModelLoadError(
            f"checkpoint {path} is a folder without {CONFIG}; pass a Hugging Face model folder "
            "(save_pretrained writes config.json and model.safetensors) or a checkpoint file"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(
            f"checkpoint {path}: {CONFIG} is not readable JSON ({describe(exc)}); re-save the "
            "model with save_pretrained"
        ) from None
    if not isinstance(config, dict):
        raise ModelLoadError(
            f"checkpoint {path}: {CONFIG} holds a {type(config).__name__}, not a JSON object; "
            "re-save the model with save_pretrained"
        )
    for name, index, kind in (
        (_SAFETENSORS, _SAFETENSORS_INDEX, "safetensors"),
        (_PICKLE, _PICKLE_INDEX, "pickle"),
    ):
        if (path / name).is_file() or _complete_shards(path, index):
            return Folder(path, config, kind)  # type: ignore[arg-type]
    raise ModelLoadError(
        f"checkpoint {path} has {CONFIG} but no PyTorch weights ({_SAFETENSORS} or shards with "
        f"{_SAFETENSORS_INDEX}); save the model with save_pretrained into this folder"
    )


def _complete_shards(folder: Path, index_name: str) -> bool:
    """Whether the index is there; a ModelLoadError when it lists a shard that is not."""
    index = folder / index_name
    if not index.is_file():
        return False
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted({str(shard) for shard in weight_map.values()})
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelLoadError(
            f"checkpoint {folder}: {index_name} is not a readable shard index ({describe(e)}); "
            "re-save the model with save_pretrained"
        ) from None
    if missing := [shard for shard in shards if not (folder / shard).is_file()]:
        raise ModelLoadError(
            f"checkpoint {folder}: {index_name} lists {len(missing)} shard(s) the folder lacks "
            f"({', '.join(missing[:2])}); download or copy the whole folder"
        )
    return bool(shards)


# ---------------------------------------------------------------- the folder's hash


def manifest(folder: Path) -> list[tuple[str, str]]:
    """(relative POSIX path, sha256) of every file in the folder, sorted by path.

    A symlink is hashed as the file it points to when that stays inside the folder, and refused
    otherwise (the hash must cover what is loaded); `.git/` and `.cache/` at the top are left
    out. Reads every byte once.
    """
    root = folder.resolve()
    entries: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if here == folder:
            dirnames[:] = [name for name in dirnames if name not in _BOOKKEEPING]
        for name in list(dirnames):
            if (here / name).is_symlink():
                _inside(here / name, root, folder)  # its files are hashed where they live
                dirnames.remove(name)
        for name in filenames:
            file = here / name
            if file.is_symlink():
                _inside(file, root, folder)
            if not file.is_file():
                raise ModelLoadError(
                    f"checkpoint {folder}: {file.relative_to(folder)} is not a regular file; "
                    "remove it from the model folder"
                )
            entries.append((file.relative_to(folder).as_posix(), sha256_file(file)))
    return sorted(entries)


def fingerprint(folder: Path) -> str:
    """sha256 over the folder's manifest: any file added, removed, renamed or edited changes it."""
    digest = hashlib.sha256(_MANIFEST_HEADER)
    for relative, sha in manifest(folder):
        digest.update(f"{sha}  {relative}\n".encode())
    return digest.hexdigest()


def _inside(link: Path, root: Path, folder: Path) -> None:
    target = link.resolve()
    if not target.is_relative_to(root) or not target.exists():
        raise ModelLoadError(
            f"checkpoint {folder}: {link.relative_to(folder)} is a symlink to {target}, outside "
            "the folder; copy the files in (huggingface-cli download ORG/NAME --local-dir DIR "
            "writes real files)"
        )


# ---------------------------------------------------------------- refusals


def hub_id_refusal(spec: str) -> str | None:
    """The message for a checkpoint that does not exist but looks like a Hub id (`gpt2`,
    `org/name`); None when it looks like a path to a file."""
    if not _HUB_ID.fullmatch(spec) or Path(spec).suffix.lower() in _FILE_SUFFIXES:
        return None
    return (
        f"checkpoint {spec} not found: no such file or folder. If it is a Hugging Face Hub id, "
        f"download it first (huggingface-cli download {spec} --local-dir DIR, or "
        "save_pretrained(DIR)) and pass the folder DIR; models are never downloaded"
    )


def require_transformers(path: Path) -> None:
    """A ModelLoadError naming the folder when `transformers` is not installed (checked without
    importing it)."""
    try:
        found = importlib.util.find_spec("transformers") is not None
    except (ImportError, ValueError):  # a None placeholder in sys.modules
        found = False
    if not found:
        raise ModelLoadError(
            f"checkpoint {path} is a Hugging Face model folder; loading it needs transformers: "
            f"{_INSTALL}"
        )


# ---------------------------------------------------------------- load and save


def load(
    folder: Path, *, task: TaskSpec | None, allow_pickle: bool, trust_remote_code: bool
) -> nn.Module:
    """The folder's model, in float32 and eval mode, through the Auto class for `task` (None:
    the class config.json names in `architectures`). What needs an opt-in is refused without it
    (`formats.HuggingFace.check_allowed` says so in full before any load). Costs one
    read of the weights (float32: 4 bytes a parameter in memory)."""
    found = inspect_folder(folder)
    if found.weights == "pickle" and not allow_pickle:  # `check_allowed` refused it already
        raise ModelLoadError(f"checkpoint {folder} holds pickled weights; pass --allow-pickle")
    if found.custom_code and not trust_remote_code:
        raise ModelLoadError(f"checkpoint {folder} ships model code; pass --trust-remote-code")
    require_transformers(folder)
    import torch

    with _quiet() as transformers:
        auto = _auto_class(transformers, task, found, folder)
        kwargs: dict[str, Any] = {
            "local_files_only": True,
            "use_safetensors": found.weights == "safetensors",
            "trust_remote_code": trust_remote_code,
            "output_loading_info": True,
            _dtype_key(transformers): torch.float32,
        }
        if task is not None and task.task == "lm":
            kwargs["use_cache"] = False  # logits only: no past key/values kept or returned
        try:
            model, info = auto.from_pretrained(str(folder), **kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load checkpoint {folder} with transformers {transformers.__version__} "
                f"{auto.__name__} ({describe(exc)}); check that it holds a model for this task, "
                "saved with save_pretrained"
            ) from None
    if missing := sorted(info.get("missing_keys") or ()):
        shown = ", ".join(missing[:3]) + (
            f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        )
        raise ModelLoadError(
            f"checkpoint {folder} lacks weights {type(model).__name__} needs ({shown}): it "
            "would run with them initialised at random; register a folder saved from a model "
            "trained for this task"
        )
    return model.eval()  # type: ignore[no-any-return]


def save(module: nn.Module, folder: Path) -> None:
    """`save_pretrained` of a transformers model into `folder`, as safetensors."""
    save_pretrained = getattr(module, "save_pretrained", None)
    if not callable(save_pretrained):
        raise ValueError(
            f"format 'hf' saves a transformers PreTrainedModel, not a {type(module).__name__}"
        )
    with _quiet():
        save_pretrained(str(folder))


def output_size(module: nn.Module, task: TaskSpec) -> int | None:
    """What the loaded model's config declares for the task: `vocab_size` (lm) or `num_labels`
    (classification, regression); None when it declares nothing."""
    config = getattr(module, "config", None)
    if config is None:
        return None
    if task.task == "lm":
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        size = getattr(text, "vocab_size", None)
    elif task.task in ("classification", "regression"):
        size = getattr(config, "num_labels", None)
    else:
        return None
    return int(size) if isinstance(size, int) else None


def _auto_class(transformers: Any, task: TaskSpec | None, found: Folder, folder: Path) -> Any:
    if task is None:
        names = found.config.get("architectures") or []
        named = getattr(transformers, str(names[0]), None) if names else None
        return named if named is not None and not found.custom_code else transformers.AutoModel
    name = _AUTO_CLASSES.get((task.task, task.modality))
    if name is None:
        raise ModelLoadError(
            f"checkpoint {folder} is a Hugging Face folder, but the {task.task} task with "
            f"modality {task.modality} has no transformers Auto class here; use lm (text), or "
            "classification / regression with modality vision or text"
        )
    return getattr(transformers, name)


def _dtype_key(transformers: Any) -> str:
    """`dtype` since transformers 4.56, `torch_dtype` before."""
    parts = re.findall(r"\d+", transformers.__version__)[:2]
    major, minor = (int(part) for part in [*parts, "0", "0"][:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


@contextmanager
def _quiet() -> Iterator[Any]:
    """transformers, with its progress bars off and its log at errors only while loading or
    saving (the tool reports what matters itself); both restored afterwards."""
    import transformers
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield transformers
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
