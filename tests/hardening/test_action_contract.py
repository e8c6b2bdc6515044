"""The Action's contract with the runner and GitHub: which commit a comparison records for each
event, what a step does when the runner's files cannot be written, and which file an error's
annotation points at.

- pull_request: the PR's head; pull_request_target: GITHUB_SHA, the base its default checkout
  holds; issue_comment: the PR's head read from the API (none without a token, with a notice);
  the `commit` input overrides every one of them.
- GITHUB_OUTPUT / GITHUB_STEP_SUMMARY: the outputs are written first and each file on its own;
  an unwritable summary is a warning, unwritable outputs exit 2 naming GITHUB_OUTPUT, and what
  was recorded and written stays.
- `::error file=...`: the workspace file an error is about, relative to the workspace.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from regress_action import action
from regress_action.gha import event_context
from regress_action.models import save_checkpoint
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_lm
from tests.e2e.test_action_e2e import BOT_TOKEN, HEAD, PR, REPO, Runner
from tests.gh_server import FakeGitHub
from tests.hardening.test_action_failures import row_counts
from tests.report_factory import make_report

GITHUB_SHA = "m" * 40  # the runner's GITHUB_SHA in `Runner`


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("contract-ckpt")
    torch.manual_seed(0)
    for name in ("baseline", "candidate"):
        save_checkpoint(tiny_lm().eval(), folder / f"{name}.safetensors", "safetensors")
    torch.save(tiny_lm().eval(), folder / "pickled.pt")
    (folder / "corrupt.safetensors").write_bytes(b"\x00garbage" * 10)
    (folder / "data").mkdir()
    (folder / "data" / "broken.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    return folder


@pytest.fixture
def runner(gh_server: FakeGitHub, tmp_path: Path, checkpoints: Path) -> Runner:
    workspace, home = tmp_path / "workspace", tmp_path / "home"
    shutil.copytree(checkpoints, workspace)
    home.mkdir()
    return Runner(gh_server, workspace, home)


def inputs(runner: Runner, **more: str) -> dict[str, str]:
    return {
        "baseline-checkpoint": "baseline.safetensors",
        "candidate-checkpoint": "candidate.safetensors",
        "model-factory": "regress_action.zoo:tiny_lm",
        "task": "lm",
        "dataset": "lm_tiny",
        "max-examples": "16",
        "db-url": f"sqlite:///{runner.workspace / 'runs.db'}",
        "github-token": BOT_TOKEN,
        "device": "cpu",
        "significance": "off",
        **more,
    }


def recorded(runner: Runner) -> tuple[str | None, str | None]:
    """The commit of the one comparison recorded, and the candidate run's git sha."""
    with ExperimentDB(runner.workspace / "runs.db") as db:
        (comparison,) = db.list_comparisons()
        candidate = db.get_run(comparison.candidate_run_id)
    return comparison.commit, candidate.git_sha


def log(result: object) -> str:
    return getattr(result, "stdout", "") + getattr(result, "stderr", "")


# --------------------------------------------------------------------------- the commit


def test_a_pull_request_records_its_head(runner: Runner) -> None:
    result = runner.run("action", inputs=inputs(runner))
    assert result.rc in (0, 1), log(result)
    assert recorded(runner) == (HEAD, HEAD)


def test_pull_request_target_records_the_base_it_checked_out(runner: Runner) -> None:
    payload = {"pull_request": {"number": PR, "head": {"sha": HEAD}}}
    result = runner.run(
        "action", inputs=inputs(runner), event="pull_request_target", payload=payload
    )
    assert result.rc in (0, 1), log(result)
    assert recorded(runner) == (GITHUB_SHA, GITHUB_SHA)
    assert len(runner.server.comments_on(REPO, PR)) == 1  # still commented on the PR


def test_the_commit_input_overrides_the_event(runner: Runner) -> None:
    payload = {"pull_request": {"number": PR, "head": {"sha": HEAD}}}
    given = "f" * 40
    result = runner.run(
        "action",
        inputs=inputs(runner, commit=given),
        event="pull_request_target",
        payload=payload,
    )
    assert result.rc in (0, 1), log(result)
    assert recorded(runner) == (given, given)


ISSUE_COMMENT = {"issue": {"number": PR, "pull_request": {"url": "x"}}, "comment": {"id": 1}}


def test_issue_comment_records_the_pr_head_read_from_the_api(runner: Runner) -> None:
    result = runner.run(
        "action", inputs=inputs(runner), event="issue_comment", payload=ISSUE_COMMENT
    )
    assert result.rc in (0, 1), log(result)
    assert recorded(runner) == (HEAD, HEAD)
    assert runner.server.count("GET", rf"/pulls/{PR}$") >= 1
    assert len(runner.server.comments_on(REPO, PR)) == 1


def test_issue_comment_without_a_token_records_no_commit_and_says_so(runner: Runner) -> None:
    result = runner.run(
        "action",
        inputs=inputs(runner, **{"github-token": "", "comment": "off"}),
        event="issue_comment",
        payload=ISSUE_COMMENT,
    )
    assert result.rc in (0, 1), log(result)
    assert recorded(runner) == (None, None)
    (notice,) = [line for line in result.lines("::notice") if "issue_comment" in line]
    assert f"PR #{PR}" in notice and "commit" in notice
    assert runner.server.requests == []


def test_issue_comment_whose_pr_cannot_be_read_warns_and_records_no_commit(
    runner: Runner,
) -> None:
    payload = {"issue": {"number": 8, "pull_request": {"url": "x"}}}  # no such PR: 404
    result = runner.run("action", inputs=inputs(runner), event="issue_comment", payload=payload)
    assert result.rc in (0, 1), log(result)
    assert recorded(runner) == (None, None)
    assert any("#8" in line and "commit" in line for line in result.lines("::warning")), log(result)


@pytest.mark.parametrize(
    ("name", "payload", "head"),
    [
        ("pull_request", {"pull_request": {"number": 3, "head": {"sha": "h"}}}, "h"),
        ("pull_request_review", {"pull_request": {"number": 3, "head": {"sha": "h"}}}, "h"),
        ("pull_request_target", {"pull_request": {"number": 3, "head": {"sha": "h"}}}, "s"),
        ("pull_request", {"pull_request": None}, "s"),
        ("push", {"after": "h"}, "s"),
        ("workflow_run", {"workflow_run": {"head_sha": "h", "pull_requests": []}}, "h"),
        ("issue_comment", {"issue": {"number": 3, "pull_request": {}}}, None),
    ],
)
def test_the_commit_each_event_names(name: str, payload: dict[str, object], head: str) -> None:
    assert event_context(name, payload, "s").head_sha == head


# --------------------------------------------------------------------------- runner files


def test_an_unwritable_job_summary_is_a_warning_and_everything_else_is_written(
    runner: Runner,
) -> None:
    folder = runner.home / "summary-folder"
    folder.mkdir()
    result = runner.run(
        "action",
        inputs=inputs(runner, **{"fail-on-regression": "false"}),
        env={"GITHUB_STEP_SUMMARY": str(folder)},
    )
    assert result.rc == 0, log(result)
    assert result.lines("::error") == []
    (warning,) = [line for line in result.lines("::warning") if "GITHUB_STEP_SUMMARY" in line]
    assert str(folder) in warning
    assert result.outputs["comparison-id"] == "1"
    assert (runner.workspace / result.outputs["report-json"]).is_file()
    assert result.outputs["comment-url"].endswith(str(runner.server.comments[0].id))


def _removing_after_compare(folder: Path) -> Callable[[], action.Services]:
    """Services whose compare (the real one) removes `folder` once it has recorded: the
    runner's GITHUB_OUTPUT, under it, cannot be written any more."""

    def compare(request: object, db: object) -> object:
        outcome = action._run_compare(request, db)  # type: ignore[arg-type]
        shutil.rmtree(folder)
        return outcome

    services = action.Services  # the class, before the test puts this factory in its place
    return lambda: services(compare=compare)  # type: ignore[arg-type]


def test_outputs_that_fail_after_recording_exit_2_and_lose_nothing(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = runner.home / "outputs"
    folder.mkdir()
    monkeypatch.setattr(action, "Services", _removing_after_compare(folder))
    result = runner.run(
        "action",
        inputs=inputs(runner, **{"fail-on-regression": "false"}),  # regressions: warnings
        env={"GITHUB_OUTPUT": str(folder / "output")},
    )
    assert result.rc == 2, log(result)
    assert "Traceback" not in log(result)
    (error,) = result.lines("::error")
    assert "GITHUB_OUTPUT" in error and "comparison 1" in error and "file=" not in error
    assert row_counts(runner.workspace / "runs.db")["comparisons"] == 1
    for name in ("default.json", "default.md"):
        assert (runner.workspace / "regress-action" / name).is_file()
    assert "regress-action" in result.summary
    assert len(runner.server.comments_on(REPO, PR)) == 1


def test_publish_with_unwritable_outputs_still_writes_the_summary_and_comments(
    runner: Runner,
) -> None:
    folder = runner.home / "output-folder"
    folder.mkdir()
    result = runner.publish(make_report("lm"), env={"GITHUB_OUTPUT": str(folder)})
    assert result.rc == 2, log(result)
    (error,) = result.lines("::error")
    assert "GITHUB_OUTPUT" in error and str(folder) in error
    assert result.summary != ""
    assert len(runner.server.comments_on(REPO, PR)) == 1


# --------------------------------------------------------------------------- annotations


@pytest.mark.parametrize(
    ("bad", "file"),
    [
        ({"dataset": "data/broken.jsonl"}, "data/broken.jsonl"),
        ({"candidate-checkpoint": "corrupt.safetensors"}, "corrupt.safetensors"),
        ({"candidate-checkpoint": "pickled.pt"}, "pickled.pt"),  # named by its absolute path
        ({"threshold": "-1"}, None),
        ({"db-url": "postgresql://ci:pw@127.0.0.1:notaport/db"}, None),
    ],
    ids=["dataset", "checkpoint", "absolute-path", "no-file", "database"],
)
def test_an_error_about_a_workspace_file_annotates_that_file(
    runner: Runner, bad: dict[str, str], file: str | None
) -> None:
    result = runner.run("action", inputs=inputs(runner, **bad, comment="off"))
    assert result.rc == 2, log(result)
    (error,) = result.lines("::error")
    properties = error.split("::")[1]
    if file is None:
        assert "file=" not in properties, error
    else:
        assert f"file={file}" in properties.split(","), error
