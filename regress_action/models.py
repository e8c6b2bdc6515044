"""Models: registering a checkpoint (format, sha256, factory) and loading it safely.

Owns `make_source`, `load_model`, `save_checkpoint`, `ExportedModule` and the factory import
(building the model a weights-only format loads into). What each format is, how it is detected,
loaded, saved and fingerprinted belongs to its entry in `formats`; `detect_format` and
`sha256_file` are re-exported here. Torch layer: imports torch; never SQLAlchemy, PyGithub or
jinja2, nor the app, cli, store or render modules.

Safety: nothing is unpickled with `weights_only=False` unless the caller opts in
(`allow_pickle=True`).
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoints import describe, existing_file, importable_from, sha256_file
from .errors import ChecksumMismatchError, ModelLoadError
from .formats import REGISTRY, FormatEntry, LoadContext
from .spec import CheckpointFormat, ModelSource

__all__ = [
    "ExportedModule",
    "detect_format",
    "load_model",
    "make_source",
    "save_checkpoint",
    "sha256_file",
]

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


def detect_format(path: Path) -> CheckpointFormat:
    """The checkpoint's format, from its content (not its name), without running its code."""
    return REGISTRY.detect(Path(path)).name


def make_source(
    path: str | Path,
    *,
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    format: CheckpointFormat | None = None,
) -> ModelSource:
    """Describe a checkpoint for registration: its format, sha256 and (if needed) factory."""
    file = existing_file(Path(path))
    entry = REGISTRY.get(format) if format else REGISTRY.detect(file)
    kwargs = dict(factory_kwargs or {})
    entry.validate(file, factory)
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
        format=entry.name,
        sha256=entry.fingerprint(file),
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
    entry = REGISTRY.get(source.format)
    if verify_checksum:
        _verify_checksum(path, source.sha256, entry)
    entry.check_allowed(path, allow_pickle=allow_pickle)
    with_weights = functools.partial(_with_weights, source=source, root=root, path=path)
    module = entry.load(path, LoadContext(root=root, with_weights=with_weights))
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
    REGISTRY.get(format).save(module, path, example_input)


# ---------------------------------------------------------------- weights into a factory model


def _with_weights(
    state: Mapping[str, torch.Tensor], *, source: ModelSource, root: Path, path: Path
) -> nn.Module:
    return _apply_state(_build(source, root), state, path, source)


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
    with importable_from(root):
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


# ---------------------------------------------------------------- errors


def _verify_checksum(path: Path, recorded: str, entry: FormatEntry) -> None:
    actual = entry.fingerprint(path)
    if actual != recorded:
        raise ChecksumMismatchError(
            f"checkpoint {path} changed since it was registered (sha256 {recorded[:12]}… "
            f"recorded, {actual[:12]}… now); register it again with `regress-action runs add`"
        )
