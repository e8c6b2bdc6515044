"""A local GitHub-compatible REST server for tests, and its pytest fixtures (a pytest plugin).

It implements just the endpoints regress-action's PyGithub adapter uses, under the GHES-style base
path `/api/v3`, on 127.0.0.1 at a random port, served by a `ThreadingHTTPServer` in a daemon thread
that shuts itself down after a bounded lifetime. Every `url` field and `Link` header is built from
the server's own address, because PyGithub follows them (DESIGN.md §7).

    GET   /api/v3/user                                  (403 for GITHUB_TOKEN-like tokens)
    GET   /api/v3/repos/{o}/{r}
    GET   /api/v3/repos/{o}/{r}/pulls/{n}  and  /issues/{n}
    GET   /api/v3/repos/{o}/{r}/issues/{n}/comments     (per_page / page, Link headers)
    POST  /api/v3/repos/{o}/{r}/issues/{n}/comments     (422 when the body is over 65,536 chars)
    PATCH /api/v3/repos/{o}/{r}/issues/comments/{id}    (403 unless the token's user wrote it)
    DELETE /api/v3/repos/{o}/{r}/issues/comments/{id}   (403 unless the token's user wrote it)
    POST  /api/v3/repos/{o}/{r}/commits/{sha}/comments  (recorded in `commit_comments`)
    POST  /api/graphql  and  /api/v3/graphql            (the minimizeComment mutation only;
                                                         minimized node ids in `minimized`)
    GET   /api/v3/search/issues?q=<sha> ...             (PRs whose head sha is in the query)

Faults are switchable per method and path: any status with its body and headers (403, 404, 422,
429 + Retry-After, 5xx, a secondary rate limit), a raw body (malformed JSON), a delay (past the
client's timeout), a body dripped a byte at a time, a closed socket instead of an answer, and
`after_effect`: the request takes effect first (the comment is created) and the fault is
answered after it.
Imports only the standard library and pytest.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

MAX_BODY_CHARS = 65_536
BOT_LOGIN = "github-actions[bot]"
BOT_TOKEN = "ghs_fake_github_token"  # mimics GITHUB_TOKEN: cannot read /user
USER_TOKEN = "ghp_fake_alice_token"  # a personal token: /user works
OTHER_TOKEN = "ghp_fake_mallory_token"
LIFETIME_S = 300.0
API = "/api/v3"


@dataclass
class Fault:
    """Answer `status` (+ `body`, `headers`) to matching requests `times` times (None: always)."""

    method: str
    path_pattern: str
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None
    delay_s: float = 0.0  # sleep before answering (to exercise client timeouts)
    raw: bytes | None = None  # sent as the body instead of JSON (malformed answers)
    close: bool = False  # close the socket without an answer
    drip_s: float = 0.0  # send the body one byte at a time, this long apart
    after_effect: bool = False  # do what the request asks, then answer with the fault
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return method == self.method and re.search(self.path_pattern, path) is not None


@dataclass
class Comment:
    id: int
    repo: str
    issue: int
    author: str
    body: str
    updated: int = 0


@dataclass
class PullRequest:
    repo: str
    number: int
    head_sha: str
    state: str = "open"
    # Text of its title or body that GitHub's issue search also matches (e.g. a commit sha).
    mentions: tuple[str, ...] = ()


class FakeGitHub:
    """The server's state: users, pull requests, issue comments, faults and a request log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.base_url = ""  # set once bound: http://127.0.0.1:PORT
        self.tokens: dict[str, str] = {
            BOT_TOKEN: BOT_LOGIN,
            USER_TOKEN: "alice",
            OTHER_TOKEN: "mallory",
        }
        self.user_endpoint_forbidden: set[str] = {BOT_TOKEN}
        self.pulls: dict[tuple[str, int], PullRequest] = {}
        self.comments: list[Comment] = []
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.graphql: list[dict[str, Any]] = []  # the GraphQL requests' JSON bodies
        self.minimized: dict[str, str] = {}  # node id -> classifier
        self.commit_comments: list[tuple[str, str, str, str]] = []  # repo, sha, author, body
        self._next_id = 1000

    @property
    def api_url(self) -> str:
        return self.base_url + API

    # -- set-up helpers used by tests ----------------------------------------------------------
    def add_pull(
        self, repo: str, number: int, head_sha: str = "a" * 40, mentions: tuple[str, ...] = ()
    ) -> PullRequest:
        pull = PullRequest(repo, number, head_sha, mentions=mentions)
        self.pulls[(repo, number)] = pull
        return pull

    def add_comment(self, repo: str, issue: int, author: str, body: str) -> Comment:
        with self.lock:
            self._next_id += 1
            comment = Comment(self._next_id, repo, issue, author, body)
            self.comments.append(comment)
            return comment

    def add_fault(self, method: str, path_pattern: str, status: int, **kwargs: Any) -> Fault:
        fault = Fault(method, path_pattern, status, **kwargs)
        self.faults.append(fault)
        return fault

    def comments_on(self, repo: str, issue: int) -> list[Comment]:
        return [c for c in self.comments if c.repo == repo and c.issue == issue]

    def count(self, method: str, pattern: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and re.search(pattern, p))

    # -- JSON shapes ----------------------------------------------------------------------------
    def user_json(self, login: str) -> dict[str, Any]:
        kind = "Bot" if login.endswith("[bot]") else "User"
        return {"login": login, "id": abs(hash(login)) % 10**6, "type": kind,
                "url": f"{self.api_url}/users/{login}"}  # fmt: skip

    def comment_json(self, c: Comment) -> dict[str, Any]:
        url = f"{self.api_url}/repos/{c.repo}/issues/comments/{c.id}"
        return {
            "id": c.id,
            "node_id": node_id(c.id),
            "url": url,
            "html_url": f"{self.base_url}/{c.repo}/pull/{c.issue}#issuecomment-{c.id}",
            "issue_url": f"{self.api_url}/repos/{c.repo}/issues/{c.issue}",
            "body": c.body,
            "user": self.user_json(c.author),
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }

    def issue_json(self, pull: PullRequest) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{pull.repo}"
        return {
            "id": pull.number,
            "number": pull.number,
            "url": f"{api}/issues/{pull.number}",
            "comments_url": f"{api}/issues/{pull.number}/comments",
            "html_url": f"{self.base_url}/{pull.repo}/pull/{pull.number}",
            "repository_url": api,
            "state": pull.state,
            "title": f"PR {pull.number}",
            "pull_request": {"url": f"{api}/pulls/{pull.number}"},
        }

    def pull_json(self, pull: PullRequest) -> dict[str, Any]:
        data = self.issue_json(pull)
        data["url"] = f"{self.api_url}/repos/{pull.repo}/pulls/{pull.number}"
        data["issue_url"] = f"{self.api_url}/repos/{pull.repo}/issues/{pull.number}"
        data["head"] = {"sha": pull.head_sha, "ref": "feature"}
        return data


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a stuck client never pins a handler thread
    _muted = False

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(
        self, status: int, data: bytes, headers: dict[str, str] | None = None, drip_s: float = 0.0
    ) -> None:
        if self._muted:
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not drip_s:
            self.wfile.write(data)
            return
        for i in range(len(data)):  # each byte within any read timeout, the whole never
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            time.sleep(drip_s)

    def _login(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else ""
        return self.server.state.tokens.get(token)

    def _dispatch(self, method: str) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        path, query = parts.path, {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        with state.lock:
            state.requests.append((method, path))
            fault = next((f for f in state.faults if f.matches(method, path)), None)
            if fault is not None:
                fault.hits += 1
        if fault is None:
            self._route(method, path, query, body)
            return
        if fault.after_effect:
            self._muted = True  # the effect happens, its answer is replaced by the fault's
            try:
                self._route(method, path, query, body)
            finally:
                self._muted = False
        time.sleep(fault.delay_s)
        if fault.close:
            self.close_connection = True
            return
        if fault.raw is not None:
            self._send_bytes(fault.status, fault.raw, fault.headers, drip_s=fault.drip_s)
        else:
            self._send(fault.status, fault.body or {"message": "fault"}, fault.headers)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> None:
        login = self._login()
        if login is None:
            self._send(401, {"message": "Bad credentials"})
            return
        routes = [
            ("GET", r"/user", self._user),
            ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)", self._repo),
            ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/(?P<kind>pulls|issues)/(?P<n>\d+)", self._pull),
            ("GET", r"/repos/(?P<repo>[^/]+/[^/]+)/issues/(?P<n>\d+)/comments", self._list),
            ("POST", r"/repos/(?P<repo>[^/]+/[^/]+)/issues/(?P<n>\d+)/comments", self._create),
            ("PATCH", r"/repos/(?P<repo>[^/]+/[^/]+)/issues/comments/(?P<id>\d+)", self._edit),
            ("DELETE", r"/repos/(?P<repo>[^/]+/[^/]+)/issues/comments/(?P<id>\d+)", self._delete),
            ("POST", r"/repos/(?P<repo>[^/]+/[^/]+)/commits/(?P<sha>\w+)/comments", self._commit),
            ("GET", r"/search/issues", self._search),
            ("POST", r"(/v3)?/graphql", self._graphql),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(r"/api" + pattern, path) if "graphql" in pattern else None
            match = match or re.fullmatch(API + pattern, path)
            if route_method == method and match:
                handler(login, match.groupdict(), query, body)
                return
        self._send(404, {"message": "Not Found"})

    def _user(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        auth = self.headers.get("Authorization", "").split(" ", 1)[-1]
        if auth in self.server.state.user_endpoint_forbidden:
            # What GITHUB_TOKEN (an installation token) really gets from GET /user.
            self._send(403, {"message": "Resource not accessible by integration"})
            return
        self._send(200, self.server.state.user_json(login))

    def _repo(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        state = self.server.state
        repo = params["repo"]
        self._send(200, {"id": 1, "full_name": repo, "name": repo.split("/")[1],
                         "url": f"{state.api_url}/repos/{repo}"})  # fmt: skip

    def _pull(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        state = self.server.state
        pull = state.pulls.get((params["repo"], int(params["n"])))
        if pull is None:
            self._send(404, {"message": "Not Found"})
        elif params["kind"] == "pulls":
            self._send(200, state.pull_json(pull))
        else:
            self._send(200, state.issue_json(pull))

    def _list(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        state = self.server.state
        repo, number = params["repo"], int(params["n"])
        if (repo, number) not in state.pulls:
            self._send(404, {"message": "Not Found"})
            return
        per_page = min(int(query.get("per_page", 30)), 100)
        page = int(query.get("page", 1))
        with state.lock:
            items = state.comments_on(repo, number)
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        base = f"{state.api_url}/repos/{repo}/issues/{number}/comments"

        def link(p: int, rel: str) -> str:
            return f'<{base}?{urlencode({"per_page": per_page, "page": p})}>; rel="{rel}"'

        links = []
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        headers = {"Link": ", ".join(links)} if links else {}
        self._send(200, [state.comment_json(c) for c in chunk], headers)

    def _create(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        state = self.server.state
        repo, number = params["repo"], int(params["n"])
        text = str(body.get("body", ""))
        if (repo, number) not in state.pulls:
            self._send(404, {"message": "Not Found"})
        elif len(text) > MAX_BODY_CHARS:
            self._send(422, _too_long())
        else:
            self._send(201, state.comment_json(state.add_comment(repo, number, login, text)))

    def _edit(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        state = self.server.state
        comment = next((c for c in state.comments if c.id == int(params["id"])), None)
        text = str(body.get("body", ""))
        if comment is None or comment.repo != params["repo"]:
            self._send(404, {"message": "Not Found"})
        elif comment.author != login:
            self._send(403, {"message": "Resource not accessible by integration"})
        elif len(text) > MAX_BODY_CHARS:
            self._send(422, _too_long())
        else:
            with state.lock:
                comment.body = text
                comment.updated += 1
            self._send(200, state.comment_json(comment))

    def _delete(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        state = self.server.state
        comment = next((c for c in state.comments if c.id == int(params["id"])), None)
        if comment is None or comment.repo != params["repo"]:
            self._send(404, {"message": "Not Found"})
        elif comment.author != login:
            self._send(403, {"message": "Resource not accessible by integration"})
        else:
            with state.lock:
                state.comments.remove(comment)
            self._send_bytes(204, b"")

    def _commit(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        state = self.server.state
        repo, sha, text = params["repo"], params["sha"], str(body.get("body", ""))
        if len(text) > MAX_BODY_CHARS:
            self._send(422, _too_long())
            return
        with state.lock:
            state.commit_comments.append((repo, sha, login, text))
            number = len(state.commit_comments)
        self._send(201, {"id": number, "body": text, "commit_id": sha,
                         "user": state.user_json(login),
                         "html_url": f"{state.base_url}/{repo}/commit/{sha}#commitcomment-{number}",
                         "url": f"{state.api_url}/repos/{repo}/comments/{number}"})  # fmt: skip

    def _graphql(
        self, login: str, params: dict[str, str], query: dict[str, str], body: Any
    ) -> None:
        """The minimizeComment mutation on one of our comments' node ids, as GitHub answers it
        (errors come with 200 and an `errors` list)."""
        state = self.server.state
        with state.lock:
            state.graphql.append(body)
        text = str(body.get("query", "")) if isinstance(body, dict) else ""
        variables = body.get("variables") or {} if isinstance(body, dict) else {}
        found = re.search(r"classifier:\s*(\w+)", text)
        subject = str(variables.get("id", ""))
        comment = next((c for c in state.comments if node_id(c.id) == subject), None)
        if "minimizeComment" not in text or found is None:
            self._send(200, {"errors": [{"message": "unsupported query"}]})
        elif comment is None:
            self._send(200, {"errors": [{"type": "NOT_FOUND", "message": "no such node"}]})
        elif comment.author != login:
            self._send(200, {"errors": [{"type": "FORBIDDEN", "message": "not yours"}]})
        else:
            with state.lock:
                state.minimized[subject] = found.group(1)
            minimized = {"isMinimized": True, "minimizedReason": found.group(1).lower()}
            self._send(200, {"data": {"minimizeComment": {"minimizedComment": minimized}}})

    def _search(self, login: str, params: dict[str, str], query: dict[str, str], body: Any) -> None:
        state = self.server.state
        words = query.get("q", "").split()
        hits = sorted(
            (
                p
                for p in state.pulls.values()
                if p.head_sha in words or set(p.mentions) & set(words)
            ),
            key=lambda p: p.number,
        )
        hits = [
            p for p in hits if f"repo:{p.repo}" in words or not any("repo:" in w for w in words)
        ]
        items = [state.issue_json(p) for p in hits]
        self._send(200, {"total_count": len(items), "incomplete_results": False, "items": items})


def node_id(comment_id: int) -> str:
    """The GraphQL node id GitHub gives an issue comment."""
    return f"IC_kwDO{comment_id:08d}"


def _too_long() -> dict[str, Any]:
    return {
        "message": "Validation Failed",
        "errors": [{"resource": "IssueComment", "code": "custom", "field": "body",
                    "message": "body is too long (maximum is 65536 characters)"}],
    }  # fmt: skip


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) leaves a broken pipe behind: expected, not news.
        pass

    def __init__(self, state: FakeGitHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextlib.contextmanager
def serve(lifetime_s: float = LIFETIME_S) -> Iterator[FakeGitHub]:
    """Run a fake GitHub in a daemon thread; it stops on exit, or after `lifetime_s` at most."""
    state = FakeGitHub()
    server = _Server(state)
    host, port = server.server_address[:2]
    state.base_url = f"http://{host!s}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    # Bounded lifetime: a test that forgets to stop it cannot leave a server running.
    watchdog = threading.Timer(lifetime_s, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield state
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def gh_server() -> Iterator[FakeGitHub]:
    """A fresh fake GitHub for one test, with PR #7 on octo/models."""
    with serve() as state:
        state.add_pull("octo/models", 7, head_sha="c" * 40)
        yield state
