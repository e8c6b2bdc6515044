"""Paired statistics: reference values (statsmodels, scipy), slow-loop bootstrap references,
degenerate inputs, and A/A calibration / power of the `gate` mode."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from regress_action import resampling, stats
from regress_action.metrics import Metric
from regress_action.records import PairedRecords
from regress_action.resampling import (
    bootstrap_p,
    multinomial_weights,
    percentile_ci,
    poisson_weights,
    weight_chunks,
)
from regress_action.spec import VerdictConfig
from regress_action.stats import MetricStats, mcnemar, mcnemar_p, paired_statistics
from regress_action.tasks.classification import METRICS as ALL_CLASSIFICATION_METRICS
from regress_action.tasks.classification import macro_f1
from regress_action.tasks.lm import METRICS as LM_METRICS
from regress_action.verdict import apply_significance, family, family_alphas, holm, judge

# Plug-in ECE has no valid paired test (`tested=False`): every other metric is tested.
CLASSIFICATION_METRICS = {k: v for k, v in ALL_CLASSIFICATION_METRICS.items() if v.tested}

K = 10


def classification_side(rng, label, p_correct, confidence_shift=0.0):
    """One model's records given per-example P(correct) (a shared latent difficulty)."""
    n = label.size
    correct = rng.random(n) < p_correct
    wrong = (label + rng.integers(1, K, n)) % K
    confidence = np.clip(0.35 + 0.6 * p_correct + 0.08 * rng.standard_normal(n), 0.1, 1.0)
    confidence = np.clip(confidence + confidence_shift, 0.1, 1.0)
    true_prob = np.where(correct, confidence, (1 - confidence) / (K - 1))
    # Brier with the top class at `confidence` and the rest spread evenly over the K - 1 others.
    rest = (1 - confidence) / (K - 1)
    brier = (K - 2) * rest**2 + np.where(
        correct, (1 - confidence) ** 2 + rest**2, confidence**2 + (1 - rest) ** 2
    )
    return {
        "label": label,
        "prediction": np.where(correct, label, wrong),
        "correct": correct.astype(np.float64),
        "loss": -np.log(np.maximum(true_prob, 1e-6)),
        "confidence": confidence,
        "brier": brier,
        "top5_correct": (correct | (rng.random(n) < 0.5)).astype(np.float64),
    }


def classification_records(rng, n, drop=0.0, confidence_shift=0.0):
    label = rng.integers(0, K, n)
    p_correct = rng.beta(1.33, 0.33, n)  # mean 0.8; shared difficulty, ~20 % discordant
    base = classification_side(rng, label, p_correct)
    cand = classification_side(rng, label, p_correct * (1 - drop), confidence_shift)
    return PairedRecords("classification", np.arange(n), base, cand, K)


def lm_records(rng, n, scale=1.0):
    tokens = rng.integers(5, 60, n).astype(np.float64)
    hardness = rng.gamma(4.0, 0.8, n)
    sides = []
    for factor in (1.0, scale):
        nll = tokens * hardness * factor * rng.lognormal(0, 0.2, n)
        sides.append(
            {
                "nll_sum": nll,
                "tokens": tokens,
                "correct_tokens": rng.binomial(tokens.astype(np.int64), 0.4).astype(float),
                "bytes": tokens * 4.0,
            }
        )
    return PairedRecords("lm", np.arange(n), sides[0], sides[1])


def identical(records):
    return PairedRecords(
        records.task, records.example_ids, records.baseline, records.baseline, records.num_classes
    )


# --- McNemar and Holm against statsmodels ------------------------------------------------------

TABLES = [(50, 0, 0, 50), (10, 3, 0, 7), (100, 7, 19, 30), (0, 1, 0, 0), (5, 40, 41, 2)]
TABLES += [(400, b, c, 90) for b in range(0, 60, 7) for c in range(0, 60, 11)]


def outcomes(table):
    """0/1 arrays for a 2×2 table [[both right, base right only], [cand right only, both wrong]]."""
    both, base_only, cand_only, neither = table
    base = np.repeat([1.0, 1.0, 0.0, 0.0], table)
    cand = np.repeat([1.0, 0.0, 1.0, 0.0], table)
    assert base.size == both + base_only + cand_only + neither
    return base, cand


@pytest.mark.parametrize("table", TABLES)
def test_mcnemar_p_equals_statsmodels_exact(table):
    base, cand = outcomes(table)
    result = mcnemar(base, cand)
    expected = sm_mcnemar(np.array(table).reshape(2, 2), exact=True).pvalue
    assert result.p_value == pytest.approx(expected, abs=1e-12)
    assert (result.n_broken, result.n_fixed) == (table[1], table[2])
    assert result.test == "mcnemar_exact" and result.n == sum(table)


@pytest.mark.parametrize("table", TABLES)
def test_binary_ci_contains_the_delta_and_agrees_with_the_exact_test(table):
    base, cand = outcomes(table)
    fixed, broken, n = table[2], table[1], sum(table)
    for confidence in (0.9, 0.95, 0.99):
        result = mcnemar(base, cand, confidence=confidence)
        assert result.ci_low <= (fixed - broken) / n <= result.ci_high
        assert result.ci_low >= -1.0 and result.ci_high <= 1.0
        outside = result.ci_low > 0 or result.ci_high < 0
        assert outside == (result.p_value < 1 - confidence), (table, confidence)


def test_binary_ci_is_clopper_pearson_on_the_discordant_pairs():
    # 1000 fixed, 500 broken of 10,000: π = P(fixed | discordant), delta = 0.15 · (2π - 1).
    low, high = stats.mcnemar_ci(1000, 500, 10_000, 0.95)
    ci = sps.binomtest(1000, 1500, 0.5).proportion_ci(0.95, method="exact")
    assert (low, high) == (
        pytest.approx(0.15 * (2 * ci.low - 1)),
        pytest.approx(0.15 * (2 * ci.high - 1)),
    )
    assert low < 0.05 < high


def test_binary_ci_and_exact_p_never_disagree_about_zero():
    rng = np.random.default_rng(8)
    for n in (30, 100, 1000):
        for fixed, broken in rng.multinomial(n, [0.1, 0.1, 0.8], size=400)[:, :2]:
            for alpha in (0.05, 0.05 / 3):
                low, high = stats.mcnemar_ci(int(fixed), int(broken), n, 1 - alpha)
                significant = mcnemar_p(int(fixed), int(broken)) < alpha
                assert significant == (low > 0 or high < 0), (n, fixed, broken, alpha)


def test_binary_ci_covers_the_true_delta():
    # True accuracy delta 0.01 from discordance rates 0.06 (fixed) and 0.05 (broken), n = 500.
    rng = np.random.default_rng(7)
    cells = rng.multinomial(500, [0.05, 0.06, 0.89], size=2000)
    covered = [
        lo <= 0.01 <= hi for lo, hi in (stats.mcnemar_ci(int(f), int(b), 500) for b, f, _ in cells)
    ]
    assert np.mean(covered) >= 0.94


def test_mcnemar_p_without_discordant_pairs_is_one():
    assert mcnemar_p(0, 0) == 1.0


@pytest.mark.parametrize("m", [1, 2, 5, 12, 40])
def test_holm_equals_statsmodels(m, monkeypatch):
    # multipletests runs a full gc.collect() on every call: with torch loaded that is ~50 ms
    # each, and nothing the adjusted p-values depend on.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    rng = np.random.default_rng(m)
    for _ in range(20):
        p = rng.random(m) ** 3
        p[rng.random(m) < 0.2] = 1.0
        if m > 2:
            p[1] = p[0]  # ties
        expected = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(holm(list(p)), expected, rtol=0, atol=1e-12)


def test_holm_leaves_a_nan_out_of_the_family():
    adjusted = holm([0.01, math.nan, 0.04])
    assert math.isnan(adjusted[1])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)


# --- mean metrics: the paired t-test and its interval -------------------------------------------


@pytest.mark.parametrize("n", [1000, 3000])
def test_mean_metric_uses_paired_t_equal_to_scipy(n):
    rng = np.random.default_rng(3)
    records = classification_records(rng, n)
    result = paired_statistics(records, {"loss": CLASSIFICATION_METRICS["loss"]})["loss"]
    expected = sps.ttest_rel(records.candidate["loss"], records.baseline["loss"])
    interval = expected.confidence_interval(0.95)
    assert result.test == "paired_t"
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert (result.ci_low, result.ci_high) == (
        pytest.approx(interval.low, rel=1e-9),
        pytest.approx(interval.high, rel=1e-9),
    )


def test_small_n_mean_metric_uses_the_studentised_bootstrap():
    rng = np.random.default_rng(3)
    records = classification_records(rng, 300)
    result = paired_statistics(records, {"loss": CLASSIFICATION_METRICS["loss"]})["loss"]
    t_test = sps.ttest_rel(records.candidate["loss"], records.baseline["loss"])
    assert result.test == "paired_bootstrap_t"
    # Close to the t-test on near-normal differences; the interval holds the mean delta.
    assert result.p_value == pytest.approx(t_test.pvalue, abs=0.03)
    delta = float(np.mean(records.candidate["loss"] - records.baseline["loss"]))
    assert result.ci_low < delta < result.ci_high


def test_studentised_interval_covers_skewed_differences_at_n_100():
    # Exponential differences (skewness 2): the t interval covers 93.6 % here (1,500 runs), the
    # studentised bootstrap 95 %; 300 runs keep this test fast.
    rng = np.random.default_rng(12)
    covered = 0
    for i in range(300):
        diff = rng.exponential(1.0, 100) - 1.0
        stat = stats.paired_t(diff, 0.95, resamples=1000, rng=np.random.default_rng(i))
        assert stat.test == "paired_bootstrap_t"
        assert (stat.p_value < 0.05) == (stat.ci_low > 0 or stat.ci_high < 0)
        covered += stat.ci_low <= 0 <= stat.ci_high
    assert covered / 300 >= 0.93


def test_cluster_robust_t_uses_cluster_sums():
    # 40 clusters of 5: the test is the one-sample t-test of the cluster means when clusters
    # are equal-sized (G/(G-1)·Σ(D_g - mean·m)²/n² = s²_means / G).
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(40), 5)
    diff = rng.normal(0.0, 1.0, 40)[groups] + rng.normal(0.1, 0.5, 200)
    result = stats.paired_t(diff, 0.95, groups)
    expected = sps.ttest_1samp(diff.reshape(40, 5).mean(axis=1), 0.0)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.clusters == 40
    plain = stats.paired_t(diff, 0.95)
    assert plain.ci_high - plain.ci_low < result.ci_high - result.ci_low


def test_constant_shift_is_certain_and_zero_shift_is_not():
    assert stats.paired_t(np.full(2000, 0.1)).p_value == 0.0
    assert stats.paired_t(np.zeros(2000)).p_value == 1.0


def test_minimum_detectable_effect_is_the_80_percent_power_shift():
    # For a z-test: (1.959964 + 0.841621) · se.
    assert stats.minimum_detectable_effect(0.01, 0.05) == pytest.approx(0.0280158, rel=1e-5)
    rng = np.random.default_rng(5)
    diff = rng.normal(0.0, 1.0, 400)
    result = stats.paired_t(diff)
    assert result.mde == pytest.approx(2.8 * diff.std(ddof=1) / 20, rel=0.01)


# --- bootstrap: identical sides, real differences, determinism, slow-loop reference ------------


@pytest.mark.parametrize("n", [300, 20_000])  # multinomial and Poisson weights
def test_identical_models_give_p_one_and_a_zero_ci(n):
    rng = np.random.default_rng(1)
    for records, specs in [
        (identical(classification_records(rng, n)), CLASSIFICATION_METRICS),
        (identical(lm_records(rng, n)), LM_METRICS),
    ]:
        result = paired_statistics(records, specs, resamples=200)
        assert set(result) == set(specs)
        for name, stat in result.items():
            assert (stat.p_value, stat.n) == (1.0, n)
            assert (stat.ci_low, stat.ci_high) == (0.0, 0.0), name


def test_large_lm_difference_is_significant_and_ci_holds_the_delta():
    records = lm_records(np.random.default_rng(2), 2000, scale=1.05)
    result = paired_statistics(records, LM_METRICS, resamples=500)
    for name in ("loss", "perplexity", "bits_per_byte"):
        stat = result[name]
        delta = LM_METRICS[name].value(records.candidate) - LM_METRICS[name].value(records.baseline)
        assert stat.test == "paired_bootstrap_log_ratio"
        assert stat.p_value < 0.01
        assert 0 < stat.ci_low <= delta <= stat.ci_high


def test_large_corpus_difference_is_significant():
    rng = np.random.default_rng(4)
    records = classification_records(rng, 3000, drop=0.1, confidence_shift=0.1)
    result = paired_statistics(records, CLASSIFICATION_METRICS, resamples=500)
    for name, sign in [("macro_f1", -1), ("calibration_error_sq", 1), ("accuracy", -1)]:
        stat = result[name]
        assert stat.p_value < 0.01
        assert (stat.ci_high < 0) if sign < 0 else (stat.ci_low > 0)


def test_deterministic_given_seed():
    records = classification_records(np.random.default_rng(6), 500)
    first = paired_statistics(records, CLASSIFICATION_METRICS, resamples=300, seed=7)
    assert paired_statistics(records, CLASSIFICATION_METRICS, resamples=300, seed=7) == first
    other = paired_statistics(records, CLASSIFICATION_METRICS, resamples=300, seed=8)
    assert other["macro_f1"] != first["macro_f1"]


def reference_weights(records, resamples, seed):
    """The weight rows `paired_statistics` draws: one per resample, in example order."""
    return np.concatenate(list(weight_chunks(np.random.default_rng(seed), records.n, resamples)))


def order_statistic_ci(delta, k):
    """The k-th smallest and the k-th largest resampled delta."""
    ordered = np.sort(delta)
    return ordered[k - 1], ordered[-k]


def slow_delta(spec, name, records, weights):
    """A metric's delta recomputed by `metrics.compute` on one weighted resample."""
    sides = []
    # Multinomial counts and the table's Poisson weights are both whole numbers: expand them.
    index = np.repeat(np.arange(records.n), weights.astype(np.int64))
    for side in (records.baseline, records.candidate):
        cols = {key: value[index] for key, value in side.items()}
        sides.append(spec.value(cols, records.num_classes))
    return sides[1] - sides[0]


@pytest.mark.parametrize("poisson", [False, True])
def test_vectorised_bootstrap_equals_a_slow_loop(monkeypatch, poisson):
    if poisson:  # force the Poisson path at a small n
        monkeypatch.setattr(resampling, "MULTINOMIAL_MAX_N", 10)
    rng = np.random.default_rng(9)
    resamples, seed, alpha = 150, 3, 0.1
    for records, specs in [
        (lm_records(rng, 60, scale=1.02), LM_METRICS),
    ]:
        result = paired_statistics(records, specs, alpha=0.1, resamples=resamples, seed=seed)
        weights = reference_weights(records, resamples, seed)
        for name, spec in specs.items():
            delta = np.array([slow_delta(spec, name, records, w) for w in weights])
            # k = ⌈αB/2⌉ = ⌈0.1 · 150 / 2⌉ = 8, the inverted-CDF quantile at α/2 and its mirror
            low, high = order_statistic_ci(delta, 8)
            assert low == np.quantile(delta, alpha / 2, method="inverted_cdf")
            assert result[name].ci_low == pytest.approx(low, rel=1e-9, abs=1e-12)
            assert result[name].ci_high == pytest.approx(high, rel=1e-9, abs=1e-12)
            assert result[name].p_value == bootstrap_p(delta)


def test_macro_f1_bootstrap_equals_a_slow_loop():
    records = classification_records(np.random.default_rng(10), 120, drop=0.05)
    resamples, seed = 200, 4
    result = paired_statistics(
        records, {"macro_f1": CLASSIFICATION_METRICS["macro_f1"]}, resamples=resamples, seed=seed
    )["macro_f1"]
    label, pred_b = records.baseline["label"], records.baseline["prediction"]
    pred_c = records.candidate["prediction"]
    cells, counts = np.unique((label * K + pred_b) * K + pred_c, return_counts=True)
    draws = np.random.default_rng([seed, 2]).multinomial(records.n, counts / records.n, resamples)
    delta = []
    for row in draws:
        code = np.repeat(cells, row)
        labels, base, cand = code // (K * K), (code // K) % K, code % K
        delta.append(macro_f1(labels, cand, K) - macro_f1(labels, base, K))
    low, high = order_statistic_ci(np.array(delta), 5)  # k = ⌈0.05 · 200 / 2⌉
    assert (result.ci_low, result.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert result.p_value == bootstrap_p(np.array(delta))


def test_poisson_weights_have_poisson_moments():
    weights = poisson_weights(np.random.default_rng(0), 100_000, 5)
    assert weights.mean() == pytest.approx(1.0, abs=0.005)
    assert weights.var() == pytest.approx(1.0, abs=0.01)
    assert np.mean(weights == 0) == pytest.approx(math.exp(-1), abs=0.003)


def test_multinomial_weights_are_draw_counts():
    weights = multinomial_weights(np.random.default_rng(0), 50, 30)
    assert weights.shape == (30, 50)
    np.testing.assert_array_equal(weights.sum(axis=1), 50)


# --- degenerate inputs --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_eval_sets_give_no_evidence(n):
    rng = np.random.default_rng(0)
    for records, specs in [
        (classification_records(rng, n), CLASSIFICATION_METRICS),
        (lm_records(rng, n), LM_METRICS),
    ]:
        result = paired_statistics(records, specs)
        assert set(result) == set(specs)
        assert all(s.p_value == 1.0 and s.n == n for s in result.values())


def test_metrics_without_their_columns_are_skipped():
    records = classification_records(np.random.default_rng(0), 50)
    del records.candidate["top5_correct"]
    assert "top5_accuracy" not in paired_statistics(records, CLASSIFICATION_METRICS)


# --- calibration and power of the gate ----------------------------------------------------------

GATE = VerdictConfig(significance="gate", threshold=0.0, alpha=0.05)


def gate_regressed(records, specs, resamples=200, seed=0):
    values = {
        side: {name: spec.value(cols, K) for name, spec in specs.items()}
        for side, cols in (("baseline", records.baseline), ("candidate", records.candidate))
    }
    results = judge(values["baseline"], values["candidate"], GATE, specs)
    members = family(results, specs)
    alphas = family_alphas(members, specs, GATE.alpha)
    stats_ = paired_statistics(records, specs, alphas=alphas, resamples=resamples, seed=seed)
    apply_significance(results, stats_, GATE, members)
    return {name for name, r in results.items() if r.status == "regressed"}


def mcnemar_counts(rng, sims, n, drop):
    """Vectorised: (n_fixed, n_broken) of `sims` simulated comparisons (shared difficulty)."""
    p_correct = rng.beta(1.33, 0.33, (sims, n))
    base = rng.random((sims, n)) < p_correct
    cand = rng.random((sims, n)) < p_correct * (1 - drop)
    return (cand & ~base).sum(axis=1), (base & ~cand).sum(axis=1)


def gate_flags(n_fixed, n_broken, n):
    """`gate` status of accuracy for each simulated comparison, through the real verdict."""
    spec = {"accuracy": CLASSIFICATION_METRICS["accuracy"]}
    flagged = []
    for fixed, broken in zip(n_fixed.tolist(), n_broken.tolist(), strict=True):
        stat = MetricStats("mcnemar_exact", mcnemar_p(fixed, broken), 0.0, 0.0, n, fixed, broken)
        results = judge({"accuracy": 0.8}, {"accuracy": 0.8 + (fixed - broken) / n}, GATE, spec)
        apply_significance(results, {"accuracy": stat}, GATE)
        flagged.append(results["accuracy"].status == "regressed")
    return np.array(flagged)


def test_aa_gate_false_regressions_at_most_alpha_vectorised():
    n_fixed, n_broken = mcnemar_counts(np.random.default_rng(11), 1000, 2000, drop=0.0)
    rate = gate_flags(n_fixed, n_broken, 2000).mean()
    assert rate <= GATE.alpha


def test_gate_detects_a_two_point_accuracy_drop_at_n_5000():
    n = 5000
    n_fixed, n_broken = mcnemar_counts(np.random.default_rng(12), 400, n, drop=0.025)
    assert ((n_broken - n_fixed) / n).mean() == pytest.approx(0.02, abs=0.002)
    assert gate_flags(n_fixed, n_broken, n).mean() >= 0.8


def test_aa_gate_false_regressions_at_most_alpha_full_path():
    # Every classification metric, gated and Bonferroni-adjusted, through paired_statistics;
    # without the adjustment 9 of these 100 A/A comparisons would flag a regression.
    rng = np.random.default_rng(13)
    flagged = [
        bool(gate_regressed(classification_records(rng, 400), CLASSIFICATION_METRICS, seed=i))
        for i in range(100)
    ]
    assert np.mean(flagged) <= GATE.alpha


def test_gate_power_full_path():
    rng = np.random.default_rng(14)
    specs = {name: CLASSIFICATION_METRICS[name] for name in ("accuracy", "loss", "macro_f1")}
    detected = [
        "accuracy" in gate_regressed(classification_records(rng, 5000, drop=0.025), specs)
        for _ in range(50)
    ]
    assert np.mean(detected) >= 0.8


# --- non-finite per-example values: NaN statistics, no warnings ----------------------------------


@pytest.mark.parametrize("n", [8, 300, 3000])
@pytest.mark.parametrize("bad", ["nan", "inf", "inf-inf"])
def test_paired_t_is_nan_for_non_finite_differences(n, bad):
    diff = np.random.default_rng(n).normal(0.3, 1.0, n)
    diff[n // 2] = {"nan": math.nan, "inf": math.inf, "inf-inf": math.inf - math.inf}[bad]
    result = stats.paired_t(diff)
    assert result.test == "paired_t"
    assert math.isnan(result.p_value) and math.isnan(result.ci_low)


def poison(records, side, column, value, index=3):
    """A copy of `records` with one per-example value replaced on one side (or "both")."""
    sides = {"baseline": dict(records.baseline), "candidate": dict(records.candidate)}
    for name in ("baseline", "candidate") if side == "both" else (side,):
        col = np.array(sides[name][column], dtype=np.float64)
        col[index] = value
        sides[name][column] = col
    return PairedRecords(
        records.task,
        records.example_ids,
        sides["baseline"],
        sides["candidate"],
        records.num_classes,
    )


CONFIDENCE_METRICS = {
    "calibration_error_sq",
    "confidence_auroc",
}  # the metrics reading `confidence`
NON_FINITE_CASES = [
    # (task, n, side, column, value, metrics that must become NaN)
    ("classification", 300, "both", "loss", math.inf, {"loss"}),  # inf - inf, sign-flip
    ("classification", 300, "candidate", "loss", math.nan, {"loss"}),
    ("classification", 3000, "both", "loss", math.inf, {"loss"}),  # inf - inf, t-test
    ("classification", 3000, "baseline", "loss", -math.inf, {"loss"}),
    ("classification", 300, "candidate", "confidence", math.nan, CONFIDENCE_METRICS),
    ("classification", 300, "baseline", "correct", math.nan, {"accuracy", *CONFIDENCE_METRICS}),
    ("lm", 300, "candidate", "nll_sum", math.inf, {"loss", "perplexity", "bits_per_byte"}),
    ("lm", 20_000, "baseline", "tokens", math.nan, {"loss", "perplexity", "token_accuracy"}),
]


@pytest.mark.parametrize(("task", "n", "side", "column", "value", "nan_metrics"), NON_FINITE_CASES)
def test_non_finite_per_example_values_give_nan_statistics(
    task, n, side, column, value, nan_metrics
):
    rng = np.random.default_rng(16)
    make, specs = (
        (classification_records, CLASSIFICATION_METRICS)
        if task == "classification"
        else (lm_records, LM_METRICS)
    )
    records = poison(make(rng, n), side, column, value)
    result = paired_statistics(records, specs, resamples=300)
    assert set(result) == set(specs)
    for name, stat in result.items():
        if name in nan_metrics:
            assert math.isnan(stat.p_value) and math.isnan(stat.ci_low), name
            assert math.isnan(stat.ci_high) and stat.n == n, name
        else:  # the other metrics are untouched
            assert 0.0 <= stat.p_value <= 1.0 and stat.ci_low <= stat.ci_high, name


# --- bootstrap p and percentile CI: dual by construction -----------------------------------------


def excludes_zero(low, high):
    return low > 0 or high < 0


def test_bootstrap_p_and_ci_agree_at_the_review_boundary():
    # 50 of 2000 resampled deltas ≤ 0 at α = 0.05: p = 0.05 is not < α, so 0 is in the CI.
    for below, significant in [(50, False), (49, True), (51, False)]:
        delta = np.r_[np.linspace(-1.0, 0.0, below), np.linspace(0.01, 1.0, 2000 - below)]
        p = bootstrap_p(delta)
        low, high = percentile_ci(delta, 0.05)
        assert p == pytest.approx(2 * below / 2000)
        assert (p < 0.05) == significant == excludes_zero(low, high)
    # With 1/B ≥ α no p can fall below α (the floor is 1/B): the interval is unbounded.
    delta = np.linspace(0.1, 1.0, 10)
    assert bootstrap_p(delta) == 0.1
    assert percentile_ci(delta, 0.1) == (-math.inf, math.inf)
    assert percentile_ci(delta, 0.2) == (0.1, 1.0)  # k = 1: the extremes


def test_bootstrap_p_below_alpha_iff_zero_outside_the_interval():
    rng = np.random.default_rng(17)
    checked = 0
    for _ in range(2000):
        size = int(rng.integers(1, 300))
        # Rounded draws: ties, exact zeros, all-positive and all-negative vectors.
        delta = np.round(rng.normal(rng.normal(0, 1.5), 1.0, size), int(rng.integers(0, 3)))
        m = min(np.count_nonzero(delta <= 0), np.count_nonzero(delta >= 0))
        edges = [2 * m / size, 2 * (m + 1) / size, 1 / size, 2 / size, 1 - 0.95, 1 - 0.99]
        alphas = [rng.uniform(0, 1), rng.uniform(0, 0.2), 0.05, 0.1, 0.01]
        alphas += (
            edges + [np.nextafter(a, 0.0) for a in edges] + [np.nextafter(a, 1) for a in edges]
        )
        p = bootstrap_p(delta)
        assert 1 / size <= p <= 1.0
        for alpha in alphas:
            if not 0 < alpha < 1:
                continue
            low, high = percentile_ci(delta, float(alpha))
            assert low <= high
            assert (p < alpha) == excludes_zero(low, high), (delta, alpha, p, low, high)
            checked += 1
    assert checked > 20_000


@pytest.mark.parametrize("seed", range(4))
def test_paired_statistics_p_below_alpha_iff_zero_outside_the_ci(seed):
    # The same duality through paired_statistics, for every bootstrap-tested metric.
    rng = np.random.default_rng(seed)
    for confidence in (0.9, 0.95, 0.99):
        alpha = 1 - confidence
        for records, specs in [
            (classification_records(rng, 200, drop=0.04), CLASSIFICATION_METRICS),
            (lm_records(rng, 150, scale=1.01), LM_METRICS),
        ]:
            result = paired_statistics(records, specs, alpha=alpha, resamples=400)
            for stat in result.values():  # every test: bootstrap, McNemar, t
                assert (stat.p_value < alpha) == excludes_zero(stat.ci_low, stat.ci_high)


# --- determinism across metric sets -------------------------------------------------------------


EXTRA_MEAN = {
    "mean_confidence": Metric("mean_confidence", True, "mean", "mean confidence", ("confidence",))
}


@pytest.mark.parametrize("poisson", [False, True])  # multinomial and Poisson weights
def test_each_metric_is_the_same_whatever_else_is_requested(monkeypatch, poisson):
    if poisson:  # force the Poisson path at a small n
        monkeypatch.setattr(resampling, "MULTINOMIAL_MAX_N", 100)
    n = 300
    rng = np.random.default_rng(18)
    for records, specs in [
        (classification_records(rng, n, drop=0.02), CLASSIFICATION_METRICS | EXTRA_MEAN),
        (lm_records(rng, n, scale=1.01), LM_METRICS),
    ]:
        together = paired_statistics(records, specs, resamples=300, seed=5)
        for name, spec in specs.items():
            alone = paired_statistics(records, {name: spec}, resamples=300, seed=5)
            assert alone[name] == together[name], name


def test_one_cluster_gives_no_evidence():
    records = lm_records(np.random.default_rng(3), 40, scale=1.2)
    records.groups = np.zeros(40, dtype=np.int64)
    result = paired_statistics(records, LM_METRICS, resamples=200)
    assert all(stat.p_value == 1.0 for stat in result.values())
