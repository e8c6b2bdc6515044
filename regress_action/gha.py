"""The GitHub Actions runner's file and stdout protocols: step outputs (`GITHUB_OUTPUT`), the job
summary (`GITHUB_STEP_SUMMARY`), workflow commands (`::error::`, `::group::`, `::add-mask::`),
a step's errors as one `::error::` line and an exit code (`guarded`) and the event payload
(which pull request, which head commit).

Standard library only (no PyGithub, no torch): the API lookups live in `github`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import EXIT_INTERNAL, GitHubError, RegressActionError, UserError

# GitHub rejects a step summary over 1 MiB ("$GITHUB_STEP_SUMMARY upload aborted").
SUMMARY_LIMIT_BYTES = 1024 * 1024
_SUMMARY_NOTE = "\n\n> **Note:** the summary was truncated at GitHub's 1 MiB limit; {hint}\n"


def run_as_workspace_owner(
    environ: MutableMapping[str, str] | None = None,
) -> tuple[int, int] | None:
    """Run on as the workspace's owner when started as root in a workspace that is not root's.

    The runner starts a Docker action's container as root, with the checkout (owned by the
    runner's user) mounted as the workspace: files written as root there (reports, the
    ExperimentDB, a records file) could not be changed or removed by the job's next steps or the
    next job. Taking the owner's uid and gid first gives every file the action leaves the
    checkout's owner, whatever step writes it, a failed or killed one included. HOME moves to a
    fresh folder when the owner cannot write the one set (`docker run` as root leaves /root).
    Returns the (uid, gid) taken, or None when nothing changed (not root, not POSIX, a workspace
    owned by root: a self-hosted runner as root, `docker run` on a root-owned folder).
    """
    environ = os.environ if environ is None else environ
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    workspace = environ.get("GITHUB_WORKSPACE") or os.getcwd()
    try:
        owner = os.stat(workspace)
    except OSError:
        return None  # the settings name the missing workspace
    if owner.st_uid == 0:
        return None
    try:
        os.setgroups([])
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)
    except PermissionError:
        return None  # a container without CAP_SETUID/CAP_SETGID: root it stays
    home = environ.get("HOME")
    if not home or not os.access(home, os.W_OK | os.X_OK):
        environ["HOME"] = tempfile.mkdtemp(prefix="regress-action-home-")
    return owner.st_uid, owner.st_gid


def escape_data(value: str) -> str:
    """Escape a workflow command's message (the runner decodes %25, %0D, %0A)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """Escape a workflow command's property value (also `:` and `,`, which delimit properties)."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def format_command(name: str, message: str = "", **properties: str | int | None) -> str:
    """`::name key=value,key=value::message`, escaped; None-valued properties are left out."""
    props = ",".join(
        f"{key}={escape_property(str(value))}"
        for key, value in properties.items()
        if value is not None
    )
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


class Commands:
    """Writes workflow commands to the step's stdout (the runner parses them line by line)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def _emit(self, line: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()

    def error(self, message: str, *, title: str | None = None, file: str | None = None) -> None:
        self._emit(format_command("error", message, title=title, file=file))

    def warning(self, message: str, *, title: str | None = None, file: str | None = None) -> None:
        self._emit(format_command("warning", message, title=title, file=file))

    def notice(self, message: str, *, title: str | None = None) -> None:
        self._emit(format_command("notice", message, title=title))

    def info(self, message: str) -> None:
        # A plain log line: a path or name in it must not break it into a line of its own,
        # nor make it start with `::` (both would be read as a workflow command).
        line = message.replace("\r", "\\r").replace("\n", "\\n")
        self._emit(": :" + line[2:] if line.startswith("::") else line)

    def add_mask(self, secret: str) -> None:
        # Masks the value in every later log line; never echo the secret any other way.
        if secret:
            self._emit(format_command("add-mask", secret))

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A collapsible log section; closed even when the body raises."""
        self._emit(format_command("group", title))
        try:
            yield
        finally:
            self._emit("::endgroup::")


def guarded(
    commands: Commands,
    body: Callable[[], int],
    *,
    title: str,
    file_of: Callable[[UserError], str | None] | None = None,
) -> int:
    """Run a step's `body` and return its exit code. A user error is one `::error::` line and
    its exit code (2), annotated with the workspace file it concerns when `file_of` names one;
    anything else is a bug: exit 3, with the traceback on stderr."""
    try:
        return body()
    except UserError as exc:
        commands.error(str(exc), title=title, file=_file_of(file_of, exc))
        return exc.exit_code
    except RegressActionError as exc:
        commands.error(f"internal error: {exc}", title=title)
        return exc.exit_code
    except Exception as exc:  # a bug: keep the traceback for the report, exit 3
        traceback.print_exc(file=sys.stderr)
        commands.error(
            f"internal error ({type(exc).__name__}: {exc}); please report it with this log",
            title=title,
        )
        return EXIT_INTERNAL


def _file_of(file_of: Callable[[UserError], str | None] | None, exc: UserError) -> str | None:
    if file_of is None:
        return None
    try:
        return file_of(exc)
    except Exception:  # naming the file is a courtesy: the error line is what matters
        return None


def format_outputs(outputs: Mapping[str, str]) -> str:
    """Step outputs in `GITHUB_OUTPUT` syntax; multi-line values use a random heredoc delimiter
    (a value containing the delimiter line would end it early, so the delimiter is unguessable)."""
    lines: list[str] = []
    for name, value in outputs.items():
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
            lines += [f"{name}<<{delimiter}", value, delimiter]
        else:
            lines.append(f"{name}={value}")
    return "".join(line + "\n" for line in lines)


def write_outputs(path: Path | None, outputs: Mapping[str, str]) -> None:
    """Append step outputs to `GITHUB_OUTPUT`; without one (a local run) do nothing. A file
    that cannot be written is a GitHubError naming it."""
    if path is None or not outputs:
        return
    try:
        with path.open("a", encoding="utf-8", newline="\n") as handle:
            handle.write(format_outputs(outputs))
    except OSError as exc:
        raise GitHubError(_runner_file_message("GITHUB_OUTPUT", path, exc)) from None


def check_runner_file(name: str, path: Path | None) -> None:
    """A GitHubError naming `name` when the runner's file `path` (`GITHUB_OUTPUT`,
    `GITHUB_STEP_SUMMARY`) cannot be appended to: a folder, or under something that is not a
    folder. Checked before a step does its work, so nothing is recorded for outputs that could
    not be set."""
    if path is None:
        return
    problem: str | None = None
    if path.is_dir():
        problem = "it is a folder"
    elif not path.exists():
        parent = path.parent
        if not parent.is_dir():
            problem = f"{str(parent)!r} is not a folder"
        elif not os.access(parent, os.W_OK | os.X_OK):
            problem = f"the folder {str(parent)!r} is not writable"
    elif not os.access(path, os.W_OK):
        problem = "it is not writable"
    if problem is not None:
        raise GitHubError(
            f"cannot write {name}={str(path)!r}: {problem}; the runner sets {name} to a "
            "writable file: do not override it in the step's env"
        )


def _runner_file_message(name: str, path: Path, exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    return (
        f"cannot write {name}={str(path)!r} ({reason}); the runner sets {name} to a writable "
        "file: do not override it in the step's env"
    )


def append_summary(
    path: Path | None, markdown: str, *, hint: str = "see the report artifact"
) -> bool:
    """Append Markdown to the job summary, truncated to fit GitHub's 1 MiB per step.

    Returns True when the text had to be truncated. Without a summary file, does nothing. A
    file that cannot be written is a GitHubError naming `GITHUB_STEP_SUMMARY`.
    """
    if path is None:
        return False
    try:
        return _append_summary(path, markdown, hint)
    except OSError as exc:
        raise GitHubError(_runner_file_message("GITHUB_STEP_SUMMARY", path, exc)) from None


def _append_summary(path: Path, markdown: str, hint: str) -> bool:
    used = path.stat().st_size if path.exists() else 0
    data = (markdown.rstrip("\n") + "\n").encode("utf-8")
    truncated = used + len(data) > SUMMARY_LIMIT_BYTES
    if truncated:
        note = _SUMMARY_NOTE.format(hint=hint).encode("utf-8")
        room = max(0, SUMMARY_LIMIT_BYTES - used - len(note))
        # Cut on a character boundary: decode ignoring a partial trailing UTF-8 sequence.
        data = data[:room].decode("utf-8", errors="ignore").encode("utf-8") + note
        if used + len(data) > SUMMARY_LIMIT_BYTES:
            return True  # no room even for the note
    with path.open("ab") as handle:
        handle.write(data)
    return truncated


EVENT_PAYLOAD = "the event payload (GITHUB_EVENT_PATH)"


def read_event(path: Path | None) -> dict[str, Any]:
    """The event payload (`GITHUB_EVENT_PATH`); an empty dict when there is none (a local run)."""
    if path is None or not path.exists():
        return {}
    fix = "run inside GitHub Actions or point GITHUB_EVENT_PATH at the event's JSON file"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise GitHubError(
            f"the event payload GITHUB_EVENT_PATH={str(path)!r} is nested too deeply to read; "
            + fix
        ) from None
    except (OSError, ValueError) as exc:
        raise GitHubError(
            f"cannot read the event payload GITHUB_EVENT_PATH={str(path)!r} ({exc}); {fix}"
        ) from None
    if not isinstance(payload, dict):
        raise GitHubError(
            f"the event payload GITHUB_EVENT_PATH={str(path)!r} is not a JSON object "
            f"(a {type(payload).__name__}); {fix}"
        )
    return payload


@dataclass(frozen=True)
class EventContext:
    """What an event says about where to comment and which commit was tested."""

    event_name: str
    pr_number: int | None  # None: not a PR event, or a workflow_run that needs a search
    head_sha: str | None
    needs_search: bool = False  # workflow_run without pull_requests[]: search by head sha
    base_sha: str | None = None  # a PR event's base commit: where its baseline is read from


PR_EVENTS = frozenset({"pull_request", "pull_request_target", "pull_request_review"})


def event_context(
    event_name: str | None, payload: Mapping[str, Any], sha: str | None
) -> EventContext:
    """Find the PR number and the commit tested in an event payload (DESIGN.md §6). A field
    of the wrong type is a GitHubError naming it (a payload GitHub did not write).

    The commit is what the default checkout holds: on `pull_request` (and its review) the PR
    head (`pull_request.head.sha`; GITHUB_SHA is a merge commit there), on
    `pull_request_target` GITHUB_SHA, the base branch's commit (that event checks the base
    out), on `workflow_run` the triggering run's head; `issue_comment` carries no commit
    (the caller may ask the API for the PR's head)."""
    name = event_name or ""
    read = _Payload(payload)
    if name in PR_EVENTS:
        read.object("pull_request")
        read.object("pull_request.head")
        head = read.text("pull_request.head.sha")
        number = read.number("pull_request.number")
        read.object("pull_request.base")
        base = read.text("pull_request.base.sha")
        if name == "pull_request_target":
            return EventContext(name, number, sha, base_sha=base)
        # On PR events GITHUB_SHA is the merge commit; the tested head is pull_request.head.sha.
        return EventContext(name, number, head or sha, base_sha=base)
    if name == "issue_comment":
        issue = read.object("issue") or {}
        # issue_comment fires for issues and PRs alike; only a PR has issue.pull_request.
        number = read.number("issue.number") if issue.get("pull_request") else None
        return EventContext(name, number, None)
    if name == "workflow_run":
        read.object("workflow_run")
        head = read.text("workflow_run.head_sha")
        pulls = read.objects("workflow_run.pull_requests")
        for index in range(len(pulls)):
            read.object(f"workflow_run.pull_requests.{index}.head")
            read.text(f"workflow_run.pull_requests.{index}.head.sha")
            read.number(f"workflow_run.pull_requests.{index}.number")
        # pull_requests[] is empty for PRs from forks: the caller searches by head sha instead.
        matching = [p for p in pulls if (p.get("head") or {}).get("sha") in (None, head)]
        number = _number((matching or pulls or [{}])[0].get("number"))
        origin = read.text("workflow_run.event") or "pull_request"
        from_pr = origin in {"pull_request", "pull_request_target"}
        search = number is None and head is not None and from_pr
        return EventContext(name, number, head, needs_search=search)
    return EventContext(name, None, sha)


class _Payload:
    """Typed reads of dotted fields of an event payload: a missing or null field is None, one
    of another type a GitHubError naming it."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = payload

    def _get(self, dotted: str) -> Any:
        value: Any = self.payload
        for part in dotted.split("."):
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, Mapping):
                value = value.get(part)
            else:
                return None
            if value is None:
                return None
        return value

    def _wrong(self, dotted: str, value: Any, expected: str) -> GitHubError:
        shown = json.dumps(value)[:60] if _jsonable(value) else type(value).__name__
        return GitHubError(
            f"{EVENT_PAYLOAD} has {dotted} = {shown}, not {expected}; the payload is "
            "malformed: use the file the runner writes for the event"
        )

    def object(self, dotted: str) -> Mapping[str, Any] | None:
        value = self._get(dotted)
        if value is None or isinstance(value, Mapping):
            return value
        raise self._wrong(dotted, value, "an object")

    def objects(self, dotted: str) -> list[Mapping[str, Any]]:
        value = self._get(dotted)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._wrong(dotted, value, "a list")
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise self._wrong(f"{dotted}.{index}", item, "an object")
        return value

    def text(self, dotted: str) -> str | None:
        value = self._get(dotted)
        if value is None or isinstance(value, str):
            return value or None
        raise self._wrong(dotted, value, "a string")

    def number(self, dotted: str) -> int | None:
        value = self._get(dotted)
        if value is None:
            return None
        number = _number(value)
        if number is None:
            raise self._wrong(dotted, value, "a positive integer")
        return number


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
