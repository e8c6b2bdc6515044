"""Per-example analysis of a paired comparison: flips and the per-class accuracy table.

Owns `flips` (classification: examples newly wrong / newly right; lm: the largest per-example
loss increases) and `per_class` (classification: per-class accuracy baseline / candidate).
Reads `PairedRecords` and builds `report` models; imports numpy and the contract modules only
(no torch, SQL, GitHub or templates). Vectorised: n = 100,000 takes milliseconds.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .records import PairedRecords
from .report import ClassRow, FlipExample, Flips


def flips(records: PairedRecords, *, top: int | None = None) -> Flips:
    """The examples whose outcome changed, worst first; `top` limits each list (None: all)."""
    if records.task == "lm":
        return Flips(loss_increases=_loss_increases(records, top))
    base, cand = records.baseline, records.candidate
    base_ok = np.asarray(base["correct"]) > 0.5
    cand_ok = np.asarray(cand["correct"]) > 0.5
    loss_delta = _column_delta(records, "loss")
    # Newly wrong: the largest loss increase first (the most confident new mistakes);
    # newly right: the largest loss decrease first. Ties keep example order.
    wrong = np.flatnonzero(base_ok & ~cand_ok)
    right = np.flatnonzero(~base_ok & cand_ok)
    if loss_delta is not None:
        wrong = wrong[np.argsort(-loss_delta[wrong], kind="stable")]
        right = right[np.argsort(loss_delta[right], kind="stable")]
    return Flips(
        newly_wrong=_classification_examples(records, wrong[:top]),
        newly_right=_classification_examples(records, right[:top]),
    )


def _column_delta(records: PairedRecords, column: str) -> NDArray[np.float64] | None:
    if column not in records.baseline or column not in records.candidate:
        return None
    base = np.asarray(records.baseline[column], dtype=np.float64)
    return np.asarray(records.candidate[column], dtype=np.float64) - base


def _classification_examples(records: PairedRecords, index: NDArray[np.intp]) -> list[FlipExample]:
    base, cand = records.baseline, records.candidate
    # .tolist() turns numpy scalars into Python ints/floats once, not per field.
    rows: dict[str, list[int] | list[float] | list[None]] = {
        "example_id": records.example_ids[index].tolist(),
        "label": np.asarray(base["label"])[index].tolist(),
        "baseline_prediction": np.asarray(base["prediction"])[index].tolist(),
        "candidate_prediction": np.asarray(cand["prediction"])[index].tolist(),
    }
    if "loss" in base and "loss" in cand:
        base_loss = np.asarray(base["loss"], dtype=np.float64)[index]
        cand_loss = np.asarray(cand["loss"], dtype=np.float64)[index]
        rows["baseline_loss"] = base_loss.tolist()
        rows["candidate_loss"] = cand_loss.tolist()
        rows["loss_delta"] = (cand_loss - base_loss).tolist()
    return _examples(rows, len(index))


def _loss_increases(records: PairedRecords, top: int | None) -> list[FlipExample]:
    # Per-example mean token loss (nll_sum / tokens), so long and short examples compare;
    # examples without tokens have no loss and are skipped.
    base, cand = records.baseline, records.candidate
    base_tokens = np.asarray(base["tokens"], dtype=np.float64)
    cand_tokens = np.asarray(cand["tokens"], dtype=np.float64)
    valid = (base_tokens > 0) & (cand_tokens > 0)
    base_loss = np.zeros(records.n)
    cand_loss = np.zeros(records.n)
    np.divide(base["nll_sum"], base_tokens, out=base_loss, where=valid)
    np.divide(cand["nll_sum"], cand_tokens, out=cand_loss, where=valid)
    delta = cand_loss - base_loss
    index = np.flatnonzero(valid & (delta > 0))
    index = index[np.argsort(-delta[index], kind="stable")][:top]
    rows: dict[str, list[int] | list[float] | list[None]] = {
        "example_id": records.example_ids[index].tolist(),
        "baseline_loss": base_loss[index].tolist(),
        "candidate_loss": cand_loss[index].tolist(),
        "loss_delta": delta[index].tolist(),
    }
    return _examples(rows, len(index))


def _examples(rows: dict[str, list[int] | list[float] | list[None]], n: int) -> list[FlipExample]:
    return [
        FlipExample.model_validate({key: values[i] for key, values in rows.items()})
        for i in range(n)
    ]


def per_class(records: PairedRecords, class_names: list[str] | None = None) -> list[ClassRow]:
    """Per-class accuracy of both sides, worst delta first; classes without examples omitted."""
    label = np.asarray(records.baseline["label"], dtype=np.int64)
    num_classes = max(int(records.num_classes or 0), int(label.max()) + 1 if label.size else 0)
    support = np.bincount(label, minlength=num_classes)
    base_hits = np.bincount(label, weights=records.baseline["correct"], minlength=num_classes)
    cand_hits = np.bincount(label, weights=records.candidate["correct"], minlength=num_classes)
    present = np.flatnonzero(support)
    base_acc = base_hits[present] / support[present]
    cand_acc = cand_hits[present] / support[present]
    delta = cand_acc - base_acc
    order = np.argsort(delta, kind="stable")  # ties: by label
    return [
        ClassRow(
            label=int(present[i]),
            name=_class_name(class_names, int(present[i])),
            n=int(support[present[i]]),
            baseline_accuracy=float(base_acc[i]),
            candidate_accuracy=float(cand_acc[i]),
            delta=float(delta[i]),
        )
        for i in order
    ]


def _class_name(class_names: list[str] | None, label: int) -> str | None:
    if class_names is None or label >= len(class_names):
        return None
    return class_names[label]
