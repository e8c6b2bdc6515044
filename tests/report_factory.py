"""Builders of sample `Report` objects for tests (rendering, GitHub comment, store, CLI).

Deterministic (fixed timestamps, hashes and values) so golden files stay stable. Statuses are
written out, not computed by the verdict module, so these samples do not move when it changes.

    make_report()                                   classification, no extras
    make_report("lm")                               language model
    make_report(stats=True, flips=True, per_class=True, trend=4)
    make_report(report_name="x", commit=None)       any Report field overrides
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from regress_action.report import (
    ClassRow,
    DatasetInfo,
    FlipExample,
    Flips,
    MetricResult,
    Report,
    RunInfo,
    StatsInfo,
    TrendPoint,
)
from regress_action.spec import Status, TaskSpec

CREATED_AT = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
CLASS_NAMES = ["airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TaskKind = Literal["classification", "lm"]

HIGHER_IS_BETTER = {
    "accuracy": True,
    "top5_accuracy": True,
    "macro_f1": True,
    "token_accuracy": True,
    "loss": False,
    "ece": False,
    "perplexity": False,
    "bits_per_byte": False,
}
KINDS: dict[str, Literal["binary", "mean", "ratio", "corpus"]] = {
    "accuracy": "binary",
    "top5_accuracy": "binary",
    "macro_f1": "corpus",
    "ece": "corpus",
    "token_accuracy": "ratio",
    "perplexity": "ratio",
    "bits_per_byte": "ratio",
}


def metric(
    name: str,
    baseline: float | None,
    candidate: float | None,
    status: Status,
    **fields: Any,
) -> MetricResult:
    """One MetricResult with delta and rel_delta computed from the two values."""
    delta = None
    rel_delta = None
    if baseline is not None and candidate is not None:
        delta = candidate - baseline
        rel_delta = delta / abs(baseline) if baseline else None
    values: dict[str, Any] = {
        "name": name,
        "higher_is_better": HIGHER_IS_BETTER.get(name, True),
        "kind": KINDS.get(name, "mean"),
        "baseline": baseline,
        "candidate": candidate,
        "delta": delta,
        "rel_delta": rel_delta,
        "tolerance": 0.01,
        "status": status,
        "reason": f"{name}: {baseline} → {candidate} ({status})",
    }
    return MetricResult(**(values | fields))


def classification_metrics(stats: bool = False) -> dict[str, MetricResult]:
    """accuracy and macro-F1 regressed (F1 not significantly), loss improved, ECE/top-5 neutral."""
    metrics = [
        metric("accuracy", 0.8, 0.72, "regressed"),
        metric("loss", 0.6512, 0.6123, "improved"),
        metric("top5_accuracy", 0.97, 0.968, "neutral"),
        metric("macro_f1", 0.7843, 0.7701, "regressed"),
        metric("ece", 0.04123, 0.041218, "neutral", gated=False),
    ]
    if stats:
        # Four gated tests: Bonferroni p = 4·p, intervals at 98.75 %; ECE has no test.
        extra: dict[str, dict[str, Any]] = {
            "accuracy": dict(test="mcnemar_exact", n=500, n_fixed=12, n_broken=52,
                             p_value=2.1e-7, p_adjusted=8.4e-7, ci_low=-0.1119, ci_high=-0.0479,
                             significant=True, ci_level=0.9875, se=0.0143, mde=0.0459),
            "loss": dict(test="paired_t", n=500, p_value=0.0042, p_adjusted=0.0168,
                         ci_low=-0.0725, ci_high=-0.0053, significant=True, ci_level=0.9875,
                         se=0.0136, mde=0.0436, underpowered=True),
            "top5_accuracy": dict(test="mcnemar_exact", n=500, n_fixed=3, n_broken=4,
                                  p_value=1.0, p_adjusted=1.0, ci_low=-0.0149, ci_high=0.0109,
                                  ci_level=0.9875, se=0.0053, mde=0.0170, underpowered=True),
            "macro_f1": dict(test="paired_bootstrap", n=500, p_value=0.21, p_adjusted=0.84,
                             ci_low=-0.0451, ci_high=0.0167, significant=False, ci_level=0.9875,
                             se=0.0127, mde=0.0407, underpowered=True),
        }  # fmt: skip
        metrics = [m.model_copy(update=extra.get(m.name, {})) for m in metrics]
    return {m.name: m for m in metrics}


def lm_metrics() -> dict[str, MetricResult]:
    """An improved language model (perplexity and loss down)."""
    metrics = [
        metric("loss", 2.3456, 2.2891, "improved"),
        metric("perplexity", 10.4393, 9.8659, "improved"),
        metric("token_accuracy", 0.4012, 0.40121, "neutral"),
        metric("bits_per_byte", 3.3841, 3.3026, "improved"),
    ]
    return {m.name: m for m in metrics}


def make_flips(task: TaskKind, n_wrong: int = 14, n_right: int = 5) -> Flips:
    if task == "lm":
        return Flips(
            loss_increases=[
                FlipExample(example_id=i * 7, baseline_loss=2.0, candidate_loss=2.0 + 1 / (i + 1),
                            loss_delta=1 / (i + 1))
                for i in range(n_wrong)
            ]
        )  # fmt: skip

    def flip(i: int, right: bool) -> FlipExample:
        label = i % len(CLASS_NAMES)
        other = (label + 3) % len(CLASS_NAMES)
        before, after = (other, label) if right else (label, other)
        return FlipExample(
            example_id=1000 + i, label=label, baseline_prediction=before,
            candidate_prediction=after,
        )  # fmt: skip

    return Flips(
        newly_wrong=[flip(i, right=False) for i in range(n_wrong)],
        newly_right=[flip(i, right=True) for i in range(n_right)],
    )


def make_per_class(names: list[str] = CLASS_NAMES) -> list[ClassRow]:
    rows = [
        ClassRow(label=i, name=name, n=50, baseline_accuracy=0.8 + (i % 3) / 20,
                 candidate_accuracy=0.8 + (i % 3) / 20 - (i - 4) / 50, delta=-(i - 4) / 50)
        for i, name in enumerate(names)
    ]  # fmt: skip
    return sorted(rows, key=lambda row: row.delta)


def make_trend(points: int, headline: str = "accuracy") -> list[TrendPoint]:
    statuses = ["neutral", "neutral", "improved", "neutral", "regressed"]
    return [
        TrendPoint(
            comparison_id=10 + i,
            created_at=CREATED_AT - timedelta(days=points - i),
            status=statuses[i % len(statuses)],
            commit=f"{i:x}abcdef0123456789",
            # The oldest point was evaluated on an older version of the eval set.
            fingerprint="0" * 64 if i == 0 else None,
            metrics={headline: round(0.81 - i * 0.004, 4), "loss": 0.6},
        )
        for i in range(points)
    ]


def make_report(
    task: TaskKind = "classification",
    *,
    stats: bool = False,
    flips: bool = False,
    per_class: bool = False,
    trend: int = 0,
    **overrides: Any,
) -> Report:
    """A sample report; keyword overrides replace any Report field."""
    classification = task == "classification"
    metrics = classification_metrics(stats) if classification else lm_metrics()
    regressed = [
        m.name for m in metrics.values() if m.gated and m.status in ("regressed", "failed")
    ]
    fields: dict[str, Any] = {
        "tool_version": "0.1.0",
        "report_name": "default",
        "status": "regressed" if regressed else "improved",
        "regressed_metrics": regressed,
        "comparison_id": 42,
        "created_at": CREATED_AT,
        "task": TaskSpec(modality="vision", task="classification", num_classes=10)
        if classification
        else TaskSpec(modality="text", task="lm", vocab_size=256),
        "dataset": DatasetInfo(
            name="vision_tiny" if classification else "lm_tiny",
            fingerprint="3f9a1c0be4d27a5566778899aabbccdd",
            n=500 if classification else 256,
            class_names=CLASS_NAMES if classification else None,
        ),
        "baseline": RunInfo(run_id=1, name="baseline-cnn" if classification else "tiny-lm-base",
                            sha256="a1b2c3d4e5f60718293a4b5c6d7e8f90", format="safetensors"),
        "candidate": RunInfo(run_id=2, name="candidate-cnn" if classification else "tiny-lm-v2",
                             sha256="0f1e2d3c4b5a69788796a5b4c3d2e1f0", format="safetensors"),
        "stats": (
            StatsInfo(significance="report", family_size=4)
            if stats
            else StatsInfo(significance="off")
        ),
        "metrics": metrics,
        "flips": make_flips(task) if flips else None,
        "per_class": make_per_class() if per_class and classification else None,
        "trend": make_trend(trend, "accuracy" if classification else "loss") if trend else [],
        "commit": "9c8b7a6f5e4d3c2b1a00",
        "device": "cpu",
        "duration_s": 3.2,
    }  # fmt: skip
    return Report(**(fields | overrides))
