"""User options to configs: `VerdictConfig`, `TaskSpec` and the comparison and checkpoint
requests, built here and nowhere else.

The command line (an argparse Namespace) and the GitHub Action (`settings.ActionInputs`) name
each option with the same attribute (`threshold`, `tolerances`, `json_path`, `factory`, ...), so
one function serves both. Each front end passes `names`, which spells an attribute the way its
user wrote it, so an error names `--num-classes` on the command line and `input num-classes` in
a workflow.
Imports pydantic, `errors` and `spec`; `app`'s request types only when a request is built (no
torch, SQL or GitHub).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from .errors import ConfigError
from .spec import CheckpointFormat, DataOptions, Precision, TaskSpec, VerdictConfig

if TYPE_CHECKING:
    from .app import CheckpointRequest, CompareRequest
    from .evaluation import EvaluateRequest

# An attribute name -> how the user spells it ("--tolerance", "input metric-tolerances").
Names = Callable[[str], str]


class _Spelling(dict[str, str]):
    def __init__(self, names: Names) -> None:
        super().__init__()
        self._names = names

    def __missing__(self, attribute: str) -> str:
        return self._names(attribute)


class OptionError(ConfigError):
    """A bad option value whose message names options by attribute (`{num_classes}`); `named`
    spells them as the user wrote them."""

    def __init__(self, template: str) -> None:
        super().__init__(template.format_map(_Spelling(str)))
        self.template = template

    def named(self, names: Names) -> ConfigError:
        return ConfigError(self.template.format_map(_Spelling(names)))


def _escaped(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _validation_error(exc: ValidationError, fallback: str) -> OptionError:
    """The first error of `exc`, naming the option it is about (`fallback` for a rule that
    spans several fields)."""
    error = exc.errors()[0]
    message = _escaped(str(error["msg"]).removeprefix("Value error, "))
    loc = error.get("loc", ())
    where = "{" + str(loc[0]) + "}" if loc else fallback
    return OptionError(f"{where}: {message}")


class TaskOptions(Protocol):
    @property
    def task(self) -> str | None: ...
    @property
    def modality(self) -> str | None: ...
    @property
    def num_classes(self) -> int | None: ...
    @property
    def vocab_size(self) -> int | None: ...


class CompareOptions(Protocol):
    """The options of a comparison besides the verdict's (see `verdict_config`)."""

    @property
    def dataset(self) -> str | None: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def max_examples(self) -> int | None: ...
    @property
    def workers(self) -> int | None: ...
    @property
    def device(self) -> str: ...
    @property
    def precision(self) -> Precision: ...
    @property
    def report_name(self) -> str: ...
    @property
    def json_path(self) -> Path | None: ...
    @property
    def markdown_path(self) -> Path | None: ...
    @property
    def allow_pickle(self) -> bool: ...
    @property
    def trust_remote_code(self) -> bool: ...


class CheckpointOptions(Protocol):
    @property
    def factory(self) -> str | None: ...
    @property
    def factory_kwargs(self) -> dict[str, Any]: ...
    @property
    def allow_pickle(self) -> bool: ...
    @property
    def trust_remote_code(self) -> bool: ...


def task_spec(
    task: str,
    modality: str | None = None,
    num_classes: int | None = None,
    vocab_size: int | None = None,
) -> TaskSpec:
    """The TaskSpec of a task and the sizes given, by the task registry: the modality defaults
    to the task's first (lm: text, classification: vision, regression: tabular), a size to the
    task's default (an lm's vocab_size: 256, byte-level). Raises OptionError."""
    from .tasks import TASKS, get_task  # numpy: not on the path of `--help` and `runs list`

    try:
        found = get_task(task)
    except ValueError as exc:
        raise OptionError("{task}: " + _escaped(str(exc))) from None
    own = {size.name: size for size in found.sizes}
    given = {"num_classes": num_classes, "vocab_size": vocab_size}
    for name, value in given.items():
        if value is not None and name not in own:
            owners = [t.name for t in TASKS.values() if name in {s.name for s in t.sizes}]
            has = ", ".join("{" + size + "}" for size in own) or "no size option"
            raise OptionError(
                f"{{{name}}} is for {{task}} {' / '.join(owners)}; {{task}} {task} has {has}"
            )
    for size in found.sizes:
        if given[size.name] is None and size.default is None:
            raise OptionError(f"{{task}} {task} needs {{{size.name}}}")
    sizes = {
        name: given[name] if given[name] is not None else size.default for name, size in own.items()
    }
    try:
        return TaskSpec(modality=modality or found.modalities[0], task=task, **sizes)
    except ValidationError as exc:
        raise _validation_error(exc, f"{{task}} {_escaped(task)}") from None


def task_from(options: TaskOptions, names: Names) -> TaskSpec | None:
    """The task the options describe; None when no task is given (the Action's runs given by
    id carry their own)."""
    if options.task is None:
        return None
    try:
        return task_spec(options.task, options.modality, options.num_classes, options.vocab_size)
    except OptionError as exc:
        raise exc.named(names) from None


def verdict_config(options: object, names: Names) -> VerdictConfig:
    """The verdict settings of any object whose attributes carry VerdictConfig's field names
    (`threshold`, `tolerances`, `metrics`, `gate`, `significance`, `metrics_module`, ...); a
    field it lacks keeps its default (the Action has no `resamples` or `seed` input). A metrics
    module is imported and its metrics checked here, so a bad one fails before any work."""
    try:
        verdict = VerdictConfig.model_validate(options, from_attributes=True)
    except ValidationError as exc:
        raise _validation_error(exc, "the verdict options").named(names) from None
    if verdict.metrics_module is not None:
        from .tasks import MetricsModuleError, check_metrics_module

        try:
            check_metrics_module(verdict.metrics_module)
        except MetricsModuleError as exc:
            raise exc.named(names) from None
    return verdict


def data_options(options: object, names: Names) -> DataOptions:
    """How the eval set's examples become inputs (tokenizer, windows, image size and
    normalisation, dataset factory), from any object whose attributes carry DataOptions' field
    names; a field it lacks keeps its default."""
    try:
        return DataOptions.model_validate(options, from_attributes=True)
    except ValidationError as exc:
        raise _validation_error(exc, "the eval-set options").named(names) from None


def compare_request(
    options: CompareOptions,
    names: Names,
    *,
    baseline_run_id: int,
    candidate_run_id: int,
    commit: str | None,
    record: bool = True,
    config_source: str = "defaults",
) -> CompareRequest:
    """One comparison of two registered runs, as the options ask for it; `config_source` is
    the config file the options were read with (or "defaults"), recorded in the report."""
    from .app import CompareRequest

    check_precision(options, names)
    data = data_options(options, names)
    if not options.dataset and data.dataset_factory is None:
        raise OptionError("{dataset}: give an eval set, or {dataset_factory}").named(names)
    return CompareRequest(
        baseline_run_id=baseline_run_id,
        candidate_run_id=candidate_run_id,
        dataset=options.dataset or "",  # "": the dataset factory builds the eval set
        verdict=verdict_config(options, names),
        batch_size=options.batch_size,
        max_examples=options.max_examples,
        workers=options.workers,
        device=options.device,
        precision=options.precision,
        data=data,
        report_name=options.report_name,
        json_path=options.json_path,
        markdown_path=options.markdown_path,
        records_path=getattr(options, "records_path", None),
        config_source=config_source,
        commit=commit,
        allow_pickle=options.allow_pickle,
        trust_remote_code=options.trust_remote_code,
        record=record,
        cache=bool(getattr(options, "cache", True)),
    )


def evaluate_request(
    options: CompareOptions, names: Names, *, run_id: int, commit: str | None
) -> EvaluateRequest:
    """One evaluation of a registered run, as the options ask for it (`metrics`,
    `metrics_module` and `record` are read when the options have them)."""
    from .evaluation import EvaluateRequest

    check_precision(options, names)
    data = data_options(options, names)
    if not options.dataset and data.dataset_factory is None:
        raise OptionError("{dataset}: give an eval set, or {dataset_factory}").named(names)
    verdict = verdict_config(options, names)  # checks the metrics module
    return EvaluateRequest(
        run_id=run_id,
        dataset=options.dataset or "",
        metrics=verdict.metrics,
        metrics_module=verdict.metrics_module,
        bounds=dict(verdict.bounds),
        batch_size=options.batch_size,
        max_examples=options.max_examples,
        device=options.device,
        precision=options.precision,
        workers=options.workers,
        data=data,
        json_path=options.json_path,
        markdown_path=options.markdown_path,
        commit=commit,
        allow_pickle=options.allow_pickle,
        trust_remote_code=options.trust_remote_code,
        record=bool(getattr(options, "record", True)),
    )


def check_precision(options: CompareOptions, names: Names) -> None:
    """fp16 runs only on CUDA: with an explicit CPU device it fails before any work (the engine
    checks again once `auto` has picked a device)."""
    if options.precision == "fp16" and options.device == "cpu":
        raise OptionError(
            "{precision} fp16 needs a CUDA device, but {device} is cpu; "
            "use {precision} bf16 or fp32 on CPU"
        ).named(names)


def checkpoint_request(
    options: CheckpointOptions,
    *,
    checkpoint: str,
    task: TaskSpec,
    git_sha: str | None,
    name: str | None = None,
    format: CheckpointFormat | None = None,
    side: str | None = None,
) -> CheckpointRequest:
    """A checkpoint to register, loaded as the options say (`factory`, `factory_kwargs`,
    `allow_pickle`, `trust_remote_code`). With `side` ("baseline" / "candidate"), the side's
    own `{side}_factory` / `{side}_factory_kwargs` win over the shared ones, so a comparison
    can span an architecture change; a side factory without side kwargs gets none."""
    from .app import CheckpointRequest

    factory, kwargs = options.factory, dict(options.factory_kwargs)
    if side is not None:
        own_factory = getattr(options, f"{side}_factory", None)
        own_kwargs = getattr(options, f"{side}_factory_kwargs", None)
        if own_factory is not None:
            factory, kwargs = own_factory, {}
        if own_kwargs:
            kwargs = dict(own_kwargs)
    return CheckpointRequest(
        checkpoint=checkpoint,
        task=task,
        name=name,
        factory=factory,
        factory_kwargs=kwargs,
        format=format,
        git_sha=git_sha,
        allow_pickle=options.allow_pickle,
        trust_remote_code=options.trust_remote_code,
    )
