"""The GitHub fault matrix: `regress-action publish` against the local GitHub-compatible server
answering each fault GitHub can give while the sticky comment is upserted.

Every case asserts the exit code (decided by the report, never by the comment), the warning,
the step outputs (`comment-url` always written), how many comments the PR has afterwards (0 or 1,
never 2) and that the time spent stays within the configured comment budget
(`REGRESS_ACTION_GITHUB_COMMENT_BUDGET`), whatever the server asks to wait.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from regress_action import cli
from tests.gh_server import BOT_TOKEN, FakeGitHub, serve
from tests.report_factory import make_report

REPO = "octo/models"
PR = 7
TIMEOUT_S = 1
BUDGET_S = 4.0
# Time the publication itself takes around the comment (render, summary, outputs) on a slow CI,
# once its modules are imported (`warm`).
SLACK_S = 1.5
TUNING = {
    "REGRESS_ACTION_GITHUB_TIMEOUT": str(TIMEOUT_S),
    "REGRESS_ACTION_GITHUB_RETRIES": "1",
    "REGRESS_ACTION_GITHUB_BACKOFF_FACTOR": "0",
    "REGRESS_ACTION_GITHUB_SECONDARY_RATE_WAIT": "0",
    "REGRESS_ACTION_GITHUB_SECONDS_BETWEEN_REQUESTS": "0",
    "REGRESS_ACTION_GITHUB_SECONDS_BETWEEN_WRITES": "0",
    "REGRESS_ACTION_GITHUB_COMMENT_BUDGET": str(BUDGET_S),
}
SECONDARY = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
LONG_WAIT = {"Retry-After": "200"}
COMMENTS = r"/issues/7/comments$"


@dataclass
class Published:
    rc: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    elapsed: float

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("::warning")]


def publish(server: FakeGitHub, home: Path, env: dict[str, str] | None = None) -> Published:
    """`regress-action publish` in this process, in the environment of a pull_request job."""
    report = home / "report.json"
    report.write_text(make_report("lm").to_json())
    event = home / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": PR, "head": {"sha": "c" * 40}}}))
    output = home / "output"
    output.write_text("")
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "GITHUB_ACTIONS": "true",
        "GITHUB_API_URL": server.api_url,
        "GITHUB_SERVER_URL": server.base_url,
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(event),
        "GITHUB_OUTPUT": str(output),
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
    start = time.monotonic()
    try:
        with (
            contextlib.chdir(home),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            rc = cli.main(["publish", "--report", str(report)])
    finally:
        elapsed = time.monotonic() - start
        os.environ.clear()
        os.environ.update(saved)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return Published(rc, stdout.getvalue(), stderr.getvalue(), outputs, elapsed)


@pytest.fixture(scope="module", autouse=True)
def warm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One publication first, so no case's time includes importing the renderer."""
    with serve() as server:
        server.add_pull(REPO, PR, head_sha="c" * 40)
        assert publish(server, tmp_path_factory.mktemp("warm")).outputs["comment-url"]


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    comments: int  # on the PR afterwards
    warning: str | None  # a fragment of the `PR comment not posted` warning; None: posted
    fault: dict[str, Any] = field(default_factory=dict)


CASES = {
    "403-read-only-token": Case(
        "POST", COMMENTS, 403, 0, "Fork pull requests",
        {"body": {"message": "Resource not accessible by integration"}},
    ),
    "404-unknown-pr": Case("GET", COMMENTS, 404, 0, "404"),
    "422-rejected-body": Case(
        "POST", COMMENTS, 422, 0, "422", {"body": {"message": "Validation Failed"}}
    ),
    "429-retry-after-200": Case("POST", COMMENTS, 429, 0, "Retry-After", {"headers": LONG_WAIT}),
    "429-retry-after-0-once": Case(
        "POST", COMMENTS, 429, 1, None, {"headers": {"Retry-After": "0"}, "times": 1}
    ),
    "403-secondary-rate-limit-retry-after-200": Case(
        "POST", COMMENTS, 403, 0, "Retry-After", {"body": SECONDARY, "headers": LONG_WAIT}
    ),
    "503-retry-after-200-on-list": Case(
        "GET", COMMENTS, 503, 0, "Retry-After", {"headers": LONG_WAIT}
    ),
    "500-on-post": Case("POST", COMMENTS, 500, 0, "500"),
    "502-after-effect": Case("POST", COMMENTS, 502, 1, None, {"after_effect": True}),
    "502-after-effect-once": Case(
        "POST", COMMENTS, 502, 1, None, {"after_effect": True, "times": 1}
    ),
    "502-once-before-effect": Case("POST", COMMENTS, 502, 1, None, {"times": 1}),
    "503-on-list": Case("GET", COMMENTS, 503, 0, "503"),
    "malformed-json-on-list": Case("GET", COMMENTS, 200, 0, "GitHub", {"raw": b"[{not json"}),
    "malformed-json-after-effect": Case(
        "POST", COMMENTS, 201, 1, None, {"raw": b"{not json", "after_effect": True}
    ),
    "timeout-on-post": Case("POST", COMMENTS, 201, 0, "timed out", {"delay_s": 4 * TIMEOUT_S}),
    "timeout-after-effect": Case(
        "POST", COMMENTS, 201, 1, None, {"delay_s": 4 * TIMEOUT_S, "after_effect": True}
    ),
    "timeout-on-list": Case("GET", COMMENTS, 200, 0, "timed out", {"delay_s": 4 * TIMEOUT_S}),
    "closed-socket-on-post": Case("POST", COMMENTS, 0, 0, "connection", {"close": True}),
    "closed-socket-after-effect": Case(
        "POST", COMMENTS, 0, 1, None, {"close": True, "after_effect": True}
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_comment_fault(gh_server: FakeGitHub, tmp_path: Path, case: Case) -> None:
    gh_server.add_fault(case.method, case.path, case.status, **case.fault)
    result = publish(gh_server, tmp_path)

    assert result.rc == (1 if result.outputs["status"] == "regressed" else 0), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert len(gh_server.comments_on(REPO, PR)) == case.comments
    assert result.elapsed <= BUDGET_S + SLACK_S
    not_posted = [w for w in result.warnings if "PR comment not posted" in w]
    if case.warning is None:
        assert not not_posted, result.stdout
        comment = gh_server.comments_on(REPO, PR)[0]
        assert result.outputs["comment-url"].endswith(f"#issuecomment-{comment.id}")
    else:
        assert len(not_posted) == 1, result.stdout
        assert case.warning.lower() in not_posted[0].lower()
        assert result.outputs["comment-url"] == ""


def test_retries_stop_at_the_budget(gh_server: FakeGitHub, tmp_path: Path) -> None:
    # Ten retries of a one-second timeout would take 11 s per request: the budget cuts them.
    gh_server.add_fault("GET", COMMENTS, 200, delay_s=3.0)
    budget = 1.5
    env = {
        "REGRESS_ACTION_GITHUB_TIMEOUT": "1",
        "REGRESS_ACTION_GITHUB_RETRIES": "10",
        "REGRESS_ACTION_GITHUB_COMMENT_BUDGET": str(budget),
    }
    result = publish(gh_server, tmp_path, env)
    assert result.rc in (0, 1) and result.outputs["comment-url"] == ""
    assert any("budget" in w for w in result.warnings), result.stdout
    assert result.elapsed <= budget + SLACK_S
    assert gh_server.count("GET", COMMENTS) <= 2
    assert gh_server.comments_on(REPO, PR) == []


def test_an_answer_dripping_past_the_budget_is_given_up(
    gh_server: FakeGitHub, tmp_path: Path
) -> None:
    # Every byte comes well within the read timeout, the whole answer only after 8 s.
    body = b"[" + b" " * 30 + b"]"
    gh_server.add_fault("GET", COMMENTS, 200, raw=body, drip_s=0.25)
    budget = 1.5
    result = publish(gh_server, tmp_path, {"REGRESS_ACTION_GITHUB_COMMENT_BUDGET": str(budget)})
    assert result.rc in (0, 1) and result.outputs["comment-url"] == ""
    (warning,) = [w for w in result.warnings if "PR comment not posted" in w]
    assert "budget" in warning
    assert result.elapsed <= budget + SLACK_S
    assert gh_server.comments_on(REPO, PR) == []


def test_an_existing_comment_is_edited_once_through_faults(
    gh_server: FakeGitHub, tmp_path: Path
) -> None:
    first = publish(gh_server, tmp_path)
    gh_server.add_fault("PATCH", r"/issues/comments/\d+$", 502, after_effect=True, times=1)
    second = publish(gh_server, tmp_path)
    assert second.outputs["comment-url"] == first.outputs["comment-url"] != ""
    (comment,) = gh_server.comments_on(REPO, PR)
    assert comment.updated >= 1


BAD_API_URLS = {
    "not-a-url": "not a url",
    "ftp-scheme": "ftp://github.example/api/v3",
    "no-host": "http:///api/v3",
    "bad-port": "http://127.0.0.1:notaport/api/v3",
    "refused": "http://127.0.0.1:9/api/v3",
}


@pytest.mark.parametrize("url", BAD_API_URLS.values(), ids=BAD_API_URLS.keys())
def test_a_bad_github_api_url_is_a_warning(gh_server: FakeGitHub, tmp_path: Path, url: str) -> None:
    result = publish(gh_server, tmp_path, {"GITHUB_API_URL": url})
    assert result.rc == (1 if result.outputs["status"] == "regressed" else 0), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    (warning,) = [w for w in result.warnings if "PR comment not posted" in w]
    assert "GITHUB_API_URL" in warning or "unreachable" in warning
    assert result.outputs["comment-url"] == ""
    assert result.elapsed <= BUDGET_S + SLACK_S
    assert BOT_TOKEN not in result.stdout.replace(f"::add-mask::{BOT_TOKEN}", "")


@pytest.mark.parametrize(
    ("name", "value"),
    [("COMMENT_BUDGET", "500"), ("COMMENT_BUDGET", "0"), ("TIMEOUT", "soon")],
    ids=["budget-over-two-minutes", "budget-zero", "timeout-not-a-number"],
)
def test_a_bad_client_setting_is_bad_input(
    gh_server: FakeGitHub, tmp_path: Path, name: str, value: str
) -> None:
    variable = f"REGRESS_ACTION_GITHUB_{name}"
    result = publish(gh_server, tmp_path, {variable: value})
    assert result.rc == 2
    (error,) = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert variable in error
    assert "Traceback" not in result.stdout + result.stderr
    assert gh_server.requests == [] and gh_server.comments_on(REPO, PR) == []
