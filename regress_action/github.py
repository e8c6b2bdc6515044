"""The PyGithub adapter: the sticky PR comment and the PR lookup by head sha.

The only module that imports PyGithub. Everything GitHub can answer with (403 from a fork PR's
read-only token, 404, 422, 5xx after retries, a secondary rate limit, a timeout) becomes one
`CommentNotPosted` whose message says what to do; the caller turns it into a warning.
Must not import torch, the engine or the ExperimentDB.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import requests
from github import Auth, Github, GithubException, GithubRetry
from github.IssueComment import IssueComment

from .errors import GitHubError
from .settings import ClientTuning

# PyGithub's __init__ sets its "github" logger to INFO with its own stderr handler, so every
# expected 403 (GET /user with GITHUB_TOKEN) and every retry would be printed twice as
# alarming noise; the outcome is reported by this module's callers instead.
logging.getLogger("github").setLevel(logging.WARNING)

FORK_HINT = (
    "pull requests from forks get a read-only token; see the README section 'Fork pull "
    "requests' (post from a workflow_run workflow with `regress-action publish`), and give the "
    "job `permissions: pull-requests: write`"
)


class CommentNotPosted(GitHubError):
    """The comment could not be created or updated; the report is still in summary and files."""


@dataclass(frozen=True)
class CommentResult:
    action: Literal["created", "updated"]
    comment_id: int
    url: str


def marker(report_name: str) -> str:
    """The hidden HTML comment that identifies a report's sticky comment."""
    return f"<!-- regress-action:{report_name} -->"


def with_marker(body: str, report_name: str) -> str:
    # At the end: GitHub keeps HTML comments invisible, and a marker at the end cannot be
    # mistaken for one quoted inside the report text above it.
    return body.rstrip("\n") + "\n\n" + marker(report_name) + "\n"


def make_client(api_url: str, token: str, tuning: ClientTuning) -> Github:
    """A PyGithub client with bounded timeouts, retries and rate-limit waits.

    PyGithub's default retry (GithubRetry) retries 5xx and rate-limited 403s 10 times and waits
    up to an hour for a primary rate limit; a CI step must not hang that long.
    """
    retry = GithubRetry(
        total=tuning.retries,
        backoff_factor=tuning.backoff_factor,
        secondary_rate_wait=tuning.secondary_rate_wait,
        max_rate_limit_wait=tuning.max_rate_limit_wait,
    )
    return Github(
        base_url=api_url.rstrip("/"),
        auth=Auth.Token(token),
        per_page=100,
        timeout=tuning.timeout,
        retry=retry,
        seconds_between_requests=tuning.seconds_between_requests or None,
        seconds_between_writes=tuning.seconds_between_writes or None,
        # lazy: get_repo / get_issue build URLs without a GET each (get_repo(lazy=) is deprecated).
        lazy=True,
    )


class PyGithubCommenter:
    """The `publish.Commenter` port on PyGithub: one repository's PR comments."""

    def __init__(self, gh: Github, repository: str) -> None:
        self._gh = gh
        self.repository = repository

    def find_pr(self, sha: str) -> int | None:
        return find_pr_by_sha(self._gh, self.repository, sha)

    def upsert(
        self,
        pr_number: int,
        body: str,
        *,
        report_name: str,
        mode: Literal["update", "create"] = "update",
    ) -> CommentResult:
        return upsert_comment(
            self._gh, self.repository, pr_number, body, report_name=report_name, mode=mode
        )


def open_commenter(
    api_url: str, token: str, repository: str, tuning: ClientTuning
) -> PyGithubCommenter:
    """A commenter on `repository`; builds the client only (PyGithub sends nothing yet)."""
    return PyGithubCommenter(make_client(api_url, token, tuning), repository)


def token_login(gh: Github) -> str | None:
    """The login that authors this token's comments; None for an app installation token
    (GITHUB_TOKEN or a GitHub App's): GET /user answers 403 and the author is the app's bot,
    `github-actions[bot]` or `<app-slug>[bot]`."""
    try:
        return str(gh.get_user().login)
    except GithubException as exc:
        if exc.status == 403:
            return None
        raise


def upsert_comment(
    gh: Github,
    repository: str,
    pr_number: int,
    body: str,
    *,
    report_name: str,
    mode: Literal["update", "create"] = "update",
) -> CommentResult:
    """Edit this report's sticky comment on the PR, or create it; `create` always posts.

    Only comments written by the token's own user are candidates, so a marker quoted or
    planted by someone else is never overwritten.
    """
    text = with_marker(body, report_name)
    try:
        issue = gh.get_repo(repository).get_issue(pr_number)
        if mode == "update":
            login = token_login(gh)
            # Issue comments are the PR conversation; pr.get_comments() would be review comments.
            for existing in find_marked(issue.get_comments(), marker(report_name), login):
                if _edited(existing, text, mine=login is not None):
                    return CommentResult("updated", existing.id, existing.html_url)
        created = issue.create_comment(text)
        return CommentResult("created", created.id, created.html_url)
    except GithubException as exc:
        raise CommentNotPosted(_explain(exc, repository, pr_number)) from None
    except requests.RequestException as exc:
        # After its retries PyGithub lets requests' RetryError / ConnectionError / Timeout out.
        raise CommentNotPosted(
            f"GitHub API unreachable, failing or rate-limiting for {repository}#{pr_number} "
            f"after retries ({type(exc).__name__}); the report is in the job summary and the "
            "JSON artifact"
        ) from None


def find_marked(
    comments: Iterable[IssueComment], mark: str, login: str | None
) -> Iterator[IssueComment]:
    """Comments by `login` (None: by an app's bot) whose body ends with `mark`, fetching pages
    lazily. Logins with "[bot]" exist only for apps: people cannot have them."""
    for comment in comments:
        user = comment.user
        if user is None or not (comment.body or "").rstrip().endswith(mark):
            continue
        if user.login == login or (login is None and user.login.endswith("[bot]")):
            yield comment


def _edited(comment: IssueComment, text: str, *, mine: bool) -> bool:
    """Edit the comment; with an installation token the marked bot comment may belong to
    another app (403 on edit): then it is not ours, and the search goes on."""
    try:
        comment.edit(text)
    except GithubException as exc:
        if mine or exc.status != 403:
            raise
        return False
    return True


def find_pr_by_sha(gh: Github, repository: str, sha: str) -> int | None:
    """The open PR whose head is `sha`: the fallback when workflow_run.pull_requests is empty
    (GitHub leaves it empty for PRs from forks)."""
    try:
        results = gh.search_issues(f"{sha} is:pr is:open repo:{repository}")
        for issue in results:
            return int(issue.number)
    except GithubException as exc:
        raise CommentNotPosted(
            f"could not search {repository} for the PR of commit {sha[:12]} "
            f"({exc.status} {_message(exc)})"
        ) from None
    except requests.RequestException as exc:
        raise CommentNotPosted(
            f"could not search {repository} for the PR of commit {sha[:12]} ({type(exc).__name__})"
        ) from None
    return None


def _message(exc: GithubException) -> str:
    data = exc.data
    if isinstance(data, dict):
        return str(data.get("message", "")) or str(exc)
    return str(data or exc)


def _explain(exc: GithubException, repository: str, pr_number: int) -> str:
    where = f"{repository}#{pr_number}"
    message = _message(exc)
    if exc.status == 403 and "rate limit" in message.lower():
        return f"GitHub rate limit hit while commenting on {where} ({message}); retry later"
    if exc.status == 403:
        return f"no permission to comment on {where} (403 {message}): {FORK_HINT}"
    if exc.status == 401:
        return f"the github-token was rejected (401 {message}); pass a valid token"
    if exc.status == 404:
        return (
            f"{where} not found (404): check GITHUB_REPOSITORY and the PR number, and that the "
            "token can read the repository"
        )
    if exc.status == 422:
        return f"GitHub rejected the comment on {where} (422 {message})"
    return f"GitHub answered {exc.status} for {where} ({message}) after retries"
