"""The PR comment's lifecycle, end to end: `regress-action publish` in this process against the
local GitHub-compatible server, over real HTTP.

comment-on (always / change / regression), hide-previous (the GraphQL `minimizeComment`
mutation, seen by the server), on-clean (keep / delete / collapse), the workflow run's link and
the report artifact in the comment's footer and the job summary, and the commit comment on a
push. Whatever GitHub answers, the exit code is the report's and the token is never printed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regress_action import cli
from regress_action.report import Report
from tests.e2e import test_action_e2e as action_e2e
from tests.e2e.test_action_e2e import LmRuns, new_runner
from tests.gh_server import BOT_TOKEN, FakeGitHub, node_id, serve
from tests.report_factory import make_report

REPO = "octo/models"
PR = 7
HEAD = "c" * 40
PUSHED = "d" * 40
TUNING = {
    "REGRESS_ACTION_GITHUB_TIMEOUT": "2",
    "REGRESS_ACTION_GITHUB_RETRIES": "1",
    "REGRESS_ACTION_GITHUB_BACKOFF_FACTOR": "0",
    "REGRESS_ACTION_GITHUB_SECONDARY_RATE_WAIT": "0",
    "REGRESS_ACTION_GITHUB_SECONDS_BETWEEN_REQUESTS": "0",
    "REGRESS_ACTION_GITHUB_SECONDS_BETWEEN_WRITES": "0",
    "REGRESS_ACTION_GITHUB_COMMENT_BUDGET": "10",
}
COMMENT = r"/issues/comments/\d+$"
GRAPHQL = r"/graphql$"


def report(worse: float) -> Report:
    """The LM sample report with every candidate value `worse` (a fraction) worse than its
    baseline: 0 is clean (neutral), 0.2 and 0.3 regress, with different values."""
    sample = make_report("lm")
    metrics = {}
    for name, m in sample.metrics.items():
        factor = (1 - worse) if m.higher_is_better else (1 + worse)
        assert m.baseline is not None
        metrics[name] = m.model_copy(update={"candidate": m.baseline * factor})
    return sample.model_copy(update={"metrics": metrics})


REGRESSED, REGRESSED_MORE, CLEAN = 0.2, 0.3, 0.0
lm_runs = action_e2e.lm_runs  # two registered lm_tiny models (trained once per module)


@dataclass
class Published:
    rc: int
    stdout: str
    outputs: dict[str, str]
    summary: str

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("::warning")]


class Publisher:
    """Runs `regress-action publish` as one job of a workflow would, each in a fresh folder."""

    def __init__(self, server: FakeGitHub, root: Path) -> None:
        self.server = server
        self.root = root
        self.runs = 0

    def __call__(
        self,
        worse: float,
        *args: str,
        event: str = "pull_request",
        env: dict[str, str] | None = None,
    ) -> Published:
        self.runs += 1
        home = self.root / f"run{self.runs}"
        home.mkdir()
        path = home / "report.json"
        path.write_text(report(worse).to_json())
        payload = (
            {"pull_request": {"number": PR, "head": {"sha": HEAD}}}
            if event == "pull_request"
            else {"after": PUSHED}
        )
        (home / "event.json").write_text(json.dumps(payload))
        (home / "output").write_text("")
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "GITHUB_ACTIONS": "true",
            "GITHUB_API_URL": self.server.api_url,
            "GITHUB_SERVER_URL": self.server.base_url,
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_EVENT_NAME": event,
            "GITHUB_EVENT_PATH": str(home / "event.json"),
            "GITHUB_SHA": PUSHED if event == "push" else "e" * 40,
            "GITHUB_OUTPUT": str(home / "output"),
            "GITHUB_STEP_SUMMARY": str(home / "summary.md"),
            "GITHUB_WORKSPACE": str(home),
            "GITHUB_TOKEN": BOT_TOKEN,
            **TUNING,
            **(env or {}),
        }
        stdout, stderr = io.StringIO(), io.StringIO()
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(environ)
        argv = ["publish", "--report", str(path), "--significance", "off", *args]
        try:
            with (
                contextlib.chdir(home),
                contextlib.redirect_stdout(stdout),
                contextlib.redirect_stderr(stderr),
            ):
                rc = cli.main(argv)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        printed = (stdout.getvalue() + stderr.getvalue()).replace(f"::add-mask::{BOT_TOKEN}", "")
        assert BOT_TOKEN not in printed  # only ever handed to the runner to mask
        lines = (home / "output").read_text().splitlines()
        outputs = dict(line.split("=", 1) for line in lines if "=" in line)
        summary = home / "summary.md"
        return Published(
            rc, stdout.getvalue(), outputs, summary.read_text() if summary.exists() else ""
        )


@pytest.fixture
def server() -> Iterator[FakeGitHub]:
    with serve() as state:
        state.add_pull(REPO, PR, head_sha=HEAD)
        yield state


@pytest.fixture
def publish(server: FakeGitHub, tmp_path: Path) -> Publisher:
    return Publisher(server, tmp_path)


def bodies(server: FakeGitHub) -> list[str]:
    return [c.body for c in server.comments_on(REPO, PR)]


# -------------------------------------------------------------------------------- comment-on


def test_change_leaves_an_unchanged_comment_alone(server: FakeGitHub, publish: Publisher) -> None:
    first = publish(REGRESSED, "--comment-on", "change")
    assert first.rc == 1 and first.outputs["comment-url"]
    again = publish(REGRESSED, "--comment-on", "change")
    assert again.rc == 1
    assert server.count("PATCH", COMMENT) == 0 and server.count("POST", r"/comments$") == 1
    assert again.outputs["comment-url"] == first.outputs["comment-url"]
    assert len(bodies(server)) == 1


def test_change_edits_the_comment_when_the_values_change(
    server: FakeGitHub, publish: Publisher
) -> None:
    publish(REGRESSED, "--comment-on", "change")
    before = bodies(server)[0]
    publish(REGRESSED_MORE, "--comment-on", "change")
    assert server.count("PATCH", COMMENT) == 1
    (after,) = bodies(server)
    assert after != before and "regress-action-state:" in after


def test_always_edits_even_when_nothing_changed(server: FakeGitHub, publish: Publisher) -> None:
    publish(REGRESSED)
    publish(REGRESSED)
    assert server.count("PATCH", COMMENT) == 1 and len(bodies(server)) == 1


def test_regression_only_posts_on_a_regression_and_never_leaves_a_stale_one(
    server: FakeGitHub, publish: Publisher
) -> None:
    clean = publish(CLEAN, "--comment-on", "regression")
    assert clean.rc == 0 and clean.outputs["comment-url"] == "" and bodies(server) == []
    assert server.count("POST", r"/comments$") == 0
    regressed = publish(REGRESSED, "--comment-on", "regression")
    assert regressed.rc == 1 and len(bodies(server)) == 1
    assert "regressed" in bodies(server)[0]
    # Clean again: the existing comment is brought up to date rather than left saying regressed.
    publish(CLEAN, "--comment-on", "regression")
    (body,) = bodies(server)
    assert server.count("PATCH", COMMENT) == 1
    assert "❌" not in body.split("\n", 1)[0] and "regressed" not in body.split("\n", 1)[0]


# ----------------------------------------------------------------------------- hide-previous


def test_hide_previous_minimizes_the_older_comments(server: FakeGitHub, publish: Publisher) -> None:
    planted = server.add_comment(REPO, PR, "mallory", "quoted\n\n<!-- regress-action:default -->")
    for _ in range(3):
        assert publish(REGRESSED, "--comment", "create", "--hide-previous", "true").rc == 1
    ours = [c for c in server.comments_on(REPO, PR) if c.author != "mallory"]
    assert len(ours) == 3
    newest = ours[-1]
    assert server.minimized == {
        node_id(ours[0].id): "OUTDATED",
        node_id(ours[1].id): "OUTDATED",
    }
    assert node_id(newest.id) not in server.minimized
    assert node_id(planted.id) not in server.minimized
    assert all("minimizeComment" in request["query"] for request in server.graphql)


def test_hide_previous_uses_github_graphql_url(server: FakeGitHub, publish: Publisher) -> None:
    url = server.base_url + "/api/v3/graphql"
    publish(REGRESSED, "--comment", "create")
    publish(
        REGRESSED, "--comment", "create", "--hide-previous", "true", env={"GITHUB_GRAPHQL_URL": url}
    )
    assert server.count("POST", r"^/api/v3/graphql$") == 1 and len(server.minimized) == 1


def test_without_hide_previous_nothing_is_minimized(server: FakeGitHub, publish: Publisher) -> None:
    publish(REGRESSED, "--comment", "create")
    publish(REGRESSED, "--comment", "create")
    assert server.count("POST", GRAPHQL) == 0 and len(bodies(server)) == 2


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 502},
        {"status": 200, "raw": b"<html>not json"},
        {"status": 200, "body": {"data": None}},
    ],
    ids=["502", "malformed", "no-data"],
)
def test_a_failed_graphql_answer_is_a_warning(
    server: FakeGitHub, publish: Publisher, fault: dict[str, object]
) -> None:
    publish(REGRESSED, "--comment", "create")
    server.add_fault("POST", GRAPHQL, **fault)  # type: ignore[arg-type]
    result = publish(REGRESSED, "--comment", "create", "--hide-previous", "true")
    assert result.rc == 1  # the report's verdict, not the GraphQL failure
    assert result.outputs["comment-url"]  # the new comment is posted all the same
    assert any("older comments not hidden" in w for w in result.warnings), result.stdout
    assert server.minimized == {} and len(bodies(server)) == 2


# ---------------------------------------------------------------------------------- on-clean


def test_on_clean_delete_removes_the_sticky_comment(server: FakeGitHub, publish: Publisher) -> None:
    publish(REGRESSED, "--on-clean", "delete")
    result = publish(CLEAN, "--on-clean", "delete")
    assert result.rc == 0 and result.outputs["comment-url"] == ""
    assert server.count("DELETE", COMMENT) == 1 and bodies(server) == []


def test_on_clean_collapse_folds_the_report(server: FakeGitHub, publish: Publisher) -> None:
    publish(REGRESSED, "--on-clean", "collapse")
    result = publish(CLEAN, "--on-clean", "collapse")
    assert result.rc == 0
    (body,) = bodies(server)
    assert body.startswith(f"✅ **regress-action: resolved in {HEAD[:7]}**")
    assert "<details>" in body and "</details>" in body
    # Collapsed and unchanged: comment-on change leaves it be.
    publish(CLEAN, "--on-clean", "collapse", "--comment-on", "change")
    assert server.count("PATCH", COMMENT) == 1


def test_on_clean_keep_updates_the_comment(server: FakeGitHub, publish: Publisher) -> None:
    publish(REGRESSED)
    publish(CLEAN, "--on-clean", "keep")
    (body,) = bodies(server)
    assert server.count("PATCH", COMMENT) == 1 and server.count("DELETE") == 0
    assert not body.startswith("✅") and "<details><summary>Full report" not in body


def test_a_failed_delete_is_a_warning(server: FakeGitHub, publish: Publisher) -> None:
    publish(REGRESSED)
    server.add_fault("DELETE", COMMENT, 502)
    result = publish(CLEAN, "--on-clean", "delete")
    assert result.rc == 0 and any("PR comment not posted" in w for w in result.warnings)


# ---------------------------------------------------------------------- run link and artifact


def test_the_run_link_and_the_artifact_are_in_the_comment_and_the_summary(
    server: FakeGitHub, publish: Publisher
) -> None:
    env = {"GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "2"}
    result = publish(REGRESSED, "--artifact-name", "regress-report", env=env)
    link = f"{server.base_url}/{REPO}/actions/runs/4242/attempts/2"
    (body,) = bodies(server)
    for text in (body, result.summary):
        assert f"[Workflow run]({link})" in text
        assert "artifact `regress-report`" in text


def test_the_run_link_without_an_attempt(server: FakeGitHub, publish: Publisher) -> None:
    publish(CLEAN, env={"GITHUB_RUN_ID": "77"})
    (body,) = bodies(server)
    assert re.search(
        rf"\[Workflow run\]\({re.escape(server.base_url)}/{REPO}/actions/runs/77\)", body
    )


# ---------------------------------------------------------------------------- commit comment


def test_a_push_comments_on_the_pushed_commit(server: FakeGitHub, publish: Publisher) -> None:
    result = publish(REGRESSED, "--commit-comment", "true", event="push")
    assert result.rc == 1
    ((repo, sha, author, body),) = server.commit_comments
    assert (repo, sha, author) == (REPO, PUSHED, "github-actions[bot]")
    assert "<!-- regress-action:default -->" in body
    assert result.outputs["comment-url"].endswith("#commitcomment-1")
    assert bodies(server) == []


def test_no_commit_comment_unless_asked(server: FakeGitHub, publish: Publisher) -> None:
    result = publish(REGRESSED, event="push")
    assert result.rc == 1 and server.commit_comments == [] and result.outputs["comment-url"] == ""


def test_a_failed_commit_comment_is_a_warning(server: FakeGitHub, publish: Publisher) -> None:
    server.add_fault("POST", r"/commits/\w+/comments$", 500)
    result = publish(CLEAN, "--commit-comment", "true", event="push")
    assert result.rc == 0 and result.outputs["comment-url"] == ""
    assert any("commit" in w and "not posted" in w for w in result.warnings), result.stdout


# ---------------------------------------------------------------------------- the Action's inputs


@pytest.mark.slow
def test_the_action_inputs_drive_the_lifecycle(
    server: FakeGitHub, tmp_path: Path, lm_runs: LmRuns
) -> None:
    """comment-on, on-clean and artifact-name as a workflow gives them to the Action."""
    runner = new_runner(server, tmp_path)
    life = {"comment-on": "regression", "on-clean": "collapse", "artifact-name": "regress-report"}
    improved = lm_runs.inputs(lm_runs.untrained, lm_runs.trained, **life)
    regressed = lm_runs.inputs(lm_runs.trained, lm_runs.untrained, **life)
    first = runner.run("action", inputs=improved)
    assert first.rc == 0 and bodies(server) == [] and first.outputs["comment-url"] == ""
    second = runner.run("action", inputs=regressed)
    assert second.rc == 1 and second.outputs["comment-url"]
    (body,) = bodies(server)
    link = f"[Workflow run]({server.base_url}/{REPO}/actions/runs/4242)"
    assert link in body and "artifact `regress-report`" in body and link in second.summary
    third = runner.run("action", inputs=improved)
    assert third.rc == 0
    (body,) = bodies(server)
    assert body.startswith(f"✅ **regress-action: resolved in {HEAD[:7]}**")
