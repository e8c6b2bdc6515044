"""The PyGithub adapter against the local GitHub-compatible server (real HTTP, no mocks), and the
runner-protocol helpers in `gha` (outputs, summary, workflow commands, event payloads)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from regress_action import gha
from regress_action.errors import GitHubError
from regress_action.github import (
    CommentNotPosted,
    make_client,
    marker,
    open_commenter,
    token_login,
    upsert_comment,
    with_marker,
)
from regress_action.settings import ClientTuning
from tests.gh_server import BOT_LOGIN, BOT_TOKEN, OTHER_TOKEN, USER_TOKEN, FakeGitHub

REPO = "octo/models"
PR = 7
FAST = ClientTuning(
    timeout=5,
    comment_budget=30,
    retries=2,
    backoff_factor=0,
    secondary_rate_wait=0,
    max_rate_limit_wait=5,
    seconds_between_requests=0,
    seconds_between_writes=0,
)
RATE_LIMITED = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}


def upsert(server: FakeGitHub, body: str = "report", token: str = BOT_TOKEN, **kwargs: object):  # type: ignore[no-untyped-def]
    gh = make_client(server.api_url, token, FAST)
    options = {"report_name": "default", "mode": "update", **kwargs}
    return upsert_comment(gh, REPO, PR, body, **options)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- sticky comment


def test_first_run_creates_second_run_edits_the_same_comment(gh_server: FakeGitHub) -> None:
    first = upsert(gh_server, "v1")
    second = upsert(gh_server, "v2")
    comments = gh_server.comments_on(REPO, PR)
    assert (first.action, second.action) == ("created", "updated")
    assert first.comment_id == second.comment_id
    assert len(comments) == 1
    assert comments[0].author == BOT_LOGIN
    assert comments[0].body == with_marker("v2", "default")
    assert comments[0].body.rstrip().endswith(marker("default"))
    assert second.url.endswith(f"#issuecomment-{first.comment_id}")


def test_finds_the_marker_on_page_three_of_250(gh_server: FakeGitHub) -> None:
    for i in range(250):
        author = BOT_LOGIN if i == 230 else "someone"
        body = with_marker("old", "default") if i == 230 else f"chatter {i}"
        gh_server.add_comment(REPO, PR, author, body)
    result = upsert(gh_server, "new")
    assert result.action == "updated"
    assert len(gh_server.comments_on(REPO, PR)) == 250
    assert gh_server.comments_on(REPO, PR)[230].body.startswith("new")
    # 100 per page: the marker at index 230 sits on page 3, reached through the Link headers.
    assert gh_server.count("GET", r"/issues/7/comments$") == 3


def test_another_users_marker_is_never_touched(gh_server: FakeGitHub) -> None:
    planted = gh_server.add_comment(REPO, PR, "mallory", with_marker("fake", "default"))
    result = upsert(gh_server, "real")
    assert result.action == "created"
    assert planted.body == with_marker("fake", "default") and planted.updated == 0
    assert len(gh_server.comments_on(REPO, PR)) == 2


def test_report_names_get_one_comment_each(gh_server: FakeGitHub) -> None:
    for _ in range(2):
        upsert(gh_server, "lm", report_name="lm")
        upsert(gh_server, "vision", report_name="vision")
    bodies = sorted(c.body for c in gh_server.comments_on(REPO, PR))
    assert bodies == [with_marker("lm", "lm"), with_marker("vision", "vision")]


def test_create_mode_always_posts(gh_server: FakeGitHub) -> None:
    upsert(gh_server, "a", mode="create")
    upsert(gh_server, "b", mode="create")
    assert len(gh_server.comments_on(REPO, PR)) == 2
    assert gh_server.count("GET", r"/user$") == 0


def test_a_personal_token_matches_its_own_login(gh_server: FakeGitHub) -> None:
    gh_server.add_comment(REPO, PR, BOT_LOGIN, with_marker("bot", "default"))
    result = upsert(gh_server, "mine", token=USER_TOKEN)
    assert result.action == "created"
    assert upsert(gh_server, "mine again", token=USER_TOKEN).comment_id == result.comment_id


def test_token_login_is_unknown_for_an_installation_token(gh_server: FakeGitHub) -> None:
    assert token_login(make_client(gh_server.api_url, BOT_TOKEN, FAST).gh) is None
    assert token_login(make_client(gh_server.api_url, OTHER_TOKEN, FAST).gh) == "mallory"


def test_an_app_token_finds_its_app_bots_comment(gh_server: FakeGitHub) -> None:
    # A GitHub App's installation token also gets 403 on /user; its comments are by
    # `<app-slug>[bot]`, which must be found, while a person's marked comment is not, and
    # another app's marked comment (403 on edit) is passed over.
    app_token = "ghs_fake_app_token"
    gh_server.tokens[app_token] = "regress-app[bot]"
    gh_server.user_endpoint_forbidden.add(app_token)
    gh_server.add_comment(REPO, PR, "mallory", with_marker("planted", "default"))
    gh_server.add_comment(REPO, PR, BOT_LOGIN, with_marker("other app", "default"))
    mine = gh_server.add_comment(REPO, PR, "regress-app[bot]", with_marker("old", "default"))
    result = upsert(gh_server, "new", token=app_token)
    assert result.action == "updated"
    assert result.comment_id == mine.id
    planted = gh_server.comments_on(REPO, PR)[0]
    assert planted.body == with_marker("planted", "default")


def test_a_marker_quoted_mid_body_is_not_the_sticky_comment(gh_server: FakeGitHub) -> None:
    quoted = f"> {marker('default')}\nquoting the bot"
    gh_server.add_comment(REPO, PR, BOT_LOGIN, quoted)
    assert upsert(gh_server, "report").action == "created"


# --------------------------------------------------------------------------- faults


def test_403_on_post_is_comment_not_posted_with_the_fork_hint(gh_server: FakeGitHub) -> None:
    gh_server.add_fault(
        "POST", r"/comments$", 403, body={"message": "Resource not accessible by integration"}
    )
    with pytest.raises(CommentNotPosted, match="Fork pull requests") as info:
        upsert(gh_server)
    assert isinstance(info.value, GitHubError)
    assert gh_server.count("POST") == 1  # a plain 403 is not retried


def test_5xx_is_retried_a_bounded_number_of_times(gh_server: FakeGitHub) -> None:
    gh_server.add_fault("POST", r"/comments$", 500)
    with pytest.raises(CommentNotPosted, match="after retries"):
        upsert(gh_server)
    assert gh_server.count("POST") == FAST.retries + 1


def test_a_transient_5xx_recovers(gh_server: FakeGitHub) -> None:
    gh_server.add_fault("GET", r"/comments$", 502, times=1)
    assert upsert(gh_server).action == "created"


def test_secondary_rate_limit_is_retried_then_given_up(gh_server: FakeGitHub) -> None:
    gh_server.add_fault("POST", r"/comments$", 403, body=RATE_LIMITED, times=1)
    assert upsert(gh_server).action == "created"
    gh_server.add_fault("POST", r"/comments$", 403, body=RATE_LIMITED, headers={"Retry-After": "0"})
    with pytest.raises(CommentNotPosted):
        upsert(gh_server, mode="create")
    assert gh_server.count("POST") == 2 + FAST.retries + 1


def test_a_502_after_the_comment_was_created_posts_no_second_one(gh_server: FakeGitHub) -> None:
    gh_server.add_fault("POST", r"/comments$", 502, after_effect=True)
    for mode in ("update", "create"):
        result = upsert(gh_server, "once", mode=mode)
        (comment,) = gh_server.comments_on(REPO, PR)
        assert (result.action, result.comment_id) == ("created", comment.id)
        gh_server.comments.clear()
    assert gh_server.count("POST") == 2  # one per run: the comment was found, not re-posted


@pytest.mark.parametrize(
    ("method", "status", "body"),
    [("POST", 429, {}), ("POST", 403, RATE_LIMITED), ("GET", 503, {})],
    ids=["429", "secondary-rate-limit-403", "503"],
)
def test_a_retry_after_past_the_budget_gives_up_at_once(
    gh_server: FakeGitHub, method: str, status: int, body: dict[str, str]
) -> None:
    gh_server.add_fault(method, r"/comments$", status, body=body, headers={"Retry-After": "200"})
    tuning = FAST.model_copy(update={"comment_budget": 5})
    gh = make_client(gh_server.api_url, BOT_TOKEN, tuning)
    with pytest.raises(CommentNotPosted, match=r"Retry-After.*200 s wait.*5 s budget"):
        upsert_comment(gh, REPO, PR, "x", report_name="default")
    assert gh.budget.remaining() > 4  # no wait was started
    assert gh_server.count(method, r"/comments$") == 1


def test_a_bad_api_url_is_comment_not_posted() -> None:
    with pytest.raises(CommentNotPosted, match="GITHUB_API_URL 'ftp://\\*\\*\\*@host'"):
        make_client("ftp://user:secret@host", BOT_TOKEN, FAST)


def test_unknown_pr_is_a_404_message(gh_server: FakeGitHub) -> None:
    gh = make_client(gh_server.api_url, BOT_TOKEN, FAST)
    with pytest.raises(CommentNotPosted, match="404"):
        upsert_comment(gh, REPO, 999, "x", report_name="default", mode="create")


def test_body_over_the_limit_is_rejected_by_the_server(gh_server: FakeGitHub) -> None:
    with pytest.raises(CommentNotPosted, match="422"):
        upsert(gh_server, "x" * 70_000)


def test_a_hanging_server_times_out(gh_server: FakeGitHub) -> None:
    gh_server.add_fault("POST", r"/comments$", 201, delay_s=2.0)
    tuning = FAST.model_copy(update={"timeout": 1, "retries": 0})
    gh = make_client(gh_server.api_url, BOT_TOKEN, tuning)
    with pytest.raises(CommentNotPosted, match="unreachable"):
        upsert_comment(gh, REPO, PR, "x", report_name="default", mode="create")


def test_find_pr_by_head_sha(gh_server: FakeGitHub) -> None:
    commenter = open_commenter(gh_server.api_url, BOT_TOKEN, REPO, FAST)
    assert commenter.find_pr("c" * 40) == PR
    assert commenter.find_pr("d" * 40) is None


# --------------------------------------------------------------------------- gha


def test_workflow_commands_are_escaped() -> None:
    assert gha.escape_data("50%\r\nnext") == "50%25%0D%0Anext"
    assert gha.format_command("error", "a\nb", title="x: y, z", file=None) == (
        "::error title=x%3A y%2C z::a%0Ab"
    )
    out = io.StringIO()
    commands = gha.Commands(out)
    with pytest.raises(RuntimeError), commands.group("Evaluate"):
        raise RuntimeError
    commands.add_mask("s3cret")
    assert out.getvalue() == "::group::Evaluate\n::endgroup::\n::add-mask::s3cret\n"


def test_outputs_single_and_multi_line(tmp_path: Path) -> None:
    path = tmp_path / "out"
    gha.write_outputs(path, {"status": "regressed", "text": "a\nb"})
    lines = path.read_text().splitlines()
    assert lines[0] == "status=regressed"
    name, delimiter = lines[1].split("<<")
    assert name == "text" and lines[2:] == ["a", "b", delimiter]
    assert delimiter.startswith("ghadelimiter_") and len(delimiter) > 20


def test_summary_is_capped_at_one_mebibyte(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    assert gha.append_summary(path, "# small") is False
    assert gha.append_summary(path, "é" * 700_000, hint="the artifact") is True
    text = path.read_text(encoding="utf-8")  # still valid UTF-8 after the cut
    assert path.stat().st_size <= gha.SUMMARY_LIMIT_BYTES
    assert text.startswith("# small") and text.rstrip().endswith("the artifact")


def _event(tmp_path: Path, payload: object) -> dict[str, object]:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    return gha.read_event(path)


def test_event_context_for_each_trigger(tmp_path: Path) -> None:
    pr = {"pull_request": {"number": 5, "head": {"sha": "h" * 40}}}
    ctx = gha.event_context("pull_request", _event(tmp_path, pr), "m" * 40)
    assert (ctx.pr_number, ctx.head_sha) == (5, "h" * 40)  # head, not the merge commit
    on_pr = {"issue": {"number": 6, "pull_request": {"url": "x"}}}
    assert gha.event_context("issue_comment", on_pr, None).pr_number == 6
    assert gha.event_context("issue_comment", {"issue": {"number": 6}}, None).pr_number is None
    run = {"workflow_run": {"head_sha": "w" * 40, "event": "pull_request", "pull_requests": []}}
    ctx = gha.event_context("workflow_run", run, None)
    assert (ctx.pr_number, ctx.head_sha, ctx.needs_search) == (None, "w" * 40, True)
    run["workflow_run"]["pull_requests"] = [{"number": 9, "head": {"sha": "w" * 40}}]  # type: ignore[index]
    assert gha.event_context("workflow_run", run, None).pr_number == 9
    push = gha.event_context("push", {}, "p" * 40)
    assert (push.pr_number, push.head_sha, push.needs_search) == (None, "p" * 40, False)


def test_a_broken_event_payload_is_a_github_error(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text("{not json")
    with pytest.raises(GitHubError, match="GITHUB_EVENT_PATH"):
        gha.read_event(path)
