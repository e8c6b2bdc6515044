"""Publishing a finished report on GitHub: job summary, step outputs, annotations, the sticky PR
comment and the exit code. The shared tail of `regress-action action`, and the whole of
`regress-action publish` (the `workflow_run` half of the fork-safe pattern).

Everything before the comment is written even when commenting fails; a comment failure is a
warning, never the job's status. The comment goes through the `Commenter` port, so tests pass
an in-memory fake. Must not import torch, SQLAlchemy or PyGithub at module level (`github` is
the PyGithub adapter, imported when a comment is posted).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from .errors import EXIT_OK, EXIT_REGRESSION, ConfigError, GitHubError
from .gha import (
    Commands,
    EventContext,
    append_summary,
    event_context,
    guarded,
    read_event,
    write_outputs,
)
from .report import MetricResult, Report
from .settings import (
    ActionInputs,
    ClientTuning,
    CommentMode,
    CommentOn,
    OnClean,
    RunnerEnv,
    load,
)
from .spec import VerdictConfig

if TYPE_CHECKING:
    from .github import CommentPlan, CommentResult

TITLE = "regress-action"
# Room left in a comment for the marker, newlines and GitHub counting emoji differently.
COMMENT_MARGIN = 200
# Bounds on a report artifact `publish` reads (it may come from an untrusted run).
MAX_REPORT_BYTES = 64 * 1024 * 1024
MAX_REPORT_METRICS = 1000


class Commenter(Protocol):
    """The PR-comment port (`github.PyGithubCommenter` in production, a fake in tests)."""

    def find_pr(self, sha: str) -> int | None: ...

    def pr_head(self, pr_number: int) -> str: ...

    def upsert(
        self,
        pr_number: int,
        body: str,
        *,
        report_name: str,
        mode: Literal["update", "create"],
        plan: CommentPlan | None = None,
    ) -> CommentResult: ...

    def commit_comment(self, sha: str, body: str, *, report_name: str) -> str: ...


# (GITHUB_API_URL, token, repository) -> a Commenter on that repository.
OpenCommenter = Callable[[str, str, str], Commenter]


def open_github_commenter(api_url: str, token: str, repository: str) -> Commenter:
    """The production Commenter: PyGithub, tuned by `REGRESS_ACTION_GITHUB_*`."""
    from . import github

    return github.open_commenter(api_url, token, repository, load(ClientTuning))


@dataclass(frozen=True)
class Lifecycle:
    """When the comment is written and what becomes of it (the comment-on, hide-previous,
    on-clean, artifact-name and commit-comment inputs)."""

    comment_on: CommentOn = "always"
    hide_previous: bool = False
    on_clean: OnClean = "keep"
    artifact_name: str | None = None
    commit_comment: bool = False

    @classmethod
    def from_inputs(cls, inputs: ActionInputs) -> Lifecycle:
        return cls(
            comment_on=inputs.comment_on,
            hide_previous=inputs.hide_previous,
            on_clean=inputs.on_clean,
            artifact_name=inputs.artifact_name,
            commit_comment=inputs.commit_comment,
        )


@dataclass(frozen=True)
class Publication:
    """A finished report and how to publish it."""

    report: Report
    markdown: str
    report_name: str
    comment: CommentMode = "update"
    fail_on_regression: bool = True
    token: str | None = None
    json_path: Path | None = None
    markdown_path: Path | None = None
    records_path: Path | None = None
    pr_number: int | None = None
    lifecycle: Lifecycle = Lifecycle()


def publish(
    report_path: Path,
    *,
    report_name: str = "default",
    verdict: VerdictConfig | None = None,
    comment: CommentMode = "update",
    fail_on_regression: bool = True,
    pr_number: int | None = None,
    open_commenter: OpenCommenter = open_github_commenter,
    lifecycle: Lifecycle | None = None,
) -> int:
    """`regress-action publish --report PATH`: summary, outputs, comment and exit code from an
    existing JSON report. The token comes from `INPUT_GITHUB-TOKEN` or `GITHUB_TOKEN`.

    The report may come from a run this job does not trust (a fork's artifact), so nothing it
    says about itself decides anything: it is refused above MAX_REPORT_BYTES or with another
    schema version, its statuses are derived again from its metric values under `verdict` (this
    job's own configuration, `compare.rejudge`), and the sticky comment it updates is named by
    `report_name`, this job's input, never by the report."""
    commands = Commands()

    def run() -> int:
        from .compare import rejudge
        from .render import render_markdown

        token = _token_from_env()
        if token:
            commands.add_mask(token)
        loaded = Report.load(Path(report_path), max_bytes=MAX_REPORT_BYTES)
        if len(loaded.metrics) > MAX_REPORT_METRICS:
            raise ConfigError(
                f"report {str(report_path)!r} has {len(loaded.metrics):,} metrics, more than "
                f"the {MAX_REPORT_METRICS} a published report may have; report fewer metrics"
            )
        report = rejudge(loaded, verdict or VerdictConfig(significance="gate"))
        report = report.model_copy(update={"report_name": report_name})
        pub = Publication(
            report=report,
            markdown=render_markdown(report),
            report_name=report.report_name,
            comment=comment,
            fail_on_regression=fail_on_regression,
            token=token,
            json_path=Path(report_path),
            pr_number=pr_number,
            lifecycle=lifecycle or Lifecycle(),
        )
        return publish_report(pub, load(RunnerEnv), open_commenter, commands)

    return guarded(commands, run, title=TITLE)


def publish_report(
    pub: Publication,
    runner: RunnerEnv,
    open_commenter: OpenCommenter,
    commands: Commands,
    *,
    event: EventContext | None = None,
) -> int:
    """Outputs → summary → annotations → comment → exit code."""
    report = pub.report
    if event is None:
        payload = read_event(runner.github_event_path)
        event = event_context(runner.github_event_name, payload, runner.github_sha)
    # Each of these is written whatever happens to the others: a summary that cannot be
    # written is a warning; outputs that cannot be set fail the step (exit 2) at the end, once
    # the summary, the annotations and the comment are out.
    unset: GitHubError | None = None
    try:
        write_outputs(runner.github_output, report_outputs(pub))
    except GitHubError as exc:
        unset = exc
    summary = True
    try:
        tail = footer(runner, pub)
        summary_text = pub.markdown.rstrip("\n") + "\n\n" + tail + "\n" if tail else pub.markdown
        append_summary(runner.github_step_summary, summary_text, hint=_full_report_hint(runner))
    except GitHubError as exc:
        summary = False
        commands.warning(f"job summary not written: {exc}", title=TITLE)
    annotate(report, pub.fail_on_regression, commands)
    url = post_comment(pub, runner, event, open_commenter, commands)
    if unset is None:
        write_outputs(runner.github_output, {"comment-url": url})
    commands.info(f"regress-action: {report.status}")
    if unset is not None:
        raise GitHubError(f"{unset}; {_kept(pub, summary)}")
    if report.status == "regressed" and pub.fail_on_regression:
        return EXIT_REGRESSION
    return EXIT_OK


def _kept(pub: Publication, summary: bool) -> str:
    """What a step whose outputs could not be set did keep."""
    kept = [] if pub.report.comparison_id is None else [f"comparison {pub.report.comparison_id}"]
    paths = (pub.json_path, pub.markdown_path, pub.records_path)
    kept += [str(path) for path in paths if path is not None]
    if summary:
        kept.append("the job summary")
    return "the step outputs are not set" + (f" (kept: {', '.join(kept)})" if kept else "")


def report_outputs(pub: Publication) -> dict[str, str]:
    """Every step output but `comment-url`, which is written after the comment."""
    report = pub.report
    return {
        "status": report.status,
        "comparison-id": "" if report.comparison_id is None else str(report.comparison_id),
        "regressed-metrics": ",".join(report.regressed_metrics),
        "report-json": "" if pub.json_path is None else str(pub.json_path),
        "report-markdown": "" if pub.markdown_path is None else str(pub.markdown_path),
        "report-records": "" if pub.records_path is None else str(pub.records_path),
    }


def annotate(report: Report, fail_on_regression: bool, commands: Commands) -> None:
    """One annotation per regressed metric (or one outside its bound): an error when it fails
    the job, else a warning."""
    emit = commands.error if fail_on_regression else commands.warning
    for name in report.regressed_metrics:
        metric = report.metrics.get(name) or _slice_metric(report, name)
        text = _describe_metric(metric) if metric is not None else f"{name} regressed"
        what = "outside its bound" if metric and metric.status == "failed_bound" else "regressed"
        emit(text, title=f"{TITLE}: {name} {what} ({report.report_name})")


def _slice_metric(report: Report, name: str) -> MetricResult | None:
    """The metric a `metric[slice]` entry names, its reason prefixed by the slice."""
    metric_name, _, rest = name.partition("[")
    item = next((s for s in report.slices if f"{s.name}]" == rest), None)
    metric = item.metrics.get(metric_name) if item is not None else None
    if metric is None:
        return None
    return metric.model_copy(update={"reason": f"slice {item.name}: {metric.reason}"})  # type: ignore[union-attr]


def _describe_metric(metric: MetricResult) -> str:
    if metric.reason:
        return metric.reason
    return (
        f"{metric.name}: {metric.baseline} → {metric.candidate} (delta {metric.delta}, "
        f"tolerance {metric.tolerance}, {'higher' if metric.higher_is_better else 'lower'} "
        "is better)"
    )


def report_state(report: Report) -> str:
    """A compact digest of the verdict and every metric's values (rounded, so float noise
    does not count as a change), kept in the comment's hidden metadata."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(float(value), 6)

    def metrics(items: dict[str, MetricResult]) -> list[list[object]]:
        return [
            [name, m.status, rounded(m.baseline), rounded(m.candidate)]
            for name, m in sorted(items.items())
        ]

    data = {
        "status": report.status,
        "metrics": metrics(report.metrics),
        "slices": [[s.name, metrics(s.metrics)] for s in report.slices],
    }
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_link(runner: RunnerEnv) -> str | None:
    """This workflow run's page (its attempt's, when the runner says which)."""
    url = runner.run_url()
    if url and runner.github_run_attempt and runner.github_run_attempt.isdigit():
        url += f"/attempts/{runner.github_run_attempt}"
    return url


def footer(runner: RunnerEnv, pub: Publication) -> str:
    """The line under the report: the workflow run and where its report artifact is."""
    parts = []
    url = run_link(runner)
    if url:
        parts.append(f"[Workflow run]({url})")
    name = pub.lifecycle.artifact_name
    if name:
        shown = name.replace("`", "'")
        where = f" of [the run]({url})" if url else ""
        parts.append(f"full report: artifact `{shown}`{where}")
    return "<sub>" + " · ".join(parts) + "</sub>" if parts else ""


def _collapsed(pub: Publication, body: str, sha: str | None) -> str:
    """The sticky comment once the regression is resolved: one line, the report folded."""
    where = f" in {sha[:7]}" if sha else ""
    return (
        f"✅ **{TITLE}: resolved{where}** ({pub.report_name})\n\n"
        f"<details><summary>Full report</summary>\n\n{body.rstrip()}\n\n</details>"
    )


def post_comment(
    pub: Publication,
    runner: RunnerEnv,
    event: EventContext,
    open_commenter: OpenCommenter,
    commands: Commands,
) -> str:
    """Upsert the PR comment; return its URL, or "" when none was posted (with the reason)."""
    if pub.comment == "off":
        return ""
    if not runner.github_repository:
        commands.notice("GITHUB_REPOSITORY is not set: no PR comment", title=TITLE)
        return ""
    if not pub.token:
        commands.warning(
            "no github-token: no PR comment (the report is in the job summary)", title=TITLE
        )
        return ""
    from .errors import ConfigError
    from .github import CommentNotPosted, CommentPlan, with_marker
    from .render import MAX_COMMENT_CHARS, comment_length, render_markdown

    life = pub.lifecycle
    tail = footer(runner, pub)
    state = report_state(pub.report)
    # Room for the marker and its state, the footer, and the collapsed form's heading.
    overhead = comment_length(with_marker("", pub.report_name, state) + tail)
    overhead += comment_length(_collapsed(pub, "", "0" * 40)) + COMMENT_MARGIN

    def render_body() -> str:
        body = render_markdown(
            pub.report,
            max_chars=MAX_COMMENT_CHARS - overhead,
            full_report_hint=_full_report_hint(runner),
        )
        return body.rstrip("\n") + ("\n\n" + tail if tail else "") + "\n"

    try:
        commenter = open_commenter(runner.github_api_url, pub.token, runner.github_repository)
        pr_number = pub.pr_number or event.pr_number
        if pr_number is None and event.needs_search and event.head_sha:
            pr_number = commenter.find_pr(event.head_sha)
        if pr_number is None and event.event_name == "push" and life.commit_comment:
            sha = event.head_sha or runner.github_sha
            if sha:
                try:
                    url = commenter.commit_comment(sha, render_body(), report_name=pub.report_name)
                except CommentNotPosted as exc:
                    commands.warning(f"commit comment not posted: {exc}", title=TITLE)
                    return ""
                commands.info(f"created commit comment {url}")
                return url
        if pr_number is None:
            commands.notice(
                f"not a pull request ({event.event_name or 'no event'}): no PR comment; "
                "the report is in the job summary",
                title=TITLE,
            )
            return ""
        body = render_body()
        regressed = pub.report.status == "regressed"
        plan = CommentPlan(
            comment_on=life.comment_on,
            hide_previous=life.hide_previous,
            on_clean=life.on_clean,
            regressed=regressed,
            state=state,
            clean_body=_collapsed(pub, body, event.head_sha or runner.github_sha),
            clean_state=f"{state}-resolved",
            graphql_url=runner.github_graphql_url,
        )
        result = commenter.upsert(
            pr_number, body, report_name=pub.report_name, mode=pub.comment, plan=plan
        )
    except CommentNotPosted as exc:
        commands.warning(f"PR comment not posted: {exc}", title=TITLE)
        return ""
    except ConfigError:  # a bad REGRESS_ACTION_GITHUB_* value: bad input, exit 2
        raise
    except Exception as exc:  # a comment never decides the job's status, nor loses its outputs
        first = (str(exc).splitlines() or [""])[0][:200]
        commands.warning(
            f"PR comment not posted: unexpected {type(exc).__name__} ({first}); the report is "
            "in the job summary",
            title=TITLE,
        )
        return ""
    for warning in result.warnings:
        commands.warning(warning, title=TITLE)
    if result.action in ("skipped", "unchanged", "deleted"):
        why = {
            "skipped": f"no regression (comment-on: {life.comment_on}): no PR comment",
            "unchanged": f"PR comment unchanged since {result.url} (comment-on: change)",
            "deleted": "no regression (on-clean: delete): deleted the PR comment",
        }[result.action]
        commands.info(why)
        return "" if result.action != "unchanged" else result.url
    commands.info(f"{result.action} PR comment {result.url}")
    return result.url


def _full_report_hint(runner: RunnerEnv) -> str:
    run_url = runner.run_url()
    if run_url:
        return f"the job summary and the JSON report artifact of [this run]({run_url})"
    return "the job summary and the JSON report artifact"


def _token_from_env() -> str | None:
    for name in ("INPUT_GITHUB-TOKEN", "INPUT_GITHUB_TOKEN", "GITHUB_TOKEN"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None
