"""The regression task: metrics against an independent computation, its paired tests, its
`.npz` layout and built-in eval set, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch import nn

from regress_action.cli import main
from regress_action.data import load_eval_set
from regress_action.engine import PassOptions, evaluate_pair
from regress_action.errors import DataError, ModelOutputError
from regress_action.models import save_checkpoint
from regress_action.records import PairedRecords
from regress_action.resampling import multinomial_weights
from regress_action.sources import fingerprint_dataset
from regress_action.spec import TaskSpec
from regress_action.stats import paired_statistics
from regress_action.tasks import adapter_for, metrics_for
from regress_action.tasks.regression import METRICS

SPEC = TaskSpec(modality="tabular", task="regression")
# Pinned: a change here means every recorded comparison on regression_tiny stops matching.
PINNED_FINGERPRINT = "c04f7a660685728ec4b81313113a9ba37f62ae1a9ba9242a8ff0343d2b2612c9"


def _records(rng: np.random.Generator, n: int, noise: float) -> PairedRecords:
    target = rng.normal(size=n)
    sides = []
    for scale in (1.0, noise):
        prediction = target + rng.normal(scale=0.5 * scale, size=n)
        error = prediction - target
        sides.append(
            {
                "target": target,
                "prediction": prediction,
                "sq_error": error**2,
                "abs_error": np.abs(error),
            }
        )
    return PairedRecords("regression", np.arange(n), sides[0], sides[1])


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))


def test_metrics_match_an_independent_computation() -> None:
    eval_set = load_eval_set("regression_tiny")
    base, cand = _model(0), _model(1)
    result = evaluate_pair(base, cand, eval_set.dataset, adapter_for(SPEC), PassOptions(100, "cpu"))
    x, y = (t.double().numpy() for t in eval_set.dataset.tensors)  # type: ignore[attr-defined]
    for side, model in (("baseline", base), ("candidate", cand)):
        with torch.no_grad():
            prediction = model(torch.from_numpy(x).float()).double().numpy()[:, 0]
        error = prediction - y
        expected = {
            "mse": float(np.mean(error**2)),
            "mae": float(np.mean(np.abs(error))),
            "r2": 1 - float(np.sum(error**2)) / float(np.sum((y - y.mean()) ** 2)),
        }
        columns = result.records.side(side)
        for name, metric in metrics_for(SPEC).items():
            assert metric.value(columns) == pytest.approx(expected[name], rel=1e-6), name
    assert result.records.n == eval_set.n == 512


def test_mse_and_mae_are_paired_tests_on_the_per_example_errors() -> None:
    records = _records(np.random.default_rng(0), 1500, 1.1)
    result = paired_statistics(records, METRICS, resamples=300)
    for name, column in (("mse", "sq_error"), ("mae", "abs_error")):
        reference = sps.ttest_rel(records.candidate[column], records.baseline[column])
        assert result[name].test == "paired_t"
        assert result[name].p_value == pytest.approx(reference.pvalue, rel=1e-9)
    small = paired_statistics(_records(np.random.default_rng(1), 60, 1.0), METRICS)
    assert small["mse"].test == small["mae"].test == "paired_bootstrap_t"


def test_r2_bootstrap_equals_a_slow_loop() -> None:
    records = _records(np.random.default_rng(2), 200, 1.3)
    resamples, seed = 300, 5
    result = paired_statistics(records, {"r2": METRICS["r2"]}, resamples=resamples, seed=seed)
    weights = multinomial_weights(np.random.default_rng(seed), records.n, resamples)
    deltas = []
    for w in weights:
        index = np.repeat(np.arange(records.n), w.astype(np.int64))
        sides = [
            {key: values[index] for key, values in side.items()}
            for side in (records.baseline, records.candidate)
        ]
        deltas.append(METRICS["r2"].value(sides[1]) - METRICS["r2"].value(sides[0]))
    delta = np.sort(np.array(deltas))
    assert result["r2"].test == "paired_bootstrap"
    low, high = result["r2"].ci_low, result["r2"].ci_high
    assert low == pytest.approx(delta[7], rel=1e-9)  # k = ceil(0.05 * 300 / 2) = 8
    assert high == pytest.approx(delta[-8], rel=1e-9)
    point = METRICS["r2"].value(records.candidate) - METRICS["r2"].value(records.baseline)
    assert low < point < high < 0  # the candidate is noisier


def test_regression_tiny_is_deterministic() -> None:
    first, second = load_eval_set("regression_tiny"), load_eval_set("regression_tiny")
    assert first.fingerprint == second.fingerprint
    assert first.task == SPEC and first.n == 512
    assert first.fingerprint == fingerprint_dataset(first.dataset, 512) == PINNED_FINGERPRINT


def test_npz_with_inputs_and_targets_is_a_regression_set(tmp_path: Path) -> None:
    path = tmp_path / "houses.npz"
    np.savez(path, inputs=np.ones((5, 3), np.float64), targets=np.arange(5.0))
    eval_set = load_eval_set(path)
    assert eval_set.task == SPEC and eval_set.n == 5
    np.savez(path, inputs=np.ones((5, 3)), targets=np.ones((5, 2)))
    with pytest.raises(DataError, match="expected numeric inputs"):
        load_eval_set(path)


def test_a_model_with_the_wrong_output_shape_is_refused() -> None:
    eval_set = load_eval_set("regression_tiny", max_examples=10)
    wide = nn.Linear(8, 3)
    with pytest.raises(ModelOutputError, match=r"shape \(batch,\) or \(batch, 1\)"):
        evaluate_pair(wide, wide, eval_set.dataset, adapter_for(SPEC))


class _LogitsOutput(nn.Module):
    """A regression head answering like a Hugging Face model: an object with `.logits`."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> object:
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.linear(x))


def test_a_model_returning_logits_objects_is_read_like_a_tensor() -> None:
    eval_set = load_eval_set("regression_tiny", max_examples=10)
    torch.manual_seed(0)
    wrapped = _LogitsOutput()
    plain = nn.Sequential(wrapped.linear)
    by_object = evaluate_pair(wrapped, wrapped, eval_set.dataset, adapter_for(SPEC)).records
    by_tensor = evaluate_pair(plain, plain, eval_set.dataset, adapter_for(SPEC)).records
    for column in ("prediction", "sq_error"):
        assert np.array_equal(by_object.baseline[column], by_tensor.baseline[column])


def test_the_cli_registers_and_compares_regression_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'regress.db'}"
    example = torch.zeros(4, 8)
    ids = []
    for seed in (0, 1):
        path = tmp_path / f"model-{seed}.pt2"
        save_checkpoint(_model(seed), path, "export", example)
        assert main(["runs", "add", str(path), "--task", "regression", "--db", db]) == 0
        ids.append(capsys.readouterr().out.strip())
    json_out = tmp_path / "report.json"
    argv = ["compare", "--baseline-run-id", ids[0], "--candidate-run-id", ids[1]]
    argv += ["--dataset", "regression_tiny", "--db", db, "--json-out", str(json_out)]
    assert main(argv) == 0
    report = json.loads(json_out.read_text())
    assert report["task"]["task"] == "regression"
    assert list(report["metrics"]) == ["mse", "mae", "r2"]
    assert report["metrics"]["mse"]["test"] == "paired_bootstrap_t"
    assert report["flips"]["loss_increases"], "the largest squared-error increases are listed"
