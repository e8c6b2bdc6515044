"""The GitHub Action's entrypoint (`regress-action action`) and `regress-action publish`.

Owns the order of a run: settings → (register checkpoints) → compare (evaluate → verdict →
ExperimentDB → JSON → Markdown) → job summary → step outputs → annotations → PR comment → exit
code. Everything before the comment is written even when commenting fails; a comment failure is
a warning, never the job's status. Collaborators arrive as `Services` so tests pass fakes.
Must not import torch or PyGithub at module level (`app` imports torch lazily; `github` is the
PyGithub adapter).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from .errors import EXIT_INTERNAL, EXIT_OK, EXIT_REGRESSION, RegressActionError, UserError
from .gha import Commands, EventContext, append_summary, event_context, read_event, write_outputs
from .preflight import check_inputs
from .report import MetricResult, Report
from .settings import (
    ActionInputs,
    ClientTuning,
    CommentMode,
    RunnerEnv,
    load,
    load_inputs,
)
from .spec import VerdictConfig

if TYPE_CHECKING:
    from .app import CheckpointRequest, CompareOutcome, CompareRequest
    from .github import CommentResult
    from .spec import RunRecord
    from .store import ExperimentDB

TITLE = "regress-action"
# Room left in a comment for the marker, newlines and GitHub counting emoji differently.
COMMENT_MARGIN = 200
OUTPUT_NAMES = (
    "status",
    "comparison-id",
    "regressed-metrics",
    "report-json",
    "report-markdown",
    "comment-url",
)


class Commenter(Protocol):
    """The PR-comment port (`github.Commenter` in production, an in-memory fake in tests)."""

    def find_pr(self, sha: str) -> int | None: ...

    def upsert(
        self, pr_number: int, body: str, *, report_name: str, mode: Literal["update", "create"]
    ) -> CommentResult: ...


@dataclass(frozen=True)
class Services:
    """The collaborators of a run; `Services.default()` builds the real ones lazily."""

    compare: Callable[[CompareRequest, ExperimentDB], CompareOutcome]
    register: Callable[[ExperimentDB, CheckpointRequest], RunRecord]
    open_db: Callable[[str], AbstractContextManager[ExperimentDB]]
    open_commenter: Callable[[str, str, str], Commenter]
    commands: Commands = field(default_factory=Commands)

    @staticmethod
    def default() -> Services:
        tuning = load(ClientTuning)

        def open_commenter(api_url: str, token: str, repository: str) -> Commenter:
            from . import github

            return github.open_commenter(api_url, token, repository, tuning)

        return Services(_run_compare, _register_checkpoint, _open_db, open_commenter)


# The real collaborators import their layers on first use: bad inputs are reported (exit 2)
# before SQLAlchemy, the engine or torch is imported.
def _run_compare(request: CompareRequest, db: ExperimentDB) -> CompareOutcome:
    from .app import run_compare

    return run_compare(request, db)


def _register_checkpoint(db: ExperimentDB, request: CheckpointRequest) -> RunRecord:
    from .app import register_checkpoint

    return register_checkpoint(db, request)


def _open_db(url: str) -> AbstractContextManager[ExperimentDB]:
    from .store import ExperimentDB

    return ExperimentDB(url)


@dataclass(frozen=True)
class Publication:
    """A finished report and how to publish it (the shared tail of `action` and `publish`)."""

    report: Report
    markdown: str
    report_name: str
    comment: CommentMode = "update"
    fail_on_regression: bool = True
    token: str | None = None
    json_path: Path | None = None
    markdown_path: Path | None = None
    pr_number: int | None = None


def main() -> int:
    """`regress-action action`: everything from the environment the runner gives a container."""
    commands = Commands()
    return guarded(commands, lambda: run_action(Services.default(), commands))


def publish(
    report_path: Path,
    *,
    report_name: str | None = None,
    comment: CommentMode = "update",
    fail_on_regression: bool = True,
    pr_number: int | None = None,
) -> int:
    """`regress-action publish --report PATH`: summary, outputs, comment and exit code from an
    existing JSON report (the `workflow_run` half of the fork-safe pattern).

    The token comes from `INPUT_GITHUB-TOKEN` or `GITHUB_TOKEN`.
    """
    commands = Commands()

    def run() -> int:
        from .render import render_markdown

        token = _token_from_env()
        if token:
            commands.add_mask(token)
        report = Report.load(Path(report_path))
        if report_name:
            report = report.model_copy(update={"report_name": report_name})
        pub = Publication(
            report=report,
            markdown=render_markdown(report),
            report_name=report_name or report.report_name,
            comment=comment,
            fail_on_regression=fail_on_regression,
            token=token,
            json_path=Path(report_path),
            pr_number=pr_number,
        )
        services = Services.default()
        return publish_report(pub, load(RunnerEnv), services.open_commenter, commands)

    return guarded(commands, run)


def guarded(commands: Commands, body: Callable[[], int]) -> int:
    """Run `body`; a user error is one `::error::` line and exit 2, anything else exit 3."""
    try:
        return body()
    except UserError as exc:
        commands.error(str(exc), title=TITLE)
        return exc.exit_code
    except RegressActionError as exc:
        commands.error(f"internal error: {exc}", title=TITLE)
        return exc.exit_code
    except Exception as exc:  # a bug: keep the traceback for the report, exit 3
        traceback.print_exc(file=sys.stderr)
        commands.error(
            f"internal error ({type(exc).__name__}: {exc}); please report it with this log",
            title=TITLE,
        )
        return EXIT_INTERNAL


def run_action(services: Services, commands: Commands) -> int:
    runner = load(RunnerEnv)
    inputs = load_inputs()
    token = inputs.github_token.get_secret_value() if inputs.github_token else None
    if token:
        commands.add_mask(token)
    event = event_context(
        runner.github_event_name, read_event(runner.github_event_path), runner.github_sha
    )
    with services.open_db(inputs.db_url) as db:
        check_inputs(inputs, db)  # before anything is registered, evaluated or written
        baseline_id, candidate_id = _run_ids(inputs, db, services, commands, event.head_sha)
        request = compare_request(inputs, baseline_id, candidate_id, event.head_sha)
        with commands.group(f"Evaluate run {baseline_id} vs run {candidate_id}"):
            outcome = services.compare(request, db)
    pub = Publication(
        report=outcome.report,
        markdown=outcome.markdown,
        report_name=inputs.report_name,
        comment=inputs.comment,
        fail_on_regression=inputs.fail_on_regression,
        token=token,
        json_path=request.json_path,
        markdown_path=request.markdown_path,
    )
    return publish_report(pub, runner, services.open_commenter, commands, event=event)


def compare_request(
    inputs: ActionInputs, baseline_id: int, candidate_id: int, commit: str | None
) -> CompareRequest:
    from .app import CompareRequest

    verdict = VerdictConfig(
        threshold=inputs.threshold,
        tolerances=inputs.metric_tolerances,
        metrics=inputs.metrics,
        gate=inputs.gate,
        significance=inputs.significance,
        alpha=inputs.alpha,
    )
    return CompareRequest(
        baseline_run_id=baseline_id,
        candidate_run_id=candidate_id,
        dataset=str(inputs.dataset),
        verdict=verdict,
        batch_size=inputs.batch_size,
        max_examples=inputs.max_examples,
        device=inputs.device,
        report_name=inputs.report_name,
        json_path=inputs.resolved_json_path(),
        markdown_path=inputs.resolved_markdown_path(),
        commit=commit,
        allow_pickle=inputs.allow_pickle,
    )


def _run_ids(
    inputs: ActionInputs,
    db: ExperimentDB,
    services: Services,
    commands: Commands,
    commit: str | None,
) -> tuple[int, int]:
    """The two run ids, registering `*-checkpoint` inputs as runs first."""
    ids: list[int] = []
    for side in ("baseline", "candidate"):
        run_id: int | None = getattr(inputs, f"{side}_run_id")
        if run_id is None:
            checkpoint: str = getattr(inputs, f"{side}_checkpoint")
            with commands.group(f"Register {side} checkpoint {checkpoint}"):
                run_id = _register(inputs, db, services, side, checkpoint, commit)
                commands.info(f"registered {side} checkpoint {checkpoint} as run {run_id}")
        ids.append(run_id)
    return ids[0], ids[1]


def _register(
    inputs: ActionInputs,
    db: ExperimentDB,
    services: Services,
    side: str,
    checkpoint: str,
    commit: str | None,
) -> int:
    from .app import CheckpointRequest
    from .errors import ConfigError

    task = inputs.task_spec()
    if task is None:
        raise ConfigError(
            f"input task is required with {side}-checkpoint: set task (lm or classification) "
            "and num-classes or vocab-size"
        )
    request = CheckpointRequest(
        checkpoint=checkpoint,
        task=task,
        factory=inputs.model_factory,
        factory_kwargs=inputs.model_kwargs,
        git_sha=commit if side == "candidate" else None,
        allow_pickle=inputs.allow_pickle,
    )
    try:
        return services.register(db, request).id
    except UserError as exc:
        raise ConfigError(
            f"inputs {side}-checkpoint / model-factory / model-kwargs: {exc}"
        ) from None


def publish_report(
    pub: Publication,
    runner: RunnerEnv,
    open_commenter: Callable[[str, str, str], Commenter],
    commands: Commands,
    *,
    event: EventContext | None = None,
) -> int:
    """Summary → outputs → annotations → comment → exit code."""
    report = pub.report
    if event is None:
        payload = read_event(runner.github_event_path)
        event = event_context(runner.github_event_name, payload, runner.github_sha)
    append_summary(runner.github_step_summary, pub.markdown, hint=_full_report_hint(runner))
    write_outputs(runner.github_output, report_outputs(pub))
    annotate(report, pub.fail_on_regression, commands)
    url = post_comment(pub, runner, event, open_commenter, commands)
    write_outputs(runner.github_output, {"comment-url": url})
    commands.info(f"regress-action: {report.status}")
    if report.status == "regressed" and pub.fail_on_regression:
        return EXIT_REGRESSION
    return EXIT_OK


def report_outputs(pub: Publication) -> dict[str, str]:
    """Every step output but `comment-url`, which is written after the comment."""
    report = pub.report
    return {
        "status": report.status,
        "comparison-id": "" if report.comparison_id is None else str(report.comparison_id),
        "regressed-metrics": ",".join(report.regressed_metrics),
        "report-json": "" if pub.json_path is None else str(pub.json_path),
        "report-markdown": "" if pub.markdown_path is None else str(pub.markdown_path),
    }


def annotate(report: Report, fail_on_regression: bool, commands: Commands) -> None:
    """One annotation per regressed metric: an error when it fails the job, else a warning."""
    emit = commands.error if fail_on_regression else commands.warning
    for name in report.regressed_metrics:
        metric = report.metrics.get(name)
        text = _describe_metric(metric) if metric is not None else f"{name} regressed"
        emit(text, title=f"{TITLE}: {name} regressed ({report.report_name})")


def _describe_metric(metric: MetricResult) -> str:
    if metric.reason:
        return metric.reason
    return (
        f"{metric.name}: {metric.baseline} → {metric.candidate} (delta {metric.delta}, "
        f"tolerance {metric.tolerance}, {'higher' if metric.higher_is_better else 'lower'} "
        "is better)"
    )


def post_comment(
    pub: Publication,
    runner: RunnerEnv,
    event: EventContext,
    open_commenter: Callable[[str, str, str], Commenter],
    commands: Commands,
) -> str:
    """Upsert the PR comment; return its URL, or "" when none was posted (with the reason)."""
    from .github import CommentNotPosted, with_marker
    from .render import MAX_COMMENT_CHARS, comment_length, render_markdown

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
    try:
        commenter = open_commenter(runner.github_api_url, pub.token, runner.github_repository)
        pr_number = pub.pr_number or event.pr_number
        if pr_number is None and event.needs_search and event.head_sha:
            pr_number = commenter.find_pr(event.head_sha)
        if pr_number is None:
            commands.notice(
                f"not a pull request ({event.event_name or 'no event'}): no PR comment; "
                "the report is in the job summary",
                title=TITLE,
            )
            return ""
        budget = MAX_COMMENT_CHARS - comment_length(with_marker("", pub.report_name))
        body = render_markdown(
            pub.report,
            max_chars=budget - COMMENT_MARGIN,
            full_report_hint=_full_report_hint(runner),
        )
        result = commenter.upsert(pr_number, body, report_name=pub.report_name, mode=pub.comment)
    except CommentNotPosted as exc:
        commands.warning(f"PR comment not posted: {exc}", title=TITLE)
        return ""
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
