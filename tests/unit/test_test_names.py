"""The report names only the paired tests the statistics really run."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from regress_action.metrics import TestName
from regress_action.report import MetricResult
from regress_action.tasks import TASKS
from tests.report_factory import metric

REPORTED = {
    name
    for arg in get_args(MetricResult.model_fields["test"].annotation)
    for name in get_args(arg)  # the Literal of `Literal[...] | None`
}


# Reports stored in an ExperimentDB by earlier versions name a test no longer run (the sign-flip
# permutation test of small-n mean metrics, now a paired t-test): they must still load.
STORED_ONLY = {"paired_permutation"}


def test_the_report_model_lists_exactly_the_test_names_of_the_statistics() -> None:
    assert set(get_args(TestName)) | STORED_ONLY == REPORTED


def test_every_metric_of_every_task_gets_a_reported_test() -> None:
    produced = {
        spec.test_name(n)
        for task in TASKS.values()
        for spec in task.all_metrics().values()
        for n in (2, 999, 1000, 100_000)
    }
    assert produced | STORED_ONLY == REPORTED  # and every reported name is produced


def test_a_test_the_code_never_runs_is_not_a_valid_report() -> None:
    with pytest.raises(ValidationError, match="test"):
        metric("loss", 0.5, 0.4, "improved", test="ttest_rel")
