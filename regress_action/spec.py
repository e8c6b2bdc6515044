"""Shared value types: what is evaluated (TaskSpec), on what (EvalConfig) and how it is judged
(VerdictConfig, MetricTolerance).

Imports only the standard library and pydantic (no torch, no numpy), so every layer may use it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Modality = Literal["text", "vision"]
TaskName = Literal["lm", "classification"]
SignificanceMode = Literal["report", "gate", "off"]
Status = Literal["improved", "neutral", "regressed", "new", "failed"]
OverallStatus = Literal["improved", "neutral", "regressed"]


class TaskSpec(BaseModel):
    """What the model does: the modality, the task and the sizes the task needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    modality: Modality
    task: TaskName
    num_classes: int | None = Field(default=None, ge=2)
    vocab_size: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _sizes_fit_task(self) -> Self:
        if self.task == "classification" and self.num_classes is None:
            raise ValueError("a classification task needs num_classes")
        if self.task == "lm":
            if self.vocab_size is None:
                raise ValueError("an lm task needs vocab_size")
            if self.modality != "text":
                raise ValueError("an lm task must have modality 'text'")
        return self


class EvalConfig(BaseModel):
    """The eval set and how to run over it.

    `dataset` is a built-in name (`lm_tiny`, `vision_tiny`), a path to a file or folder
    (JSONL, `.npz`, an image folder), or any `torch.utils.data.Dataset` of `(input, target)`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    dataset: Any
    dataset_name: str | None = None
    batch_size: int = Field(default=64, ge=1)
    max_examples: int | None = Field(default=None, ge=1)
    device: str = "auto"
    seed: int = 0
    bf16: bool = False
    progress: bool | None = None  # None: show a progress bar only on a TTY

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in {"auto", "cpu", "cuda"} or value.startswith("cuda:"):
            return value
        raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")

    def display_name(self) -> str:
        if self.dataset_name:
            return self.dataset_name
        if isinstance(self.dataset, str | Path):
            return str(self.dataset)
        return type(self.dataset).__name__


class MetricTolerance(BaseModel):
    """Per-metric tolerance: the larger of an absolute value and `rel` times |baseline|."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    abs: float | None = Field(default=None, ge=0)
    rel: float | None = Field(default=None, ge=0)

    def resolve(self, baseline: float, default_abs: float) -> float:
        absolute = default_abs if self.abs is None else self.abs
        relative = 0.0 if self.rel is None else self.rel * abs(baseline)
        return max(absolute, relative)


class VerdictConfig(BaseModel):
    """How deltas become statuses: threshold, tolerances, gated metrics and significance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(default=0.01, ge=0)
    tolerances: dict[str, MetricTolerance] = Field(default_factory=dict)
    metrics: tuple[str, ...] | None = None  # None: every metric of the task
    gate: tuple[str, ...] | None = None  # None: every reported metric is gated
    significance: SignificanceMode = "report"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    resamples: int = Field(default=2000, ge=100)
    seed: int = 0

    def tolerance_for(self, metric: str, baseline: float) -> float:
        spec = self.tolerances.get(metric)
        if spec is None:
            return self.threshold
        return spec.resolve(baseline, self.threshold)

    def is_gated(self, metric: str) -> bool:
        return self.gate is None or metric in self.gate


CheckpointFormat = Literal["safetensors", "state_dict", "export", "torchscript", "pickle"]


class ModelSource(BaseModel):
    """How to load a run's checkpoint.

    `safetensors` / `state_dict` need `factory` ("package.module:callable", importable from the
    working directory) and its JSON `factory_kwargs`; `export` (.pt2) and `torchscript` are
    self-contained; `pickle` (a whole pickled module) loads only with an explicit opt-in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: str
    format: CheckpointFormat
    sha256: str
    factory: str | None = None
    factory_kwargs: dict[str, Any] = Field(default_factory=dict)


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


def parse_tolerances(text: str) -> dict[str, MetricTolerance]:
    """Parse per-metric tolerances: "loss=0.02, perplexity=5%" (absolute, or % of |baseline|).

    Entries are separated by commas, semicolons or newlines; one metric may appear twice to set
    both ("loss=0.02, loss=1%": the larger of the two applies). Raises ValueError naming the entry.
    """
    merged: dict[str, dict[str, float]] = {}
    for raw in text.replace(";", ",").replace("\n", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, value = (part.strip() for part in entry.partition("="))
        if not sep or not name or not value:
            raise ValueError(f"tolerance {entry!r} is not of the form metric=0.02 or metric=5%")
        key = "rel" if value.endswith("%") else "abs"
        try:
            number = float(value.rstrip("%")) / (100.0 if key == "rel" else 1.0)
        except ValueError:
            raise ValueError(f"tolerance {entry!r} has no number after '='") from None
        if not number >= 0:
            raise ValueError(f"tolerance {entry!r} must be a number ≥ 0")
        merged.setdefault(name, {})[key] = number
    return {name: MetricTolerance(**values) for name, values in merged.items()}
