"""The GitHub Action's entrypoint: `regress-action action`.

Owns the order of a run: settings → input checks → (register checkpoints) → compare (evaluate →
verdict → ExperimentDB → JSON → Markdown) → publish (summary, outputs, annotations, PR comment,
exit code; see `publish`). Collaborators arrive as `Services`, the real ones by default.
Runs registered from `*-checkpoint` inputs are provisional until the comparison is recorded:
a step that fails before that removes the runs it alone created (`provisional_runs`), so a
failed step leaves the ExperimentDB's row counts as it found them.
Must not import torch, SQLAlchemy or PyGithub at module level: bad inputs are reported (exit 2)
before the engine or the database is imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .config import checkpoint_request, compare_request, evaluate_request, task_from
from .config_file import load_action_inputs
from .errors import EXIT_OK, EXIT_REGRESSION, ConfigError, GitHubError, StoreError, UserError
from .gha import (
    Commands,
    EventContext,
    append_summary,
    check_runner_file,
    event_context,
    guarded,
    read_event,
    run_as_workspace_owner,
    write_outputs,
)
from .gitref import AtRef, baseline_ref, read_at_ref
from .preflight import check_inputs
from .publish import (
    TITLE,
    Lifecycle,
    OpenCommenter,
    Publication,
    open_github_commenter,
    publish_report,
)
from .settings import ActionInputs, RunnerEnv, input_label, load, name_inputs

if TYPE_CHECKING:
    from .app import CheckpointRequest, CompareOutcome, CompareRequest
    from .evaluation import EvaluateOutcome, EvaluateRequest
    from .spec import RunRecord, TaskSpec
    from .store import ExperimentDB


# The real collaborators import their layers on first use: bad inputs are reported (exit 2)
# before SQLAlchemy, the engine or torch is imported.
def _run_compare(request: CompareRequest, db: ExperimentDB) -> CompareOutcome:
    from .app import run_compare

    return run_compare(request, db)


def _run_evaluate(request: EvaluateRequest, db: ExperimentDB) -> EvaluateOutcome:
    from .evaluation import run_evaluate

    return run_evaluate(request, db)


def _register_checkpoint(db: ExperimentDB, request: CheckpointRequest) -> RunRecord:
    from .app import register_checkpoint

    return register_checkpoint(db, request)


def _open_store(url: str) -> AbstractContextManager[ExperimentDB]:
    from .store import ExperimentDB

    return ExperimentDB(url, source="input db-url")


@dataclass(frozen=True)
class Services:
    """The collaborators of a run; the defaults are the real ones."""

    compare: Callable[[CompareRequest, ExperimentDB], CompareOutcome] = _run_compare
    register: Callable[[ExperimentDB, CheckpointRequest], RunRecord] = _register_checkpoint
    open_db: Callable[[str], AbstractContextManager[ExperimentDB]] = _open_store
    open_commenter: OpenCommenter = open_github_commenter
    evaluate: Callable[[EvaluateRequest, ExperimentDB], EvaluateOutcome] = _run_evaluate


def main() -> int:
    """`regress-action action`: everything from the environment the runner gives a container."""
    run_as_workspace_owner()  # before anything is written
    commands = Commands()
    return guarded(
        commands, lambda: _naming_inputs(Services(), commands), title=TITLE, file_of=workspace_file
    )


def _naming_inputs(services: Services, commands: Commands) -> int:
    """`run_action`, its errors naming the Action's inputs where a layer below named a CLI
    flag (`--allow-pickle` is the input `allow-pickle` here)."""
    try:
        return run_action(services, commands)
    except UserError as exc:
        exc.args = (name_inputs(str(exc)),)
        raise


def run_action(services: Services, commands: Commands) -> int:
    runner = load(RunnerEnv)
    inputs, config = load_action_inputs(runner)  # the inputs set, over the config file's values
    token = inputs.github_token.get_secret_value() if inputs.github_token else None
    if token:
        commands.add_mask(token)
    # Outputs that could not be set would lose the comparison's id: checked before it exists.
    check_runner_file("GITHUB_OUTPUT", runner.github_output)
    event = event_context(
        runner.github_event_name, read_event(runner.github_event_path), runner.github_sha
    )
    commit = tested_commit(inputs.commit, event, runner, token, services, commands)
    task = task_from(inputs, input_label)
    # A pull request controls its checkout: its baseline checkpoint is read from the base commit.
    ref = None
    if inputs.baseline_checkpoint is not None:
        ref = baseline_ref(inputs.baseline_checkpoint_ref, event.base_sha)
    with services.open_db(inputs.db_url) as db:
        # before anything is registered, evaluated or written
        check_inputs(inputs, task, db, baseline_at_ref=ref is not None)
        at_ref = None if ref is None else _read_baseline(inputs, ref, runner, commands)
        if inputs.mode == "evaluate":
            return _evaluate_baseline(inputs, task, db, services, commands, commit, runner, at_ref)
        with db.provisional_runs():  # a failure below removes the runs registered here
            ids = _run_ids(inputs, task, db, services, commands, commit, at_ref)
            baseline_id, candidate_id = ids
            request = compare_request(
                inputs,
                input_label,
                baseline_run_id=baseline_id,
                candidate_run_id=candidate_id,
                commit=commit,
                config_source=config.source,
            )
            if at_ref is not None:
                request = replace(request, baseline_ref=at_ref.sha)
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
        records_path=request.records_path,
        lifecycle=Lifecycle.from_inputs(inputs),
    )
    return publish_report(pub, runner, services.open_commenter, commands, event=event)


# The step outputs of `mode: evaluate`.
EVALUATION_OUTPUTS = ("evaluation-id", "evaluation-status")


def _evaluate_baseline(
    inputs: ActionInputs,
    task: TaskSpec | None,
    db: ExperimentDB,
    services: Services,
    commands: Commands,
    commit: str | None,
    runner: RunnerEnv,
    at_ref: AtRef | None = None,
) -> int:
    """`mode: evaluate`: evaluate the baseline-run-id / baseline-checkpoint model and store its
    evaluation (a job on the default branch, so that pull requests against it evaluate only
    their candidate); step outputs and the job summary, no PR comment. Exit 1 when a metric
    is outside its bound and fail-on-regression is set."""
    with db.provisional_runs():  # a failure below removes the run registered here
        run_id = inputs.baseline_run_id
        if run_id is None:
            checkpoint = str(inputs.baseline_checkpoint if at_ref is None else at_ref.path)
            if task is None:  # check_inputs has said so; this keeps the types honest
                raise ConfigError("input task is required with baseline-checkpoint")
            sha = commit if at_ref is None else at_ref.sha
            request = checkpoint_request(
                inputs, checkpoint=checkpoint, task=task, git_sha=sha, side="baseline"
            )
            with commands.group(f"Register checkpoint {checkpoint}"):
                run_id = _register(services, db, request, "baseline")
                commands.info(f"registered checkpoint {checkpoint} as run {run_id}")
        evaluate = evaluate_request(inputs, input_label, run_id=run_id, commit=commit)
        with commands.group(f"Evaluate run {run_id}"):
            outcome = services.evaluate(evaluate, db)
    report = outcome.report
    write_outputs(
        runner.github_output,
        {
            "evaluation-id": "" if report.evaluation_id is None else str(report.evaluation_id),
            "evaluation-status": report.status or "",
            "report-json": "" if evaluate.json_path is None else str(evaluate.json_path),
            "report-markdown": ""
            if evaluate.markdown_path is None
            else str(evaluate.markdown_path),
        },
    )
    try:
        append_summary(runner.github_step_summary, outcome.markdown)
    except GitHubError as exc:
        commands.warning(f"job summary not written: {exc}", title=TITLE)
    for name in report.failed_metrics:
        commands.error(report.metrics[name].reason, title=TITLE)
    commands.info(f"regress-action: evaluation {report.evaluation_id} stored")
    failed = report.status == "failed" and inputs.fail_on_regression
    return EXIT_REGRESSION if failed else EXIT_OK


def _run_ids(
    inputs: ActionInputs,
    task: TaskSpec | None,
    db: ExperimentDB,
    services: Services,
    commands: Commands,
    commit: str | None,
    at_ref: AtRef | None = None,
) -> tuple[int, int]:
    """The two run ids, registering `*-checkpoint` inputs as runs first (the baseline's from
    its copy read at `at_ref`, with that commit as its git sha, when there is one)."""
    ids: list[int] = []
    for side in ("baseline", "candidate"):
        run_id: int | None = getattr(inputs, f"{side}_run_id")
        if run_id is None:
            checkpoint: str = getattr(inputs, f"{side}_checkpoint")
            git_sha = commit if side == "candidate" else None
            if side == "baseline" and at_ref is not None:
                checkpoint, git_sha = str(at_ref.path), at_ref.sha
            if task is None:  # check_inputs has said so; this keeps the types honest
                raise ConfigError(f"input task is required with {side}-checkpoint")
            request = checkpoint_request(
                inputs,
                checkpoint=checkpoint,
                task=task,
                git_sha=git_sha,
                side=side,
            )
            with commands.group(f"Register {side} checkpoint {checkpoint}"):
                run_id = _register(services, db, request, side)
                commands.info(f"registered {side} checkpoint {checkpoint} as run {run_id}")
        ids.append(run_id)
    return ids[0], ids[1]


def _read_baseline(inputs: ActionInputs, ref: str, runner: RunnerEnv, commands: Commands) -> AtRef:
    """The baseline checkpoint as it is at `ref`, copied out of the workspace's git objects."""
    checkpoint = str(inputs.baseline_checkpoint)
    workspace = runner.github_workspace or Path.cwd()
    with commands.group(f"Read baseline checkpoint {checkpoint} at {ref}"):
        at_ref = read_at_ref(workspace, checkpoint, ref, runner.runner_temp)
        commands.info(
            f"baseline checkpoint {checkpoint} read from commit {at_ref.sha} into {at_ref.path}"
        )
    return at_ref


def _register(services: Services, db: ExperimentDB, request: CheckpointRequest, side: str) -> int:
    try:
        return services.register(db, request).id
    except UserError as exc:
        raise ConfigError(
            f"inputs {side}-checkpoint / {side}-model-factory / model-factory: {exc}"
        ) from None


def tested_commit(
    given: str | None,
    event: EventContext,
    runner: RunnerEnv,
    token: str | None,
    services: Services,
    commands: Commands,
) -> str | None:
    """The commit recorded with the runs and the comparison: the `commit` input, else what
    the event's default checkout holds (`gha.event_context`). An `issue_comment` on a PR
    carries no commit: the PR's head is asked from the API (with a token), else none is
    recorded, with a notice saying so."""
    if given:
        return given
    if event.event_name != "issue_comment" or event.pr_number is None:
        return event.head_sha
    number = event.pr_number
    unset = "no commit is recorded; set the input commit to the sha the workflow checked out"
    if not token or not runner.github_repository:
        commands.notice(
            f"an issue_comment event does not say which commit PR #{number} is at, and without "
            f"github-token and GITHUB_REPOSITORY it cannot be asked; {unset}",
            title=TITLE,
        )
        return None
    try:
        commenter = services.open_commenter(runner.github_api_url, token, runner.github_repository)
        sha = commenter.pr_head(number)
    except ConfigError:  # a bad REGRESS_ACTION_GITHUB_* value: bad input, exit 2
        raise
    except GitHubError as exc:
        commands.warning(
            f"the head commit of PR #{number} is unknown ({exc}); {unset}", title=TITLE
        )
        return None
    commands.info(f"issue_comment on PR #{number}: recording its head commit {sha}")
    return sha


# What may surround a path in an error message: quotes, brackets, separators.
_TOKEN_EDGES = re.compile(r"""[\s'"`()\[\]{},;=]+""")


def workspace_file(exc: UserError) -> str | None:
    """The workspace file an error about the data, a model or an input names (a dataset, a
    checkpoint, a file of an image folder), relative to GITHUB_WORKSPACE, for the annotation's
    `file=`; None when it names none, or concerns the runner or the database."""
    if isinstance(exc, GitHubError | StoreError):
        return None
    root = Path(os.path.realpath(load(RunnerEnv).github_workspace or Path.cwd()))
    for token in _TOKEN_EDGES.split(str(exc)):
        token = re.sub(r"(:\d+)+:?$", "", token.rstrip(".:"))  # `data.jsonl:12:`
        if not token or len(token) > 4096 or "\0" in token:
            continue
        path = Path(token) if os.path.isabs(token) else root / token
        try:
            real = Path(os.path.realpath(path))
            if real.is_file() and real.is_relative_to(root):
                return real.relative_to(root).as_posix()
        except (OSError, ValueError):
            continue
    return None
