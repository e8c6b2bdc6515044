"""The metric registry and the float64 maths that turns per-example columns into metrics.

Imports numpy only (no torch): the engine, the verdict and the statistics share these functions,
so a point estimate and its resampled copies are computed the same way.

Direction is never guessed from a name: every metric states `higher_is_better` here.
Kinds: `binary` (0/1 per example, mean of a column), `mean` (mean of a per-example column),
`ratio` (transform(Σnum / Σden) over whole examples), `corpus` (a whole-set statistic).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError

MetricKind = Literal["binary", "mean", "ratio", "corpus"]
Transform = Literal["identity", "exp", "bits"]
ArrayMap = Mapping[str, NDArray[np.float64] | NDArray[np.int64]]

ECE_BINS = 15
BYTE_VOCAB = 256


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its direction, kind, and the columns it is computed from."""

    higher_is_better: bool
    kind: MetricKind
    description: str
    column: str | None = None  # binary / mean
    ratio: tuple[str, str] | None = None  # ratio: (numerator, denominator)
    transform: Transform = "identity"  # ratio: applied to Σnum/Σden
    # Metrics naming the same hypothesis are one test for the multiple-testing correction:
    # loss, perplexity and bits per byte of a byte-level LM are monotone maps of ΣNLL/Σtokens.
    hypothesis: str | None = None


# name -> spec, one dict per task. Plain literals: the whole registry is readable here.
LM_METRICS: dict[str, MetricSpec] = {
    "loss": MetricSpec(
        False, "ratio", "mean token NLL (nats)", ratio=("nll_sum", "tokens"), hypothesis="nll"
    ),
    "perplexity": MetricSpec(
        False,
        "ratio",
        "exp(ΣNLL / Σtokens)",
        ratio=("nll_sum", "tokens"),
        transform="exp",
        hypothesis="nll",
    ),
    "token_accuracy": MetricSpec(
        True, "ratio", "next-token accuracy", ratio=("correct_tokens", "tokens")
    ),
    # Only reported for byte-level vocabularies, where Σbytes = Σtokens: the same hypothesis.
    "bits_per_byte": MetricSpec(
        False,
        "ratio",
        "ΣNLL / (ln 2 · Σbytes)",
        ratio=("nll_sum", "bytes"),
        transform="bits",
        hypothesis="nll",
    ),
}

CLASSIFICATION_METRICS: dict[str, MetricSpec] = {
    "accuracy": MetricSpec(True, "binary", "top-1 accuracy", column="correct"),
    "loss": MetricSpec(False, "mean", "mean cross-entropy (nats)", column="loss"),
    "top5_accuracy": MetricSpec(True, "binary", "top-5 accuracy", column="top5_correct"),
    "macro_f1": MetricSpec(True, "corpus", "macro-averaged F1 over all classes"),
    "ece": MetricSpec(False, "corpus", f"expected calibration error ({ECE_BINS} bins)"),
}

REGISTRY: dict[str, dict[str, MetricSpec]] = {
    "lm": LM_METRICS,
    "classification": CLASSIFICATION_METRICS,
}


def metrics_for_task(
    task: str, num_classes: int | None = None, vocab_size: int | None = None
) -> dict[str, MetricSpec]:
    """The metrics a task reports: top-5 only with more than 5 classes, bits per byte only for
    byte-level language models (vocab 256), where one token is one byte."""
    metrics = dict(REGISTRY[task])
    if task == "classification" and (num_classes is None or num_classes <= 5):
        metrics.pop("top5_accuracy")
    if task == "lm" and vocab_size != BYTE_VOCAB:
        metrics.pop("bits_per_byte")
    return metrics


def select_metrics(
    task: str,
    requested: list[str] | tuple[str, ...] | None,
    num_classes: int | None = None,
    vocab_size: int | None = None,
) -> dict[str, MetricSpec]:
    """The requested metrics of a task, in registry order; unknown names fail with a hint."""
    available = metrics_for_task(task, num_classes, vocab_size)
    if not requested:
        return available
    for name in requested:
        if name not in available:
            raise ConfigError(unknown_metric_message(name, task, list(available)))
    return {name: spec for name, spec in available.items() if name in requested}


def unknown_metric_message(name: str, task: str, available: list[str]) -> str:
    close = difflib.get_close_matches(name, available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return (
        f"unknown metric {name!r} for task {task!r}{hint} "
        f"Available metrics: {', '.join(available)}."
    )


def apply_transform(value: float, transform: Transform) -> float:
    if transform == "exp":
        return math.exp(value) if value < 709.0 else math.inf
    if transform == "bits":
        return value / math.log(2.0)
    return value


def compute(
    spec: MetricSpec, cols: ArrayMap, num_classes: int | None = None, name: str = ""
) -> float:
    """The metric's value over all examples, in float64."""
    if spec.kind in ("binary", "mean"):
        assert spec.column is not None
        values = np.asarray(cols[spec.column], dtype=np.float64)
        return float(values.mean()) if values.size else math.nan
    if spec.kind == "ratio":
        assert spec.ratio is not None
        num = float(np.sum(cols[spec.ratio[0]], dtype=np.float64))
        den = float(np.sum(cols[spec.ratio[1]], dtype=np.float64))
        return apply_transform(num / den, spec.transform) if den > 0 else math.nan
    if name == "macro_f1":
        assert num_classes is not None
        labels = np.asarray(cols["label"], dtype=np.int64)
        return macro_f1(labels, np.asarray(cols["prediction"], dtype=np.int64), num_classes)
    if name == "ece":
        correct = np.asarray(cols["correct"], dtype=np.float64)
        return ece(correct, np.asarray(cols["confidence"], dtype=np.float64))
    raise ValueError(f"no corpus function for metric {name!r}")


def macro_f1(labels: NDArray[np.int64], predictions: NDArray[np.int64], num_classes: int) -> float:
    """Macro F1 over the full label set; a class with no support and no prediction counts 0."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    true_pos = np.bincount(labels[labels == predictions], minlength=num_classes)
    support = np.bincount(labels, minlength=num_classes)
    predicted = np.bincount(predictions, minlength=num_classes)
    denom = (support + predicted).astype(np.float64)
    f1 = np.divide(2.0 * true_pos, denom, out=np.zeros(num_classes), where=denom > 0)
    return float(f1[:num_classes].mean())


def ece(
    correct: NDArray[np.float64], confidence: NDArray[np.float64], bins: int = ECE_BINS
) -> float:
    """Expected calibration error with equal-width confidence bins (torchmetrics' L1 norm)."""
    correct = np.asarray(correct, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    n = confidence.size
    if n == 0 or not np.isfinite(confidence).all():
        return math.nan
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    acc_sum = np.bincount(index, weights=correct, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    return float(np.abs(conf_sum - acc_sum).sum() / n)
