"""The classification task (vision or text): logits (B, C) and integer labels (B,).

Owns its metrics (accuracy, loss, top-5 accuracy, macro-F1, ECE, and the opt-in confidence
AUROC and Brier score, with the one implementation of ECE binning, of the F1 formula and of the
AUROC sum that both the value and its bootstrap use), its adapter, its analysis (newly wrong /
newly right examples, per-class accuracy), its `.npz` layout (`images`, `labels`, optional
`class_names`) and the built-in `vision_tiny`. Torch only inside the adapter.

Inputs: vision, images (B, C, H, W), called `model(images)`; text, (B, 2, T) int64 token ids
stacked on the attention mask (`regress_action.textcls`), called as `text_forward` documents
(keywords for a Hugging Face model, positionally otherwise).

Record columns: `label` (int64, shared by both sides), `prediction` (int64), `correct` (0/1),
`loss` (per-example NLL), `confidence` (max softmax probability), `brier` (per-example
Σ_c (p_c − y_c)²), `top5_correct` (0/1; only with more than 5 classes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..analysis import Rows, column_delta, examples, largest_first
from ..errors import DataError
from ..metrics import Array, Metric, f64
from ..records import Columns, PairedRecords
from ..report import TOP_EXAMPLES, ClassRow, Flips
from ..resampling import CellCounts, CellFeatures
from .base import (
    Analysis,
    BuiltinDataset,
    NpzArrays,
    SizeField,
    Task,
    forward_inputs,
    int64,
    logits_of,
)
from .calibration import CALIBRATION_BINS, calibration_bins
from .calibration import METRIC as CALIBRATION_ERROR_SQ

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from ..spec import TaskSpec

TOP_K = 5

# --- ECE -------------------------------------------------------------------------------------


def ece(correct: Array, confidence: Array) -> float:
    """Expected calibration error with equal-width confidence bins (torchmetrics' L1 norm)."""
    correct, confidence = f64(correct), f64(confidence)
    n = confidence.size
    if n == 0 or not np.isfinite(confidence).all():
        return math.nan
    index = calibration_bins(confidence)  # the calibration error's bins
    acc_sum = np.bincount(index, weights=correct, minlength=CALIBRATION_BINS)
    conf_sum = np.bincount(index, weights=confidence, minlength=CALIBRATION_BINS)
    return float(np.abs(conf_sum - acc_sum).sum() / n)


# --- macro-F1 --------------------------------------------------------------------------------


def _f1_mean(true_pos: Array, support: Array, predicted: Array) -> Array:
    """Mean F1 over the classes (last axis); a class with no support and no prediction is 0."""
    denom = np.asarray(support + predicted, dtype=np.float64)
    f1 = np.divide(2.0 * true_pos, denom, out=np.zeros_like(denom), where=denom > 0)
    return np.asarray(f1.mean(axis=-1), dtype=np.float64)


def macro_f1(labels: NDArray[np.int64], predictions: NDArray[np.int64], num_classes: int) -> float:
    """Macro F1 over the full label set."""
    labels, predictions = int64(labels), int64(predictions)
    true_pos = np.bincount(labels[labels == predictions], minlength=num_classes)[:num_classes]
    support = np.bincount(labels, minlength=num_classes)[:num_classes]
    predicted = np.bincount(predictions, minlength=num_classes)[:num_classes]
    return float(_f1_mean(f64(true_pos), f64(support), f64(predicted)))


def _f1_cells(records: PairedRecords) -> tuple[NDArray[np.int64], int]:
    label = int64(records.baseline["label"])
    pred_b, pred_c = int64(records.baseline["prediction"]), int64(records.candidate["prediction"])
    k = max(int(records.num_classes or 0), int(max(label.max(), pred_b.max(), pred_c.max())) + 1)
    return (label * k + pred_b) * k + pred_c, k


def _f1_features(cells: NDArray[np.int64], k: int) -> Any:
    """Per cell (label, baseline prediction, candidate prediction), what one example adds to
    the 4k features [true positives, support + predicted] × [baseline, candidate] per class."""
    from scipy import sparse

    label, pred_b, pred_c = cells // (k * k), (cells // k) % k, cells % k
    row = np.arange(cells.size)
    rows, cols = [], []
    for offset, pred in ((0, pred_b), (2 * k, pred_c)):
        hit = label == pred
        rows += [row[hit], row, row]
        cols += [offset + label[hit], offset + k + label, offset + k + pred]
    index = np.concatenate(rows)
    return sparse.csr_matrix(
        (np.ones(index.size), (index, np.concatenate(cols))), shape=(cells.size, 4 * k)
    )


def _f1_finish(sums: Array, k: int) -> Array:
    zero = np.zeros((sums.shape[0], k))
    base = _f1_mean(sums[:, :k], sums[:, k : 2 * k], zero)
    return _f1_mean(sums[:, 2 * k : 3 * k], sums[:, 3 * k :], zero) - base


# Resampled counts of the cells -> per-class sums -> macro-F1 delta (see `CellFeatures`).
_f1_delta = CellFeatures(_f1_features, _f1_finish)


# --- confidence AUROC ------------------------------------------------------------------------
#
# How well the top-1 confidence tells right predictions from wrong ones (misclassification
# detection; Hendrycks & Gimpel, ICLR 2017): the Mann-Whitney probability that a random right
# prediction has a higher confidence than a random wrong one, ties counting ½. It is not the
# one-vs-rest AUROC of the class scores, which needs every class's probability for every
# example (n × classes per side); this one needs two columns the adapter records anyway, and is
# what selective prediction (abstain below a confidence) depends on. Undefined (NaN) when one
# side has no wrong or no right prediction.


def _auroc_sum(right: Array, wrong: Array) -> Array:
    """AUROC from the counts (or weights) of right and wrong predictions at each confidence
    level, levels ascending along the last axis: Σ_g right_g · (wrong below g + ½ wrong_g) /
    (Σ right · Σ wrong); NaN without a right or a wrong prediction."""
    below = np.cumsum(wrong, axis=-1) - wrong
    pairs = (right * (below + 0.5 * wrong)).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc: Array = pairs / (right.sum(axis=-1) * wrong.sum(axis=-1))
    return auroc


def _confidence_levels(confidence: Array) -> tuple[NDArray[np.int64], int]:
    """Each example's confidence level (0 = lowest; equal confidences share one), and the
    number of levels."""
    levels, group = np.unique(confidence, return_inverse=True)
    return int64(group.reshape(-1)), int(levels.size)


def confidence_auroc(correct: Array, confidence: Array) -> float:
    """AUROC of the confidence as a score for a right prediction (see above)."""
    correct, confidence = f64(correct), f64(confidence)
    if confidence.size == 0 or not np.isfinite(confidence).all():
        return math.nan
    group, levels = _confidence_levels(confidence)
    right = correct > 0.5
    return float(
        _auroc_sum(
            f64(np.bincount(group[right], minlength=levels)),
            f64(np.bincount(group[~right], minlength=levels)),
        )
    )


AUROC_BINS = 256  # confidence bins per side of the AUROC bootstrap above AUROC_BIN_MIN_N
AUROC_BIN_MIN_N = 20_000  # examples (the bootstrap resamples blocks above this many, too)


def _auroc_levels(confidence: Array, right: NDArray[np.bool_], n: int) -> tuple[Any, Array]:
    """An example's level for the AUROC bootstrap, and each level's tie weight.

    Up to `AUROC_BIN_MIN_N` examples (or `AUROC_BINS` distinct confidences) a level is a
    distinct confidence and a right/wrong pair within it counts ½. Above, the levels are
    `AUROC_BINS` quantile bins and a pair within a bin counts the bin's observed share of
    right-above-wrong pairs (ties ½): the statistic is unchanged on the eval set itself, and
    under resampling only the ordering within a bin (≤ 1/AUROC_BINS of the pairs) is frozen,
    which moves the bootstrap variance by O(1/AUROC_BINS²).
    """
    level, levels = _confidence_levels(confidence)
    if n <= AUROC_BIN_MIN_N or levels <= AUROC_BINS:
        return level, np.full(levels, 0.5)
    # Per distinct confidence: right and wrong counts; bins of about n / AUROC_BINS examples,
    # each starting at a distinct confidence (equal confidences share a bin).
    right_at = np.bincount(level[right], minlength=levels)
    wrong_at = np.bincount(level[~right], minlength=levels)
    total = np.cumsum(right_at + wrong_at)
    targets = total[-1] * np.arange(1, AUROC_BINS) / AUROC_BINS
    starts = np.unique(np.searchsorted(total, targets, side="right"))
    starts = starts[(starts > 0) & (starts < levels)]
    bin_of = np.searchsorted(starts, np.arange(levels), side="right")
    bins = starts.size + 1
    # A right example's wrong ones below it within its bin: the wrong ones below its level
    # minus those below its bin, and half of those at its level.
    wrong_below = np.cumsum(wrong_at) - wrong_at
    bin_wrong = np.bincount(bin_of, weights=wrong_at, minlength=bins)
    wrong_below_bin = np.cumsum(bin_wrong) - bin_wrong
    within_at = right_at * (wrong_below - wrong_below_bin[bin_of] + 0.5 * wrong_at)
    pairs = np.bincount(bin_of, weights=within_at, minlength=bins)
    both = np.bincount(bin_of, weights=right_at, minlength=bins) * bin_wrong
    ties = np.divide(pairs, both, out=np.full(bins, 0.5), where=both > 0)
    return int64(bin_of[level]), ties


def _auroc_cells(records: PairedRecords) -> tuple[NDArray[np.int64], Any]:
    # An example's cell: (baseline confidence level, baseline right, candidate level, right).
    codes, ties = [], []
    for side in (records.baseline, records.candidate):
        right = f64(side["correct"]) > 0.5
        level, tie = _auroc_levels(f64(side["confidence"]), right, records.n)
        codes.append(level * 2 + right)
        ties.append(tie)
    width = 2 * ties[1].size
    return codes[0] * width + codes[1], (width, ties[0], ties[1])


def _auroc_features(cells: NDArray[np.int64], context: Any) -> Any:
    """Per cell, one example adds 1 to its (level, right) count on each side: 2L_b + 2L_c
    features, the baseline's first."""
    from scipy import sparse

    width, ties_b, _ = context
    row = np.arange(cells.size)
    cols = np.concatenate([cells // width, 2 * ties_b.size + cells % width])
    shape = (cells.size, 2 * ties_b.size + width)
    return sparse.csr_matrix((np.ones(2 * cells.size), (np.r_[row, row], cols)), shape=shape)


def _auroc_finish(sums: Array, context: Any) -> Array:
    _, ties_b, ties_c = context

    def auroc(counts: Array, ties: Array) -> Array:
        # Σ_g right_g · (wrong below g + tie_g · wrong_g) / (Σ right · Σ wrong)
        right, wrong = counts[:, 1::2], counts[:, 0::2]
        below = np.cumsum(wrong, axis=-1) - wrong
        pairs = (right * (below + ties * wrong)).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            value: Array = pairs / (right.sum(axis=-1) * wrong.sum(axis=-1))
        return value

    split = 2 * ties_b.size
    return auroc(sums[:, split:], ties_c) - auroc(sums[:, :split], ties_b)


# Resampled counts of the cells -> per-level right/wrong counts -> AUROC delta.
_auroc_delta = CellFeatures(_auroc_features, _auroc_finish)


def _auroc_value(columns: Columns, num_classes: int | None) -> float:
    return confidence_auroc(f64(columns["correct"]), f64(columns["confidence"]))


def _macro_f1_value(columns: Columns, num_classes: int | None) -> float:
    labels = int64(columns["label"])
    predictions = int64(columns["prediction"])
    k = num_classes or int(max(labels.max(initial=0), predictions.max(initial=0))) + 1
    return macro_f1(labels, predictions, k)


def _ece_value(columns: Columns, num_classes: int | None) -> float:
    return ece(f64(columns["correct"]), f64(columns["confidence"]))


METRICS: dict[str, Metric] = {
    "accuracy": Metric(
        "accuracy", True, "binary", "top-1 accuracy", ("correct",), unit_interval=True
    ),
    "loss": Metric("loss", False, "mean", "mean cross-entropy (nats)", ("loss",)),
    "top5_accuracy": Metric(
        "top5_accuracy", True, "binary", "top-5 accuracy", ("top5_correct",), unit_interval=True
    ),
    "macro_f1": Metric(
        "macro_f1",
        True,
        "corpus",
        "macro-averaged F1 over all classes",
        ("label", "prediction"),
        unit_interval=True,
        whole_set=_macro_f1_value,
        resampler=CellCounts(_f1_cells, _f1_delta),
    ),
    "ece": Metric(
        "ece",
        False,
        "corpus",
        f"expected calibration error ({CALIBRATION_BINS} bins)",
        ("correct", "confidence"),
        unit_interval=True,
        whole_set=_ece_value,
        # Plug-in ECE is biased upwards by an amount that depends on the confidence spread,
        # so a paired test of its delta measures the bias, not calibration:
        # `calibration_error_sq` is the tested calibration metric.
        tested=False,
    ),
    "calibration_error_sq": CALIBRATION_ERROR_SQ,
    # Opt-in (default=False): reported when named in --metrics / metrics.
    "confidence_auroc": Metric(
        "confidence_auroc",
        True,
        "corpus",
        "AUROC of the top-1 confidence at telling right from wrong predictions: P(a random "
        "right prediction is more confident than a random wrong one), ties ½",
        ("correct", "confidence"),
        unit_interval=True,
        whole_set=_auroc_value,
        resampler=CellCounts(_auroc_cells, _auroc_delta, stream=3),
        default=False,
    ),
    "brier": Metric(
        "brier",
        False,
        "mean",
        "multiclass Brier score: mean over examples of Σ_c (p_c − y_c)² (0 best, 2 worst)",
        ("brier",),
        default=False,
    ),
}

# --- adapter ---------------------------------------------------------------------------------


class ClassificationAdapter:
    """Logits (B, C) and integer labels (B,) → loss, correct, prediction, confidence, Brier,
    top-5.

    The forward call depends on the modality. Vision: `model(images)`. Text: the batch's
    inputs are (B, 2, T) integer tensors, token ids stacked on the attention mask (what the
    text sources build, `regress_action.textcls`), or plain (B, T) ids; see `text_forward`."""

    task: str = "classification"
    shared: tuple[str, ...] = ("label",)

    def __init__(self, num_classes: int, modality: str = "vision") -> None:
        self.num_classes = num_classes
        self.top5 = num_classes > TOP_K
        self.modality = modality

    def forward(self, model: torch.nn.Module, batch: Any) -> Any:
        if self.modality == "text":
            return text_forward(model, batch[0])
        return forward_inputs(model, batch)

    def records(self, output: Any, batch: Any, side: str) -> dict[str, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        from ..errors import ModelOutputError

        target = batch[1].long()
        logits = logits_of(output, side)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ModelOutputError(
                f"the {side} model returned logits of shape {tuple(logits.shape)}, but the task "
                f"has num_classes={self.num_classes}; expected (batch, {self.num_classes}). "
                "Check the model or the task's num_classes"
            )
        if bool(((target < 0) | (target >= self.num_classes)).any()):
            bad = target[(target < 0) | (target >= self.num_classes)][0]
            raise DataError(
                f"the eval set has label {int(bad)}, outside 0..{self.num_classes - 1} for "
                f"num_classes={self.num_classes}; fix the labels or the task's num_classes"
            )
        logits = logits.float()
        log_probs = F.log_softmax(logits, dim=1)
        loss = -log_probs.gather(1, target.view(-1, 1)).squeeze(1)
        confidence, prediction = log_probs.max(dim=1)
        # Brier: Σ_c (p_c − y_c)², from p − onehot(y) (no cancellation when p_y is near 1).
        gap = log_probs.exp().scatter_add(
            1, target.view(-1, 1), logits.new_full((len(target), 1), -1.0)
        )
        # Compact columns that lose nothing: class ids fit int32, outcomes are booleans, and the
        # float columns are float32 results (the logits are cast to float32 above), which a
        # float64 copy would only widen: the statistics read them as float64, exactly.
        columns = {
            "label": target.to(torch.int32),
            "prediction": prediction.to(torch.int32),
            "correct": prediction == target,
            "loss": loss,
            "confidence": confidence.exp(),
            "brier": (gap * gap).sum(dim=1),
        }
        if self.top5:
            top5 = logits.topk(TOP_K, dim=1).indices
            columns["top5_correct"] = (top5 == target.view(-1, 1)).any(dim=1)
        return columns


def text_forward(model: torch.nn.Module, inputs: torch.Tensor) -> Any:
    """Run a text classifier on (B, 2, T) ids-and-mask inputs (or (B, T) ids alone).

    Convention: a model with a `config` attribute (a Hugging Face model, e.g.
    `AutoModelForSequenceClassification`) is called with keywords,
    `model(input_ids=..., attention_mask=...)`; any other module positionally,
    `model(input_ids, attention_mask)` (`model(input_ids)` for ids alone). The mask is 1 on
    tokens, 0 on padding."""
    if inputs.ndim == 3 and inputs.shape[1] == 2 and not inputs.is_floating_point():
        ids, mask = inputs[:, 0], inputs[:, 1]
    else:
        ids, mask = inputs, None
    if hasattr(model, "config"):
        return model(input_ids=ids) if mask is None else model(input_ids=ids, attention_mask=mask)
    return model(ids) if mask is None else model(ids, mask)


# --- analysis --------------------------------------------------------------------------------


def flips(records: PairedRecords, *, top: int | None = TOP_EXAMPLES) -> Flips:
    """The `top` newly wrong (largest loss increase first) and newly right (largest decrease
    first) examples, and how many flipped each way."""
    base_ok = np.asarray(records.baseline["correct"]) > 0.5
    cand_ok = np.asarray(records.candidate["correct"]) > 0.5
    loss_delta = column_delta(records, "loss")
    wrong = np.flatnonzero(base_ok & ~cand_ok)
    right = np.flatnonzero(~base_ok & cand_ok)
    if loss_delta is not None:  # ties keep example order
        wrong = wrong[largest_first(loss_delta[wrong], top)]
        right = right[largest_first(-loss_delta[right], top)]
    return Flips(
        newly_wrong=_flipped(records, wrong[:top]),
        newly_right=_flipped(records, right[:top]),
        newly_wrong_count=int(np.count_nonzero(base_ok & ~cand_ok)),
        newly_right_count=int(np.count_nonzero(~base_ok & cand_ok)),
    )


def _flipped(records: PairedRecords, index: NDArray[np.intp]) -> list[Any]:
    base, cand = records.baseline, records.candidate
    rows: Rows = {
        "example_id": records.example_ids[index].tolist(),
        "label": np.asarray(base["label"])[index].tolist(),
        "baseline_prediction": np.asarray(base["prediction"])[index].tolist(),
        "candidate_prediction": np.asarray(cand["prediction"])[index].tolist(),
    }
    if "loss" in base and "loss" in cand:
        base_loss, cand_loss = f64(base["loss"])[index], f64(cand["loss"])[index]
        rows["baseline_loss"] = base_loss.tolist()
        rows["candidate_loss"] = cand_loss.tolist()
        rows["loss_delta"] = (cand_loss - base_loss).tolist()
    return examples(rows, len(index))


def per_class(records: PairedRecords, class_names: list[str] | None = None) -> list[ClassRow]:
    """Per-class accuracy of both sides, worst delta first; classes without examples omitted."""
    label = int64(records.baseline["label"])
    num_classes = max(int(records.num_classes or 0), int(label.max()) + 1 if label.size else 0)
    support = np.bincount(label, minlength=num_classes)
    base_hits = np.bincount(label, weights=records.baseline["correct"], minlength=num_classes)
    cand_hits = np.bincount(label, weights=records.candidate["correct"], minlength=num_classes)
    present = np.flatnonzero(support)
    base_acc = base_hits[present] / support[present]
    cand_acc = cand_hits[present] / support[present]
    delta = cand_acc - base_acc
    order = np.argsort(delta, kind="stable")  # ties: by label
    names = class_names or []
    return [
        ClassRow(
            label=int(present[i]),
            name=names[int(present[i])] if int(present[i]) < len(names) else None,
            n=int(support[present[i]]),
            baseline_accuracy=float(base_acc[i]),
            candidate_accuracy=float(cand_acc[i]),
            delta=float(delta[i]),
        )
        for i in order
    ]


# --- .npz layout -----------------------------------------------------------------------------


def _npz_images(where: str, images: NDArray[Any]) -> NDArray[np.float32]:
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3, 4) and images.shape[3] in (1, 3, 4):
        images = images.transpose(0, 3, 1, 2)  # channels-last -> (N, C, H, W)
    if images.ndim != 4:
        raise DataError(
            f"{where}: images has shape {images.shape}; expected (N, C, H, W) or (N, H, W)"
        )
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        return np.ascontiguousarray(images, dtype=np.float32)
    raise DataError(
        f"{where}: images has dtype {images.dtype}; save uint8 (0-255) or float (0-1) pixels"
    )


def _npz_labels(where: str, labels: NDArray[Any]) -> NDArray[np.int64]:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: labels has shape {labels.shape} and dtype {labels.dtype}; "
            "expected a 1-D integer array (labels.astype(numpy.int64))"
        )
    if labels.size and labels.min() < 0:
        raise DataError(f"{where}: labels contain {labels.min()}; labels must be >= 0")
    return labels.astype(np.int64)


def _npz_class_names(
    where: str, names: NDArray[Any] | None, labels: NDArray[np.int64]
) -> list[str] | None:
    if names is None:
        return None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"{where}: class_names must be a 1-D array of strings")
    result = [str(item) for item in names.tolist()]
    if labels.size and int(labels.max()) >= len(result):
        raise DataError(
            f"{where}: label {int(labels.max())} has no entry in class_names "
            f"({len(result)} names); name every class"
        )
    return result


# --- the task --------------------------------------------------------------------------------


def _vision_tiny(split: str, n: int | None) -> Dataset[Any]:
    from ..builtin_data import builtin_split

    return builtin_split("vision_tiny", split, n)


class ClassificationTask(Task):
    name = "classification"
    primary = ("accuracy",)
    description = "classification: logits (batch, num_classes), integer labels"
    modalities = ("vision", "text")
    sizes = (SizeField("num_classes", "num-classes"),)
    report_fragments = ("flips.md.j2", "per_class.md.j2")
    npz_keys = ("images", "labels")
    columns = ("label", "prediction", "correct", "loss", "confidence", "brier", "top5_correct")

    def all_metrics(self) -> dict[str, Metric]:
        return dict(METRICS)

    def metrics(self, spec: TaskSpec) -> dict[str, Metric]:
        """Top-5 accuracy only with more than 5 classes."""
        metrics = self.all_metrics()
        if spec.num_classes is None or spec.num_classes <= TOP_K:
            metrics.pop("top5_accuracy")
        return metrics

    def record_columns(self, spec: TaskSpec | None = None) -> tuple[str, ...]:
        """`top5_correct` only with more than 5 classes."""
        if spec is None or (spec.num_classes is not None and spec.num_classes > TOP_K):
            return self.columns
        return tuple(c for c in self.columns if c != "top5_correct")

    def adapter(self, spec: TaskSpec) -> ClassificationAdapter:
        assert spec.num_classes is not None
        return ClassificationAdapter(spec.num_classes, spec.modality)

    def analyse(self, records: PairedRecords, class_names: list[str] | None) -> Analysis:
        return Analysis(flips=flips(records), per_class=per_class(records, class_names))

    def read_npz(self, arrays: Mapping[str, NDArray[Any]], where: str) -> NpzArrays:
        images, labels = _npz_images(where, arrays["images"]), _npz_labels(where, arrays["labels"])
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{where}: {images.shape[0]} images but {labels.shape[0]} labels; they must match"
            )
        if labels.shape[0] == 0:
            raise DataError(f"eval set {where!r} has no examples; give it at least one")
        class_names = _npz_class_names(where, arrays.get("class_names"), labels)
        num_classes = len(class_names) if class_names else int(labels.max(initial=0)) + 1
        if num_classes < 2:
            raise DataError(
                f"{where}: all labels are 0; add a class_names array naming every class"
            )
        spec = {"modality": "vision", "task": self.name, "num_classes": num_classes}
        return NpzArrays(images, labels, spec, class_names)


def _builtin() -> tuple[BuiltinDataset, ...]:
    from ..builtin_data import VISION_CLASSES

    spec = {"modality": "vision", "task": "classification", "num_classes": len(VISION_CLASSES)}
    return (BuiltinDataset("vision_tiny", spec, _vision_tiny, tuple(VISION_CLASSES)),)


ClassificationTask.builtin = _builtin()
TASK = ClassificationTask()
