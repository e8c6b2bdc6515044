"""The GitHub Actions runner's file and stdout protocols: step outputs (`GITHUB_OUTPUT`), the job
summary (`GITHUB_STEP_SUMMARY`), workflow commands (`::error::`, `::group::`, `::add-mask::`),
a step's errors as one `::error::` line and an exit code (`guarded`) and the event payload
(which pull request, which head commit).

Standard library only (no PyGithub, no torch): the API lookups live in `github`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import EXIT_INTERNAL, GitHubError, RegressActionError, UserError

# GitHub rejects a step summary over 1 MiB ("$GITHUB_STEP_SUMMARY upload aborted").
SUMMARY_LIMIT_BYTES = 1024 * 1024
_SUMMARY_NOTE = "\n\n> **Note:** the summary was truncated at GitHub's 1 MiB limit; {hint}\n"


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


def guarded(commands: Commands, body: Callable[[], int], *, title: str) -> int:
    """Run a step's `body` and return its exit code. A user error is one `::error::` line and
    its exit code (2); anything else is a bug: exit 3, with the traceback on stderr."""
    try:
        return body()
    except UserError as exc:
        commands.error(str(exc), title=title)
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
    """Append step outputs to `GITHUB_OUTPUT`; without one (a local run) do nothing."""
    if path is None or not outputs:
        return
    with path.open("a", encoding="utf-8", newline="\n") as handle:
        handle.write(format_outputs(outputs))


def append_summary(
    path: Path | None, markdown: str, *, hint: str = "see the report artifact"
) -> bool:
    """Append Markdown to the job summary, truncated to fit GitHub's 1 MiB per step.

    Returns True when the text had to be truncated. Without a summary file, does nothing.
    """
    if path is None:
        return False
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


def read_event(path: Path | None) -> dict[str, Any]:
    """The event payload (`GITHUB_EVENT_PATH`); an empty dict when there is none (a local run)."""
    if path is None or not path.exists():
        return {}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GitHubError(
            f"cannot read the event payload GITHUB_EVENT_PATH={str(path)!r} ({exc}); "
            "run inside GitHub Actions or point it at a valid JSON file"
        ) from None
    if not isinstance(payload, dict):
        raise GitHubError(f"the event payload {str(path)!r} is not a JSON object")
    return payload


@dataclass(frozen=True)
class EventContext:
    """What an event says about where to comment and which commit was tested."""

    event_name: str
    pr_number: int | None  # None: not a PR event, or a workflow_run that needs a search
    head_sha: str | None
    needs_search: bool = False  # workflow_run without pull_requests[]: search by head sha


def event_context(
    event_name: str | None, payload: Mapping[str, Any], sha: str | None
) -> EventContext:
    """Find the PR number and the head commit in an event payload (DESIGN.md §6)."""
    name = event_name or ""
    if name in {"pull_request", "pull_request_target", "pull_request_review"}:
        pull = payload.get("pull_request") or {}
        # On PR events GITHUB_SHA is the merge commit; the tested head is pull_request.head.sha.
        head = (pull.get("head") or {}).get("sha") or sha
        return EventContext(name, _number(pull.get("number")), head)
    if name == "issue_comment":
        issue = payload.get("issue") or {}
        # issue_comment fires for issues and PRs alike; only a PR has issue.pull_request.
        number = _number(issue.get("number")) if issue.get("pull_request") else None
        return EventContext(name, number, None)
    if name == "workflow_run":
        run = payload.get("workflow_run") or {}
        head = run.get("head_sha") or None
        pulls = run.get("pull_requests") or []
        # pull_requests[] is empty for PRs from forks: the caller searches by head sha instead.
        matching = [p for p in pulls if (p.get("head") or {}).get("sha") in (None, head)]
        number = _number((matching or pulls or [{}])[0].get("number"))
        from_pr = run.get("event", "pull_request") in {"pull_request", "pull_request_target"}
        search = number is None and head is not None and from_pr
        return EventContext(name, number, head, needs_search=search)
    return EventContext(name, None, sha)


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
