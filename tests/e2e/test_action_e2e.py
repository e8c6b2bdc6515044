"""End to end: the entrypoint in the environment the runner gives a Docker action (hyphenated
INPUT_* names, GITHUB_EVENT_PATH, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, GITHUB_API_URL,
GITHUB_REPOSITORY, cwd = the workspace), talking real HTTP to the local GitHub-compatible server.

Where the process is the subject (its exit code, the runner's environment, the stdout protocol)
the installed `regress-action` runs as a subprocess; elsewhere the same entry (`cli.main`) runs
in this process with the same environment, which spares a torch import per run.
`regress-action publish` drives most comment scenarios from a JSON report (no torch needed);
`regress-action action` runs the whole path on two tiny lm_tiny models made once per module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regress_action import cli
from regress_action.records_file import read_table
from regress_action.report import MetricResult, Report
from regress_action.store import ExperimentDB
from tests.composite_runner import parse_outputs
from tests.gh_server import BOT_LOGIN, BOT_TOKEN, MAX_BODY_CHARS, FakeGitHub
from tests.report_factory import make_report

REPO = "octo/models"
PR = 7
HEAD = "c" * 40  # the head sha of PR #7 in the gh_server fixture
EXE = str(Path(sys.executable).parent / "regress-action")
FAST_CLIENT = {
    "REGRESS_ACTION_GITHUB_TIMEOUT": "10",
    "REGRESS_ACTION_GITHUB_RETRIES": "2",
    "REGRESS_ACTION_GITHUB_BACKOFF_FACTOR": "0",
    "REGRESS_ACTION_GITHUB_SECONDARY_RATE_WAIT": "0",
    "REGRESS_ACTION_GITHUB_SECONDS_BETWEEN_REQUESTS": "0",
    "REGRESS_ACTION_GITHUB_SECONDS_BETWEEN_WRITES": "0",
}


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith(prefix)]


@dataclass
class Runner:
    """Runs the entrypoint like the Actions runner runs a container step."""

    server: FakeGitHub
    workspace: Path
    home: Path

    def run(
        self,
        *args: str,
        inputs: dict[str, str] | None = None,
        event: str = "pull_request",
        payload: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        process: bool = False,
    ) -> Result:
        """Run `regress-action ARGS`: a subprocess with `process`, else in this process."""
        if payload is None:
            payload = {"pull_request": {"number": PR, "head": {"sha": HEAD}}} if event else {}
        event_path = self.home / "event.json"
        event_path.write_text(json.dumps(payload))
        output, summary = self.home / "output", self.home / "summary.md"
        output.write_text("")
        summary.write_text("")
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "GITHUB_ACTIONS": "true",
            "GITHUB_API_URL": self.server.api_url,
            "GITHUB_SERVER_URL": self.server.base_url,
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_EVENT_NAME": event,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_SHA": "m" * 40,
            "GITHUB_RUN_ID": "4242",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_WORKSPACE": str(self.workspace),
            **FAST_CLIENT,
            # The runner passes every declared input; unset ones arrive as "".
            **{f"INPUT_{name.upper()}": value for name, value in (inputs or {}).items()},
            **(env or {}),
        }
        run = _subprocess if process else _in_process
        rc, stdout, stderr = run(list(args), environ, self.workspace)
        return Result(rc, stdout, stderr, parse_outputs(output.read_text()), summary.read_text())

    def publish(self, report: Report, *extra: str, **kwargs: Any) -> Result:
        path = self.workspace / "report.json"
        path.write_text(report.to_json())
        env = {"GITHUB_TOKEN": BOT_TOKEN, **kwargs.pop("env", {})}
        return self.run("publish", "--report", "report.json", *extra, env=env, **kwargs)


def _subprocess(args: list[str], environ: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [EXE, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout, proc.stderr


def _in_process(args: list[str], environ: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            rc = cli.main(args)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return rc, stdout.getvalue(), stderr.getvalue()


def new_runner(server: FakeGitHub, tmp_path: Path) -> Runner:
    """A workspace and a home under `tmp_path`, talking to `server`."""
    workspace, home = tmp_path / "workspace", tmp_path / "home"
    workspace.mkdir()
    home.mkdir()
    return Runner(server, workspace, home)


@pytest.fixture
def runner(gh_server: FakeGitHub, tmp_path: Path) -> Runner:
    return new_runner(gh_server, tmp_path)


def bodies(server: FakeGitHub) -> list[str]:
    return [c.body for c in server.comments_on(REPO, PR)]


def huge_report() -> Report:
    """A report whose full Markdown is far over GitHub's 65,536-character comment limit."""
    base = make_report()
    metrics = dict(base.metrics)
    for i in range(900):
        name = f"accuracy_of_a_rather_long_metric_name_{i:04d}"
        metrics[name] = MetricResult(
            name=name, higher_is_better=True, kind="mean", baseline=0.5, candidate=0.5,
            delta=0.0, rel_delta=0.0, tolerance=0.01, status="neutral", gated=False,
        )  # fmt: skip
    return base.model_copy(update={"metrics": metrics})


# --------------------------------------------------------------------------- publish

# The sample reports carry no statistics: judged by the tolerance alone, every metric gated.
TOLERANCE_ONLY = ("--significance", "report", "--gate", "all")


def test_first_run_creates_then_updates_one_comment(runner: Runner) -> None:
    first = runner.publish(make_report("lm"))
    assert first.rc == 0, first.stdout + first.stderr
    assert len(bodies(runner.server)) == 1
    assert first.outputs["comment-url"].endswith(f"#issuecomment-{runner.server.comments[0].id}")
    second = runner.publish(make_report("lm", comparison_id=43))
    assert second.rc == 0
    comments = runner.server.comments_on(REPO, PR)
    assert len(comments) == 1 and comments[0].updated == 1
    assert comments[0].author == BOT_LOGIN
    assert comments[0].body.rstrip().endswith("<!-- regress-action:default -->")
    assert second.outputs["comment-url"] == first.outputs["comment-url"]


def test_updates_the_comment_on_page_three_of_250(runner: Runner) -> None:
    for i in range(250):
        mine = i == 220
        body = "old report\n\n<!-- regress-action:default -->" if mine else f"comment {i}"
        runner.server.add_comment(REPO, PR, BOT_LOGIN if mine else "reviewer", body)
    result = runner.publish(make_report("lm"))
    assert result.rc == 0, result.stdout + result.stderr
    assert len(bodies(runner.server)) == 250
    assert "old report" not in bodies(runner.server)[220]
    assert runner.server.count("GET", r"/issues/7/comments$") == 3


def test_another_users_marker_is_left_alone(runner: Runner) -> None:
    planted = runner.server.add_comment(REPO, PR, "mallory", "x\n<!-- regress-action:default -->")
    assert runner.publish(make_report("lm")).rc == 0
    assert planted.updated == 0 and len(bodies(runner.server)) == 2


def test_two_report_names_give_two_comments(runner: Runner) -> None:
    for _ in range(2):
        runner.publish(make_report("lm"), "--report-name", "lm")
        runner.publish(make_report("lm"), "--report-name", "vision")
    markers = sorted(body.rstrip().splitlines()[-1] for body in bodies(runner.server))
    assert markers == ["<!-- regress-action:lm -->", "<!-- regress-action:vision -->"]


def test_403_is_a_warning_and_the_rest_is_written(runner: Runner) -> None:
    runner.server.add_fault(
        "POST", r"/comments$", 403, body={"message": "Resource not accessible by integration"}
    )
    result = runner.publish(make_report(), *TOLERANCE_ONLY)  # regressed
    assert result.rc == 1  # by status, not by the comment
    warnings = result.lines("::warning")
    assert any("Fork pull requests" in w for w in warnings), result.stdout
    assert result.outputs["status"] == "regressed" and result.outputs["comment-url"] == ""
    assert result.outputs["regressed-metrics"] == "accuracy,macro_f1"
    assert result.outputs["report-json"] == "report.json"
    assert "accuracy" in result.summary and bodies(runner.server) == []


def test_oversized_report_is_truncated_under_the_limit(runner: Runner) -> None:
    result = runner.publish(huge_report(), *TOLERANCE_ONLY)
    assert result.rc == 1, result.stdout + result.stderr
    (body,) = bodies(runner.server)
    assert len(body) <= MAX_BODY_CHARS
    assert body.rstrip().endswith("<!-- regress-action:default -->")
    assert "truncated" in body and "actions/runs/4242" in body
    assert len(result.summary) > MAX_BODY_CHARS  # the job summary keeps the full report


def test_exit_code_follows_status_and_fail_on_regression(runner: Runner) -> None:
    regressed = runner.publish(
        make_report(), *TOLERANCE_ONLY, env={"GITHUB_TOKEN": ""}, process=True
    )
    assert regressed.rc == 1
    errors = regressed.lines("::error")
    assert len(errors) == 2 and "accuracy" in errors[0]
    assert runner.publish(make_report("lm"), process=True).rc == 0  # improved


def test_publish_fail_on_regression_false(runner: Runner) -> None:
    result = runner.publish(make_report(), *TOLERANCE_ONLY, "--fail-on-regression", "false")
    assert result.rc == 0
    assert result.lines("::error") == [] and len(result.lines("::warning")) == 2


def test_push_event_posts_no_comment(runner: Runner) -> None:
    push = {"event": "push", "payload": {"ref": "refs/heads/main"}}
    result = runner.publish(make_report("lm"), *TOLERANCE_ONLY, **push)
    assert result.rc == 0
    assert bodies(runner.server) == [] and runner.server.requests == []
    assert any("not a pull request" in line for line in result.lines("::notice"))
    assert result.outputs["status"] == "improved" and "perplexity" in result.summary


def test_workflow_run_of_a_fork_pr_finds_the_pr_by_head_sha(runner: Runner) -> None:
    payload = {"workflow_run": {"event": "pull_request", "head_sha": HEAD, "pull_requests": []}}
    result = runner.publish(make_report("lm"), event="workflow_run", payload=payload)
    assert result.rc == 0, result.stdout + result.stderr
    assert len(bodies(runner.server)) == 1 and runner.server.count("GET", r"/search/issues") == 1


def test_5xx_after_retries_is_a_warning(runner: Runner) -> None:
    runner.server.add_fault("GET", r"/comments$", 503)
    result = runner.publish(make_report("lm"))
    assert result.rc == 0
    assert any("not posted" in w for w in result.lines("::warning"))
    assert runner.server.count("GET", r"/comments$") == 3  # 1 + 2 retries, then gave up


def test_the_token_is_masked_and_never_printed_otherwise(runner: Runner) -> None:
    result = runner.publish(make_report("lm"), process=True)
    assert result.lines(f"::add-mask::{BOT_TOKEN}")
    printed = (result.stdout + result.stderr).replace(f"::add-mask::{BOT_TOKEN}", "")
    assert BOT_TOKEN not in printed


def test_a_missing_report_is_one_error_line(runner: Runner) -> None:
    result = runner.run("publish", "--report", "nope.json", process=True)
    assert result.rc == 2
    (error,) = result.lines("::error")
    assert "nope.json" in error


# --------------------------------------------------------------------------- action


def test_bad_input_is_one_error_line_naming_it(runner: Runner) -> None:
    inputs = {"baseline-run-id": "1", "candidate-run-id": "2", "dataset": "lm_tiny"}
    result = runner.run(
        "action", inputs={**inputs, "threshold": "lots", "comment": ""}, process=True
    )
    assert result.rc == 2, result.stdout + result.stderr
    (error,) = result.lines("::error")
    assert "input threshold" in error
    missing = runner.run("action", inputs={"candidate-run-id": "2", "dataset": "lm_tiny"})
    assert missing.rc == 2 and "baseline-run-id" in missing.lines("::error")[0]
    assert runner.server.requests == []


@dataclass(frozen=True)
class LmRuns:
    """Two lm_tiny models, saved and registered: `trained` is clearly better than `untrained`
    on every metric, so either order gives a clear improvement or regression."""

    db: Path
    folder: Path
    trained: int
    untrained: int

    def inputs(self, baseline: int, candidate: int, **more: str) -> dict[str, str]:
        return {
            "baseline-run-id": str(baseline),
            "candidate-run-id": str(candidate),
            "dataset": "lm_tiny",
            "db-url": f"sqlite:///{self.db}",
            "github-token": BOT_TOKEN,
            "device": "cpu",
            "significance": "off",
            **more,
        }

    def checkpoint_inputs(self, workspace: Path, **more: str) -> dict[str, str]:
        """The two checkpoints copied into the workspace: the Action reads no file outside it."""
        for name in ("untrained", "trained"):
            shutil.copyfile(self.folder / f"{name}.safetensors", workspace / f"{name}.safetensors")
        return {
            "baseline-checkpoint": "untrained.safetensors",
            "candidate-checkpoint": "trained.safetensors",
            "model-factory": "regress_action.zoo:tiny_lm",
            "task": "lm",
            "github-token": BOT_TOKEN,
            "device": "cpu",
            "significance": "off",
            **more,
        }


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory: pytest.TempPathFactory) -> LmRuns:
    import torch

    from regress_action.app import CheckpointRequest, register_checkpoint
    from regress_action.config import task_spec
    from regress_action.models import save_checkpoint
    from regress_action.train import train_tiny_lm
    from regress_action.zoo import tiny_lm

    folder = tmp_path_factory.mktemp("lm")
    torch.manual_seed(0)
    models = {"trained": train_tiny_lm("baseline"), "untrained": tiny_lm().eval()}
    ids: dict[str, int] = {}
    with ExperimentDB(folder / "runs.db") as db:
        for name, model in models.items():
            path = folder / f"{name}.safetensors"
            save_checkpoint(model, path, "safetensors")
            request = CheckpointRequest(
                checkpoint=str(path), task=task_spec("lm"), factory="regress_action.zoo:tiny_lm"
            )
            ids[name] = register_checkpoint(db, request).id
    return LmRuns(folder / "runs.db", folder, ids["trained"], ids["untrained"])


@pytest.mark.slow
def test_action_full_path_on_a_regression(runner: Runner, lm_runs: LmRuns) -> None:
    inputs = lm_runs.inputs(lm_runs.trained, lm_runs.untrained, metrics="")
    result = runner.run("action", inputs=inputs, process=True)
    assert result.rc == 1, result.stdout + result.stderr
    assert result.outputs["status"] == "regressed"
    assert result.outputs["regressed-metrics"]
    assert result.outputs["comparison-id"].isdigit()
    report = Report.load(runner.workspace / result.outputs["report-json"])
    assert report.status == "regressed" and report.comparison_id is not None
    assert (runner.workspace / result.outputs["report-markdown"]).read_text()
    assert result.summary and len(bodies(runner.server)) == 1
    assert result.outputs["comment-url"]
    assert result.lines("::group::")
    assert len(result.lines("::error")) == len(report.regressed_metrics)


@pytest.mark.slow
def test_action_regression_without_failing_the_job(runner: Runner, lm_runs: LmRuns) -> None:
    more = {"fail-on-regression": "false", "records-path": "out/records.parquet"}
    inputs = lm_runs.inputs(lm_runs.trained, lm_runs.untrained, **more)
    result = runner.run("action", inputs=inputs)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.outputs["status"] == "regressed"
    # Every example's records, in the file the input names and the output repeats.
    assert result.outputs["report-records"] == "out/records.parquet"
    table = read_table(runner.workspace / "out" / "records.parquet")
    report = Report.load(runner.workspace / result.outputs["report-json"])
    assert len(table["example_id"]) == report.dataset.n
    assert result.lines("::error") == []
    assert len(result.lines("::warning")) == len(result.outputs["regressed-metrics"].split(","))


@pytest.mark.slow
def test_action_improvement_then_rerun_edits_the_comment(runner: Runner, lm_runs: LmRuns) -> None:
    inputs = lm_runs.inputs(lm_runs.untrained, lm_runs.trained)
    first = runner.run("action", inputs=inputs)
    assert first.rc == 0, first.stdout + first.stderr
    assert first.outputs["status"] == "improved"
    second = runner.run("action", inputs=inputs)
    assert second.rc == 0
    assert len(bodies(runner.server)) == 1
    assert second.outputs["comparison-id"] != first.outputs["comparison-id"]
    push = runner.run("action", inputs=inputs, event="push", payload={})
    assert push.rc == 0 and len(bodies(runner.server)) == 1
    assert any("not a pull request" in line for line in push.lines("::notice"))


@pytest.mark.slow
def test_action_registers_checkpoints_on_the_fly(runner: Runner, lm_runs: LmRuns) -> None:
    inputs = lm_runs.checkpoint_inputs(
        runner.workspace, dataset="lm_tiny", **{"report-name": "on the fly"}
    )
    result = runner.run("action", inputs=inputs)
    assert result.rc == 0, result.stdout + result.stderr
    assert result.outputs["status"] == "improved"
    with ExperimentDB(runner.workspace / "regress-action.db") as db:  # the default db-url
        assert [run.name for run in db.list_runs()] == ["untrained", "trained"]
    assert result.outputs["report-json"] == "regress-action/on-the-fly.json"
    assert (runner.workspace / result.outputs["report-json"]).is_file()
    assert any("registered baseline checkpoint" in line for line in result.stdout.splitlines())
    assert bodies(runner.server)[0].rstrip().endswith("<!-- regress-action:on the fly -->")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"baseline-run-id": "999"}, "input baseline-run-id"),
        ({"dataset": "data/missing.jsonl"}, "input dataset"),
        ({"metrics": "perplexty"}, "input metrics"),
        ({"gate": "token_accuracy", "metrics": "loss"}, "input gate"),
        ({"metric-tolerances": "ece=0.1"}, "input metric-tolerances"),
        ({"num-classes": "10"}, "input num-classes is for input task classification"),
        ({"json-path": "/proc/none/report.json"}, "input json-path"),
    ],
)
def test_bad_inputs_fail_before_anything_is_registered(
    runner: Runner, lm_runs: LmRuns, bad: dict[str, str], named: str
) -> None:
    # A YAML block scalar's trailing newline is trimmed.
    inputs = {**lm_runs.checkpoint_inputs(runner.workspace, dataset="lm_tiny\n"), **bad}
    if "baseline-run-id" in bad:
        del inputs["baseline-checkpoint"]
    result = runner.run("action", inputs=inputs)
    assert result.rc == 2, result.stdout + result.stderr
    (error,) = result.lines("::error")
    assert named in error
    database = runner.workspace / "regress-action.db"
    if database.exists():
        with ExperimentDB(database) as db:
            assert db.list_runs() == []
    assert not (runner.workspace / "regress-action").exists()
    assert runner.server.requests == []
