"""The opt-in classification metrics: the per-example Brier score the adapter records, the
confidence AUROC against a slow pairwise loop, and its cell-count bootstrap against a slow loop
and against the generic bootstrap."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from regress_action.records import PairedRecords
from regress_action.resampling import bootstrap_p
from regress_action.spec import TaskSpec
from regress_action.stats import paired_statistics
from regress_action.tasks import metrics_for, select_metrics
from regress_action.tasks.classification import (
    METRICS,
    ClassificationAdapter,
    _auroc_cells,
    confidence_auroc,
)

CLS = TaskSpec(modality="vision", task="classification", num_classes=10)
AUROC = METRICS["confidence_auroc"]


def slow_auroc(right: np.ndarray, confidence: np.ndarray) -> float:
    """Every (right, wrong) pair: 1 when the right one is more confident, ½ on a tie."""
    pos, neg = confidence[right], confidence[~right]
    if not pos.size or not neg.size:
        return math.nan
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def _side(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    right = rng.random(n) < 0.75
    # Rounded to 2 decimals: many ties within and across right and wrong predictions.
    confidence = np.round(np.clip(0.55 + 0.25 * right + shift + rng.normal(0, 0.15, n), 0, 1), 2)
    return {"correct": right.astype(np.float64), "confidence": confidence}


def _records(n: int, seed: int, shift: float = 0.0) -> PairedRecords:
    rng = np.random.default_rng(seed)
    base, cand = _side(rng, n, 0.0), _side(rng, n, shift)
    return PairedRecords("classification", np.arange(n), base, cand, 10)


def test_the_adapter_records_the_multiclass_brier_score() -> None:
    torch.manual_seed(0)
    logits = torch.randn(33, 7) * 3
    target = torch.randint(0, 7, (33,))
    columns = ClassificationAdapter(7).records(logits, (None, target), "baseline")
    probs = torch.softmax(logits.double(), dim=1).numpy()
    onehot = np.eye(7)[target.numpy()]
    expected = ((probs - onehot) ** 2).sum(axis=1)
    assert columns["brier"].shape == (33,)
    np.testing.assert_allclose(columns["brier"].double().numpy(), expected, rtol=1e-5, atol=1e-7)
    # Confident and right is near 0, confident and wrong near 2.
    sure = torch.tensor([[20.0, 0.0, 0.0], [20.0, 0.0, 0.0]])
    brier = ClassificationAdapter(3).records(sure, (None, torch.tensor([0, 1])), "b")["brier"]
    assert brier[0] < 1e-6 and abs(float(brier[1]) - 2.0) < 1e-5


def test_brier_is_a_mean_lower_is_better_metric_on_its_column() -> None:
    brier = METRICS["brier"]
    assert (brier.kind, brier.higher_is_better, brier.columns) == ("mean", False, ("brier",))
    assert brier.value({"brier": np.array([0.0, 0.5, 1.0])}) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_confidence_auroc_equals_a_pairwise_loop(seed: int) -> None:
    side = _side(np.random.default_rng(seed), 70, 0.0)
    right = side["correct"] > 0.5
    value = confidence_auroc(side["correct"], side["confidence"])
    assert value == pytest.approx(slow_auroc(right, side["confidence"]), abs=1e-12)
    assert AUROC.value(side) == value


def test_confidence_auroc_edge_cases() -> None:
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    assert confidence_auroc(np.array([1.0, 1, 0, 0]), conf) == 1.0  # right ones all above
    assert confidence_auroc(np.array([0.0, 0, 1, 1]), conf) == 0.0
    assert confidence_auroc(np.array([1.0, 0, 1, 0]), np.full(4, 0.5)) == 0.5  # all tied
    assert math.isnan(confidence_auroc(np.ones(4), conf))  # no wrong prediction
    assert math.isnan(confidence_auroc(np.zeros(4), conf))
    assert math.isnan(confidence_auroc(np.array([1.0, 0]), np.array([0.5, np.nan])))


def test_the_auroc_bootstrap_equals_a_slow_loop() -> None:
    records, resamples, seed = _records(80, 3, shift=-0.05), 200, 9
    result = paired_statistics(records, {"confidence_auroc": AUROC}, resamples=resamples, seed=seed)
    stat = result["confidence_auroc"]
    # The same multinomial draw over the distinct cells, each cell replayed by one of its
    # examples, then both AUROCs by the pairwise loop.
    keys, _ = _auroc_cells(records)
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    draws = np.random.default_rng([seed, 3]).multinomial(records.n, counts / records.n, resamples)
    sides = [(s["correct"] > 0.5, s["confidence"]) for s in (records.baseline, records.candidate)]
    delta = []
    for row in draws:
        index = np.repeat(first, row)
        (rb, cb), (rc, cc) = ((right[index], conf[index]) for right, conf in sides)
        delta.append(slow_auroc(rc, cc) - slow_auroc(rb, cb))
    finite = np.sort(np.array(delta)[np.isfinite(delta)])
    k = math.ceil(0.05 * finite.size / 2)
    assert stat.test == "paired_bootstrap" and stat.n == 80
    assert (stat.ci_low, stat.ci_high) == (pytest.approx(finite[k - 1]), pytest.approx(finite[-k]))
    assert stat.p_value == bootstrap_p(finite)


def test_the_auroc_bootstrap_agrees_with_the_generic_one() -> None:
    records = _records(400, 5, shift=-0.04)
    generic = replace(AUROC, name="auroc_generic", resampler=None)
    result = paired_statistics(
        records, {"confidence_auroc": AUROC, "auroc_generic": generic}, resamples=2000, seed=1
    )
    fast, slow = result["confidence_auroc"], result["auroc_generic"]
    width = fast.ci_high - fast.ci_low
    assert width > 0
    assert fast.ci_low == pytest.approx(slow.ci_low, abs=0.15 * width)
    assert fast.ci_high == pytest.approx(slow.ci_high, abs=0.15 * width)
    assert fast.p_value == pytest.approx(slow.p_value, abs=0.05)


def test_the_new_builtins_are_opt_in() -> None:
    assert {"confidence_auroc", "brier"} <= set(metrics_for(CLS))
    assert not {"confidence_auroc", "brier"} & set(select_metrics(CLS, None))
    chosen = select_metrics(CLS, ["brier", "confidence_auroc"])
    assert list(chosen) == ["confidence_auroc", "brier"]
