"""Cluster-aware resampling (`PairedRecords.groups`) and the block bootstrap at scale: A/A
calibration with a per-document effect, cluster resamples against slow loops, and blocked
against unblocked intervals."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from regress_action import resampling
from regress_action.metrics import Metric
from regress_action.records import PairedRecords
from regress_action.resampling import (
    BootstrapPlan,
    CellCounts,
    bootstrap_p,
    cell_deltas,
    index_deltas,
    multinomial_weights,
    percentile_ci,
    resampling_units,
)
from regress_action.stats import paired_statistics
from regress_action.tasks import classification
from regress_action.tasks.classification import METRICS as CLASSIFICATION_METRICS
from regress_action.tasks.classification import confidence_auroc, macro_f1
from regress_action.tasks.lm import METRICS as LM_METRICS
from regress_action.tasks.regression import METRICS as REGRESSION_METRICS

LOSS = LM_METRICS["loss"]
MACRO_F1 = CLASSIFICATION_METRICS["macro_f1"]
AUROC = CLASSIFICATION_METRICS["confidence_auroc"]


def documents(rng, docs, windows, doc_effect, scale=1.0):
    """LM windows of `docs` documents: the candidate's NLL differs from the baseline's by a
    per-document effect (mean 0: no difference in the population) plus per-window noise."""
    n = docs * windows
    groups = np.repeat(rng.permutation(docs) * 7 + 3, windows)  # arbitrary, not contiguous ids
    tokens = rng.integers(64, 256, n).astype(np.float64)
    base = tokens * rng.gamma(4.0, 0.75, n)
    effect = np.repeat(rng.normal(0.0, doc_effect, docs), windows)
    cand = base * scale + tokens * (effect + rng.normal(0.0, 0.05, n))
    sides = [{"nll_sum": nll, "tokens": tokens} for nll in (base, cand)]
    return PairedRecords("lm", np.arange(n), *sides, groups=groups)


def ratio_deltas(records, groups, resamples=500, seed=0):
    plan = BootstrapPlan()
    plan.add_ratio("loss", LOSS, records)
    rng = np.random.default_rng(seed)
    return plan.run(records.n, resamples, rng, groups)["loss"]


def test_aa_with_a_document_effect_is_calibrated_only_when_documents_are_resampled():
    # 100 documents × 10 windows, a per-document shift of the NLL difference with mean 0: the
    # windows of a document are not independent, and only the cluster bootstrap knows it.
    rng = np.random.default_rng(0)
    clustered, naive = [], []
    for sim in range(200):
        records = documents(rng, 100, 10, doc_effect=0.1)
        clustered.append(bootstrap_p(ratio_deltas(records, records.groups, seed=sim)) < 0.05)
        naive.append(bootstrap_p(ratio_deltas(records, None, seed=sim)) < 0.05)
    assert np.mean(clustered) <= 0.08
    assert np.mean(naive) >= 0.20


def test_cluster_bootstrap_is_the_bootstrap_of_the_document_sums():
    # Resampling clusters with weights w_g is resampling examples with weight w_g each.
    records = documents(np.random.default_rng(1), 30, 4, doc_effect=0.1)
    resamples, seed = 200, 3
    delta = ratio_deltas(records, records.groups, resamples, seed)
    _, unit = np.unique(records.groups, return_inverse=True)
    weights = multinomial_weights(np.random.default_rng(seed), 30, resamples)[:, unit]
    base, cand = records.baseline, records.candidate
    expected = [
        (w @ cand["nll_sum"]) / (w @ cand["tokens"]) - (w @ base["nll_sum"]) / (w @ base["tokens"])
        for w in weights
    ]
    np.testing.assert_allclose(delta, expected, rtol=1e-9)


def test_paired_statistics_reads_the_groups():
    records = documents(np.random.default_rng(2), 100, 10, doc_effect=0.1)
    alone = replace(records, groups=None)
    clustered = paired_statistics(records, {"loss": LOSS}, resamples=500)["loss"]
    naive = paired_statistics(alone, {"loss": LOSS}, resamples=500)["loss"]
    assert clustered.ci_high - clustered.ci_low > 2 * (naive.ci_high - naive.ci_low)


def test_one_example_per_group_is_the_example_bootstrap():
    records = documents(np.random.default_rng(3), 300, 1, doc_effect=0.1)
    ordered = replace(records, groups=np.arange(records.n))
    np.testing.assert_array_equal(
        ratio_deltas(ordered, ordered.groups), ratio_deltas(records, None)
    )


# --- cell counts and the generic bootstrap by cluster -----------------------------------------


def clustered_classification(rng, docs, size, k=5, doc_effect=0.0):
    """Examples in documents of `size`; with `doc_effect`, whether the candidate gets a
    document right shifts together (correlated within the document)."""
    n = docs * size
    label = rng.integers(0, k, n)
    shift = np.repeat(rng.normal(0.0, doc_effect, docs), size)
    groups = np.repeat(np.arange(docs) * 11, size)

    def side(p):
        right = rng.random(n) < p
        wrong = (label + rng.integers(1, k, n)) % k
        confidence = np.round(np.clip(0.5 + 0.3 * right + rng.normal(0, 0.15, n), 0, 1), 2)
        return {
            "label": label,
            "prediction": np.where(right, label, wrong),
            "correct": right.astype(np.float64),
            "confidence": confidence,
        }

    base, cand = side(np.full(n, 0.8)), side(np.clip(0.8 + shift, 0, 1))
    return PairedRecords("classification", np.arange(n), base, cand, k, groups=groups)


def test_macro_f1_cluster_bootstrap_equals_a_slow_loop():
    records = clustered_classification(np.random.default_rng(4), 40, 6, doc_effect=0.2)
    resamples, seed = 100, 5
    delta = cell_deltas(MACRO_F1.resampler, records, resamples, seed)
    _, unit = np.unique(records.groups, return_inverse=True)
    weights = multinomial_weights(np.random.default_rng([seed, 2]), 40, resamples)[:, unit]
    label = records.baseline["label"]
    expected = []
    for w in weights:
        index = np.repeat(np.arange(records.n), w.astype(np.int64))
        pred_b, pred_c = records.baseline["prediction"], records.candidate["prediction"]
        expected.append(
            macro_f1(label[index], pred_c[index], 5) - macro_f1(label[index], pred_b[index], 5)
        )
    np.testing.assert_allclose(delta, expected, rtol=1e-9, atol=1e-12)


def test_auroc_cluster_bootstrap_equals_a_slow_loop():
    records = clustered_classification(np.random.default_rng(5), 30, 5, doc_effect=0.2)
    resamples, seed = 60, 6
    delta = cell_deltas(AUROC.resampler, records, resamples, seed)
    _, unit = np.unique(records.groups, return_inverse=True)
    weights = multinomial_weights(np.random.default_rng([seed, 3]), 30, resamples)[:, unit]
    expected = []
    for w in weights:
        index = np.repeat(np.arange(records.n), w.astype(np.int64))
        b, c = records.baseline, records.candidate
        expected.append(
            confidence_auroc(c["correct"][index], c["confidence"][index])
            - confidence_auroc(b["correct"][index], b["confidence"][index])
        )
    expected = np.array(expected)
    np.testing.assert_allclose(delta, expected[np.isfinite(expected)], rtol=1e-9, atol=1e-12)


def test_generic_bootstrap_draws_whole_clusters():
    # A whole-set metric that is NaN unless every cluster it sees is complete (its size is 3).
    records = clustered_classification(np.random.default_rng(6), 50, 3)

    def complete(columns, num_classes):
        _, sizes = np.unique(columns["doc"], return_counts=True)
        return 0.0 if np.all(sizes % 3 == 0) else math.nan

    for side in (records.baseline, records.candidate):
        side["doc"] = records.groups.astype(np.float64)
    metric = Metric("complete", True, "corpus", "complete clusters", ("doc",), whole_set=complete)
    # Distinct clusters drawn more than once repeat all three examples: sizes stay multiples.
    assert index_deltas(metric, records, 50, 0).size == 50
    assert index_deltas(metric, replace(records, groups=None), 50, 0).size < 50


def test_cell_and_generic_cluster_bootstraps_agree():
    records = clustered_classification(np.random.default_rng(7), 150, 8, doc_effect=0.4)
    generic = replace(MACRO_F1, name="macro_f1_generic", resampler=None)
    cells = cell_deltas(MACRO_F1.resampler, records, 1000, 1)
    whole = index_deltas(generic, records, 1000, 1)
    assert np.std(cells) == pytest.approx(np.std(whole), rel=0.15)
    naive = cell_deltas(MACRO_F1.resampler, replace(records, groups=None), 1000, 1)
    assert np.std(cells) > 1.3 * np.std(naive)  # the document effect widens the interval


def test_a_single_cluster_gives_no_resamples():
    records = documents(np.random.default_rng(8), 1, 50, doc_effect=0.1)
    assert ratio_deltas(records, records.groups).size == 0
    records = clustered_classification(np.random.default_rng(8), 1, 40)
    assert cell_deltas(MACRO_F1.resampler, records, 50, 0).size == 0


# --- blocks: the bootstrap over random blocks of units keeps the interval ---------------------


def test_blocks_are_a_seeded_partition_of_the_units():
    unit, units, blocked = resampling_units(50_000, None, np.random.default_rng(0), 1000)
    assert blocked and units == 1000 and unit is not None
    sizes = np.bincount(unit, minlength=units)
    assert sizes.min() == sizes.max() == 50
    again, _, _ = resampling_units(50_000, None, np.random.default_rng(0), 1000)
    np.testing.assert_array_equal(unit, again)
    # Groups: whole clusters go to one block.
    groups = np.repeat(np.arange(30_000) * 3, 2)
    unit, units, blocked = resampling_units(groups.size, groups, np.random.default_rng(0), 1000)
    assert blocked and np.all(unit[0::2] == unit[1::2])
    assert resampling_units(100, None, np.random.default_rng(0), 1000)[:2] == (None, 100)


def lm_records(rng, n):
    tokens = rng.integers(16, 512, n).astype(np.float64)
    hardness = rng.gamma(4.0, 0.75, n)
    sides = []
    for scale in (1.0, 1.004):
        nll = tokens * hardness * scale * rng.lognormal(0.0, 0.1, n)
        sides.append({"nll_sum": nll, "tokens": tokens})
    return PairedRecords("lm", np.arange(n), *sides)


def classification_records(rng, n, k):
    label = rng.integers(0, k, n)
    difficulty = rng.random(n)

    def side(accuracy):
        right = difficulty + 0.15 * rng.standard_normal(n) < accuracy
        return {
            "label": label,
            "prediction": np.where(right, label, (label + rng.integers(1, k, n)) % k),
            "correct": right.astype(np.float64),
            "confidence": np.clip(rng.beta(6, 2, n) + 0.1 * right, 0, 1),
        }

    return PairedRecords("classification", np.arange(n), side(0.8), side(0.79), k)


def regression_records(rng, n):
    target = rng.normal(0, 1, n)
    sq = [(rng.normal(0, s, n)) ** 2 for s in (0.5, 0.51)]
    base = {"target": target, "sq_error": sq[0]}
    cand = {"target": target, "sq_error": sq[1]}
    return PairedRecords("regression", np.arange(n), base, cand)


def interval(deltas):
    return np.array(percentile_ci(deltas, 0.05))


def assert_same_interval(blocked, plain):
    low, high = interval(plain)
    width = high - low
    assert width > 0
    assert blocked[1] - blocked[0] == pytest.approx(width, rel=0.12)
    assert blocked.mean() == pytest.approx((low + high) / 2, abs=0.1 * width)


@pytest.fixture
def small_blocks(monkeypatch):
    """Block above 2,000 units, into 2,000 blocks (1,000 for a wide cell-count metric; the
    defaults: above 20,000, into 10,000 and at least 2,000)."""

    def use(on):
        monkeypatch.setattr(resampling, "BLOCK_MIN_UNITS", 2_000 if on else 10**9)
        monkeypatch.setattr(resampling, "BLOCKS", 2_000)
        monkeypatch.setattr(resampling, "MIN_BLOCKS", 1_000)
        monkeypatch.setattr(resampling, "BLOCK_CELLS", 2_000_000)
        monkeypatch.setattr(classification, "AUROC_BIN_MIN_N", 2_000 if on else 10**9)

    return use


def test_blocked_sums_keep_the_interval(small_blocks):
    rng = np.random.default_rng(10)
    n, resamples = 20_000, 2000
    for records, name, metric in [
        (lm_records(rng, n), "loss", LOSS),
        (regression_records(rng, n), "r2", REGRESSION_METRICS["r2"]),
    ]:
        out = {}
        for on in (True, False):
            small_blocks(on)
            plan = BootstrapPlan()
            if metric.kind == "ratio":
                plan.add_ratio(name, metric, records)
            else:
                plan.add_block(name, metric.resampler.block(records), "paired_bootstrap")
            out[on] = plan.run(n, resamples, np.random.default_rng(1))[name]
        assert_same_interval(interval(out[True]), out[False])


@pytest.mark.parametrize(("name", "k"), [("macro_f1", 10), ("macro_f1", 300), ("auroc", 10)])
def test_blocked_cell_counts_keep_the_interval(small_blocks, monkeypatch, name, k):
    records = classification_records(np.random.default_rng(11), 10_000, k)
    metric = MACRO_F1 if name == "macro_f1" else AUROC
    assert isinstance(metric.resampler, CellCounts)
    out = {}
    for on in (True, False):
        small_blocks(on)
        # Blocks on: every cell-count metric takes the blocked path (not the exact multinomial
        # over few cells). Off: the multinomial over cells, or index draws over many cells.
        monkeypatch.setattr(resampling, "MULTINOMIAL_MAX_CELLS", 10 if on else 4096)
        out[on] = cell_deltas(metric.resampler, records, 2000, 2)
    assert_same_interval(interval(out[True]), out[False])


def test_binned_auroc_is_exact_on_the_eval_set(small_blocks):
    small_blocks(True)
    records = classification_records(np.random.default_rng(12), 30_000, 10)
    keys, context = classification._auroc_cells(records)
    assert context[1].size <= classification.AUROC_BINS
    cells, counts = np.unique(keys, return_counts=True)
    delta = AUROC.resampler.delta(counts[None].astype(np.float64), cells, context)[0]
    b, c = records.baseline, records.candidate
    expected = confidence_auroc(c["correct"], c["confidence"]) - confidence_auroc(
        b["correct"], b["confidence"]
    )
    assert delta == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_large_n_is_deterministic_and_blocked():
    records = lm_records(np.random.default_rng(13), 60_000)
    first = ratio_deltas(records, None, resamples=300, seed=4)
    np.testing.assert_array_equal(first, ratio_deltas(records, None, resamples=300, seed=4))
    cls = classification_records(np.random.default_rng(14), 30_000, 200)
    one = cell_deltas(MACRO_F1.resampler, cls, 300, 4)
    np.testing.assert_array_equal(one, cell_deltas(MACRO_F1.resampler, cls, 300, 4))


@pytest.mark.parametrize(("groups", "blocks"), [(False, False), (False, True), (True, True)])
def test_a_sparse_block_gives_the_dense_blocks_deltas(small_blocks, groups, blocks):
    from scipy import sparse

    small_blocks(blocks)
    records = regression_records(np.random.default_rng(15), 5_000)
    if groups:
        records = replace(records, groups=np.arange(records.n) // 2)
    metric = REGRESSION_METRICS["r2"]
    out = []
    for convert in (np.asarray, sparse.csr_matrix):
        columns, delta = metric.resampler.block(records)
        plan = BootstrapPlan()
        plan.add_block("r2", (convert(columns), delta), "paired_bootstrap")
        out.append(plan.run(records.n, 300, np.random.default_rng(3), records.groups)["r2"])
    np.testing.assert_allclose(out[0], out[1], rtol=1e-9, atol=1e-12)
