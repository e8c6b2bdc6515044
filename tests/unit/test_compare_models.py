"""The original spec's scenarios through `compare_models`, with dummy models on real tensors."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from regress_action import compare_models
from regress_action.errors import ConfigError, StoreError
from regress_action.spec import EvalConfig, ModelSource, RunCreate, TaskSpec, VerdictConfig
from regress_action.store import ExperimentDB

TASK = TaskSpec(modality="vision", task="classification", num_classes=2)
N = 100


class Scripted(nn.Module):
    """Predicts the true label on the first `n_correct` examples, the wrong one elsewhere,
    with logit margin `margin` (so the per-example loss is log(1 + e^-margin) when right)."""

    def __init__(self, n_correct: int, margin: float = 4.0, run_id: int | None = None) -> None:
        super().__init__()
        self.n_correct, self.margin = n_correct, margin
        if run_id is not None:
            self.run_id = run_id

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index, label = x[:, 0].long(), x[:, 1].long()
        right = index < self.n_correct
        predicted = torch.where(right, label, 1 - label)
        logits = torch.zeros(x.shape[0], 2)
        logits[torch.arange(x.shape[0]), predicted] = self.margin
        return logits


def _eval_cfg() -> EvalConfig:
    labels = torch.arange(N) % 2
    inputs = torch.stack([torch.arange(N, dtype=torch.float32), labels.float()], dim=1)
    return EvalConfig(dataset=TensorDataset(inputs, labels), dataset_name="scripted", device="cpu")


def _compare(baseline: nn.Module, candidate: nn.Module, **kwargs: object) -> dict[str, object]:
    return compare_models(baseline, candidate, None, TASK, _eval_cfg(), **kwargs)  # type: ignore[arg-type]


def test_accuracy_070_to_075_improved() -> None:
    result = _compare(Scripted(70), Scripted(75), verdict=VerdictConfig(metrics=("accuracy",)))
    accuracy = result["metrics"]["accuracy"]  # type: ignore[index]
    assert accuracy["baseline"] == pytest.approx(0.70)
    assert accuracy["candidate"] == pytest.approx(0.75)
    assert accuracy["delta"] == pytest.approx(0.05)
    assert accuracy["status"] == "improved" and accuracy["higher_is_better"] is True
    assert result["status"] == "improved"


def test_accuracy_080_to_072_regressed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="regress_action"):
        result = _compare(Scripted(80), Scripted(72))
    accuracy = result["metrics"]["accuracy"]  # type: ignore[index]
    assert accuracy["delta"] == pytest.approx(-0.08)
    assert accuracy["status"] == "regressed" and result["status"] == "regressed"
    assert "accuracy" in result["regressed_metrics"]  # type: ignore[operator]
    assert any("accuracy regressed" in r.getMessage() for r in caplog.records)


def test_loss_050_to_051_with_threshold_002_neutral() -> None:
    # All examples right with margin m: loss = log(1 + e^-m); solve for losses 0.50 and 0.51.
    def margin(loss: float) -> float:
        return -math.log(math.exp(loss) - 1)

    result = _compare(Scripted(N, margin(0.50)), Scripted(N, margin(0.51)), threshold=0.02)
    loss = result["metrics"]["loss"]  # type: ignore[index]
    assert loss["baseline"] == pytest.approx(0.50, abs=1e-6)
    assert loss["candidate"] == pytest.approx(0.51, abs=1e-6)
    assert loss["status"] == "neutral" and loss["higher_is_better"] is False


def test_the_seed_signature_takes_eight_positional_arguments() -> None:
    result = compare_models(Scripted(70), Scripted(75), None, TASK, _eval_cfg(), None, "seed", 0.1)
    assert result["report_name"] == "seed" and result["threshold"] == 0.1
    assert result["metrics"]["accuracy"]["status"] == "neutral"  # type: ignore[index]  # +0.05 < 0.1
    with pytest.raises(TypeError):
        compare_models(  # type: ignore[misc]
            Scripted(70), Scripted(75), None, TASK, _eval_cfg(), None, "seed", 0.1, VerdictConfig()
        )


def test_threshold_defaults_to_001() -> None:
    assert _compare(Scripted(70), Scripted(75))["threshold"] == 0.01


def test_threshold_and_verdict_together_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"threshold=0\.02 and verdict="):
        _compare(Scripted(70), Scripted(75), threshold=0.02, verdict=VerdictConfig(threshold=0.05))


def test_a_json_report_and_markdown_are_written(tmp_path: Path) -> None:
    result = _compare(
        Scripted(80), Scripted(84), json_path=tmp_path / "r.json", markdown_path=tmp_path / "r.md"
    )
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk["metrics"]["accuracy"]["delta"] == result["metrics"]["accuracy"]["delta"]  # type: ignore[index]
    assert on_disk["dataset"]["name"] == "scripted" and on_disk["dataset"]["n"] == N
    assert len(on_disk["dataset"]["fingerprint"]) == 64
    assert "| accuracy |" in (tmp_path / "r.md").read_text()


def test_the_precision_is_recorded_in_the_report(tmp_path: Path) -> None:
    assert _compare(Scripted(80), Scripted(84))["precision"] == "fp32"
    cfg = EvalConfig(**{**_eval_cfg().model_dump(), "precision": "bf16"})
    result = compare_models(
        Scripted(80),
        Scripted(84),
        None,
        TASK,
        cfg,
        json_path=tmp_path / "r.json",
        markdown_path=tmp_path / "r.md",
    )
    assert result["precision"] == "bf16"
    assert json.loads((tmp_path / "r.json").read_text())["precision"] == "bf16"
    assert "- **Precision** `bf16` (torch.autocast)\n" in (tmp_path / "r.md").read_text()


def _register_two(db: ExperimentDB) -> None:
    for name in ("base", "cand"):
        source = ModelSource(
            checkpoint=f"{name}.safetensors", format="safetensors", sha256="0" * 64, factory="m:f"
        )
        db.add_run(RunCreate(name=name, task=TASK, source=source))


def test_db_comparison_row_has_run_ids_and_notes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with ExperimentDB(url) as db:
        _register_two(db)
    result = _compare(
        Scripted(80, run_id=1),
        Scripted(84, run_id=2),
        db=url,
        verdict=VerdictConfig(metrics=("accuracy",)),
    )
    with ExperimentDB(url) as db:
        row = db.get_comparison(result["comparison_id"])  # type: ignore[arg-type]
    assert (row.baseline_run_id, row.candidate_run_id) == (1, 2)
    assert row.notes == "accuracy: +0.04"
    assert row.status == "improved" and row.dataset == "scripted"
    assert row.report is not None and row.report["comparison_id"] == result["comparison_id"]
    assert [m.name for m in row.metrics] == ["accuracy"]
    assert (result["baseline"]["name"], result["candidate"]["name"]) == ("base", "cand")  # type: ignore[index]


def test_recording_without_run_ids_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="baseline_run_id"):
        _compare(Scripted(80), Scripted(84), db=f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_unknown_run_id_fails_before_evaluating(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown run id 1"):
        _compare(
            Scripted(80),
            Scripted(84),
            db=f"sqlite:///{tmp_path / 'db.sqlite'}",
            baseline_run_id=1,
            candidate_run_id=2,
        )


def test_statistics_are_attached_to_every_metric() -> None:
    result = _compare(Scripted(60), Scripted(90))
    accuracy = result["metrics"]["accuracy"]  # type: ignore[index]
    assert accuracy["test"] == "mcnemar_exact"
    assert (accuracy["n_fixed"], accuracy["n_broken"], accuracy["n"]) == (30, 0, N)
    assert accuracy["p_value"] < 1e-6 and accuracy["ci_low"] > 0
    assert result["flips"]["newly_right"][0]["example_id"] == 60  # type: ignore[index]


def test_report_files_are_readable_by_others(tmp_path: Path) -> None:
    # The action runs as root; the next workflow step (artifact upload) as the runner's user.
    _compare(Scripted(80), Scripted(84), json_path=tmp_path / "r.json")
    assert (tmp_path / "r.json").stat().st_mode & 0o044 == 0o044
