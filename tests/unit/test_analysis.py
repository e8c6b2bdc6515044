"""Flips and the per-class table against hand-computed small examples."""

from __future__ import annotations

import numpy as np
import pytest

from regress_action.analysis import largest_first
from regress_action.records import PairedRecords
from regress_action.report import TOP_EXAMPLES
from regress_action.tasks.classification import flips, per_class
from regress_action.tasks.lm import loss_increases


@pytest.fixture
def classification() -> PairedRecords:
    # id:          10   11   12   13   14   15   16
    label = np.array([0, 0, 1, 1, 2, 2, 0])
    base_pred = np.array([0, 0, 1, 0, 2, 1, 1])  # right: 10 11 12 14
    cand_pred = np.array([0, 1, 0, 1, 1, 2, 1])  # right: 10 13 15
    base_loss = np.array([0.1, 0.2, 0.3, 1.0, 0.2, 1.5, 2.0])
    cand_loss = np.array([0.1, 0.9, 2.3, 0.4, 0.7, 0.5, 2.0])

    def side(pred, loss):
        return {"label": label, "prediction": pred, "correct": (pred == label) * 1.0, "loss": loss}

    ids = np.arange(10, 17)
    return PairedRecords(
        "classification", ids, side(base_pred, base_loss), side(cand_pred, cand_loss), 4
    )


def test_classification_flips(classification):
    result = flips(classification)
    # Newly wrong: 11 (+0.7), 12 (+2.0), 14 (+0.5) -> largest loss increase first.
    assert [e.example_id for e in result.newly_wrong] == [12, 11, 14]
    first = result.newly_wrong[0]
    assert (first.label, first.baseline_prediction, first.candidate_prediction) == (1, 1, 0)
    assert (first.baseline_loss, first.candidate_loss) == (0.3, 2.3)
    assert first.loss_delta == pytest.approx(2.0)
    # Newly right: 13 (-0.6), 15 (-1.0) -> largest loss decrease first.
    assert [e.example_id for e in result.newly_right] == [15, 13]
    assert result.loss_increases == []


def test_top_limits_each_list(classification):
    result = flips(classification, top=1)
    assert [e.example_id for e in result.newly_wrong] == [12]
    assert [e.example_id for e in result.newly_right] == [15]


def test_lm_loss_increases():
    tokens = np.array([10.0, 4.0, 0.0, 5.0])
    base = {"nll_sum": np.array([20.0, 4.0, 0.0, 10.0]), "tokens": tokens}
    cand = {"nll_sum": np.array([25.0, 12.0, 0.0, 5.0]), "tokens": tokens}
    records = PairedRecords("lm", np.array([7, 8, 9, 6]), base, cand)
    # Mean token loss: 2.0 -> 2.5 (+0.5), 1.0 -> 3.0 (+2.0), no tokens (skipped), 2.0 -> 1.0.
    result = loss_increases(records)
    assert [e.example_id for e in result.loss_increases] == [8, 7]
    assert [e.loss_delta for e in result.loss_increases] == [2.0, 0.5]
    assert (result.loss_increases[0].baseline_loss, result.loss_increases[0].candidate_loss) == (
        1.0,
        3.0,
    )
    assert [e.example_id for e in loss_increases(records, top=1).loss_increases] == [8]
    assert result.newly_wrong == result.newly_right == []


def test_per_class(classification):
    rows = per_class(classification, ["cat", "dog", "emu", "fox"])
    # class 0: ids 10 11 16 -> base 2/3, cand 1/3; class 1: 12 13 -> 1/2, 1/2;
    # class 2: 14 15 -> 1/2, 1/2; class 3 has no examples and is omitted.
    assert [(r.label, r.name, r.n) for r in rows] == [(0, "cat", 3), (1, "dog", 2), (2, "emu", 2)]
    assert rows[0].baseline_accuracy == pytest.approx(2 / 3)
    assert rows[0].candidate_accuracy == pytest.approx(1 / 3)
    assert rows[0].delta == pytest.approx(-1 / 3)
    assert [r.delta for r in rows[1:]] == [0.0, 0.0]


def test_per_class_without_names(classification):
    assert all(r.name is None for r in per_class(classification))


def test_flips_at_scale_keep_the_largest_changes_and_count_them_all():
    n = 100_000
    rng = np.random.default_rng(0)
    label = rng.integers(0, 10, n)

    def side():
        pred = np.where(rng.random(n) < 0.8, label, rng.integers(0, 10, n))
        return {
            "label": label,
            "prediction": pred,
            "correct": (pred == label) * 1.0,
            "loss": rng.random(n),
        }

    base, cand = side(), side()
    records = PairedRecords("classification", np.arange(n), base, cand, 10)
    result = flips(records)
    wrong = np.flatnonzero((base["correct"] == 1) & (cand["correct"] == 0))
    right = np.flatnonzero((base["correct"] == 0) & (cand["correct"] == 1))
    # The counts are of every flip, the lists the TOP_EXAMPLES largest changes, as a full sort
    # would order them.
    assert (result.newly_wrong_count, result.newly_right_count) == (wrong.size, right.size)
    delta = cand["loss"] - base["loss"]
    full_wrong = wrong[np.argsort(-delta[wrong], kind="stable")][:TOP_EXAMPLES]
    full_right = right[np.argsort(delta[right], kind="stable")][:TOP_EXAMPLES]
    assert [e.example_id for e in result.newly_wrong] == full_wrong.tolist()
    assert [e.example_id for e in result.newly_right] == full_right.tolist()
    assert result.count("newly_wrong") == wrong.size
    assert sum(r.n for r in per_class(records)) == n


@pytest.mark.parametrize("top", [None, 0, 1, 3, 5, 7, 20])
def test_largest_first_is_a_stable_full_sort_cut_at_top(top):
    """Ties keep their order, NaN changes come last, and the partial selection gives what a
    full stable sort gives."""
    values = np.array([0.5, 2.0, np.nan, 2.0, -1.0, 0.5, 2.0, np.nan, 3.0])
    keyed = np.where(np.isnan(values), -np.inf, values)
    expected = np.argsort(-keyed, kind="stable")[:top]
    assert largest_first(values, top).tolist() == expected.tolist()
