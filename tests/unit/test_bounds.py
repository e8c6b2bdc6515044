"""Absolute floors and ceilings on a metric's candidate value (`--bound accuracy>=0.9`, input
`metric-bounds`, `VerdictConfig.bounds`): parsing, validation, the verdict they give with and
without a baseline, the re-judging of an untrusted report, evaluate's verdict and how the
tables show them."""

from __future__ import annotations

import math

import pytest
from markdown_it import MarkdownIt

from regress_action.cli_args import build_parser
from regress_action.compare import metric_specs, rejudge
from regress_action.errors import ConfigError
from regress_action.evaluation import judge_bounds
from regress_action.render import render_evaluation, render_markdown, why_cell
from regress_action.report import DatasetInfo, EvaluationReport, MetricValue, RunInfo, StatsInfo
from regress_action.settings import ActionInputs, load
from regress_action.spec import MetricBound, TaskSpec, VerdictConfig, parse_bounds
from regress_action.verdict import (
    apply_significance,
    fails_job,
    judge,
    judge_metric,
    notes,
    overall_status,
    regressed_metrics,
)
from tests.report_factory import make_report, metric

CLASSIFICATION = TaskSpec(modality="vision", task="classification", num_classes=10)

# ---------------------------------------------------------------- parsing


def test_items_and_json_give_the_same_bounds() -> None:
    listed = parse_bounds("accuracy>=0.9, ece<=0.05;\naccuracy <= 0.99")
    as_json = parse_bounds('{"accuracy": {"min": 0.9, "max": 0.99}, "ece": {"max": 0.05}}')
    assert listed == as_json
    assert listed["accuracy"] == MetricBound(min=0.9, max=0.99)
    assert listed["ece"] == MetricBound(max=0.05)
    assert parse_bounds("perplexity ≤ 40") == {"perplexity": MetricBound(max=40)}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("accuracy>=nan", "accuracy: 'nan' is not a finite number"),
        ("accuracy>=inf", "not a finite number"),
        ("accuracy>=0.9, accuracy<=0.8", "floor 0.9 is above ceiling 0.8"),
        ('{"accuracy": {"min": 0.9, "max": 0.1}}', "floor 0.9 is above ceiling 0.1"),
        ("accuracy=0.9", "is not metric>=value or metric<=value"),
        ("accuracy>0.9", "is not metric>=value or metric<=value"),
        ("accuracy>=lots", "accuracy: 'lots' is not a number"),
        ("accuracy>=0.9, accuracy>=0.8", "accuracy is given a floor (>=) twice"),
        ('{"accuracy": {}}', "accuracy: give a floor (min) or a ceiling (max)"),
        ('{"accuracy": 0.9}', 'accuracy: give {"min": ..}'),
        ('{"accuracy": {"floor": 0.9}}', "accuracy: floor extra inputs are not permitted"),
        ('{"accuracy": {"min": NaN}}', "accuracy: min"),
        ("{bad", "not valid JSON"),
    ],
)
def test_a_bad_bound_is_one_message_naming_the_item(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_bounds(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_the_config_field_is_a_plain_model_loaded_from_a_mapping() -> None:
    """What a YAML file gives: nested mappings."""
    verdict = VerdictConfig.model_validate({"bounds": {"accuracy": {"min": 0.9}}})
    assert verdict.bounds == {"accuracy": MetricBound(min=0.9)}
    with pytest.raises(ValueError, match="floor 2 is above ceiling 1"):
        VerdictConfig.model_validate({"bounds": {"accuracy": {"min": 2, "max": 1}}})


def test_the_cli_flag_is_repeatable_and_a_bad_one_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["publish", "--report", "r.json", "--bound", "accuracy>=0.9", "--bound", "ece<=0.05"]
    )
    assert args.bounds == {"accuracy": MetricBound(min=0.9), "ece": MetricBound(max=0.05)}
    evaluate = parser.parse_args(
        ["evaluate", "--run-id", "1", "--bound", '{"loss": {"max": 3}}', "--fail-on-violation"]
    )
    assert evaluate.bounds == {"loss": MetricBound(max=3)} and evaluate.fail_on_violation
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["evaluate", "--run-id", "1", "--bound", "accuracy>=0.9,accuracy<=0.5"])
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--bound" in line and "floor 0.9 is above ceiling 0.5" in line


def test_the_action_input_has_the_same_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "vision_tiny")
    monkeypatch.setenv("INPUT_METRIC-BOUNDS", "accuracy>=0.9\nece<=0.05\n")
    inputs = load(ActionInputs)
    assert inputs.bounds == {"accuracy": MetricBound(min=0.9), "ece": MetricBound(max=0.05)}
    monkeypatch.setenv("INPUT_METRIC-BOUNDS", "accuracy>=1, accuracy<=0")
    with pytest.raises(ConfigError) as info:
        load(ActionInputs)
    assert str(info.value).startswith("input metric-bounds: ")
    assert "floor 1 is above ceiling 0" in str(info.value)


def test_a_bound_on_an_unknown_or_unreported_metric_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        metric_specs(CLASSIFICATION, VerdictConfig(bounds={"acuracy": MetricBound(min=0.9)}))
    assert "acuracy" in str(info.value) and "accuracy" in str(info.value)
    with pytest.raises(ConfigError, match="has a gate, tolerance or bound but is not among"):
        metric_specs(
            CLASSIFICATION,
            VerdictConfig(metrics=("accuracy",), bounds={"ece": MetricBound(max=0.05)}),
        )


# ---------------------------------------------------------------- the verdict


def test_a_floor_met_leaves_the_change_rule_to_decide() -> None:
    config = VerdictConfig(bounds={"accuracy": MetricBound(min=0.7)})
    result = judge_metric("accuracy", 0.80, 0.72, config)
    assert result.status == "regressed"  # 0.72 ≥ 0.7, but −0.08 is beyond the tolerance
    assert result.bound == MetricBound(min=0.7)
    assert "within its bound ≥ 0.7" in result.reason
    assert judge_metric("accuracy", 0.80, 0.80, config).status == "neutral"


def test_a_violated_floor_fails_even_when_the_change_is_neutral() -> None:
    config = VerdictConfig(bounds={"accuracy": MetricBound(min=0.9)})
    result = judge_metric("accuracy", 0.87, 0.87, config)
    assert result.status == "failed_bound"
    assert result.reason.startswith("accuracy is outside its bound: 0.87 < floor 0.9")
    assert fails_job(result)


def test_a_ceiling_on_a_lower_is_better_metric() -> None:
    config = VerdictConfig(bounds={"ece": MetricBound(max=0.05)})
    assert judge_metric("ece", 0.06, 0.04, config).status == "improved"
    over = judge_metric("ece", 0.03, 0.061, config)
    assert over.status == "failed_bound" and "0.061 > ceiling 0.05" in over.reason
    # A ceiling on a higher-is-better metric is allowed too (e.g. suspiciously high accuracy).
    capped = VerdictConfig(bounds={"accuracy": MetricBound(max=0.99)})
    assert judge_metric("accuracy", 0.95, 0.999, capped).status == "failed_bound"


def test_the_bound_is_on_the_point_value_exactly() -> None:
    config = VerdictConfig(bounds={"accuracy": MetricBound(min=0.9, max=0.95)})
    assert judge_metric("accuracy", 0.9, 0.9, config).status == "neutral"
    assert judge_metric("accuracy", 0.95, 0.95, config).status == "neutral"
    assert judge_metric("accuracy", 0.9, math.nextafter(0.9, 0), config).status == "failed_bound"


def test_a_bound_gates_a_metric_outside_gate() -> None:
    config = VerdictConfig(gate=("accuracy",), bounds={"ece": MetricBound(max=0.05)})
    results = judge(
        {"accuracy": 0.8, "ece": 0.04},
        {"accuracy": 0.8, "ece": 0.07},
        config,
        log_regressions=False,
    )
    assert not results["ece"].gated and results["ece"].status == "failed_bound"
    assert overall_status(results.values()) == "regressed"
    assert regressed_metrics(results.values()) == ["ece"]
    # Within its bound, its change alone does not gate it.
    within = judge(
        {"accuracy": 0.8, "ece": 0.01},
        {"accuracy": 0.8, "ece": 0.045},
        config,
        log_regressions=False,
    )
    assert within["ece"].status == "regressed" and overall_status(within.values()) == "neutral"


def test_without_a_baseline_the_bound_still_decides() -> None:
    config = VerdictConfig(bounds={"accuracy": MetricBound(min=0.9)})
    new = judge_metric("accuracy", None, 0.95, config)
    assert new.status == "new" and not fails_job(new)
    low = judge_metric("accuracy", None, 0.85, config)
    assert low.status == "failed_bound" and fails_job(low)
    assert overall_status([low]) == "regressed"


@pytest.mark.parametrize("candidate", [math.nan, math.inf, None])
def test_a_bounded_metric_without_a_finite_candidate_fails_the_job(
    candidate: float | None,
) -> None:
    config = VerdictConfig(gate=("loss",), bounds={"accuracy": MetricBound(min=0.9)})
    result = judge_metric("accuracy", 0.9, candidate, config)
    assert result.status == "failed" and not result.gated
    assert "cannot be checked" in result.reason
    assert fails_job(result) and regressed_metrics([result]) == ["accuracy"]
    # The same metric without a bound, outside the gate, does not fail the job.
    assert not fails_job(judge_metric("accuracy", 0.9, candidate, VerdictConfig(gate=("loss",))))


def test_significance_does_not_clear_a_violated_bound() -> None:
    config = VerdictConfig(significance="gate", bounds={"accuracy": MetricBound(min=0.9)})
    results = judge({"accuracy": 0.95}, {"accuracy": 0.85}, config, log_regressions=False)
    apply_significance(results, {}, config)  # no test: a change alone would be neutral
    assert results["accuracy"].status == "failed_bound"


# ---------------------------------------------------------------- an untrusted report


def test_rejudge_derives_bound_statuses_from_the_numbers() -> None:
    report = make_report(stats=True)  # accuracy 0.80 → 0.72, ece 0.04123 → 0.041218
    relabelled = {
        name: m.model_copy(update={"status": "improved", "bound": None})
        for name, m in report.metrics.items()
    }
    forged = report.model_copy(
        update={"metrics": relabelled, "status": "improved", "regressed_metrics": []}
    )
    verdict = VerdictConfig(
        significance="gate",
        gate=("loss",),
        bounds={"accuracy": MetricBound(min=0.75), "ece": MetricBound(max=0.05)},
    )
    judged = rejudge(forged, verdict)
    assert judged.metrics["accuracy"].status == "failed_bound"
    assert judged.metrics["accuracy"].bound == MetricBound(min=0.75)
    assert judged.metrics["ece"].status != "failed_bound"
    assert judged.status == "regressed" and judged.regressed_metrics == ["accuracy"]


def test_rejudge_ignores_a_bound_the_report_claims_and_fails_a_missing_bounded_metric() -> None:
    report = make_report()
    claimed = dict(report.metrics)
    claimed["accuracy"] = claimed["accuracy"].model_copy(
        update={"status": "failed_bound", "bound": MetricBound(min=0.99)}
    )
    judged = rejudge(
        report.model_copy(update={"metrics": claimed}), VerdictConfig(significance="off")
    )
    assert judged.metrics["accuracy"].status == "regressed"  # its change, no bound of this job
    assert judged.metrics["accuracy"].bound is None
    without = {name: m for name, m in report.metrics.items() if name != "ece"}
    verdict = VerdictConfig(gate=("accuracy",), bounds={"ece": MetricBound(max=0.05)})
    missing = rejudge(report.model_copy(update={"metrics": without}), verdict)
    assert missing.metrics["ece"].status == "failed"
    assert "ece" in missing.regressed_metrics


# ---------------------------------------------------------------- evaluate


def _values(**values: float) -> dict[str, MetricValue]:
    return {
        name: MetricValue(name=name, value=value, higher_is_better=name != "ece", kind="mean")
        for name, value in values.items()
    }


def test_evaluate_judges_each_bounded_value() -> None:
    metrics = _values(accuracy=0.87, ece=0.04, loss=math.nan, top5_accuracy=0.99)
    verdict = VerdictConfig(
        bounds={
            "accuracy": MetricBound(min=0.9),
            "ece": MetricBound(max=0.05),
            "loss": MetricBound(max=3),
        }
    )
    failed = judge_bounds(metrics, verdict)
    assert failed == ["accuracy", "loss"]
    assert metrics["accuracy"].status == "failed_bound"
    assert metrics["accuracy"].reason == "accuracy is outside its bound: 0.87 < floor 0.9"
    assert metrics["ece"].status == "passed" and metrics["ece"].bound == MetricBound(max=0.05)
    assert metrics["loss"].status == "failed"
    assert metrics["top5_accuracy"].status is None and metrics["top5_accuracy"].bound is None


def _evaluation(metrics: dict[str, MetricValue], **fields: object) -> EvaluationReport:
    return EvaluationReport(
        task=CLASSIFICATION,
        dataset=DatasetInfo(name="vision_tiny", fingerprint="f" * 64, n=100),
        run=RunInfo(run_id=1, name="cnn"),
        metrics=metrics,
        **fields,  # type: ignore[arg-type]
    )


def _rows(markdown: str) -> list[list[str]]:
    """The first table's cells as rendered text (as GitHub shows them)."""
    parser = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    rows: list[list[str]] = []
    inside = False
    for token in parser.parse(markdown):
        if token.type == "table_close":
            break
        if token.type == "table_open":
            inside = True
        elif inside and token.type == "tr_open":
            rows.append([])
        elif inside and token.type == "inline":
            text = "".join(child.content for child in token.children or [])
            rows[-1].append(text)
    return rows


def test_the_evaluation_markdown_shows_each_bound_and_its_verdict() -> None:
    metrics = _values(accuracy=0.87, ece=0.04, top5_accuracy=0.99)
    verdict = VerdictConfig(bounds={"accuracy": MetricBound(min=0.9), "ece": MetricBound(max=0.05)})
    failed = judge_bounds(metrics, verdict)
    text = render_evaluation(_evaluation(metrics, status="failed", failed_metrics=failed))
    assert "❌ **Bounds failed**: accuracy outside its bound." in text
    rows = _rows(text)
    assert rows[0] == ["Metric", "Value", "Better", "Bound", "Verdict"]
    assert rows[1] == ["accuracy", "0.8700", "↑ higher", "≥ 0.9", "⛔ 0.8700 < floor 0.9"]
    assert rows[2][3:] == ["≤ 0.05", "✅ passed"]
    assert rows[3][3:] == ["—", "—"]
    plain = render_evaluation(_evaluation(_values(accuracy=0.87)))
    assert "Bound" not in plain and "Verdict" not in plain


# ---------------------------------------------------------------- the comparison table


def test_the_why_cell_names_the_rule_that_decided() -> None:
    floor = metric("accuracy", 0.88, 0.87, "failed_bound", bound=MetricBound(min=0.9), gated=False)
    assert why_cell(floor) == "0.8700 &lt; floor 0.9"
    ceiling = metric("ece", 0.04, 0.061, "failed_bound", bound=MetricBound(max=0.05))
    assert why_cell(ceiling) == "0.06100 &gt; ceiling 0.05"
    met = metric("accuracy", 0.95, 0.95, "neutral", bound=MetricBound(min=0.9))
    assert why_cell(met) == "Δ 0 within ±0.01; ≥ 0.9 met"
    regressed = metric(
        "accuracy", 0.8, 0.769, "regressed", significant=True, p_adjusted=0.003, p_value=0.001,
        test="mcnemar_exact",
    )  # fmt: skip
    assert why_cell(regressed, "gate") == "Δ −0.0310 beyond ±0.01; significant, p=0.0030"
    margin = metric(
        "accuracy", 0.8, 0.769, "neutral", significant=True, p_value=0.001, test="mcnemar_exact"
    )
    assert why_cell(margin, "margin").startswith("Δ −0.0310 beyond ±0.01; CI reaches within ±0.01")
    untested = metric("ece", 0.04, 0.08, "neutral")
    assert why_cell(untested, "gate") == "Δ +0.0400 beyond ±0.01; no paired test"
    assert why_cell(metric("loss", 0.6, None, "failed")) == "missing on the candidate"
    assert why_cell(metric("top5_accuracy", None, 0.9, "new")) == "no baseline"


def test_a_violated_bound_is_a_row_of_the_main_table_and_the_summary() -> None:
    report = make_report(stats=True)
    metrics = dict(report.metrics)
    metrics["ece"] = metrics["ece"].model_copy(
        update={"status": "failed_bound", "bound": MetricBound(max=0.04)}
    )
    metrics["accuracy"] = metrics["accuracy"].model_copy(update={"status": "neutral"})
    metrics["macro_f1"] = metrics["macro_f1"].model_copy(update={"status": "neutral"})
    report = report.model_copy(
        update={"metrics": metrics, "regressed_metrics": ["ece"], "stats": StatsInfo()}
    )
    text = render_markdown(report)
    assert "1 of 5 gated metrics regressed or failed: ece (outside its bound)." in text
    (ece,) = [row for row in _rows(text) if row[0] == "ece"]
    assert ece[-2:] == ["⛔ failed_bound", "0.04122 > ceiling 0.04"]


# ---------------------------------------------------------------- the Python API


def test_compare_models_takes_bounds_in_its_verdict() -> None:
    from tests.unit.test_compare_models import Scripted, _compare

    verdict = VerdictConfig(
        metrics=("accuracy", "loss"), gate=("loss",), bounds={"accuracy": {"min": 0.9}}
    )
    result = _compare(Scripted(80), Scripted(84), verdict=verdict)
    accuracy = result["metrics"]["accuracy"]  # type: ignore[index]
    assert accuracy["status"] == "failed_bound" and accuracy["bound"] == {"min": 0.9, "max": None}
    assert result["status"] == "regressed" and result["regressed_metrics"] == ["accuracy"]
    met = _compare(Scripted(92), Scripted(92), verdict=verdict)
    assert met["status"] == "neutral"
    with pytest.raises(ConfigError, match="acuracy"):
        _compare(Scripted(80), Scripted(84), verdict=VerdictConfig(bounds={"acuracy": {"min": 1}}))


def test_the_comparison_notes_mark_a_metric_outside_its_bound() -> None:
    config = VerdictConfig(bounds={"accuracy": MetricBound(min=0.9)})
    results = judge(
        {"accuracy": 0.88, "loss": 0.5}, {"accuracy": 0.87, "loss": 0.5}, config,
        log_regressions=False,
    )  # fmt: skip
    assert notes(results.values()) == "accuracy: -0.01 (failed_bound), loss: +0"
