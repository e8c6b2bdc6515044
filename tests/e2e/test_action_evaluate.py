"""The Action's `mode: evaluate` and the cached baseline, as a repository's workflows run them: a
job on the default branch evaluates and stores the baseline, then a pull request's comparison
finds it and evaluates only its candidate; `cache: false` evaluates both."""

from __future__ import annotations

import json

import pytest

from regress_action.report import EvaluationReport, Report
from regress_action.store import ExperimentDB
from tests.e2e.test_action_e2e import LmRuns, Runner, bodies, lm_runs, runner

__all__ = ["lm_runs", "runner"]  # the fixtures, shared with the Action's other end-to-end tests

pytestmark = pytest.mark.slow

PUSH = {"event": "push", "payload": {"ref": "refs/heads/main", "after": "a" * 40}}


def _evaluate_inputs(runner: Runner, lm_runs: LmRuns, **more: str) -> dict[str, str]:
    inputs = lm_runs.checkpoint_inputs(runner.workspace, dataset="lm_tiny")
    del inputs["candidate-checkpoint"]
    return {**inputs, "mode": "evaluate", **more}


def test_mode_evaluate_stores_one_evaluation_and_posts_no_comment(
    runner: Runner, lm_runs: LmRuns
) -> None:
    result = runner.run("action", inputs=_evaluate_inputs(runner, lm_runs), **PUSH)
    assert result.rc == 0, result.stdout + result.stderr
    evaluation_id = result.outputs["evaluation-id"]
    assert evaluation_id.isdigit() and result.outputs["evaluation-status"] == ""
    assert "comparison-id" not in result.outputs and "comment-url" not in result.outputs
    report = EvaluationReport.model_validate_json(
        (runner.workspace / result.outputs["report-json"]).read_text()
    )
    assert report.evaluation_id == int(evaluation_id) and report.records_stored
    assert report.commit == "m" * 40  # the commit the push checked out
    assert "| Metric | Value | Better |" in result.summary
    assert runner.server.requests == [] and bodies(runner.server) == []
    with ExperimentDB(runner.workspace / "regress-action.db") as db:
        (stored,) = db.list_evaluations()
        assert stored.evaluation_id == int(evaluation_id)
        assert db.evaluation_records(int(evaluation_id)) is not None
        assert [run.name for run in db.list_runs()] == ["untrained"]
        assert db.list_comparisons() == []


def test_a_pull_request_after_the_default_branch_job_evaluates_only_its_candidate(
    runner: Runner, lm_runs: LmRuns
) -> None:
    main = runner.run("action", inputs=_evaluate_inputs(runner, lm_runs), **PUSH)
    assert main.rc == 0, main.stdout + main.stderr
    evaluation_id = int(main.outputs["evaluation-id"])
    inputs = lm_runs.checkpoint_inputs(runner.workspace, dataset="lm_tiny")
    pr = runner.run("action", inputs=inputs)
    assert pr.rc == 0, pr.stdout + pr.stderr
    report = Report.load(runner.workspace / pr.outputs["report-json"])
    assert report.baseline_source is not None
    assert report.baseline_source.evaluation_id == evaluation_id
    assert [point.comparison_id for point in report.trend] == [int(pr.outputs["comparison-id"])]
    (body,) = bodies(runner.server)
    assert f"Baseline records** from evaluation #{evaluation_id} (" in body
    with ExperimentDB(runner.workspace / "regress-action.db") as db:
        # The default branch's evaluation and the candidate's, stored with the comparison.
        assert len(db.list_evaluations()) == 2
    fresh = runner.run("action", inputs={**inputs, "cache": "false"})
    assert fresh.rc == 0, fresh.stdout + fresh.stderr
    uncached = Report.load(runner.workspace / fresh.outputs["report-json"])
    assert uncached.baseline_source is None
    volatile = {"created_at", "duration_s", "comparison_id", "baseline_source", "trend"}
    assert report.model_dump(exclude=volatile) == uncached.model_dump(exclude=volatile)


def test_the_default_branch_job_starts_every_pull_requests_trend(
    runner: Runner, lm_runs: LmRuns
) -> None:
    """regress-default-branch.yml's two steps on a push (the model evaluated and stored, then
    compared with the previous push's model, no comment), then a pull request: its baseline comes
    from the store and its trend starts with the default branch's comparison."""
    main = runner.run("action", inputs=_evaluate_inputs(runner, lm_runs), **PUSH)
    assert main.rc == 0, main.stdout + main.stderr
    inputs = lm_runs.checkpoint_inputs(runner.workspace, dataset="lm_tiny")
    history = runner.run(
        "action",
        inputs={
            **inputs,
            # the previous push's model (trained) against this push's (untrained)
            "baseline-checkpoint": inputs["candidate-checkpoint"],
            "candidate-checkpoint": inputs["baseline-checkpoint"],
            "comment": "off",
            "fail-on-regression": "false",
        },
        **PUSH,
    )
    assert history.rc == 0, history.stdout + history.stderr
    assert history.outputs["status"] == "regressed" and bodies(runner.server) == []
    pr = runner.run("action", inputs=inputs)
    assert pr.rc == 0, pr.stdout + pr.stderr
    report = Report.load(runner.workspace / pr.outputs["report-json"])
    assert report.baseline_source is not None  # this push's model, evaluated on main
    assert [point.comparison_id for point in report.trend] == [
        int(history.outputs["comparison-id"]),
        int(pr.outputs["comparison-id"]),
    ]
    (body,) = bodies(runner.server)
    assert "Trend: last 2 comparisons" in body


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"candidate-checkpoint": "trained.safetensors"}, "inputs candidate-run-id"),
        ({"mode": "measure"}, "input mode"),
        ({"cache": "sometimes"}, "input cache"),
    ],
)
def test_bad_mode_inputs_are_one_error_line_and_store_nothing(
    runner: Runner, lm_runs: LmRuns, bad: dict[str, str], named: str
) -> None:
    result = runner.run("action", inputs=_evaluate_inputs(runner, lm_runs, **bad), **PUSH)
    assert result.rc == 2, result.stdout + result.stderr
    (error,) = result.lines("::error")
    assert named in error, error
    assert "Traceback" not in result.stdout + result.stderr
    assert not (runner.workspace / "regress-action.db").exists()


def test_mode_evaluate_fails_the_job_on_a_bound(runner: Runner, lm_runs: LmRuns) -> None:
    inputs = _evaluate_inputs(runner, lm_runs, **{"metric-bounds": "perplexity<=1.5"})
    result = runner.run("action", inputs=inputs, **PUSH)
    assert result.rc == 1, result.stdout + result.stderr
    assert result.outputs["evaluation-status"] == "failed"
    (error,) = result.lines("::error")
    assert "perplexity is outside its bound" in error
    report = json.loads((runner.workspace / result.outputs["report-json"]).read_text())
    assert report["failed_metrics"] == ["perplexity"]
