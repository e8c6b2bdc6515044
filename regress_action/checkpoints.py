"""Checkpoint files, read without running them: the content `Probe` that format detection asks,
the sha256, and the one-line errors every format's loader shares.

Owns `Probe`, `sha256_file`, `state_from`, `importable_from` and the error helpers
(`existing_file`, `existing_path`, `corrupt`, `describe`, `reading`). Which format a file is
belongs to the entries in `formats`; this module only answers questions about bytes. Imports
torch only inside functions (`regress-action --help` must not import it); never `models`,
SQLAlchemy, PyGithub or jinja2, nor the app, cli, store or render modules.

Safety: nothing here runs the file's code; the only load is `torch.load(weights_only=True)`,
which refuses any pickled object that is not a tensor or a plain container.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError, RegressActionError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Probe",
    "corrupt",
    "describe",
    "existing_file",
    "existing_path",
    "importable_from",
    "reading",
    "sha256_file",
    "state_from",
]

# Keys under which training frameworks nest the weights inside a saved dict.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model")
# Enough for every magic number and header prefix a format entry looks at.
_HEAD_BYTES = 64
# Pickled torch.save files (pre-zip) start with the pickle protocol opcode; these suffixes are
# never such files, so a broken one is reported as unreadable rather than unpickled.
_NOT_LEGACY_SUFFIXES = {".safetensors", ".pt2"}


class Probe:
    """Facts about one checkpoint's bytes, each read on demand and at most once.

    Format entries decide from these; the probe never decides a format itself. A directory
    (a model folder) is probed too: `is_dir`, and no bytes (`head` is empty).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.is_dir = self.path.is_dir()
        self.head = b""
        if not self.is_dir:
            with existing_file(self.path).open("rb") as handle:
                self.head = handle.read(_HEAD_BYTES)
        self._names: list[str] | None = None
        self._loaded: tuple[Any] | None = None  # (result,); (None,) when weights_only refused
        self._refused = False

    @property
    def is_zip(self) -> bool:
        return self.head.startswith(b"PK\x03\x04")

    def zip_names(self) -> list[str]:
        """The archive's member names; [] for a file that is not a zip archive."""
        if not self.is_zip:
            return []
        if self._names is None:
            with self._zip_errors(), zipfile.ZipFile(self.path) as archive:
                self._names = archive.namelist()
        return self._names

    def zip_member(self, suffix: str) -> bytes | None:
        """The first member whose name ends with `suffix`, or None."""
        names = [n for n in self.zip_names() if n.endswith(suffix)]
        if not names:
            return None
        with self._zip_errors(), zipfile.ZipFile(self.path) as archive:
            return archive.read(names[0])

    def is_torch_save(self) -> bool:
        """A `torch.save` file: a zip with a data.pkl, or a legacy (pre-zip) pickle."""
        if self.is_zip:
            return any(n.endswith("data.pkl") for n in self.zip_names())
        suffix = self.path.suffix.lower()
        return self.head.startswith(b"\x80") and suffix not in _NOT_LEGACY_SUFFIXES

    def pickles_objects(self) -> bool:
        """True for a torch.save file that `weights_only=True` refuses: it pickles objects."""
        self.weights_only_load()
        return self._refused

    def weights_only_load(self) -> Any:
        """`torch.load(weights_only=True)` of a torch.save file (None if it pickles objects)."""
        if self._loaded is None:
            self._loaded = (self._load(),)
        return self._loaded[0]

    def _load(self) -> Any:
        import torch

        try:
            with quiet_libraries():
                return torch.load(
                    self.path, map_location="cpu", weights_only=True, mmap=self.is_zip
                )
        except pickle.UnpicklingError:
            self._refused = True  # weights_only refused a non-tensor global: a pickled object
            return None
        except Exception as exc:
            raise corrupt(self.path, describe(exc)) from None

    @contextmanager
    def _zip_errors(self) -> Iterator[None]:
        try:
            yield
        except (zipfile.BadZipFile, OSError, KeyError) as exc:
            raise corrupt(self.path, f"a damaged zip archive ({exc})") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_from(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor mapping in a torch.load result, also when nested under a 'state_dict' key."""
    import torch

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


@contextmanager
def importable_from(root: Path) -> Iterator[None]:
    """Put the user's repository first on sys.path for one import, then restore sys.path."""
    entry = str(root)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    importlib.invalidate_caches()  # files written since the last import must be seen
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


# "package.module:callable", the part after the colon possibly dotted (`Class.method`).
CALLABLE_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def check_callable_spec(spec: str, error: type[RegressActionError], role: str) -> None:
    """Refuse a `spec` that is not "package.module:callable" (one line naming the role)."""
    if not CALLABLE_SPEC.match(spec):
        raise error(
            f"{role} {spec!r} is not of the form 'package.module:callable'; "
            "e.g. regress_action.zoo:tiny_lm"
        )


def import_callable(
    spec: str, root: Path, error: type[RegressActionError], role: str
) -> Callable[..., Any]:
    """The callable `spec` names, imported with `root` (the user's repository) first on the
    path: what model factories and dataset factories share. Every failure is one `error` line
    naming the role ("factory", "dataset factory") and the spec."""
    check_callable_spec(spec, error, role)
    module_name, attribute = spec.split(":")
    with importable_from(root):
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:
            raise error(
                f"cannot import {module_name!r} for {role} {spec!r} ({describe(exc)}); "
                f"make it importable from {root} (the repository root) or install it"
            ) from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise error(
            f"{role} {spec!r}: {module_name} has no callable {attribute!r}; "
            "check the name after the colon"
        )
    return target  # type: ignore[no-any-return]


# ---------------------------------------------------------------- errors


def existing_path(path: Path) -> Path:
    """The path if a file or a folder is there (which one a format takes is its own check)."""
    if not path.exists():
        raise ModelLoadError(f"checkpoint {path} not found; check the path")
    return path


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


class _Silence(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """No warnings and no torch log lines while a file is tried: a file in another format than
    the one forced makes torch log a whole traceback (and warn) before it raises, and the user
    is owed one line, the error naming the file."""
    loggers = [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if (name == "torch" or name.startswith("torch.")) and isinstance(logger, logging.Logger)
    ]
    handlers = {handler for logger in loggers for handler in logger.handlers}
    silence = _Silence()
    for handler in handlers:
        handler.addFilter(silence)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(silence)


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Any failure while parsing the file becomes one line naming it, never a traceback (nor
    the libraries' warnings before it)."""
    try:
        with quiet_libraries():
            yield
    except RegressActionError:
        raise
    except Exception as exc:
        raise corrupt(path, describe(exc)) from None


# A library's pointer to the log lines `quiet_libraries` kept from the user, and torch's
# boilerplate after a zip reader's error.
_SEE_ABOVE = re.compile(
    r"\s*(Please check the warnings above[^.]*\.?|This is an internal miniz error.*)",
    re.IGNORECASE | re.DOTALL,
)


def describe(exc: BaseException) -> str:
    """`Type: first line of the message`, short: error messages stay on one line."""
    if isinstance(exc, RegressActionError):
        return str(exc)
    lines = _SEE_ABOVE.sub("", str(exc)).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"
