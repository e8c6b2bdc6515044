"""Checkpoint formats: a registry of entries, one per format, each owning everything about it.

An entry (a `FormatEntry` subclass) owns its `name`, how it is recognised from file content
(`detect`, asking a `checkpoints.Probe`, never running the file's code), whether it needs a
factory (`needs_factory`), whether it is a folder rather than a file (`folder`), whether it
loads without an opt-in (`safe_without_opt_in`, `check_allowed`: `allow_pickle`,
`trust_remote_code`), its checks at registration (`validate`), `load`, `save` (for the demo and
tests), its `fingerprint` (the file's sha256; a folder's manifest hash) and the output size its
metadata declares (`output_size`, checked against the task at registration).

`REGISTRY` holds the built-in entries in detection order: the first whose `detect` says yes
wins, so the zip-based formats that are more specific (torch.export, TorchScript) come before
a plain torch.save zip, and the safetensors header check before the legacy pickle sniff; the
Hugging Face folder entry (`hf`, its specifics in `regress_action.hf`) is the only one that
says yes to a directory. A new
format is one new entry and `REGISTRY.register(MyFormat())` (`before="state_dict"` where it must
be tried earlier); `--format`, detection, loading and `ModelSource` validation pick it up.

Imports torch (and safetensors, transformers) only inside the entries' methods: `cli_args`
imports this module for the `--format` choices, and `regress-action --help` must not import
torch. Never imports `models` at module level, SQLAlchemy, PyGithub or jinja2, nor the app, cli,
store or render modules.
"""

from __future__ import annotations

import json
import pickle
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from . import hf
from .checkpoints import (
    Probe,
    corrupt,
    describe,
    existing_file,
    importable_from,
    quiet_libraries,
    reading,
    sha256_file,
    state_from,
)
from .errors import ModelLoadError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .spec import TaskSpec

__all__ = [
    "REGISTRY",
    "FormatEntry",
    "FormatRegistry",
    "HuggingFace",
    "LoadContext",
    "Pickle",
    "Safetensors",
    "StateDict",
    "TorchExport",
    "TorchScript",
]


@dataclass(frozen=True)
class LoadContext:
    """What a loader may need besides the file."""

    root: Path  # the user's repository: factories and pickled classes are imported from here
    # Builds the model with the source's factory and loads `state` into it strictly.
    with_weights: Callable[[Mapping[str, torch.Tensor]], nn.Module]
    task: TaskSpec | None = None  # the run's task: picks the model class of a Hugging Face folder
    allow_pickle: bool = False  # the opt-ins, already checked by `check_allowed`
    trust_remote_code: bool = False


class FormatEntry(ABC):
    """One checkpoint format. Subclass it, set `name`, implement detect / load / save."""

    name: ClassVar[str]
    needs_factory: ClassVar[bool] = False  # the file holds weights only, no architecture
    safe_without_opt_in: ClassVar[bool] = True  # False: loading it can run arbitrary code
    folder: ClassVar[bool] = False  # a directory (e.g. a Hugging Face model folder), not a file

    @abstractmethod
    def detect(self, probe: Probe) -> bool:
        """Whether the probed file is in this format (a ModelLoadError if it is, but broken)."""

    @abstractmethod
    def load(self, path: Path, context: LoadContext) -> nn.Module:
        """The model in the file; failures are one-line ModelLoadErrors naming the file."""

    @abstractmethod
    def save(self, module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
        """Write `module` to `path` in this format (the demo and tests make checkpoints)."""

    def validate(self, path: Path, factory: str | None) -> None:
        """Refuse at registration what could never load."""
        if self.needs_factory and not factory:
            raise ModelLoadError(
                f"checkpoint {path} holds only weights ({self.name}); pass a factory "
                "'package.module:callable' that builds the model, e.g. regress_action.zoo:tiny_cnn"
            )

    def check_path(self, path: Path) -> Path:
        """The checkpoint, if it is there as this format stores it (a file, or a folder)."""
        return existing_file(path)

    def check_allowed(
        self, path: Path, *, allow_pickle: bool, trust_remote_code: bool = False
    ) -> None:
        """Refuse, before loading, a checkpoint that can run code unless opted in."""
        if not self.safe_without_opt_in and not allow_pickle:
            raise ModelLoadError(self.refusal(path))

    def output_size(self, module: nn.Module, task: TaskSpec) -> int | None:
        """The task's output size (vocab_size, num_classes) the loaded model's own metadata
        declares; None when the format keeps none (the default)."""
        return None

    def refusal(self, path: Path) -> str:
        return (
            f"checkpoint {path} ({self.name}) can run arbitrary code when loaded; "
            "re-save it as safetensors, or pass --allow-pickle if you trust it"
        )

    def fingerprint(self, path: Path) -> str:
        """What `ModelSource.sha256` records and every load verifies."""
        return sha256_file(path)


class FormatRegistry:
    """Checkpoint formats by name, in detection order."""

    def __init__(self, entries: Iterable[FormatEntry] = ()) -> None:
        self._entries: list[FormatEntry] = []
        for entry in entries:
            self.register(entry)

    def register(self, entry: FormatEntry, *, before: str | None = None) -> FormatEntry:
        """Add `entry` last in detection order, or just before the entry named `before`."""
        if entry.name in self.names():
            raise ValueError(f"checkpoint format {entry.name!r} is already registered")
        index = len(self._entries) if before is None else self._index(before)
        self._entries.insert(index, entry)
        return entry

    def unregister(self, name: str) -> FormatEntry:
        return self._entries.pop(self._index(name))

    def names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self._entries)

    def get(self, name: str) -> FormatEntry:
        return self._entries[self._index(name)]

    def __iter__(self) -> Iterator[FormatEntry]:
        return iter(list(self._entries))

    def detect(self, path: Path) -> FormatEntry:
        """The entry for the file's content (not its name); never runs the file's code."""
        probe = Probe(path)
        for entry in self._entries:
            if entry.detect(probe):
                return entry
        if probe.is_dir:
            existing_file(probe.path)  # "is a directory, not a file"
        if probe.is_zip:
            detail = "a zip archive that is neither torch.save, TorchScript nor torch.export"
        else:
            detail = "not a safetensors, torch.save, TorchScript or torch.export file"
        raise corrupt(probe.path, detail)

    def _index(self, name: str) -> int:
        for index, entry in enumerate(self._entries):
            if entry.name == name:
                return index
        raise ModelLoadError(
            f"unknown checkpoint format {name!r}; use one of {', '.join(self.names())}"
        )


# ---------------------------------------------------------------- self-contained programs


class TorchExport(FormatEntry):
    """`.pt2` from `torch.export.save`: a zip archive whose archive_format member says pt2."""

    name = "export"

    def detect(self, probe: Probe) -> bool:
        marker = probe.zip_member("archive_format")
        return marker is not None and marker.strip() == b"pt2"

    def load(self, path: Path, context: LoadContext) -> nn.Module:
        import torch

        from .models import ExportedModule

        with reading(path):
            program = torch.export.load(str(path))
        return ExportedModule(program.module())

    def save(self, module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
        """Every dimension dynamic where the model allows it (other batch sizes still run)."""
        import torch

        if example_input is None:
            raise ValueError("saving in format 'export' needs an example_input")
        dims = {i: torch.export.Dim.AUTO for i in range(example_input.dim())}
        with _eval_mode(module):
            program = torch.export.export(module, (example_input,), dynamic_shapes=(dims,))
        torch.export.save(program, str(path))


class TorchScript(FormatEntry):
    """A `torch.jit.save` archive: a zip with code/ (or constants.pkl) members."""

    name = "torchscript"

    def detect(self, probe: Probe) -> bool:
        return any("/code/" in n or n.endswith("constants.pkl") for n in probe.zip_names())

    def load(self, path: Path, context: LoadContext) -> nn.Module:
        import torch

        with reading(path), _quiet_jit():
            module: nn.Module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        return module

    def save(self, module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
        """Traced with `example_input` when given, else scripted."""
        import torch

        with _eval_mode(module), _quiet_jit():
            if example_input is not None:
                compiled = torch.jit.trace(module, example_input)  # type: ignore[no-untyped-call]
            else:
                compiled = torch.jit.script(module)
            torch.jit.save(compiled, str(path))


# ---------------------------------------------------------------- weights for a factory


class Safetensors(FormatEntry):
    """Weights only: an 8-byte header length, a JSON header, the tensor data."""

    name = "safetensors"
    needs_factory = True

    def detect(self, probe: Probe) -> bool:
        """True for a complete safetensors file; a ModelLoadError for a truncated one."""
        head, path = probe.head, probe.path
        if probe.is_zip or len(head) < 9 or head[8:9] != b"{":
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
            raise corrupt(
                path, f"safetensors data of {size - 8 - header_len} bytes, not {data_len}"
            )
        return True

    def load(self, path: Path, context: LoadContext) -> nn.Module:
        from safetensors.torch import load_file

        with reading(path):
            state = load_file(str(path), device="cpu")
        return context.with_weights(state)

    def save(self, module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
        from safetensors.torch import save_file

        # Own contiguous copies: safetensors refuses tensors that share storage (tied weights).
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(weights, str(path))


class StateDict(FormatEntry):
    """A torch.save'd mapping of tensors (also nested under 'state_dict'), zip or legacy."""

    name = "state_dict"
    needs_factory = True

    def detect(self, probe: Probe) -> bool:
        if not probe.is_torch_save() or probe.pickles_objects():
            return False
        state_from(probe.weights_only_load(), probe.path)  # a list, a number: a one-line error
        return True

    def load(self, path: Path, context: LoadContext) -> nn.Module:
        import torch

        try:
            with quiet_libraries():
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise ModelLoadError(
                f"checkpoint {path} holds pickled Python objects, not just tensors; re-save "
                "model.state_dict(), or register it with format 'pickle' and --allow-pickle"
            ) from None
        except Exception as exc:
            raise corrupt(path, describe(exc)) from None
        return context.with_weights(state_from(loaded, path))

    def save(self, module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
        import torch

        torch.save(module.state_dict(), path)


# ---------------------------------------------------------------- unsafe without opt-in


class Pickle(FormatEntry):
    """A whole pickled `nn.Module` (torch.save(model)): unpickling can run arbitrary code."""

    name = "pickle"
    safe_without_opt_in = False

    def detect(self, probe: Probe) -> bool:
        return probe.is_torch_save() and probe.pickles_objects()

    def refusal(self, path: Path) -> str:
        return (
            f"checkpoint {path} is a pickled whole model; loading it can run arbitrary code. "
            "Re-save it as safetensors or a state dict, or pass --allow-pickle if you trust it"
        )

    def load(self, path: Path, context: LoadContext) -> nn.Module:
        import torch
        from torch import nn

        with importable_from(context.root), reading(path):
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(loaded, nn.Module):
            raise ModelLoadError(
                f"checkpoint {path} unpickles to a {type(loaded).__name__}, not a "
                "torch.nn.Module; save the whole model with torch.save(model, path)"
            )
        return loaded

    def save(self, module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
        import torch

        torch.save(module, path)


# ---------------------------------------------------------------- model folders


class HuggingFace(FormatEntry):
    """A Hugging Face model folder (config.json + safetensors weights); see `regress_action.hf`.

    Self-contained (config.json names the architecture). Its fingerprint hashes every file of
    the folder (reading every byte once); pickled `.bin` weights need `allow_pickle`, code in the
    folder (`auto_map`) needs `trust_remote_code`.
    """

    name = "hf"
    folder = True

    def detect(self, probe: Probe) -> bool:
        """Yes for a directory: a ModelLoadError when it is not a loadable model folder."""
        if not probe.is_dir:
            return False
        hf.inspect_folder(probe.path)
        hf.require_transformers(probe.path)
        return True

    def check_path(self, path: Path) -> Path:
        hf.inspect_folder(path)
        return path

    def validate(self, path: Path, factory: str | None) -> None:
        hf.inspect_folder(path)
        hf.require_transformers(path)

    def check_allowed(
        self, path: Path, *, allow_pickle: bool, trust_remote_code: bool = False
    ) -> None:
        found = hf.inspect_folder(path)
        if found.weights == "pickle" and not allow_pickle:
            raise ModelLoadError(
                f"checkpoint {path} holds pickled weights (pytorch_model.bin); loading them can "
                "run arbitrary code. Re-save with save_pretrained (safetensors), or pass "
                "--allow-pickle if you trust it"
            )
        if found.custom_code and not trust_remote_code:
            raise ModelLoadError(
                f"checkpoint {path} declares custom model code (auto_map in config.json), which "
                "would run when loaded; pass trust_remote_code=True (--trust-remote-code) if you "
                "trust that code, or save the model with a built-in transformers architecture"
            )

    def load(self, path: Path, context: LoadContext) -> nn.Module:
        return hf.load(
            path,
            task=context.task,
            allow_pickle=context.allow_pickle,
            trust_remote_code=context.trust_remote_code,
        )

    def save(self, module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
        hf.save(module, path)

    def fingerprint(self, path: Path) -> str:
        return hf.fingerprint(path)

    def output_size(self, module: nn.Module, task: TaskSpec) -> int | None:
        return hf.output_size(module, task)


REGISTRY = FormatRegistry(
    [TorchExport(), TorchScript(), Safetensors(), StateDict(), Pickle(), HuggingFace()]
)


# ---------------------------------------------------------------- helpers


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Capture the module in eval mode, then give it back in the mode it came in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@contextmanager
def _quiet_jit() -> Iterator[None]:
    # torch 2.13 deprecates torch.jit.*; TorchScript checkpoints are still a supported input,
    # and the warning is for code authors, not for the users of this tool.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+. is deprecated", DeprecationWarning)
        yield
