"""Shared value types: what is evaluated (TaskSpec), on what (EvalConfig) and how it is judged
(VerdictConfig, MetricTolerance).

Imports only the standard library and pydantic at module level (no torch, no numpy), so every
layer may use it. `TaskSpec` validates itself against the task registry (`regress_action.tasks`),
imported when the first TaskSpec is checked.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

# The padding value of lm targets: positions that are not predicted (torch's cross_entropy
# ignores this index by default).
IGNORE_INDEX = -100

SignificanceMode = Literal["report", "gate", "margin", "off"]
# `failed_bound`: the candidate's value is outside the metric's floor / ceiling (`MetricBound`);
# it fails the job like a regression, whatever the baseline.
Status = Literal["improved", "neutral", "regressed", "new", "failed", "failed_bound"]
OverallStatus = Literal["improved", "neutral", "regressed"]
# The dtype every model forward runs in: fp32 as the model is, or under torch.autocast with
# bfloat16 / float16 (fp16 only on CUDA). Record columns are float64 either way.
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")


class TaskSpec(BaseModel):
    """What the model does: the task (a name in the task registry), the modality and the sizes
    the task needs (`num_classes` for classification, `vocab_size` for an lm)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    modality: str
    task: str
    num_classes: int | None = Field(default=None, ge=2)
    vocab_size: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _fits_task(self) -> Self:
        from .tasks import get_task  # the registry imports this module

        get_task(self.task).validate(self)
        return self


TokenDtype = Literal["uint16", "uint32", "int32", "int64"]


class DataOptions(BaseModel):
    """How an eval set's raw examples become model inputs: the sources (`regress_action.sources`)
    read these; each option applies to the sources it names and is ignored by the others.

    - `tokenizer` (text): `bytes` (UTF-8 bytes, vocab 256), a path to a `tokenizer.json`
      (Hugging Face `tokenizers`), or `model` (the tokenizer saved in the baseline's Hugging Face
      folder).
    - `context_length` / `stride` (lm): the sliding window over each document; None: the
      model's maximum positions when known, else 256, and half the context.
    - `token_dtype` (lm, a raw `.bin` of token ids): the dtype of the ids (`.npy` says its own).
    - `image_size` (images): (height, width) every image is resized to; None: as stored.
    - `normalize` (images): per-channel (mean, std) applied after scaling to [0, 1].
    - `dataset_factory` / `dataset_kwargs`: "package.module:callable" importable from the
      working directory, called with the kwargs, returning the eval set (a torch Dataset).
    - `slice_fn`: "package.module:callable" importable from the working directory, called as
      `fn(index, input, target)` on every example; its results (names) are the eval set's
      `slice` column (`regress_action.slices`). Slices do not change records, so the baseline
      cache key leaves it out.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokenizer: str = "bytes"
    context_length: int | None = Field(default=None, ge=2)
    stride: int | None = Field(default=None, ge=1)
    token_dtype: TokenDtype | None = None
    image_size: tuple[int, int] | None = None
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    dataset_factory: str | None = None
    dataset_kwargs: dict[str, Any] = Field(default_factory=dict)
    slice_fn: str | None = None

    @field_validator("image_size", mode="before")
    @classmethod
    def _image_size(cls, value: Any) -> Any:
        return parse_image_size(value) if isinstance(value, str | int) else value

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"{value} is not a size; give HEIGHT,WIDTH in pixels, e.g. 224,224")
        return value

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize(cls, value: Any) -> Any:
        return parse_normalize(value) if isinstance(value, str) else value

    @field_validator("normalize")
    @classmethod
    def _mean_std(
        cls, value: tuple[tuple[float, ...], tuple[float, ...]] | None
    ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        if value is None:
            return None
        mean, std = value
        if not mean or len(mean) != len(std):
            raise ValueError("mean and std need one value per channel, as many of each")
        if not all(math.isfinite(x) for x in (*mean, *std)) or min(std) <= 0:
            raise ValueError("mean must be finite and std positive")
        return value

    @field_validator("dataset_kwargs", mode="before")
    @classmethod
    def _kwargs(cls, value: Any) -> Any:
        return parse_json_object(value) if isinstance(value, str) else value

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give 'bytes', 'model' or the path to a tokenizer.json")
        return value

    @field_validator("dataset_factory")
    @classmethod
    def _factory(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError(
                f"{value!r} is not 'package.module:callable' (a function returning the Dataset)"
            )
        return value

    @field_validator("slice_fn")
    @classmethod
    def _slice_fn(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
            raise ValueError(
                f"{value!r} is not 'package.module:callable' (a function of (index, input, "
                "target) returning the example's slice name)"
            )
        return value

    @field_validator("stride")
    @classmethod
    def _within_context(cls, stride: int | None, info: ValidationInfo) -> int | None:
        context = info.data.get("context_length")
        if stride is not None and context is not None and stride > context:
            raise ValueError(
                f"{stride} is longer than the context length {context}: tokens between "
                "windows would never be scored; use a stride of at most the context length"
            )
        return stride

    def data_options(self) -> DataOptions:
        """These options alone (an `EvalConfig` holds more)."""
        return DataOptions(**{name: getattr(self, name) for name in DataOptions.model_fields})


class EvalConfig(DataOptions):
    """The eval set and how to run over it.

    `dataset` is a built-in name (see `regress_action.tasks.builtin_datasets`), a path to a file
    or folder (JSONL, `.npz`, an image folder), or any `torch.utils.data.Dataset` of
    `(input, target)`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", frozen=False)

    dataset: Any = None  # None: `dataset_factory` builds it
    dataset_name: str | None = None
    batch_size: int = Field(default=64, ge=1)
    max_examples: int | None = Field(default=None, ge=1)
    device: str = "auto"
    precision: Precision = "fp32"
    progress: bool | None = None  # None: show a progress bar only on a TTY
    # DataLoader worker processes reading a Dataset or an image folder (decoding in parallel);
    # None: min(4, CPUs - 1). Results are identical whatever the count.
    workers: int | None = Field(default=None, ge=0)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        return check_device(value)

    def display_name(self) -> str:
        if self.dataset_name:
            return self.dataset_name
        if isinstance(self.dataset, str | Path):
            return str(self.dataset)
        if self.dataset is None and self.dataset_factory:
            return self.dataset_factory
        return type(self.dataset).__name__


class MetricTolerance(BaseModel):
    """Per-metric tolerance: the larger of an absolute value and `rel` times |baseline|.

    A metric with its own tolerance does not fall back to the threshold: `rel` alone means
    exactly `rel·|baseline|` (the threshold applies only where neither part is set)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    abs: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    rel: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    def resolve(self, baseline: float, default_abs: float) -> float:
        """The tolerance at this baseline value. A relative-only tolerance on a baseline of 0
        has no scale to be relative to: the threshold applies there instead of a tolerance of
        0 (which would call any change a regression)."""
        if self.abs is None and self.rel is None:
            return default_abs
        if self.abs is None and baseline == 0:
            return default_abs
        absolute = 0.0 if self.abs is None else self.abs
        relative = 0.0 if self.rel is None else self.rel * abs(baseline)
        return max(absolute, relative)


class MetricBound(BaseModel):
    """An absolute floor (`min`) and / or ceiling (`max`) on the candidate's value of a metric,
    whatever the baseline: `accuracy>=0.9`, `ece<=0.05`. It is checked on the point value (no
    statistics); a value outside it is `failed_bound`, which fails the job like a regression."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("give a floor (min) or a ceiling (max)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"floor {self.min:g} is above ceiling {self.max:g}")
        return self

    def violation(self, value: float) -> str | None:
        """`"0.87 < floor 0.9"` when the finite `value` is outside the bound, else None."""
        if self.min is not None and value < self.min:
            return f"{value:.6g} < floor {self.min:.6g}"
        if self.max is not None and value > self.max:
            return f"{value:.6g} > ceiling {self.max:.6g}"
        return None

    def describe(self) -> str:
        """`≥ 0.9`, `≤ 0.05` or `in [0.9, 0.99]`."""
        if self.min is not None and self.max is not None:
            return f"in [{self.min:.6g}, {self.max:.6g}]"
        if self.min is not None:
            return f"≥ {self.min:.6g}"
        return f"≤ {self.max:.6g}"


# `gate` keywords: the task's primary metric(s), or every reported metric.
GATE_PRIMARY, GATE_ALL = "primary", "all"


class VerdictConfig(BaseModel):
    """How deltas become statuses: threshold, tolerances, gated metrics and significance.

    The defaults are the plain threshold rule (`significance="report"`: statistics shown, every
    reported metric gated on its tolerance alone). `significance="gate"` is the rule the Action
    and the CLI default to: a gated metric regresses only when its change is beyond the
    tolerance and significant, and `gate` then defaults to the task's primary metric (see
    docs/statistics.md for why).

    `gate`: metric names, or ("primary",) / ("all",); None: "primary" under `gate` and
    `margin`, "all" otherwise.

    `bounds`: absolute floors / ceilings on the candidate's values (`MetricBound`). A metric
    with a bound is gated by it even when it is not in `gate`: a value outside it fails the
    job; its change is judged (and gated) as `gate` says.

    `gate_slices`: the slices of the eval set (its `slice` key) whose verdicts fail the job:
    () none (reported only, the default), ("all",) every slice, else slice names.
    `min_slice_size`: a slice with fewer examples is reported but never gated.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(default=0.01, ge=0, allow_inf_nan=False)
    tolerances: dict[str, MetricTolerance] = Field(default_factory=dict)
    bounds: dict[str, MetricBound] = Field(default_factory=dict)
    metrics: tuple[str, ...] | None = None  # None: every metric of the task
    gate: tuple[str, ...] | None = None  # metric names or a keyword; None: see above
    significance: SignificanceMode = "report"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    resamples: int = Field(default=2000, ge=100, le=100_000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    # A module importable from the working directory whose `metrics(task) -> list[Metric]` adds
    # custom metrics (see `regress_action.tasks.custom`).
    metrics_module: str | None = None
    gate_slices: tuple[str, ...] = ()
    min_slice_size: int = Field(default=200, ge=1)

    @field_validator("metrics_module")
    @classmethod
    def _module_name(cls, value: str | None) -> str | None:
        return None if value is None else check_module_name(value)

    @field_validator("gate_slices")
    @classmethod
    def _slice_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(name.strip() for name in value if name.strip()))
        if names == ("none",):
            return ()
        if GATE_ALL in names and len(names) > 1:
            raise ValueError("gate_slices is 'all', 'none' or slice names, not a mix")
        return names

    def tolerance_for(self, metric: str, baseline: float) -> float:
        spec = self.tolerances.get(metric)
        if spec is None:
            return self.threshold
        return spec.resolve(baseline, self.threshold)

    def is_gated(self, metric: str) -> bool:
        """Whether `metric` gates, once `gate` names metrics (see `resolve_gate`)."""
        return self.gate is None or self.gate == (GATE_ALL,) or metric in self.gate

    def gate_keyword(self) -> str | None:
        """ "primary" / "all" when `gate` is (or defaults to) a keyword, else None."""
        if self.gate is None:
            return GATE_PRIMARY if self.significance in ("gate", "margin") else GATE_ALL
        if self.gate in ((GATE_PRIMARY,), (GATE_ALL,)):
            return self.gate[0]
        return None


# A name in the checkpoint-format registry (`formats.REGISTRY`), checked by ModelSource.
CheckpointFormat = str


class ModelSource(BaseModel):
    """How to load a run's checkpoint.

    `safetensors` / `state_dict` need `factory` ("package.module:callable", importable from the
    working directory) and its JSON `factory_kwargs`; `export` (.pt2) and `torchscript` are
    self-contained; `pickle` (a whole pickled module) loads only with an explicit opt-in; `hf`
    is a Hugging Face model folder (`checkpoint` names the folder, `sha256` hashes the manifest
    of all its files). A self-contained format has no factory.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: str
    format: CheckpointFormat
    sha256: str
    factory: str | None = None
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format")
    @classmethod
    def _registered_format(cls, value: str) -> str:
        from .formats import REGISTRY  # lazy: the registry is not needed to import spec

        if value not in REGISTRY.names():
            raise ValueError(
                f"unknown checkpoint format {value!r}; use one of {', '.join(REGISTRY.names())}"
            )
        return value


class RunCreate(BaseModel):
    """A run to register in the ExperimentDB."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    task: TaskSpec
    source: ModelSource
    git_sha: str | None = None


class RunRecord(RunCreate):
    """A registered run, as read back from the ExperimentDB."""

    id: int
    created_at: datetime


def parse_tolerances(value: str) -> dict[str, MetricTolerance]:
    """Per-metric tolerances, as `metric=SPEC` items or a JSON object.

    SPEC is an absolute number (`loss=0.02`), a percentage of |baseline| (`perplexity=5%`), or
    both separated by `|` (`loss=0.02|5%`: the larger applies). Items are separated by commas,
    semicolons or newlines; a metric named twice merges its parts (`loss=0.02, loss=1%`).
    JSON: `{"loss": 0.02, "perplexity": "5%", "ece": {"abs": 0.01}}`.
    Raises ValueError naming the item.
    """
    text = value.strip()
    if text.startswith("{"):
        raw = _json_object(text, "metric -> tolerance")
        return {str(k): _tolerance(str(k), v) for k, v in raw.items()}
    parts: dict[str, dict[str, float]] = {}
    for item in re.split(r"[,;\n]", text):
        item = item.strip()
        if not item:
            continue
        metric, sep, spec = (piece.strip() for piece in item.partition("="))
        if not sep or not metric or not spec:
            raise ValueError(f"{item!r} is not metric=value (e.g. loss=0.02 or perplexity=5%)")
        merged = parts.setdefault(metric, {})
        for key, number in _tolerance(metric, spec).model_dump(exclude_none=True).items():
            if key in merged:
                kind = "a relative (%)" if key == "rel" else "an absolute"
                raise ValueError(f"{metric} is given {kind} tolerance twice; keep one")
            merged[key] = number
    return {metric: MetricTolerance(**values) for metric, values in parts.items()}


def _json_object(text: str, shape: str) -> dict[str, Any]:
    """A per-metric option given as JSON: an object, else a ValueError saying what it must be."""
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"the JSON must be an object of {shape}")
    return raw


def _tolerance(metric: str, spec: Any) -> MetricTolerance:
    if isinstance(spec, dict) or (isinstance(spec, int | float) and not isinstance(spec, bool)):
        try:
            if isinstance(spec, dict):
                return MetricTolerance.model_validate(spec)
            return MetricTolerance(abs=float(spec))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ValueError(
                f"{metric}: {where + ' ' if where else ''}{error['msg'].lower()} "
                '(e.g. {"abs": 0.02} or {"rel": 0.05})'
            ) from None
    parts: dict[str, float] = {}
    for token in str(spec).split("|"):
        token = token.strip()
        key = "rel" if token.endswith("%") else "abs"
        try:
            number = float(token.removesuffix("%"))
        except ValueError:
            raise ValueError(
                f"{metric}: {token!r} is neither a number (0.02) nor a percentage (5%)"
            ) from None
        if not number >= 0 or not math.isfinite(number) or key in parts:
            raise ValueError(
                f"{metric}: give at most one absolute and one % value, both finite numbers ≥ 0"
            )
        parts[key] = number / 100 if key == "rel" else number
    return MetricTolerance(**parts)


_BOUND_ITEM = re.compile(r"(?P<metric>[^<>=]+?)\s*(?P<op>>=|<=|≥|≤)\s*(?P<value>[^<>=]+)")


def parse_bounds(value: str) -> dict[str, MetricBound]:
    """Per-metric floors and ceilings, as `metric>=VALUE` / `metric<=VALUE` items or a JSON
    object.

    Items are separated by commas, semicolons or newlines; a metric given a floor and a
    ceiling (`accuracy>=0.9, accuracy<=0.99`) is bounded on both sides.
    JSON: `{"accuracy": {"min": 0.9}, "ece": {"max": 0.05}}`. Raises ValueError naming the item.
    """
    text = value.strip()
    if text.startswith("{"):
        raw = _json_object(text, 'metric -> {"min": .., "max": ..}')
        return {str(k): _bound(str(k), v) for k, v in raw.items()}
    parts: dict[str, dict[str, float]] = {}
    for item in re.split(r"[,;\n]", text):
        item = item.strip()
        if not item:
            continue
        match = _BOUND_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"{item!r} is not metric>=value or metric<=value (e.g. accuracy>=0.9)")
        metric, op, number = match["metric"].strip(), match["op"], match["value"].strip()
        try:
            parsed = float(number)
        except ValueError:
            raise ValueError(f"{metric}: {number!r} is not a number") from None
        if not math.isfinite(parsed):
            raise ValueError(f"{metric}: {number!r} is not a finite number")
        key = "min" if op in (">=", "≥") else "max"
        merged = parts.setdefault(metric, {})
        if key in merged:
            kind = "a floor (>=)" if key == "min" else "a ceiling (<=)"
            raise ValueError(f"{metric} is given {kind} twice; keep one")
        merged[key] = parsed
    return {metric: _bound(metric, values) for metric, values in parts.items()}


def _bound(metric: str, spec: Any) -> MetricBound:
    if isinstance(spec, MetricBound):
        return spec
    if not isinstance(spec, dict):
        raise ValueError(f'{metric}: give {{"min": ..}} and / or {{"max": ..}}, not {spec!r}')
    try:
        return MetricBound.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ValueError(
            f"{metric}: {where + ' ' if where else ''}{message[:1].lower() + message[1:]} "
            '(e.g. {"min": 0.9} or {"max": 0.05})'
        ) from None


_REPORT_NAME = re.compile(r"[A-Za-z0-9_.:/()+@ -]{1,100}")


def check_report_name(value: str) -> str:
    """A report name is safe inside the comment's HTML marker `<!-- regress-action:NAME -->`:
    "--" or ">" would end the HTML comment early. Raises ValueError."""
    value = value.strip()
    if not _REPORT_NAME.fullmatch(value) or "--" in value:
        raise ValueError(
            f"report name {value!r}: use 1-100 letters, digits, spaces or _ . : / ( ) + @ - "
            "(no '--')"
        )
    return value


_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def check_module_name(value: str) -> str:
    """A dotted module name (`pkg.metrics`), not a file path. Raises ValueError."""
    value = value.strip()
    if _MODULE_NAME.fullmatch(value):
        return value
    dotted = re.sub(r"\.py$", "", value.strip("./")).replace("/", ".").replace("\\", ".")
    example = f"{dotted} for {value}" if _MODULE_NAME.fullmatch(dotted) else "e.g. ci.metrics"
    raise ValueError(
        f"{value!r} is not a module name; give the dotted name importable from the repository "
        f"root ({example})"
    )


def check_device(value: str) -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N`. Raises ValueError."""
    value = value.strip().lower()
    if value in {"auto", "cpu", "cuda"} or re.fullmatch(r"cuda:\d+", value):
        return value
    raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")


# The ImageNet statistics most pretrained vision models are normalised with.
IMAGENET_NORMALIZE = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def parse_image_size(value: str | int) -> tuple[int, int]:
    """`224` or `224,160` (height, width) -> (height, width)."""
    parts = [p.strip() for p in re.split(r"[,x×]", str(value).strip()) if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2):
        raise ValueError(f"{value!r} is not a size; give SIZE or HEIGHT,WIDTH, e.g. 224 or 224,160")
    return (sizes[0], sizes[-1])


def parse_normalize(value: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`imagenet`, or JSON `{"mean": [...], "std": [...]}` -> (mean, std)."""
    text = value.strip()
    if text.lower() == "imagenet":
        return IMAGENET_NORMALIZE
    hint = 'give imagenet or JSON {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}'
    try:
        parsed = json.loads(text)
        mean = tuple(float(x) for x in parsed["mean"])
        std = tuple(float(x) for x in parsed["std"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(f"{value!r} is not a normalisation; {hint}") from None
    if set(parsed) != {"mean", "std"}:
        raise ValueError(f"{value!r} has keys besides mean and std; {hint}")
    return (mean, std)


def parse_json_object(value: str) -> dict[str, Any]:
    """A JSON object's text -> the dict (kwargs of a factory)."""
    try:
        parsed = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(parsed, dict):
        raise ValueError('must be a JSON object such as {"hidden": 64}')
    return parsed
