"""The PyGithub adapter: the sticky PR comment and the PR lookup by head sha.

The only module that imports PyGithub. Everything GitHub can answer with (403 from a fork PR's
read-only token, 404, 422, 5xx after retries, a rate limit, a timeout, a dropped connection, a
garbled answer, a bad GITHUB_API_URL) becomes one `CommentNotPosted` whose message says what to
do; the caller turns it into a warning. Every wait and request fits in one `Budget` per
publication, whatever Retry-After says, and a POST that may have taken effect is never repeated
before looking for the comment it may have created.
Must not import torch, the engine or the ExperimentDB.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

import requests
from github import Auth, Github, GithubException, GithubRetry
from github.Issue import Issue
from github.IssueComment import IssueComment
from urllib3 import BaseHTTPResponse, Retry
from urllib3.exceptions import HTTPError, MaxRetryError, ResponseError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

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


CommentAction = Literal["created", "updated", "unchanged", "skipped", "deleted", "collapsed"]


@dataclass(frozen=True)
class CommentResult:
    """What happened to the PR comment; `url` is "" when none is left to link to (skipped,
    deleted). `warnings` are what failed on the side (hiding older comments)."""

    action: CommentAction
    comment_id: int
    url: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommentPlan:
    """When and how the comment is written (the comment-on, hide-previous and on-clean inputs).

    `state` is a digest of the verdict and the values, kept in the comment's hidden metadata so
    `comment_on="change"` can leave an unchanged comment alone; `clean_body` / `clean_state` are
    the one-line collapsed comment `on_clean="collapse"` edits a sticky comment to."""

    comment_on: Literal["always", "change", "regression"] = "always"
    hide_previous: bool = False
    on_clean: Literal["keep", "delete", "collapse"] = "keep"
    regressed: bool = False
    state: str = ""
    clean_body: str = ""
    clean_state: str = ""
    graphql_url: str | None = None  # default: PyGithub's, from GITHUB_API_URL


STATE_PREFIX = "<!-- regress-action-state:"


def marker(report_name: str) -> str:
    """The hidden HTML comment that identifies a report's sticky comment."""
    return f"<!-- regress-action:{report_name} -->"


def with_marker(body: str, report_name: str, state: str = "") -> str:
    # At the end: GitHub keeps HTML comments invisible, and a marker at the end cannot be
    # mistaken for one quoted inside the report text above it. The state digest, when given,
    # sits just before it, where only this module writes.
    meta = f"{STATE_PREFIX}{state} -->\n" if state else ""
    return body.rstrip("\n") + "\n\n" + meta + marker(report_name) + "\n"


def state_of(body: str | None, report_name: str) -> str | None:
    """The state digest a marked comment was written with; None when it has none."""
    lines = (body or "").rstrip().splitlines()
    if len(lines) < 2 or lines[-1] != marker(report_name):
        return None
    last = lines[-2]
    if last.startswith(STATE_PREFIX) and last.endswith(" -->"):
        return last[len(STATE_PREFIX) : -len(" -->")]
    return None


class BudgetSpent(Exception):
    """A wait GitHub asks for, or a request, would run past the comment's time budget."""


class Budget:
    """The time one publication may spend on GitHub (`ClientTuning.comment_budget`): every
    retry wait (backoff, `Retry-After`, rate limits) must fit in what is left, and the calls
    that send requests run in a worker the caller waits for no longer than that (`_bounded`),
    so no server, however slow its answers, holds the step longer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def wait(self, seconds: float, why: str) -> None:
        """Sleep `seconds`, or raise BudgetSpent at once when they do not fit."""
        if seconds > self.remaining():
            raise BudgetSpent(
                f"{why} asks for a {seconds:g} s wait, past the comment's {self.seconds:g} s "
                "budget (REGRESS_ACTION_GITHUB_COMMENT_BUDGET)"
            )
        if seconds > 0:
            time.sleep(seconds)

    def spent(self) -> BudgetSpent:
        return BudgetSpent(
            f"the comment's {self.seconds:g} s budget is spent "
            "(REGRESS_ACTION_GITHUB_COMMENT_BUDGET)"
        )


# Requests that may be repeated as they are: urllib3's idempotent methods, GET, and PATCH
# (editing a comment to the same text twice leaves one comment with that text). POST is not
# among them: a comment created before a 502 would be created twice (see `_create`).
IDEMPOTENT = Retry.DEFAULT_ALLOWED_METHODS | {"GET", "PATCH"}


class _BudgetRetry(GithubRetry):
    """GithubRetry whose waits must fit in the budget; POST is retried only on the answers
    that say it was not processed (429 with Retry-After, a rate-limited 403)."""

    def __init__(self, *, budget: Budget, **kwargs: Any) -> None:
        self.budget = budget
        kwargs.setdefault("allowed_methods", IDEMPOTENT)
        super().__init__(**kwargs)

    def new(self, **kw: Any) -> Self:
        kw["budget"] = self.budget
        return super().new(**kw)

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() == "POST":
            # 403: GithubRetry.increment retries a rate limit and raises on anything else.
            return status_code == 403 or (
                status_code == 429 and bool(self.total) and has_retry_after
            )
        return super().is_retry(method, status_code, has_retry_after)

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        # urllib3 would sleep whatever Retry-After says (up to 6 hours).
        wait = None
        if self.respect_retry_after_header and response is not None:
            wait = self.get_retry_after(response)
        if wait:
            self.budget.wait(wait, f"GitHub's Retry-After ({response and response.status})")
        else:
            self.budget.wait(self.get_backoff_time(), "the retry backoff")


@dataclass(frozen=True)
class Client:
    """A PyGithub client for one publication, with the budget its requests share."""

    gh: Github
    budget: Budget
    retries: int
    backoff_factor: float
    timeout: int


_T = TypeVar("_T")


def _bounded(client: Client, what: str, call: Callable[[], _T]) -> _T:
    """`call()` in a worker thread, waited for until the budget is spent: a request in flight
    then (a server answering byte by byte, say) is left to the daemon worker, which can start
    no other (its retries and waits need budget), and the comment is given up."""
    outcome: list[tuple[bool, Any]] = []

    def work() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))

    worker = threading.Thread(target=work, name="regress-action-github", daemon=True)
    worker.start()
    worker.join(max(client.budget.remaining(), 0.0))
    if not outcome:
        raise CommentNotPosted(
            f"gave up {what}: GitHub had not answered when the comment's "
            f"{client.budget.seconds:g} s budget (REGRESS_ACTION_GITHUB_COMMENT_BUDGET) was "
            "spent; the report is in the job summary and the JSON artifact"
        )
    done, value = outcome[0]
    if done:
        return value  # type: ignore[no-any-return]
    raise value


def make_client(api_url: str, token: str, tuning: ClientTuning) -> Client:
    """A PyGithub client with bounded timeouts, retries and waits; its budget starts now.

    PyGithub's default retry (GithubRetry) retries 5xx and rate-limited 403s 10 times, waits
    up to an hour for a primary rate limit and, through urllib3, honours any Retry-After; a CI
    step must not hang that long. A GITHUB_API_URL that is not an http(s) URL with a host is
    CommentNotPosted here (PyGithub would fail an assertion).
    """
    check_api_url(api_url)
    budget = Budget(tuning.comment_budget)
    retry = _BudgetRetry(
        budget=budget,
        total=tuning.retries,
        backoff_factor=tuning.backoff_factor,
        secondary_rate_wait=tuning.secondary_rate_wait,
        max_rate_limit_wait=min(tuning.max_rate_limit_wait, tuning.comment_budget),
    )
    gh = Github(
        base_url=api_url.strip().rstrip("/"),
        auth=Auth.Token(token),
        per_page=100,
        timeout=tuning.timeout,
        retry=retry,
        seconds_between_requests=tuning.seconds_between_requests or None,
        seconds_between_writes=tuning.seconds_between_writes or None,
        # lazy: get_repo / get_issue build URLs without a GET each (get_repo(lazy=) is deprecated).
        lazy=True,
    )
    return Client(gh, budget, tuning.retries, tuning.backoff_factor, tuning.timeout)


def check_api_url(api_url: str) -> None:
    """CommentNotPosted unless `api_url` is an http(s) URL with a host (and a numeric port)."""
    parts = urlsplit(api_url.strip())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        shown = _without_userinfo(api_url.strip())
        raise CommentNotPosted(
            f"GITHUB_API_URL {shown!r} is not an http(s) URL with a host and port; leave it to "
            "the runner (https://api.github.com, or https://HOST/api/v3 on GitHub Enterprise)"
        )


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return (scheme + sep + host + slash + path)[:200]


class PyGithubCommenter:
    """The `publish.Commenter` port on PyGithub: one repository's PR comments, within one
    budget (the client's) for everything it sends."""

    def __init__(self, client: Client, repository: str) -> None:
        self._client = client
        self.repository = repository

    def find_pr(self, sha: str) -> int | None:
        return find_pr_by_sha(self._client, self.repository, sha)

    def pr_head(self, pr_number: int) -> str:
        return pr_head_sha(self._client, self.repository, pr_number)

    def upsert(
        self,
        pr_number: int,
        body: str,
        *,
        report_name: str,
        mode: Literal["update", "create"] = "update",
        plan: CommentPlan | None = None,
    ) -> CommentResult:
        return upsert_comment(
            self._client,
            self.repository,
            pr_number,
            body,
            report_name=report_name,
            mode=mode,
            plan=plan,
        )

    def commit_comment(self, sha: str, body: str, *, report_name: str) -> str:
        return commit_comment(self._client, self.repository, sha, body, report_name=report_name)


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
    client: Client,
    repository: str,
    pr_number: int,
    body: str,
    *,
    report_name: str,
    mode: Literal["update", "create"] = "update",
    plan: CommentPlan | None = None,
) -> CommentResult:
    """Edit this report's sticky comment on the PR, or create it; `create` always posts, as
    `plan` (the comment's lifecycle) allows.

    Only comments written by the token's own user are candidates, so a marker quoted or
    planted by someone else is never overwritten. Any failure is CommentNotPosted; a failure
    to hide older comments once the comment is posted is one of the result's warnings.
    """
    plan = plan or CommentPlan()
    text = with_marker(body, report_name, plan.state)
    clean = not plan.regressed
    where = f"{repository}#{pr_number}"

    def upsert() -> CommentResult:
        issue = client.gh.get_repo(repository).get_issue(pr_number)
        passed_over: set[int] = set()
        logins: list[str | None] = []
        if mode == "update":
            logins.append(token_login(client.gh))
            mine = logins[0] is not None
            # Issue comments are the PR conversation; pr.get_comments() would be review comments.
            for existing in find_marked(issue.get_comments(), marker(report_name), logins[0]):
                found = _settle(existing, text, plan, report_name, clean, mine=mine)
                if found is not None:
                    return found
                passed_over.add(existing.id)
        if plan.comment_on == "regression" and clean:
            return CommentResult("skipped", 0, "")

        def login() -> str | None:
            if not logins:
                logins.append(token_login(client.gh))
            return logins[0]

        if mode == "create" and plan.comment_on == "change":
            marked = list(find_marked(issue.get_comments(), marker(report_name), login()))
            if marked and plan.state and state_of(marked[-1].body, report_name) == plan.state:
                return _result("unchanged", marked[-1])
        result = _create(client, issue, text, report_name, login, passed_over)
        if mode == "create" and plan.hide_previous:
            return _hide_previous(client, issue, result, report_name, login(), plan)
        return result

    try:
        return _bounded(client, f"commenting on {where}", upsert)
    except Exception as exc:  # every way GitHub can fail us is a warning, not the job's status
        raise CommentNotPosted(_why_not(exc, f"commenting on {where}", client)) from None


def _settle(
    existing: IssueComment,
    text: str,
    plan: CommentPlan,
    report_name: str,
    clean: bool,
    *,
    mine: bool,
) -> CommentResult | None:
    """Bring the sticky comment to the run's state (delete, collapse, edit, or leave it as it
    is); None when it turns out to be another app's."""
    if clean and plan.on_clean == "delete":
        return CommentResult("deleted", existing.id, "") if _deleted(existing, mine=mine) else None
    action: CommentAction = "updated"
    state = plan.state
    if clean and plan.on_clean == "collapse":
        text, state, action = (
            with_marker(plan.clean_body, report_name, plan.clean_state),
            plan.clean_state,
            "collapsed",
        )
    if plan.comment_on == "change" and state and state_of(existing.body, report_name) == state:
        return _result("unchanged", existing)
    if _edited(existing, text, mine=mine):
        return _result(action, existing)
    return None


def _deleted(comment: IssueComment, *, mine: bool) -> bool:
    """Delete the comment; False when it is another app's (403), as for `_edited`."""
    try:
        comment.delete()
    except GithubException as exc:
        if mine or exc.status != 403:
            raise
        return False
    return True


MINIMIZE = (
    "mutation($id: ID!) { minimizeComment(input: {subjectId: $id, classifier: OUTDATED}) "
    "{ minimizedComment { isMinimized } } }"
)


def _hide_previous(
    client: Client,
    issue: Issue,
    result: CommentResult,
    report_name: str,
    login: str | None,
    plan: CommentPlan,
) -> CommentResult:
    """Minimize (as outdated) this report's older comments by the same author, through the
    GraphQL `minimizeComment` mutation; failures are warnings on the posted comment."""
    try:
        for older in find_marked(issue.get_comments(), marker(report_name), login):
            if older.id != result.comment_id:
                minimize_comment(client, older.node_id, plan.graphql_url)
    except Exception as exc:  # the comment is posted: hiding the old ones is a side matter
        why = _why_not(exc, "hiding older comments", client)
        return replace(result, warnings=(*result.warnings, f"older comments not hidden: {why}"))
    return result


def minimize_comment(client: Client, node_id: str, graphql_url: str | None = None) -> None:
    """POST the `minimizeComment` mutation (classifier OUTDATED) for one comment's node id."""
    if not isinstance(node_id, str) or not node_id:
        raise MalformedAnswer("GitHub's comment has no node_id")
    requester = client.gh.requester
    url = graphql_url or requester.graphql_url
    _, data = requester.requestJsonAndCheck(
        "POST", url, input={"query": MINIMIZE, "variables": {"id": node_id}}
    )
    if not isinstance(data, dict):
        raise MalformedAnswer("GitHub's GraphQL answer is not a JSON object")
    if data.get("errors"):
        first = data["errors"][0] if isinstance(data["errors"], list) else data["errors"]
        message = first.get("message", first) if isinstance(first, dict) else first
        raise MalformedAnswer(f"GraphQL error: {str(message)[:200]}")
    minimized = ((data.get("data") or {}).get("minimizeComment") or {}).get("minimizedComment")
    if not isinstance(minimized, dict) or minimized.get("isMinimized") is not True:
        raise MalformedAnswer("GitHub's GraphQL answer does not say the comment is minimized")


def commit_comment(
    client: Client, repository: str, sha: str, body: str, *, report_name: str
) -> str:
    """Comment on commit `sha` (a push's report); returns the comment's URL. Posted once: a
    failure is CommentNotPosted, never a second comment."""
    what = f"posting the comment on commit {sha[:12]}"

    def post() -> str:
        _, data = client.gh.requester.requestJsonAndCheck(
            "POST",
            f"/repos/{repository}/commits/{sha}/comments",
            input={"body": with_marker(body, report_name)},
        )
        url = data.get("html_url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise MalformedAnswer("GitHub's answer has no comment URL")
        return url

    try:
        return _bounded(client, what, post)
    except Exception as exc:  # a warning, never the job's status
        raise CommentNotPosted(_why_not(exc, what, client)) from None


def _create(
    client: Client,
    issue: Issue,
    text: str,
    report_name: str,
    login: Callable[[], str | None],
    passed_over: set[int],
) -> CommentResult:
    """POST the comment, never blindly twice: after an answer that leaves open whether GitHub
    created it (5xx, a timeout, a dropped connection, a garbled body), look for it first."""
    attempt = 0
    while True:
        try:
            return _result("created", issue.create_comment(text))
        except Exception as exc:
            if not _ambiguous(exc):
                raise
            posted = _find_posted(issue, text, report_name, login(), passed_over)
            if posted is not None:
                return _result("created", posted)
            attempt += 1
            if attempt > client.retries:
                raise
            wait, why = _retry_wait(exc, client.backoff_factor, attempt)
            client.budget.wait(wait, why)


def _find_posted(
    issue: Issue, text: str, report_name: str, login: str | None, passed_over: set[int]
) -> IssueComment | None:
    for comment in find_marked(issue.get_comments(), marker(report_name), login):
        if comment.id not in passed_over and (comment.body or "").rstrip() == text.rstrip():
            return comment
    return None


class MalformedAnswer(ValueError):
    """GitHub answered 2xx without the comment's id or URL."""


def _result(action: CommentAction, comment: IssueComment) -> CommentResult:
    comment_id, url = comment.id, comment.html_url
    if not isinstance(comment_id, int) or not isinstance(url, str) or not url:
        raise MalformedAnswer("GitHub's answer has no comment id or URL")
    return CommentResult(action, comment_id, url)


def _ambiguous(exc: Exception) -> bool:
    """Whether a failed POST may still have created the comment."""
    if isinstance(exc, GithubException):
        return exc.status >= 500
    if isinstance(exc, requests.exceptions.RetryError):  # rate limits retried: not processed
        return False
    return isinstance(exc, requests.RequestException | ValueError | HTTPError)


def _retry_wait(exc: Exception, backoff_factor: float, attempt: int) -> tuple[float, str]:
    headers = exc.headers if isinstance(exc, GithubException) else None
    value = str((headers or {}).get("retry-after", "")).strip()
    if value.isdigit():
        return float(value), f"GitHub's Retry-After ({getattr(exc, 'status', '')})"
    return backoff_factor * 2 ** (attempt - 1), "the retry backoff"


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


def find_pr_by_sha(client: Client, repository: str, sha: str) -> int | None:
    """The open PR whose head is `sha`: the fallback when workflow_run.pull_requests is empty
    (GitHub leaves it empty for PRs from forks)."""
    what = f"searching {repository} for the PR of commit {sha[:12]}"

    def search() -> int | None:
        # The search matches the sha anywhere in a PR, its title and body too: only a PR whose
        # head is that commit is the one the report belongs to.
        repo = client.gh.get_repo(repository)
        for issue in client.gh.search_issues(f"{sha} is:pr is:open repo:{repository}"):
            if repo.get_pull(int(issue.number)).head.sha == sha:
                return int(issue.number)
        return None

    try:
        return _bounded(client, what, search)
    except Exception as exc:  # as for the comment: a warning, never the job's status
        raise CommentNotPosted(_why_not(exc, what, client)) from None


def pr_head_sha(client: Client, repository: str, pr_number: int) -> str:
    """The head commit of PR `pr_number` (an `issue_comment` event does not carry it)."""
    what = f"reading the head commit of {repository}#{pr_number}"

    def read() -> str:
        sha = client.gh.get_repo(repository).get_pull(pr_number).head.sha
        if not isinstance(sha, str) or not sha:
            raise MalformedAnswer(f"PR #{pr_number} has no head sha")
        return sha

    try:
        return _bounded(client, what, read)
    except Exception as exc:  # the caller decides: a warning, never the job's status
        raise CommentNotPosted(_why_not(exc, what, client)) from None


def _why_not(exc: Exception, what: str, client: Client) -> str:
    """One line: what failed, why, and what to do; never the token (not in any of these)."""
    where = what.removeprefix("commenting on ")
    if isinstance(exc, CommentNotPosted):
        return str(exc)
    if isinstance(exc, BudgetSpent):
        return f"gave up {what}: {exc}; the report is in the job summary and the JSON artifact"
    if isinstance(exc, GithubException):
        if what.startswith("commenting on "):
            return _explain(exc, *_split(where))
        return f"{what} failed ({exc.status} {_message(exc)})"
    if isinstance(exc, requests.RequestException):
        return (
            f"GitHub API unreachable or failing while {what} ({_request_failure(exc, client)}); "
            "the report is in the job summary and the JSON artifact"
        )
    first = (str(exc).splitlines() or [""])[0][:200]
    return (
        f"unexpected answer from GitHub while {what} ({type(exc).__name__}: {first}); "
        "the report is in the job summary and the JSON artifact"
    )


def _split(where: str) -> tuple[str, int]:
    repository, _, number = where.rpartition("#")
    return repository, int(number)


def _request_failure(exc: requests.RequestException, client: Client) -> str:
    reason: object = exc
    if exc.args and isinstance(exc.args[0], MaxRetryError):
        reason = exc.args[0].reason
    if client.budget.remaining() <= 0:
        return f"the comment's {client.budget.seconds:g} s budget is spent"
    if isinstance(exc, requests.Timeout) or isinstance(reason, TimeoutError | Urllib3Timeout):
        return f"timed out: no answer within {client.timeout:g} s, after retries"
    if isinstance(reason, ResponseError):
        return f"{reason}, after {client.retries} retries"
    return f"connection failed: {type(reason).__name__}, after retries"


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
