"""The report model: one pydantic object that is the JSON artifact, the `compare_models` dict,
the DB's stored report and the input of the Markdown template.

Imports pydantic and `spec` only (no torch, no SQL, no GitHub). Values keep full precision;
rounding happens in the template. Non-finite values serialise as the strings "NaN"/"Infinity".
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from .errors import ConfigError
from .spec import (
    MetricBound,
    OverallStatus,
    Precision,
    SignificanceMode,
    Status,
    TaskSpec,
    VerdictConfig,
    check_report_name,
)

REPORT_SCHEMA_VERSION = 1
# The flipped examples (and largest loss increases) a report lists, largest change first; the
# per-example records file (`--records-path`) has them all.
TOP_EXAMPLES = 100
FlipKind = Literal["newly_wrong", "newly_right", "loss_increases"]

# A float that may be NaN or ±inf: JSON has no such numbers, so the artifact carries them as
# the strings "NaN", "Infinity", "-Infinity" (ser_json_inf_nan="strings"); the published
# schema says so.
Real = Annotated[
    float,
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]},
        mode="serialization",
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class MetricResult(_Model):
    """One metric compared: values, delta, status, and (when computed) paired statistics."""

    name: str
    higher_is_better: bool
    kind: Literal["binary", "mean", "ratio", "corpus"]
    baseline: Real | None
    candidate: Real | None
    delta: Real | None
    rel_delta: Real | None
    tolerance: Real
    status: Status
    gated: bool = True
    reason: str = ""
    # The floor / ceiling on the candidate's value this verdict checked (`failed_bound` when
    # outside it); None: the metric has no bound.
    bound: MetricBound | None = None
    # Paired statistics (absent when significance is "off").
    ci_low: Real | None = None
    ci_high: Real | None = None
    p_value: Real | None = None
    p_adjusted: Real | None = None
    # The paired test that produced the p-value (stats / metrics.TestName).
    test: (
        Literal[
            "mcnemar_exact", "paired_t", "paired_bootstrap_t", "paired_permutation",
            "paired_bootstrap_log_ratio",
            "paired_bootstrap",
        ]
        | None
    ) = None  # fmt: skip
    n: int | None = None
    n_fixed: int | None = None
    n_broken: int | None = None
    significant: bool | None = None
    # The interval's confidence level: 1 - α/m for a metric of the gated family of m tests
    # (Bonferroni), 1 - α otherwise, so the interval excludes 0 exactly when the shown p < α.
    ci_level: Real | None = None
    se: Real | None = None  # standard error of Δ
    # Minimum detectable effect: the smallest true |Δ| the test finds with 80 % power at this
    # n and level; `underpowered` when it exceeds the tolerance (a gated metric only).
    mde: Real | None = None
    underpowered: bool = False
    clusters: int | None = None  # resampled clusters (e.g. documents), when examples share one


class RunInfo(_Model):
    """Which model a side of the comparison was."""

    run_id: int | None = None
    name: str | None = None
    checkpoint: str | None = None
    sha256: str | None = None
    format: str | None = None
    git_sha: str | None = None
    # The commit the checkpoint's bytes were read from (the Action's baseline-checkpoint-ref),
    # not the pull request's checkout; None: read from the working tree.
    checkpoint_ref: str | None = None


class BaselineSource(_Model):
    """Where a comparison's baseline records came from when they were not computed by this
    comparison's pass: a stored evaluation with the same cache key (`evaluation.cache_key`)."""

    evaluation_id: int
    created_at: datetime
    device: str | None = None
    precision: Precision = "fp32"


class DatasetInfo(_Model):
    name: str
    fingerprint: str
    n: int
    class_names: list[str] | None = None
    # A text eval set's tokenizer (`bytes`, a tokenizer.json, a model folder; both sides' when
    # they differ) and what the reader must know about how the data was read.
    tokenizer: str | None = None
    note: str | None = None


class StatsInfo(_Model):
    """How the statistics were computed, so a result can be reproduced."""

    significance: SignificanceMode = "report"
    alpha: Real = 0.05
    confidence: Real = 0.95  # the level of an interval outside the gated family: 1 - α
    resamples: int = 2000
    seed: int = 0
    # The gated family's correction: Bonferroni over `family_size` hypotheses (a metric in it
    # is judged at α / family_size, its interval at 1 - α / family_size).
    correction: Literal["bonferroni"] = "bonferroni"
    family_size: int = 1


class FlipExample(_Model):
    example_id: int
    # Where the example is in the user's data (a file path, `line 12`, `row 7`, the dataset's
    # own id) and, for text, the text around it; both None when the source knows neither.
    key: str | None = None
    text: str | None = None
    label: int | None = None
    baseline_prediction: int | None = None
    candidate_prediction: int | None = None
    baseline_loss: Real | None = None
    candidate_loss: Real | None = None
    loss_delta: Real | None = None


class Flips(_Model):
    """Examples whose outcome changed: classification flips, or lm loss increases.

    Each list keeps the `TOP_EXAMPLES` largest changes (the per-example records file has every
    example); the counts say how many there are in all. A report written before the lists were
    bounded has no counts: its lists are complete."""

    newly_wrong: list[FlipExample] = Field(default_factory=list)
    newly_right: list[FlipExample] = Field(default_factory=list)
    loss_increases: list[FlipExample] = Field(default_factory=list)
    newly_wrong_count: int | None = Field(default=None, ge=0)
    newly_right_count: int | None = Field(default=None, ge=0)
    loss_increases_count: int | None = Field(default=None, ge=0)

    def count(self, kind: FlipKind) -> int:
        """How many examples of `kind` there are, listed or not."""
        total: int | None = getattr(self, f"{kind}_count")
        return len(getattr(self, kind)) if total is None else max(total, len(getattr(self, kind)))


class ClassRow(_Model):
    label: int
    name: str | None = None
    n: int
    baseline_accuracy: Real
    candidate_accuracy: Real
    delta: Real


class TrendPoint(_Model):
    comparison_id: int
    created_at: datetime
    status: str
    commit: str | None = None
    fingerprint: str | None = None  # of the eval set: a changed set must not pass as a trend
    metrics: dict[str, Real | None] = Field(default_factory=dict)


class ConfigInfo(_Model):
    """The verdict configuration a comparison was judged under, and where it came from: the
    config file read (`.regress-action.yml`, as its path was given) or "defaults" (flags and
    inputs alone)."""

    source: str = "defaults"
    verdict: VerdictConfig


class SliceResult(_Model):
    """One slice of the eval set (the examples sharing a `slice` key) judged on its own from the
    same paired records: every metric's values, change, statistics and bound, its status, and
    whether it gates the job (`why_not`: why not, when it does not)."""

    name: str
    n: int
    status: OverallStatus
    gated: bool = False
    why_not: str | None = None
    # m of the slices' Bonferroni family: gated slices × gated hypotheses (1 when not gated).
    family_size: int = 1
    metrics: dict[str, MetricResult]


class Report(_Model):
    schema_version: int = REPORT_SCHEMA_VERSION
    tool_version: str = ""
    report_name: str = "default"
    status: OverallStatus
    regressed_metrics: list[str] = Field(default_factory=list)
    notes: str = ""
    comparison_id: int | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    task: TaskSpec
    dataset: DatasetInfo
    baseline: RunInfo = Field(default_factory=RunInfo)
    candidate: RunInfo = Field(default_factory=RunInfo)
    threshold: Real = 0.01
    stats: StatsInfo = Field(default_factory=StatsInfo)
    metrics: dict[str, MetricResult]
    flips: Flips | None = None
    per_class: list[ClassRow] | None = None
    trend: list[TrendPoint] = Field(default_factory=list)
    commit: str | None = None
    device: str | None = None
    world_size: int = 1  # processes that evaluated shards of the eval set (torchrun)
    # The forward passes' dtype (fp32, or bf16 / fp16 under autocast); reports written before
    # the option existed ran in fp32.
    precision: Precision = "fp32"
    duration_s: Real | None = None
    # The verdict configuration and its source (a config file or the defaults); None in
    # reports written before it was recorded, and in those of `compare_models`.
    config: ConfigInfo | None = None
    # The stored evaluation the baseline's records were read from; None: evaluated here.
    baseline_source: BaselineSource | None = None
    # Each slice of the eval set judged on its own; empty when the data has no slice key.
    slices: list[SliceResult] = Field(default_factory=list)

    @field_validator("report_name")
    @classmethod
    def _marker_safe(cls, value: str) -> str:
        # The name ends up inside the sticky comment's HTML marker; a report artifact may come
        # from an untrusted fork workflow, so it is checked wherever a report is built or read.
        return check_report_name(value)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of str / int / float / bool / None / list / dict (what `compare_models`
        returns): times as ISO strings, non-finite values as float NaN / inf, so numbers stay
        numbers for the caller."""
        result: dict[str, Any] = _plain(self.model_dump(mode="python"))
        return result

    @classmethod
    def load(cls, path: Path, max_bytes: int | None = None) -> Report:
        """Read a JSON artifact; a missing, invalid or (with `max_bytes`) oversized file, or one
        of another schema version, is a one-line ConfigError."""
        try:
            if max_bytes is not None and path.stat().st_size > max_bytes:
                raise ConfigError(
                    f"report {str(path)!r} is {path.stat().st_size:,} bytes, more than the "
                    f"{max_bytes:,} a report artifact may have; pass the JSON written by "
                    "`regress-action compare --json-out`"
                )
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read report {str(path)!r}: {exc.strerror or exc}; "
                "pass the JSON written by `regress-action compare --json-out`"
            ) from None
        try:
            report = cls.model_validate_json(text)
        except ValueError as exc:
            raise ConfigError(
                f"report {str(path)!r} is not a regress-action JSON report: {_problems(exc)}"
            ) from None
        if report.schema_version != REPORT_SCHEMA_VERSION:
            raise ConfigError(
                f"report {str(path)!r} has schema_version {report.schema_version}, but this "
                f"regress-action reads version {REPORT_SCHEMA_VERSION}; publish it with the "
                "regress-action version that wrote it"
            )
        return report


class MetricValue(_Model):
    """One metric of one model (an evaluation): its value over the eval set and its direction,
    and, when the metric has a floor / ceiling, the bound and whether the value is within it
    (`passed`), outside it (`failed_bound`) or not finite (`failed`)."""

    name: str
    value: Real
    higher_is_better: bool
    kind: str
    description: str = ""
    bound: MetricBound | None = None
    status: Literal["passed", "failed_bound", "failed"] | None = None  # None: no bound
    reason: str = ""


class EvaluationReport(_Model):
    """One model evaluated on one eval set, without a comparison (`regress-action evaluate`):
    its metric values, how and where they were computed, and the key its per-example records
    are stored under in the ExperimentDB (`cache_key`: everything that can change them)."""

    schema_version: int = REPORT_SCHEMA_VERSION
    kind: Literal["evaluation"] = "evaluation"
    evaluation_id: int | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    task: TaskSpec
    dataset: DatasetInfo
    run: RunInfo
    metrics: dict[str, MetricValue]
    # The bounds' verdict: `failed` when a metric is outside its bound or not finite (listed in
    # `failed_metrics`), `passed` when every bounded metric is within its bound; None: no bound.
    status: Literal["passed", "failed"] | None = None
    failed_metrics: list[str] = Field(default_factory=list)
    cache_key: str = ""
    engine_version: str = ""
    records_stored: bool = False  # the per-example records are in the ExperimentDB
    commit: str | None = None
    device: str | None = None
    world_size: int = 1
    precision: Precision = "fp32"
    duration_s: Real | None = None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def to_dict(self) -> dict[str, Any]:
        """As `Report.to_dict`: plain values, ISO times, non-finite values as floats."""
        result: dict[str, Any] = _plain(self.model_dump(mode="python"))
        return result


def _problems(exc: ValueError, shown: int = 3) -> str:
    """Pydantic's errors on one line, each naming its field ("metrics.accuracy.baseline: Input
    should be a valid number; ..."), the first `shown` of them; any other error's first line."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        errors = exc.errors()
        parts = []
        for error in errors[:shown]:
            where = ".".join(str(part) for part in error.get("loc", ()))
            message = str(error.get("msg", "invalid value"))
            parts.append(f"{where}: {message}" if where else message)
        more = len(errors) - shown
        return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def report_json_schema() -> dict[str, Any]:
    """The JSON schema of the artifact (published as regress_action/schemas/report.schema.json)."""
    return Report.model_json_schema(mode="serialization")
