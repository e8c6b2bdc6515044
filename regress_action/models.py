"""Models: registering a checkpoint (format, sha256, factory) and loading it safely.

Owns `make_source`, `load_model`, `check_fits_task`, `save_checkpoint`, `ExportedModule` and the
factory import (building the model a weights-only format loads into). A checkpoint is a file, or
a folder for a format that is one (`hf`: a Hugging Face model folder). What each format is, how
it is detected, loaded, saved and fingerprinted belongs to its entry in `formats`;
`detect_format` and `sha256_file` are re-exported here. Torch layer: imports torch; never
SQLAlchemy, PyGithub or jinja2, nor the app, cli, store or render modules.

Safety: nothing is unpickled with `weights_only=False` unless the caller opts in
(`allow_pickle=True`), and no code shipped in a model folder runs unless the caller opts in
(`trust_remote_code=True`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import hf
from .checkpoints import (
    check_callable_spec,
    describe,
    existing_file,
    existing_path,
    import_callable,
    sha256_file,
)
from .errors import ChecksumMismatchError, ModelLoadError, ModelOutputError
from .formats import REGISTRY, FormatEntry, LoadContext
from .spec import CheckpointFormat, ModelSource, TaskSpec

__all__ = [
    "ExportedModule",
    "check_fits_task",
    "detect_format",
    "load_model",
    "make_source",
    "save_checkpoint",
    "sha256_file",
]

# The dummy batch an lm is run on at registration: (batch, seq) token ids, all 0.
_DUMMY_TOKENS = (1, 8)


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
    return REGISTRY.detect(_existing(Path(path), None)).name


def make_source(
    path: str | Path,
    *,
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    format: CheckpointFormat | None = None,
) -> ModelSource:
    """Describe a checkpoint for registration: its format, sha256 and (if needed) factory.

    A self-contained format (export, torchscript, pickle, hf) records no factory: one given
    anyway is dropped with its kwargs, so registering the same checkpoint with or without it
    describes the same source. A folder is hashed file by file (see `hf.fingerprint`).
    """
    file = _existing(Path(path), format)
    entry = REGISTRY.get(format) if format else REGISTRY.detect(file)
    entry.check_path(file)
    if not entry.needs_factory:
        factory, factory_kwargs = None, None  # never used to load it: not part of the run
    kwargs = dict(factory_kwargs or {})
    entry.validate(file, factory)
    if factory is not None:
        check_callable_spec(factory, ModelLoadError, "factory")
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
    trust_remote_code: bool = False,
    verify_checksum: bool = True,
    workdir: Path | None = None,
    task: TaskSpec | None = None,
) -> nn.Module:
    """Load a registered checkpoint; returned in eval() mode on the CPU.

    A relative checkpoint path resolves against `workdir` (default: the working directory),
    which is also where a factory or a pickled model's classes are imported from. `task` (the
    run's) picks the model class of a Hugging Face folder (causal LM, image or sequence
    classification); without it the class its config.json names. The checksum check reads the
    whole checkpoint once (every file of a folder).
    """
    root = (workdir or Path.cwd()).resolve()
    entry = REGISTRY.get(source.format)
    path = entry.check_path(existing_path(root / source.checkpoint))
    if verify_checksum:
        _verify_checksum(path, source.sha256, entry)
    entry.check_allowed(path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    with_weights = functools.partial(_with_weights, source=source, root=root, path=path)
    context = LoadContext(
        root=root,
        with_weights=with_weights,
        task=task,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    module = entry.load(path, context)
    return module.to("cpu").eval()


def check_fits_task(module: nn.Module, task: TaskSpec, source: ModelSource) -> None:
    """Refuse at registration a model whose output cannot fit the task, so a wrong size fails at
    `runs add`, not in the middle of a comparison (a ModelOutputError naming both sizes).

    - A format that declares its sizes (a Hugging Face folder's config: `vocab_size`,
      `num_labels`) is checked from them, without running the model.
    - Otherwise an `lm` runs once on a (1, 8) batch of token 0 and its logits' last dimension
      must be the task's vocab_size; a model that does not run on that batch (a fixed input
      length) is left to the comparison, which checks every batch.
    - Otherwise classification and regression models are not checked: what they take (an
      image size, a feature count) is unknown without the data, and the comparison checks the
      output of the first batch.
    """
    expected = {"lm": task.vocab_size, "classification": task.num_classes}.get(task.task)
    if task.task == "regression":
        expected = 1
    if expected is None:
        return
    found = REGISTRY.get(source.format).output_size(module, task)
    if found is None and task.task == "lm":
        found = _lm_output_size(module)
    if found is None or found == expected:
        return
    where = f"checkpoint {source.checkpoint}"
    if task.task == "lm":
        raise ModelOutputError(
            f"{where} predicts {found} tokens but the task has vocab_size {expected}; pass "
            f"--vocab-size {found} if that is the model's vocabulary, or register the model "
            f"made for {expected} tokens"
        )
    if task.task == "regression":
        raise ModelOutputError(
            f"{where} has {found} outputs (num_labels) but a regression model predicts one "
            "value per example; save it with num_labels=1, or register it for classification"
        )
    raise ModelOutputError(
        f"{where} has {found} output classes but the task has num_classes {expected}; pass "
        f"--num-classes {found} if the model has that many classes, or register the model "
        f"made for {expected} classes"
    )


def _lm_output_size(module: nn.Module) -> int | None:
    from .tasks.base import logits_of

    tokens = torch.zeros(_DUMMY_TOKENS, dtype=torch.long)
    try:
        with torch.inference_mode():
            logits = logits_of(module(tokens), "registered")
    except Exception:  # inputs the model does not take; the comparison checks real batches
        return None
    return int(logits.shape[-1]) if logits.ndim == 3 else None


def save_checkpoint(
    module: nn.Module,
    path: Path,
    format: CheckpointFormat,
    example_input: torch.Tensor | None = None,
) -> None:
    """Save `module` in `format` (for the demo and tests).

    torchscript traces with `example_input` when given, else scripts; export needs
    `example_input` and makes every dimension dynamic where the model allows it (so other batch
    sizes and sequence lengths load and run). Both capture the module in eval mode. hf writes a
    transformers model into the folder `path` with `save_pretrained` (safetensors).
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


def _build(source: ModelSource, root: Path) -> nn.Module:
    """Import the source's factory (from `root`, the user's repository) and call it."""
    factory = source.factory
    if not factory:
        raise ModelLoadError(
            f"checkpoint {source.checkpoint} ({source.format}) needs a factory "
            "'package.module:callable'; register it again with a factory"
        )
    target = import_callable(factory, root, ModelLoadError, "factory")
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


def _existing(path: Path, format: CheckpointFormat | None) -> Path:
    """The path, if a file or folder is there; a missing one that looks like a Hugging Face Hub
    id (`gpt2`, `org/name`) is answered with how to download it."""
    if path.exists():
        return path
    if format in (None, "hf") and (refusal := hf.hub_id_refusal(str(path))):
        raise ModelLoadError(refusal)
    return existing_file(path)


def _verify_checksum(path: Path, recorded: str, entry: FormatEntry) -> None:
    actual = entry.fingerprint(path)
    if actual != recorded:
        raise ChecksumMismatchError(
            f"checkpoint {path} changed since it was registered (sha256 {recorded[:12]}… "
            f"recorded, {actual[:12]}… now); register it again with `regress-action runs add`"
        )
