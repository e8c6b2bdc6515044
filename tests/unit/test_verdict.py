"""The verdict rules (DESIGN §4) and the original spec's scenarios, on metric values."""

from __future__ import annotations

import logging
import math

import pytest

from regress_action.errors import ConfigError
from regress_action.spec import MetricTolerance, VerdictConfig, parse_tolerances
from regress_action.tasks.classification import METRICS as CLASSIFICATION
from regress_action.verdict import (
    apply_significance,
    classify,
    family,
    family_alphas,
    holm,
    judge,
    judge_metric,
    notes,
    overall_status,
    regressed_metrics,
)


def test_accuracy_070_to_075_is_improved_by_005() -> None:
    result = judge_metric("accuracy", 0.70, 0.75, VerdictConfig())
    assert result.status == "improved"
    assert result.delta == pytest.approx(0.05)
    assert result.rel_delta == pytest.approx(0.05 / 0.70)
    assert result.higher_is_better is True


def test_accuracy_080_to_072_is_regressed_and_logs_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="regress_action"):
        results = judge({"accuracy": 0.80}, {"accuracy": 0.72}, VerdictConfig())
    assert results["accuracy"].status == "regressed"
    assert results["accuracy"].delta == pytest.approx(-0.08)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "accuracy regressed" in warnings[0].getMessage()


def test_loss_050_to_051_with_threshold_002_is_neutral() -> None:
    result = judge_metric("loss", 0.50, 0.51, VerdictConfig(threshold=0.02))
    assert result.status == "neutral"
    assert result.delta == pytest.approx(0.01)


def test_accuracy_loss_and_perplexity_together() -> None:
    results = judge(
        {"accuracy": 0.70, "loss": 1.20, "perplexity": 3.32},
        {"accuracy": 0.75, "loss": 1.25, "perplexity": 3.49},
        VerdictConfig(),
    )
    assert [r.status for r in results.values()] == ["improved", "regressed", "regressed"]
    assert overall_status(results.values()) == "regressed"
    assert regressed_metrics(results.values()) == ["loss", "perplexity"]
    assert notes(results.values()) == "accuracy: +0.05, loss: +0.05, perplexity: +0.17"


@pytest.mark.parametrize("metric", ["loss", "perplexity", "ece", "bits_per_byte"])
def test_lower_is_better_metrics_going_down_are_improved(metric: str) -> None:
    assert judge_metric(metric, 0.5, 0.4, VerdictConfig()).status == "improved"
    assert judge_metric(metric, 0.4, 0.5, VerdictConfig()).status == "regressed"


@pytest.mark.parametrize("metric", ["accuracy", "top5_accuracy", "macro_f1", "token_accuracy"])
def test_higher_is_better_metrics_going_up_are_improved(metric: str) -> None:
    assert judge_metric(metric, 0.4, 0.5, VerdictConfig()).status == "improved"
    assert judge_metric(metric, 0.5, 0.4, VerdictConfig()).status == "regressed"


def test_a_change_equal_to_the_tolerance_is_neutral_despite_float_rounding() -> None:
    # 0.71 - 0.70 == 0.010000000000000009 in binary floating point.
    assert judge_metric("accuracy", 0.70, 0.71, VerdictConfig()).status == "neutral"
    assert judge_metric("accuracy", 0.70, 0.6899, VerdictConfig()).status == "regressed"


def test_classify_is_strict_on_both_sides() -> None:
    assert classify(0.02, 0.01) == "improved"
    assert classify(-0.02, 0.01) == "regressed"
    assert classify(0.0, 0.0) == "neutral"
    assert classify(1e-9, 0.0) == "improved"


def test_relative_and_absolute_tolerances_take_the_larger() -> None:
    config = VerdictConfig(tolerances={"perplexity": MetricTolerance(abs=0.1, rel=0.05)})
    # 5 % of 10 = 0.5 > 0.1: a rise of 0.4 is within it.
    assert judge_metric("perplexity", 10.0, 10.4, config).status == "neutral"
    assert judge_metric("perplexity", 10.0, 10.6, config).status == "regressed"
    # 5 % of 1 = 0.05 < 0.1: the absolute part applies.
    assert judge_metric("perplexity", 1.0, 1.08, config).status == "neutral"
    assert config.tolerance_for("accuracy", 0.9) == 0.01


def test_missing_candidate_fails_and_missing_baseline_is_new() -> None:
    results = judge({"accuracy": 0.8, "loss": 0.4}, {"loss": 0.4, "ece": 0.1}, VerdictConfig())
    assert results["accuracy"].status == "failed"
    assert results["ece"].status == "new" and results["ece"].gated is False
    assert overall_status(results.values()) == "regressed"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_reported_and_fail(bad: float) -> None:
    result = judge_metric("loss", 0.5, bad, VerdictConfig())
    assert result.status == "failed"
    assert result.candidate is not None and not math.isfinite(result.candidate)
    assert result.delta is None


def test_ungated_regression_does_not_fail_the_overall_status() -> None:
    results = judge(
        {"accuracy": 0.8, "loss": 0.4},
        {"accuracy": 0.7, "loss": 0.3},
        VerdictConfig(gate=("loss",)),
    )
    assert results["accuracy"].status == "regressed" and not results["accuracy"].gated
    assert overall_status(results.values()) == "improved"


def test_zero_baseline_has_no_relative_delta() -> None:
    result = judge_metric("accuracy", 0.0, 0.5, VerdictConfig())
    assert result.rel_delta is None and result.status == "improved"


def test_unknown_metric_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'accuracy'"):
        judge_metric("acuracy", 0.1, 0.2, VerdictConfig())


def test_notes_read_like_the_spec() -> None:
    results = judge(
        {"accuracy": 0.80, "loss": 0.52}, {"accuracy": 0.84, "loss": 0.50}, VerdictConfig()
    )
    assert notes(results.values()) == "accuracy: +0.04, loss: -0.02"


def test_holm_by_hand() -> None:
    # p sorted: 0.01 (x3), 0.02 (x2), 0.04 (x1) -> 0.03, 0.04, 0.04 (monotone).
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.9, 0.8]) == [1.0, 1.0]
    assert holm([]) == []


def test_parse_tolerances() -> None:
    parsed = parse_tolerances("loss=0.02, perplexity=5%\nloss=1%")
    assert parsed["loss"] == MetricTolerance(abs=0.02, rel=0.01)
    assert parsed["perplexity"] == MetricTolerance(rel=0.05)
    assert parse_tolerances("loss=0.02|1%") == {"loss": MetricTolerance(abs=0.02, rel=0.01)}
    for bad in ("loss", "loss=", "=1", "loss=abc", "loss=-1", "loss=nan", "loss=1, loss=2"):
        with pytest.raises(ValueError, match=r"loss|metric=value"):
            parse_tolerances(bad)


def test_a_non_finite_value_without_baseline_fails_rather_than_being_new() -> None:
    result = judge_metric("loss", None, math.nan, VerdictConfig())
    assert result.status == "failed" and result.gated


class _Stat:
    def __init__(
        self, p: float, ci: tuple[float, float] = (-1.0, 1.0), mde: float = math.nan
    ) -> None:
        self.test, self.p_value, self.n = "t", p, 100
        self.ci_low, self.ci_high = ci
        self.n_fixed = self.n_broken = None
        self.se, self.mde, self.level, self.clusters = math.nan, mde, 0.95, None


def test_holm_family_counts_one_hypothesis_once_and_skips_nan() -> None:
    config = VerdictConfig(significance="gate")
    results = judge(
        {"loss": 1.0, "perplexity": 2.7, "token_accuracy": 0.5, "bits_per_byte": 1.4},
        {"loss": 1.1, "perplexity": 3.0, "token_accuracy": 0.4, "bits_per_byte": 1.6},
        config,
        log_regressions=False,
    )
    stats = {
        "loss": _Stat(0.02),
        "perplexity": _Stat(0.02),
        "bits_per_byte": _Stat(0.02),
        "token_accuracy": _Stat(math.nan),
    }
    same = {"loss": "nll", "perplexity": "nll", "bits_per_byte": "nll"}
    apply_significance(results, stats, config, same)
    # One hypothesis in the family: no multiplicity penalty, all three stay regressed.
    assert [results[m].p_adjusted for m in ("loss", "perplexity", "bits_per_byte")] == [0.02] * 3
    assert all(results[m].status == "regressed" for m in ("loss", "perplexity", "bits_per_byte"))
    token = results["token_accuracy"]
    assert token.p_adjusted is None and token.status == "regressed" and token.significant is None


def test_bonferroni_over_the_gated_hypotheses_only() -> None:
    config = VerdictConfig(significance="gate", gate=("accuracy", "loss"))
    specs = {name: CLASSIFICATION[name] for name in ("accuracy", "loss", "macro_f1")}
    results = judge(
        {"accuracy": 0.8, "loss": 0.5, "macro_f1": 0.8},
        {"accuracy": 0.7, "loss": 0.6, "macro_f1": 0.7},
        config,
        specs,
        log_regressions=False,
    )
    members = family(results, specs)
    assert members == {"accuracy": "accuracy", "loss": "loss"}
    assert family_alphas(members, specs, 0.05) == {
        "accuracy": 0.025, "loss": 0.025, "macro_f1": 0.05,
    }  # fmt: skip
    stats = {name: _Stat(0.03) for name in specs}
    apply_significance(results, stats, config, members)
    # 2 · 0.03 ≥ 0.05: the gated pair is not significant; macro-F1 (not gated) is, at 0.03.
    assert results["accuracy"].p_adjusted == pytest.approx(0.06)
    assert results["accuracy"].status == results["loss"].status == "neutral"
    assert results["macro_f1"].p_adjusted is None and results["macro_f1"].status == "regressed"


def test_margin_mode_needs_the_whole_interval_beyond_the_tolerance() -> None:
    config = VerdictConfig(significance="margin", threshold=0.01)
    for ci, expected in [((-0.05, -0.011), "regressed"), ((-0.05, -0.005), "neutral")]:
        results = judge({"accuracy": 0.8}, {"accuracy": 0.77}, config, log_regressions=False)
        apply_significance(results, {"accuracy": _Stat(0.001, ci)}, config)
        assert results["accuracy"].status == expected, ci
    # Lower is better: an interval of Δloss entirely above the tolerance is a regression.
    results = judge({"loss": 0.5}, {"loss": 0.55}, config, log_regressions=False)
    apply_significance(results, {"loss": _Stat(0.001, (0.02, 0.08))}, config)
    assert results["loss"].status == "regressed"


def test_a_metric_without_a_valid_test_cannot_gate_under_significance() -> None:
    config = VerdictConfig(significance="gate")
    results = judge({"ece": 0.02}, {"ece": 0.09}, config, log_regressions=False)
    apply_significance(results, {}, config)
    assert results["ece"].status == "neutral" and "no valid paired test" in results["ece"].reason
    report_mode = VerdictConfig(significance="report")
    results = judge({"ece": 0.02}, {"ece": 0.09}, report_mode, log_regressions=False)
    apply_significance(results, {}, report_mode)
    assert results["ece"].status == "regressed"


def test_an_underpowered_gated_metric_is_flagged() -> None:
    config = VerdictConfig(significance="gate", threshold=0.01)
    results = judge({"accuracy": 0.8}, {"accuracy": 0.8}, config, log_regressions=False)
    apply_significance(results, {"accuracy": _Stat(1.0, mde=0.04)}, config)
    assert results["accuracy"].underpowered and results["accuracy"].mde == 0.04
    results = judge({"accuracy": 0.8}, {"accuracy": 0.8}, config, log_regressions=False)
    apply_significance(results, {"accuracy": _Stat(1.0, mde=0.004)}, config)
    assert not results["accuracy"].underpowered


def test_gate_mode_neutralises_a_non_significant_change() -> None:
    config = VerdictConfig(significance="gate")
    results = judge({"accuracy": 0.8}, {"accuracy": 0.7}, config, log_regressions=False)
    apply_significance(results, {"accuracy": _Stat(0.2)}, config)
    assert results["accuracy"].status == "neutral" and results["accuracy"].significant is False
    report_mode = VerdictConfig(significance="report")
    results = judge({"accuracy": 0.8}, {"accuracy": 0.7}, report_mode, log_regressions=False)
    apply_significance(results, {"accuracy": _Stat(0.2)}, report_mode)
    assert (
        results["accuracy"].status == "regressed"
        and "not significant" in results["accuracy"].reason
    )


def test_a_relative_tolerance_alone_does_not_fall_back_to_the_threshold() -> None:
    config = VerdictConfig(threshold=0.05, tolerances={"loss": MetricTolerance(rel=0.001)})
    assert config.tolerance_for("loss", 2.0) == pytest.approx(0.002)
    assert judge_metric("loss", 2.0, 2.01, config).status == "regressed"
    assert config.tolerance_for("accuracy", 0.5) == 0.05


def test_a_relative_tolerance_on_a_zero_baseline_uses_the_threshold() -> None:
    config = VerdictConfig(threshold=0.05, tolerances={"mae": MetricTolerance(rel=0.1)})
    assert config.tolerance_for("mae", 0.0) == 0.05
    assert judge_metric("mae", 0.0, 0.01, config).status == "neutral"


def test_json_tolerances_fail_in_one_line() -> None:
    for text in ('{"loss": {"abs": -1}}', '{"loss": {"x": 1}}', '{"loss": 1e999}'):
        with pytest.raises(ValueError) as caught:
            parse_tolerances(text)
        assert "\n" not in str(caught.value) and str(caught.value).startswith("loss")
