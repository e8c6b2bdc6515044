"""Slices: every metric judged on each slice of the eval set from the same paired records
(masking, per-slice values, the slices' Bonferroni family, min-slice-size, gate-slices, bounds
per slice), the overall verdict they change, and the re-judging of an untrusted report."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from regress_action.compare import ReportContext, build_report, metric_specs, rejudge
from regress_action.errors import ConfigError
from regress_action.records import PairedRecords
from regress_action.report import DatasetInfo
from regress_action.slices import slice_failures, worst_slices
from regress_action.spec import MetricBound, TaskSpec, VerdictConfig
from regress_action.stats import paired_statistics

TASK = TaskSpec(modality="vision", task="classification", num_classes=10)
NAMES = ("alpha", "beta", "gamma", "delta")


def records(n_per: int = 500, drop: dict[str, float] | None = None, seed: int = 0) -> PairedRecords:
    """4 slices of `n_per` examples; the candidate right where the baseline is, except that in
    each slice of `drop` it loses that share of its right answers."""
    rng = np.random.default_rng(seed)
    n = n_per * len(NAMES)
    slices = np.repeat(np.asarray(NAMES, dtype=np.str_), n_per)
    label = rng.integers(0, 10, n)
    right = rng.random(n) < 0.8
    cand_right = right.copy()
    for name, share in (drop or {}).items():
        inside = np.flatnonzero((slices == name) & right)
        cand_right[inside[: int(share * inside.size)]] = False
    sides: list[dict[str, Any]] = []
    for correct in (right, cand_right):
        prediction = np.where(correct, label, (label + 1) % 10)
        confidence = np.clip(0.8 + rng.normal(0, 0.05, n), 0.01, 0.99)
        sides.append(
            {
                "label": label,
                "prediction": prediction,
                "correct": correct,
                "top5_correct": correct | (rng.random(n) < 0.5),
                "confidence": confidence,
                "loss": np.where(correct, 0.2, 2.0) + rng.normal(0, 0.01, n),
                "brier": np.where(correct, 0.05, 0.9),
            }
        )
    return PairedRecords("classification", np.arange(n), sides[0], sides[1], 10, slices=slices)


def report(recs: PairedRecords, **verdict: Any):  # type: ignore[no-untyped-def]
    """The report under `gate`, with a 3-point tolerance: a 10 % loss of one slice's right
    answers (8 points there) is 2 points over the whole set, within it."""
    verdict = {"threshold": 0.03, **verdict}
    config = VerdictConfig(significance="gate", resamples=200, **verdict)
    context = ReportContext(
        task=TASK,
        dataset=DatasetInfo(name="synthetic", n=recs.n, fingerprint="0" * 64),
        verdict=config,
    )
    return build_report(recs, context, 0.0)


def test_subset_masks_every_column_the_clusters_and_the_slices() -> None:
    recs = records(10)
    recs.groups = np.arange(recs.n) // 2
    mask = recs.slices == "beta"
    sub = recs.subset(mask)
    assert sub.n == 10 and set(sub.slices.tolist()) == {"beta"}
    assert sub.example_ids.tolist() == list(range(10, 20))
    assert np.array_equal(sub.baseline["loss"], recs.baseline["loss"][10:20])
    assert np.array_equal(sub.candidate["correct"], recs.candidate["correct"][10:20])
    assert sub.groups.tolist() == (np.arange(10, 20) // 2).tolist()


def test_each_slice_s_values_and_statistics_are_those_of_its_subset() -> None:
    recs = records(drop={"gamma": 0.1})
    result = report(recs)
    assert [s.name for s in result.slices] == sorted(NAMES)
    specs = metric_specs(TASK, VerdictConfig())
    for item in result.slices:
        mask = recs.slices == item.name
        assert item.n == int(mask.sum())
        for name, spec in specs.items():
            got = item.metrics[name]
            base = spec.value({k: v[mask] for k, v in recs.baseline.items()}, 10)
            cand = spec.value({k: v[mask] for k, v in recs.candidate.items()}, 10)
            assert got.baseline == pytest.approx(base) and got.candidate == pytest.approx(cand)
        manual = PairedRecords(
            "classification",
            recs.example_ids[mask],
            {k: v[mask] for k, v in recs.baseline.items()},
            {k: v[mask] for k, v in recs.candidate.items()},
            10,
        )
        # Not gated (the default): each slice's tests run at α alone.
        stats = paired_statistics(manual, specs, alpha=0.05, resamples=200, seed=0)
        assert item.metrics["accuracy"].p_value == pytest.approx(stats["accuracy"].p_value)
        assert item.metrics["loss"].ci_low == pytest.approx(stats["loss"].ci_low)


def test_slices_are_reported_not_gated_by_default() -> None:
    result = report(records(drop={"gamma": 0.1}))
    gamma = next(s for s in result.slices if s.name == "gamma")
    assert gamma.metrics["accuracy"].status == "regressed"
    assert not gamma.gated and gamma.why_not == "not selected by gate-slices"
    assert result.status == "neutral" and result.regressed_metrics == []


def test_a_regression_confined_to_one_gated_slice_fails_the_job() -> None:
    result = report(records(drop={"gamma": 0.1}), gate_slices=("all",))
    gamma = next(s for s in result.slices if s.name == "gamma")
    assert gamma.gated and gamma.status == "regressed"
    assert result.metrics["accuracy"].status == "neutral"  # diluted over the whole set
    assert result.status == "regressed"
    assert result.regressed_metrics == ["accuracy[gamma]"]
    assert slice_failures(result.slices) == ["accuracy[gamma]"]


def test_the_family_is_gated_slices_times_gated_hypotheses() -> None:
    result = report(records(), gate_slices=("all",), gate=("accuracy", "loss"))
    for item in result.slices:
        assert item.family_size == 4 * 2
        assert item.metrics["accuracy"].ci_level == pytest.approx(1 - 0.05 / 8)
        p = item.metrics["accuracy"].p_value
        assert item.metrics["accuracy"].p_adjusted == pytest.approx(min(1.0, 8 * p))
        assert item.metrics["macro_f1"].p_adjusted is None  # not gated: not in the family
    named = report(records(), gate_slices=("alpha", "beta"))
    sizes = {s.name: (s.gated, s.family_size) for s in named.slices}
    assert sizes == {
        "alpha": (True, 2),
        "beta": (True, 2),
        "gamma": (False, 1),
        "delta": (False, 1),
    }


def test_a_slice_under_min_slice_size_is_reported_not_gated() -> None:
    recs = records(drop={"gamma": 0.1})
    result = report(recs, gate_slices=("all",), min_slice_size=501)
    assert all(not s.gated for s in result.slices)
    assert result.slices[0].why_not == "500 examples, under min-slice-size 501"
    assert result.status == "neutral"


def test_gate_slices_naming_an_unknown_slice_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"gate-slices.*'epsilon'.*alpha, beta"):
        report(records(), gate_slices=("epsilon",))
    plain = records()
    plain.slices = None
    with pytest.raises(ConfigError, match="no slice key"):
        report(plain, gate_slices=("alpha",))
    assert report(plain, gate_slices=("all",)).slices == []


def test_a_bound_is_checked_on_every_gated_slice() -> None:
    recs = records(drop={"gamma": 0.3})
    bound = {"accuracy": MetricBound(min=0.7)}
    result = report(recs, gate_slices=("all",), bounds=bound, gate=("loss",))
    gamma = next(s for s in result.slices if s.name == "gamma")
    assert gamma.metrics["accuracy"].status == "failed_bound"
    assert "accuracy[gamma]" in result.regressed_metrics
    assert all(s.metrics["accuracy"].bound is not None for s in result.slices)


def test_worst_slices_put_gated_failures_first_then_the_worst_changes() -> None:
    result = report(records(drop={"gamma": 0.1, "beta": 0.02}), gate_slices=("gamma",))
    worst = worst_slices(result.slices, "accuracy", 2)
    assert [s.name for s in worst] == ["gamma", "beta"]


def test_rejudge_derives_slice_verdicts_from_the_numbers() -> None:
    original = report(records(drop={"gamma": 0.1}), gate_slices=("all",))
    forged = original.model_copy(deep=True)
    forged.status = "neutral"
    forged.regressed_metrics = []
    for item in forged.slices:
        item.status = "neutral"
        item.gated = False
        for metric in item.metrics.values():
            metric.status = "neutral"
    config = VerdictConfig(significance="gate", threshold=0.03, gate_slices=("all",))
    again = rejudge(forged, config)
    assert again.status == "regressed" and again.regressed_metrics == ["accuracy[gamma]"]
    gamma = next(s for s in again.slices if s.name == "gamma")
    assert gamma.gated and gamma.metrics["accuracy"].status == "regressed"
    # Under the trusted side's own flags: slices not gated, the job passes.
    assert rejudge(forged, VerdictConfig(significance="gate", threshold=0.03)).status == "neutral"


def test_gate_slices_options_from_flags_inputs_and_the_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from regress_action.cli_args import build_parser
    from regress_action.config import verdict_config
    from regress_action.settings import ActionInputs, load

    assert VerdictConfig(gate_slices=("none",)).gate_slices == ()
    assert VerdictConfig(gate_slices=(" a ", "b", "a")).gate_slices == ("a", "b")
    with pytest.raises(ValueError, match="not a mix"):
        VerdictConfig(gate_slices=("all", "night"))
    args = build_parser().parse_args(
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "x.npz",
         "--gate-slices", "night, rain", "--min-slice-size", "50"]
    )  # fmt: skip
    verdict = verdict_config(args, {})
    assert (verdict.gate_slices, verdict.min_slice_size) == (("night", "rain"), 50)
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "vision_tiny")
    monkeypatch.setenv("INPUT_GATE-SLICES", "all")
    monkeypatch.setenv("INPUT_MIN-SLICE-SIZE", "500")
    inputs = load(ActionInputs)
    verdict = verdict_config(inputs, {})
    assert (verdict.gate_slices, verdict.min_slice_size) == (("all",), 500)
    monkeypatch.setenv("INPUT_MIN-SLICE-SIZE", "0")
    with pytest.raises(ConfigError, match="input min-slice-size"):
        load(ActionInputs)
