"""`regress-action publish` reads an artifact a fork controls: nothing the report says about
itself decides anything. Statuses are derived again from its numbers under the job's own
verdict flags, the sticky comment is the job's `--report-name`, and an oversized, over-wide or
foreign-version report is refused with one line (exit 2) before anything is posted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regress_action.publish import MAX_REPORT_METRICS
from regress_action.report import MetricResult, Report
from tests.e2e.test_action_e2e import Runner, bodies, new_runner
from tests.gh_server import FakeGitHub
from tests.report_factory import make_report


@pytest.fixture
def runner(gh_server: FakeGitHub, tmp_path: Path) -> Runner:
    return new_runner(gh_server, tmp_path)


def _relabelled(report: Report) -> Report:
    """Every status rewritten to improved, the numbers left as the run measured them."""
    metrics = {
        name: metric.model_copy(update={"status": "improved", "significant": True})
        for name, metric in report.metrics.items()
    }
    return report.model_copy(
        update={"metrics": metrics, "status": "improved", "regressed_metrics": []}
    )


def test_a_relabelled_regression_is_judged_from_its_numbers(runner: Runner) -> None:
    report = _relabelled(make_report(stats=True))  # accuracy 0.80 → 0.72, p_adj 8.4e-7
    result = runner.publish(report)
    assert result.rc == 1, result.stdout + result.stderr
    assert result.outputs["status"] == "regressed"
    assert result.outputs["regressed-metrics"] == "accuracy"  # the primary metric is gated
    (body,) = bodies(runner.server)
    assert "✅ improved" not in body.split("\n", 3)[0]
    assert "regressed" in body


def test_the_verdict_flags_of_the_job_decide(runner: Runner) -> None:
    report = _relabelled(make_report(stats=True))
    loose = runner.publish(report, "--tolerance", "accuracy=0.1")  # -0.08 is within 0.1
    assert loose.rc == 0 and loose.outputs["status"] != "regressed"
    every = runner.publish(report, "--gate", "all")  # macro_f1: -0.014 but p_adj 0.84
    assert every.rc == 1 and every.outputs["regressed-metrics"] == "accuracy"


def test_directions_come_from_the_registry_not_the_report(runner: Runner) -> None:
    report = make_report(stats=True)
    flipped = dict(report.metrics)
    flipped["accuracy"] = flipped["accuracy"].model_copy(update={"higher_is_better": False})
    result = runner.publish(report.model_copy(update={"metrics": flipped}))
    assert result.rc == 1 and result.outputs["regressed-metrics"] == "accuracy"


def test_a_gated_metric_missing_from_the_report_fails(runner: Runner) -> None:
    report = make_report(stats=True)
    kept = {name: m for name, m in report.metrics.items() if name != "accuracy"}
    result = runner.publish(report.model_copy(update={"metrics": kept, "status": "improved"}))
    assert result.rc == 1
    assert result.outputs["regressed-metrics"] == "accuracy"
    assert "missing from the report" in result.summary


def test_the_comment_is_the_jobs_report_name_not_the_reports(runner: Runner) -> None:
    runner.server.add_comment("octo/models", 7, "mallory", "x\n<!-- regress-action:other -->")
    result = runner.publish(make_report("lm", report_name="other"))
    assert result.rc == 0, result.stdout + result.stderr
    markers = sorted(body.rstrip().splitlines()[-1] for body in bodies(runner.server))
    assert markers == ["<!-- regress-action:default -->", "<!-- regress-action:other -->"]
    named = runner.publish(make_report("lm"), "--report-name", "lm-nightly")
    assert named.rc == 0
    assert any(
        b.rstrip().endswith("<!-- regress-action:lm-nightly -->") for b in bodies(runner.server)
    )


def _write(runner: Runner, text: str) -> None:
    (runner.workspace / "report.json").write_text(text)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d | {"schema_version": 99}, "schema_version 99"),
        (lambda d: d | {"status": "great"}, "status"),
        (lambda d: d | {"report_name": "x -->"}, "report_name"),
        (lambda d: {k: v for k, v in d.items() if k != "metrics"}, "metrics"),
    ],
    ids=["schema-version", "unknown-status", "marker-breaking-name", "no-metrics"],
)
def test_a_foreign_report_is_one_error_line_and_posts_nothing(
    runner: Runner, change: object, needle: str
) -> None:
    data = json.loads(make_report().to_json())
    _write(runner, json.dumps(change(data)))  # type: ignore[operator]
    result = runner.run("publish", "--report", "report.json", process=True)
    assert result.rc == 2, result.stdout + result.stderr
    (error,) = result.lines("::error")
    assert needle in error and "Traceback" not in result.stderr
    assert bodies(runner.server) == [] and runner.server.requests == []


def test_an_oversized_artifact_is_refused_before_it_is_parsed(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("regress_action.publish.MAX_REPORT_BYTES", 4096)
    path: Path = runner.workspace / "report.json"
    path.write_text(make_report().to_json() + " " * 10_000)
    result = runner.run("publish", "--report", "report.json")
    assert result.rc == 2
    (error,) = result.lines("::error")
    assert "more than the 4,096" in error
    assert bodies(runner.server) == []


def test_too_many_metrics_are_refused(runner: Runner) -> None:
    def wide(count: int) -> Report:
        base = make_report()
        metrics = dict(base.metrics)
        for i in range(count):
            name = f"custom_{i:05d}"
            metrics[name] = MetricResult(
                name=name, higher_is_better=True, kind="mean", baseline=0.5, candidate=0.5,
                delta=0.0, rel_delta=0.0, tolerance=0.01, status="neutral", gated=False,
            )  # fmt: skip
        return base.model_copy(update={"metrics": metrics})

    refused = runner.publish(wide(MAX_REPORT_METRICS))
    assert refused.rc == 2 and "metrics, more than" in refused.lines("::error")[0]


def test_a_pr_that_only_mentions_the_head_sha_is_not_commented_on(runner: Runner) -> None:
    head = "c" * 40  # the head of PR #7
    runner.server.add_pull("octo/models", 3, head_sha="d" * 40, mentions=(head,))  # a decoy
    payload = {"workflow_run": {"event": "pull_request", "head_sha": head, "pull_requests": []}}
    result = runner.publish(make_report("lm"), event="workflow_run", payload=payload)
    assert result.rc == 0, result.stdout + result.stderr
    assert runner.server.comments_on("octo/models", 3) == []
    assert len(runner.server.comments_on("octo/models", 7)) == 1
    del runner.server.pulls[("octo/models", 7)]
    alone = runner.publish(make_report("lm"), event="workflow_run", payload=payload)
    assert alone.rc == 0 and runner.server.comments_on("octo/models", 3) == []


def test_an_interval_is_kept_only_at_the_level_this_verdict_gives_it() -> None:
    from regress_action.compare import rejudge
    from regress_action.spec import VerdictConfig

    report = make_report(stats=True)  # four gated tests in the run: intervals at 98.75 %
    four = ("accuracy", "loss", "top5_accuracy", "macro_f1")
    same = rejudge(report, VerdictConfig(significance="gate", gate=four))
    assert same.stats.family_size == 4
    assert same.metrics["accuracy"].ci_low == report.metrics["accuracy"].ci_low
    assert same.metrics["accuracy"].p_adjusted == pytest.approx(8.4e-7)
    one = rejudge(report, VerdictConfig(significance="gate"))  # accuracy alone: 95 %
    assert one.stats.family_size == 1
    assert one.metrics["accuracy"].ci_low is None and one.metrics["accuracy"].ci_high is None
    assert one.metrics["accuracy"].p_adjusted == pytest.approx(2.1e-7)
    assert one.metrics["accuracy"].status == "regressed"
