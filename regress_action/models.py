"""Models: registering a checkpoint (format, sha256, factory) and loading it safely.

Owns `make_source`, `load_model`, `save_checkpoint` and the factory import; format detection and
the sha256 live in `checkpoints` (re-exported here). Torch layer: imports torch and safetensors;
never SQLAlchemy, PyGithub or jinja2, nor the app, cli, store or render modules.

Safety: nothing is unpickled with `weights_only=False` unless the caller opts in
(`allow_pickle=True`).
"""

from __future__ import annotations

import importlib
import json
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoints import corrupt, describe, detect_format, existing_file, sha256_file, state_from
from .errors import ChecksumMismatchError, ModelLoadError, RegressActionError
from .spec import CheckpointFormat, ModelSource

__all__ = [
    "WEIGHTS_ONLY_FORMATS",
    "ExportedModule",
    "detect_format",
    "load_model",
    "make_source",
    "save_checkpoint",
    "sha256_file",
]

WEIGHTS_ONLY_FORMATS: tuple[CheckpointFormat, ...] = ("safetensors", "state_dict")
_FACTORY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class ExportedModule(nn.Module):
    """A `torch.export` program as a module on which `.eval()` / `.train()` are harmless.

    The module `ExportedProgram.module()` returns raises NotImplementedError on `.eval()`
    (torch 2.13); its graph keeps the mode it was exported in (`save_checkpoint` exports in
    eval mode), so here `train(mode)` only records the flag.
    """

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.program(*args, **kwargs)

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self


def make_source(
    path: str | Path,
    *,
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    format: CheckpointFormat | None = None,
) -> ModelSource:
    """Describe a checkpoint for registration: its format, sha256 and (if needed) factory."""
    file = existing_file(Path(path))
    resolved: CheckpointFormat = format or detect_format(file)
    kwargs = dict(factory_kwargs or {})
    if resolved in WEIGHTS_ONLY_FORMATS and not factory:
        raise ModelLoadError(
            f"checkpoint {file} holds only weights ({resolved}); pass a factory "
            "'package.module:callable' that builds the model, e.g. regress_action.zoo:tiny_cnn"
        )
    if factory is not None:
        _split_factory(factory)
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        raise ModelLoadError(
            f"factory_kwargs {kwargs!r} for {file} are not JSON-serialisable; use plain values"
        ) from None
    return ModelSource(
        checkpoint=str(path),
        format=resolved,
        sha256=sha256_file(file),
        factory=factory,
        factory_kwargs=kwargs,
    )


def load_model(
    source: ModelSource,
    *,
    allow_pickle: bool = False,
    verify_checksum: bool = True,
    workdir: Path | None = None,
) -> nn.Module:
    """Load a registered checkpoint; returned in eval() mode on the CPU.

    A relative checkpoint path resolves against `workdir` (default: the working directory),
    which is also where a factory or a pickled model's classes are imported from.
    """
    root = (workdir or Path.cwd()).resolve()
    path = existing_file(root / source.checkpoint)
    if verify_checksum:
        _verify_checksum(path, source.sha256)
    if source.format == "pickle" and not allow_pickle:
        raise ModelLoadError(
            f"checkpoint {path} is a pickled whole model; loading it can run arbitrary code. "
            "Re-save it as safetensors or a state dict, or pass --allow-pickle if you trust it"
        )
    loaders: dict[CheckpointFormat, Callable[[Path, ModelSource, Path], nn.Module]] = {
        "safetensors": _load_safetensors,
        "state_dict": _load_state_dict,
        "torchscript": _load_torchscript,
        "export": _load_export,
        "pickle": _load_pickle,
    }
    module = loaders[source.format](path, source, root)
    return module.to("cpu").eval()


def save_checkpoint(
    module: nn.Module,
    path: Path,
    format: CheckpointFormat,
    example_input: torch.Tensor | None = None,
) -> None:
    """Save `module` in `format` (for the demo and tests).

    torchscript traces with `example_input` when given, else scripts; export needs
    `example_input` and makes every dimension dynamic where the model allows it (so other batch
    sizes and sequence lengths load and run). Both capture the module in eval mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "safetensors":
        # Own contiguous copies: safetensors refuses tensors that share storage (tied weights).
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(weights, str(path))
    elif format == "state_dict":
        torch.save(module.state_dict(), path)
    elif format == "pickle":
        torch.save(module, path)
    else:
        was_training = module.training
        module.eval()
        try:
            save = _save_torchscript if format == "torchscript" else _save_export
            save(module, path, example_input)
        finally:
            module.train(was_training)


# ---------------------------------------------------------------- loading


def _load_safetensors(path: Path, source: ModelSource, root: Path) -> nn.Module:
    with _reading(path):
        state = load_file(str(path), device="cpu")
    return _apply_state(_build(source, root), state, path, source)


def _load_state_dict(path: Path, source: ModelSource, root: Path) -> nn.Module:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"checkpoint {path} holds pickled Python objects, not just tensors; re-save "
            "model.state_dict(), or register it with format 'pickle' and --allow-pickle"
        ) from None
    except Exception as exc:
        raise corrupt(path, describe(exc)) from None
    return _apply_state(_build(source, root), state_from(loaded, path), path, source)


def _load_torchscript(path: Path, source: ModelSource, root: Path) -> nn.Module:
    with _reading(path), _quiet_jit():
        module: nn.Module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    return module


def _load_export(path: Path, source: ModelSource, root: Path) -> nn.Module:
    with _reading(path):
        program = torch.export.load(str(path))
    return ExportedModule(program.module())


def _load_pickle(path: Path, source: ModelSource, root: Path) -> nn.Module:
    with _importable_from(root), _reading(path):
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(loaded, nn.Module):
        raise ModelLoadError(
            f"checkpoint {path} unpickles to a {type(loaded).__name__}, not a torch.nn.Module; "
            "save the whole model with torch.save(model, path)"
        )
    return loaded


def _apply_state(
    module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, source: ModelSource
) -> nn.Module:
    expected = module.state_dict()
    problems = []
    if missing := [k for k in expected if k not in state]:
        problems.append(f"missing keys {_some(missing)}")
    if unexpected := [k for k in state if k not in expected]:
        problems.append(f"unexpected keys {_some(unexpected)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)} in the model"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if shapes:
        problems.append(f"shape mismatch {_some(shapes)}")
    if problems:
        raise ModelLoadError(
            f"checkpoint {path} does not fit factory {source.factory} "
            f"(kwargs {source.factory_kwargs}): {'; '.join(problems)}; "
            "use the factory and factory_kwargs the checkpoint was trained with"
        )
    module.load_state_dict(state, strict=True)
    return module


def _some(keys: list[str]) -> str:
    shown = ", ".join(keys[:3])
    return f"{shown} (+{len(keys) - 3} more)" if len(keys) > 3 else shown


# ---------------------------------------------------------------- factories


def _split_factory(factory: str) -> tuple[str, str]:
    if not _FACTORY_RE.match(factory):
        raise ModelLoadError(
            f"factory {factory!r} is not of the form 'package.module:callable'; "
            "e.g. regress_action.zoo:tiny_lm"
        )
    module_name, attribute = factory.split(":")
    return module_name, attribute


def _build(source: ModelSource, root: Path) -> nn.Module:
    """Import the source's factory (from `root`, the user's repository) and call it."""
    factory = source.factory
    if not factory:
        raise ModelLoadError(
            f"checkpoint {source.checkpoint} ({source.format}) needs a factory "
            "'package.module:callable'; register it again with a factory"
        )
    module_name, attribute = _split_factory(factory)
    with _importable_from(root):
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot import {module_name!r} for factory {factory!r} ({describe(exc)}); "
                f"make it importable from {root} (the repository root) or install it"
            ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(
                f"factory {factory!r}: {module_name} has no attribute {attribute!r}; "
                "check the name after the colon"
            )
        target = getattr(target, part)
    return _call_factory(target, factory, source.factory_kwargs)


def _call_factory(target: Any, factory: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        module = target(**kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"factory {factory!r} failed with kwargs {kwargs} ({describe(exc)}); "
            "check the factory and its factory_kwargs"
        ) from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"factory {factory!r} returned a {type(module).__name__}, not a torch.nn.Module; "
            "point it at a callable that builds the model"
        )
    return module


@contextmanager
def _importable_from(root: Path) -> Iterator[None]:
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


# ---------------------------------------------------------------- saving


def _save_torchscript(module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
    with _quiet_jit():
        if example_input is not None:
            compiled = torch.jit.trace(module, example_input)  # type: ignore[no-untyped-call]
        else:
            compiled = torch.jit.script(module)
        torch.jit.save(compiled, str(path))


def _save_export(module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
    if example_input is None:
        raise ValueError("saving in format 'export' needs an example_input")
    # Dim.AUTO: dynamic where the model allows (batch, sequence length), static otherwise.
    dims = {i: torch.export.Dim.AUTO for i in range(example_input.dim())}
    program = torch.export.export(module, (example_input,), dynamic_shapes=(dims,))
    torch.export.save(program, str(path))


@contextmanager
def _quiet_jit() -> Iterator[None]:
    # torch 2.13 deprecates torch.jit.*; TorchScript checkpoints are still a supported input,
    # and the warning is for code authors, not for the users of this tool.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+. is deprecated", DeprecationWarning)
        yield


# ---------------------------------------------------------------- errors


def _verify_checksum(path: Path, recorded: str) -> None:
    actual = sha256_file(path)
    if actual != recorded:
        raise ChecksumMismatchError(
            f"checkpoint {path} changed since it was registered (sha256 {recorded[:12]}… "
            f"recorded, {actual[:12]}… now); register it again with `regress-action runs add`"
        )


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Any failure while parsing the file becomes one line naming it, never a traceback."""
    try:
        yield
    except RegressActionError:
        raise
    except Exception as exc:
        raise corrupt(path, describe(exc)) from None
