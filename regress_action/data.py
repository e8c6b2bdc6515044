"""Eval sets: loading one through the source registry (`sources`), and fingerprinting it.

Owns `EvalSet`, `load_eval_set` and the content fingerprint recorded with every comparison.
Imports torch and numpy; never SQLAlchemy, PyGithub or jinja2. What each source reads is
described in `sources`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, TensorDataset

from .errors import DataError
from .sources import ExampleRef, Fingerprint, source_for
from .spec import IGNORE_INDEX, DataOptions, TaskSpec
from .tasks import builtin_datasets


def _sources_hint() -> str:
    return (
        f"Built-in datasets: {', '.join(builtin_datasets())}; "
        "or pass a path to a .jsonl file, an .npz file or an image folder"
    )


@dataclass
class EvalSet:
    """A frozen eval set: exactly the examples evaluated, and the fingerprint of their content.

    For a source that decodes on read (an image folder) the fingerprint comes from the first
    pass over the examples: pass `observe` to the engine (`PassOptions.observe`), and read
    `fingerprint` after it (before, it costs a reading pass of its own).
    """

    name: str
    dataset: Dataset[Any]
    digest: Fingerprint
    n: int
    task: TaskSpec
    class_names: list[str] | None = None
    references: Callable[[int], ExampleRef] | None = None
    # Per-example data columns joined to both sides' records (`sources.Loaded.columns`: e.g. an
    # LM window's `bytes`), and the tokenizer of a text eval set.
    columns: dict[str, Any] | None = None
    tokenizer: Any = None

    def describe(self, index: int) -> ExampleRef:
        """Example `index` as the user knows it (its source's key; else its index)."""
        if self.references is None:
            return ExampleRef(f"#{index}")
        return self.references(index)

    @property
    def fingerprint(self) -> str:
        return self.digest.hexdigest()

    # Whether every target was checked when loaded (`check_targets`); else each batch is.
    targets_checked: bool = False
    # Whether the fingerprint was computed when loaded (not by the pass: a source that decodes
    # on read), so reading it before the pass costs nothing.
    fingerprint_known: bool = False

    def observe(self, batch: Any) -> None:
        """Check one collated batch of the pass (in dataset order) and feed it to the
        fingerprint."""
        if not self.targets_checked and isinstance(batch, tuple | list) and len(batch) == 2:
            check_targets(batch[1], self.task, self.name)
        self.digest.observe(batch)


def load_eval_set(
    source: str | Path | Dataset[Any] | None,
    *,
    task: TaskSpec | None = None,
    max_examples: int | None = None,
    name: str | None = None,
    options: DataOptions | None = None,
) -> EvalSet:
    """Load an eval set; keep its first `max_examples`; fingerprint exactly those.

    A built-in name wins over a file of the same name. `task` is required for a Dataset; for the
    other sources it may widen the known task (e.g. more classes than the labels show).
    `source` None: `options.dataset_factory` builds the Dataset (`dataset_from_factory`; its
    name is the factory's unless `name` is given).
    """
    if max_examples is not None and max_examples < 1:
        raise DataError(f"max_examples must be at least 1 (got {max_examples})")
    if source is None:
        if options is None or options.dataset_factory is None:
            raise DataError(
                "no eval set: pass a dataset (a built-in name, a path or a torch Dataset) or "
                "a dataset factory ('package.module:callable')"
            )
        source = dataset_from_factory(options.dataset_factory, options.dataset_kwargs)
        name = name or options.dataset_factory
    entry = source_for(source)
    if entry is None or entry.name not in ("dataset", "builtin"):
        path = _existing_path(source)  # type: ignore[arg-type]
        if entry is None:
            raise DataError(f"{path} is not a supported eval set; {_sources_hint()}")
    label = name or entry.label(source)
    if entry.name == "dataset" and task is None:
        raise DataError(
            f"dataset {label!r} is a torch Dataset, which does not say its task; "
            "pass task=TaskSpec(...) (modality, task and num_classes or vocab_size)"
        )
    loaded = entry.load(source, max_examples, options or DataOptions())
    where = label if entry.name == "dataset" else str(source)
    resolved = task if loaded.task is None else _reconcile(loaded.task, task, where)
    assert resolved is not None
    n = len(loaded.dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"eval set {label!r} has no examples; give it at least one")
    # A TensorDataset's targets are checked at once; any other dataset's batch by batch.
    tensors = getattr(loaded.dataset, "tensors", None)
    whole = isinstance(loaded.dataset, TensorDataset) and len(tensors or ()) == 2
    if whole:
        check_targets(loaded.dataset.tensors[1], resolved, label)  # type: ignore[attr-defined]
    if entry.decodes_on_read:
        digest = Fingerprint(lambda: entry.fingerprint(loaded.dataset, n), n)
    else:
        digest = Fingerprint.known(entry.fingerprint(loaded.dataset, n))
    return EvalSet(
        label,
        loaded.dataset,
        digest,
        n,
        resolved,
        loaded.class_names,
        loaded.describe,
        loaded.columns,
        loaded.tokenizer,
        targets_checked=whole,
        fingerprint_known=not entry.decodes_on_read,
    )


def check_targets(targets: Any, task: TaskSpec, where: str) -> None:
    """A DataError naming the eval set when its targets (each item's second element) cannot
    be a classification's labels (integers, one per example, in 0..num_classes-1) or an lm's
    next tokens (integers in 0..vocab_size-1, or IGNORE_INDEX for a position not scored).
    Other tasks' targets are left to their adapters."""
    import torch

    if not isinstance(targets, torch.Tensor) or task.task not in ("classification", "lm"):
        return
    labels = task.task == "classification"
    what = "labels" if labels else "targets"
    fix = (
        "classification labels are class ids: convert them with .long()"
        if labels
        else "an lm's targets are token ids: convert them with .long()"
    )
    if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
        dtype = str(targets.dtype).removeprefix("torch.")
        raise DataError(
            f"eval set {where!r}: the {what} (each item's second element) are {dtype}, not "
            f"integer ids; {fix}"
        )
    if labels and targets.ndim != 1:
        raise DataError(
            f"eval set {where!r}: the labels (each item's second element) have shape "
            f"{tuple(targets.shape)}; classification labels are one integer per example, "
            "shape (N,): flatten them (labels.view(-1))"
        )
    size = task.num_classes if labels else task.vocab_size
    if size is None or targets.numel() == 0:
        return
    bad = (targets < 0) | (targets >= size)
    if not labels:
        bad &= targets != IGNORE_INDEX
    if not bool(bad.any()):
        return
    value = int(targets[bad][0])
    if labels:
        raise DataError(
            f"eval set {where!r}: the labels hold label {value}, outside 0..{size - 1} for "
            f"num_classes={size}; fix the labels or the task's num_classes"
        )
    raise DataError(
        f"eval set {where!r}: the targets hold token id {value}, outside 0..{size - 1} for "
        f"vocab_size={size} (or {IGNORE_INDEX} for a position not scored); fix the targets "
        "or the task's vocab_size"
    )


def dataset_from_factory(factory: str, kwargs: dict[str, Any] | None = None) -> Dataset[Any]:
    """Call `factory` ("package.module:callable", imported from the working directory first,
    like model factories) with `kwargs`; its result must be a map-style torch Dataset (with
    `__len__`). Every failure is a one-line DataError naming the factory: a malformed spec, a
    module that does not import, a missing callable, an exception it raised (its first line),
    a result that is not a map-style Dataset.

    The result is an ordinary Dataset eval set (the `dataset` source): its fingerprint reads
    every example used once, unless it has a stable `fingerprint` (see `sources.UserDataset`).
    """
    from torch.utils.data import IterableDataset

    from .checkpoints import import_callable
    from .tasks.base import first_line

    build = import_callable(factory, Path.cwd(), DataError, "dataset factory")
    try:
        dataset = build(**(kwargs or {}))
    except Exception as exc:
        raise DataError(
            f"dataset factory {factory!r} raised {type(exc).__name__}: {first_line(exc)}; "
            "fix the factory or its dataset kwargs"
        ) from None
    if isinstance(dataset, IterableDataset) or not isinstance(dataset, Dataset):
        raise DataError(
            f"dataset factory {factory!r} returned a {type(dataset).__name__}, not a map-style "
            "torch Dataset (with __len__ and __getitem__); return one"
        )
    return dataset


def _existing_path(source: str | Path) -> Path:
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    looks_like_path = isinstance(source, Path) or "/" in text or "\\" in text or path.suffix
    if looks_like_path:
        raise DataError(
            f"eval set {text!r} not found (relative paths resolve against {Path.cwd()}); "
            "check the path"
        )
    raise _unknown_dataset(text)


def _unknown_dataset(text: str) -> DataError:
    close = difflib.get_close_matches(text, list(builtin_datasets()), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return DataError(f"unknown dataset {text!r}{hint} {_sources_hint()}")


# What a model of each modality takes, for the message of a modality mismatch.
_INPUTS = {
    "vision": "images (batch, channels, height, width)",
    "text": "token ids (batch, tokens)",
    "tabular": "feature vectors (batch, features)",
}


def _inputs(modality: str) -> str:
    return _INPUTS.get(modality, f"{modality} inputs")


def _reconcile(inferred: TaskSpec, given: TaskSpec | None, where: str) -> TaskSpec:
    """The caller's task when it is compatible with what the data shows, else a DataError."""
    if given is None:
        return inferred
    if given.modality != inferred.modality:
        raise DataError(
            f"{where} is a {inferred.modality} eval set ({inferred.task}: "
            f"{_inputs(inferred.modality)}), but the models are {given.modality} "
            f"{given.task} models, which take {_inputs(given.modality)}; compare them on a "
            f"{given.modality} eval set, or compare models made for {inferred.modality} "
            f"{inferred.task} (registered with that task and modality)"
        )
    if given.task != inferred.task:
        raise DataError(
            f"{where} holds a {inferred.modality}/{inferred.task} eval set but the task says "
            f"{given.modality}/{given.task}; fix the task or the dataset"
        )
    for field in ("num_classes", "vocab_size"):
        needed, offered = getattr(inferred, field), getattr(given, field)
        if needed is not None and offered is not None and offered < needed:
            raise DataError(
                f"{where} needs {field} >= {needed} but the task says {offered}; raise it"
            )
    return given
