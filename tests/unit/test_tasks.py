"""The task registry as a whole: every task's metrics get a test path, every built-in eval set
loads, every task's adapter produces the columns its metrics read, and specs are validated by the
task they name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from regress_action.compare import ReportContext, build_report
from regress_action.data import load_eval_set
from regress_action.engine import PassOptions, evaluate_pair
from regress_action.metrics import Metric
from regress_action.report import DatasetInfo
from regress_action.resampling import CellCounts, WeightedSums
from regress_action.spec import TaskSpec, VerdictConfig
from regress_action.stats import paired_statistics
from regress_action.tasks import TASKS, builtin_datasets, get_task, metrics_for, select_metrics


class Noisy(nn.Module):
    """Random outputs of a given shape per input row: `shape(inputs) -> output shape`."""

    def __init__(self, seed: int, shape: object) -> None:
        super().__init__()
        self.seed, self.shape = seed, shape

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + int(inputs.float().sum().item()) % 1000)
        return torch.randn(self.shape(inputs), generator=gen)  # type: ignore[operator]


# One random model per task, producing that task's output shape on its built-in eval set. A new
# task adds its entry here (test_every_task_has_a_model_here fails until it does).
OUTPUT_SHAPES = {
    "classification": lambda spec: lambda x: (x.shape[0], spec.num_classes),
    "lm": lambda spec: lambda x: (*x.shape, spec.vocab_size),
    "regression": lambda spec: lambda x: (x.shape[0],),
}


def test_every_task_has_a_model_here() -> None:
    assert set(OUTPUT_SHAPES) == set(TASKS)


def _paired(dataset_name: str) -> tuple[TaskSpec, object]:
    eval_set = load_eval_set(dataset_name, max_examples=120)
    spec = eval_set.task
    shape = OUTPUT_SHAPES[spec.task](spec)
    result = evaluate_pair(
        Noisy(1, shape),
        Noisy(2, shape),
        eval_set.dataset,
        get_task(spec.task).adapter(spec),
        PassOptions(batch_size=32, device="cpu"),
        num_classes=spec.num_classes,
    )
    return spec, result.records


@pytest.mark.parametrize("dataset_name", sorted(builtin_datasets()))
def test_every_metric_of_every_task_has_a_test_path(dataset_name: str) -> None:
    spec, records = _paired(dataset_name)
    metrics = metrics_for(spec)
    results = paired_statistics(records, metrics, resamples=200)  # type: ignore[arg-type]
    tested = {name for name, metric in metrics.items() if metric.tested}
    assert set(results) == tested, "a registered metric got no paired test"
    assert tested >= set(metrics) - {"ece"}  # plug-in ECE alone has no valid test
    for name, stat in results.items():
        assert math.isfinite(stat.p_value) and 0 < stat.p_value <= 1, name
        assert stat.ci_low <= stat.ci_high, name
        assert stat.test == metrics[name].test_name(records.n), name  # type: ignore[attr-defined]


@pytest.mark.parametrize("dataset_name", sorted(builtin_datasets()))
def test_every_task_reports_end_to_end(dataset_name: str) -> None:
    spec, records = _paired(dataset_name)
    context = ReportContext(
        task=spec, dataset=DatasetInfo(name=dataset_name, fingerprint="f", n=120)
    )
    report = build_report(records, context, 0.0)  # type: ignore[arg-type]
    assert list(report.metrics) == list(select_metrics(spec, None))
    specs = metrics_for(spec)
    assert all((m.p_value is not None) == specs[m.name].tested for m in report.metrics.values())
    assert report.flips is not None


@pytest.mark.parametrize("dataset_name", sorted(builtin_datasets()))
def test_every_task_declares_the_columns_its_adapter_records(dataset_name: str) -> None:
    # What a custom metric may read is what the adapter really records for that spec.
    spec, records = _paired(dataset_name)
    task = get_task(spec.task)
    for side in (records.baseline, records.candidate):
        assert sorted(side) == sorted(task.record_columns(spec))
    assert set(task.record_columns(spec)) <= set(task.record_columns(None))
    for metric in task.all_metrics().values():
        assert set(metric.columns) <= set(task.record_columns(None)), metric.name


def test_every_metric_is_well_formed() -> None:
    for task in TASKS.values():
        for name, metric in task.all_metrics().items():
            assert isinstance(metric, Metric) and metric.name == name
            if metric.kind == "corpus" and metric.tested:
                assert isinstance(metric.resampler, WeightedSums | CellCounts), name


def test_a_metric_name_has_one_direction_across_tasks() -> None:
    seen: dict[str, bool] = {}
    for task in TASKS.values():
        for name, metric in task.all_metrics().items():
            assert seen.setdefault(name, metric.higher_is_better) == metric.higher_is_better, name


def test_a_corpus_metric_without_whole_set_is_refused() -> None:
    with pytest.raises(ValueError, match="needs whole_set"):
        Metric("brier", False, "corpus", "Brier score", ("confidence",))
    # Without a resampler it gets the generic bootstrap.
    Metric("median", False, "corpus", "median", ("loss",), whole_set=lambda c, k: 0.0)
    with pytest.raises(ValueError, match="reads 2 column"):
        Metric("ratio", False, "ratio", "a ratio", ("nll_sum",))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"task": "clasification", "modality": "vision"}, "did you mean 'classification'"),
        ({"task": "classification", "modality": "vision"}, "needs num_classes"),
        ({"task": "lm", "modality": "vision", "vocab_size": 256}, "modality text"),
        ({"task": "regression", "modality": "tabular", "num_classes": 3}, "has no num_classes"),
    ],
)
def test_task_specs_are_validated_by_their_task(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TaskSpec.model_validate(fields)


def test_builtin_datasets_are_listed_by_their_tasks() -> None:
    names = builtin_datasets()
    assert list(names) == sorted(names)
    for name, builtin in names.items():
        eval_set = load_eval_set(name, max_examples=3)
        assert eval_set.task == TaskSpec.model_validate(builtin.spec)
        assert eval_set.n == 3


def test_verdict_config_reaches_every_task() -> None:
    """A gate on a metric of another task fails at configuration time."""
    from regress_action.compare import metric_specs
    from regress_action.errors import ConfigError

    spec = TaskSpec(modality="tabular", task="regression")
    assert list(metric_specs(spec, VerdictConfig())) == ["mse", "mae", "r2"]
    with pytest.raises(ConfigError, match="unknown metric 'accuracy' for task 'regression'"):
        metric_specs(spec, VerdictConfig(gate=("accuracy",)))
    assert np.isnan(
        get_task("regression")
        .all_metrics()["r2"]
        .value({"target": np.ones(3), "sq_error": np.zeros(3)})
    )


@pytest.mark.parametrize("dataset_name", sorted(builtin_datasets()))
def test_gate_defaults_to_the_primary_metric_under_significance_gate(dataset_name: str) -> None:
    spec, records = _paired(dataset_name)
    primary = list(get_task(spec.task).primary)

    def gated(**verdict: object) -> tuple[list[str], int]:
        context = ReportContext(
            task=spec,
            dataset=DatasetInfo(name=dataset_name, fingerprint="f", n=120),
            verdict=VerdictConfig(resamples=200, **verdict),  # type: ignore[arg-type]
        )
        report = build_report(records, context, 0.0)  # type: ignore[arg-type]
        return [name for name, m in report.metrics.items() if m.gated], report.stats.family_size

    every = list(select_metrics(spec, None))
    assert gated(significance="gate") == (primary, 1)
    assert gated(significance="margin", gate=("primary",)) == (primary, 1)
    assert gated(significance="report")[0] == every  # the plain tolerance rule gates all
    assert gated(significance="gate", gate=("all",))[0] == every
    # No primary metric among the reported ones: every reported metric gates.
    others = tuple(name for name in every if name not in primary)[:2]
    assert gated(significance="gate", metrics=others)[0] == list(others)
