"""The `regress-action` command line: the composition root.

Builds the real collaborators (ExperimentDB, GitHub client) and maps errors to exit codes:
0 fine, 1 regression (with --fail-on-regression), 2 bad input or configuration, 3 internal bug.
Imports no torch at start-up: subcommands that evaluate import it through `app`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .cli_args import build_parser, explicit_options, flag_name, one_line
from .config import (
    Names,
    check_precision,
    checkpoint_request,
    compare_request,
    data_options,
    evaluate_request,
    task_from,
    verdict_config,
)
from .errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_REGRESSION,
    ConfigError,
    FollowerDone,
    RegressActionError,
)

if TYPE_CHECKING:
    from .distributed import Session

Handler = Callable[[argparse.Namespace], int]

# ---------------------------------------------------------------- commands


def _error(message: object) -> None:
    print(f"regress-action: error: {one_line(message)}", file=sys.stderr)


class _OneLineFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))


def _emit(text: object) -> None:
    """Print to stdout; a reader that went away (`| head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def cmd_compare(args: argparse.Namespace) -> int:
    from .app import run_compare
    from .store import open_db
    from .tasks import MetricsModuleError

    request = compare_request(
        args,
        _names(args),
        baseline_run_id=args.baseline_run_id,
        candidate_run_id=args.candidate_run_id,
        commit=args.commit,
        record=args.record,
        config_source=args.config_source,
    )
    # A comparison needs registered runs: a missing SQLite file is a mistyped --db. One that
    # is not recorded only reads the database.
    with open_db(args.db, create=False, readonly=not args.record) as db:
        try:
            outcome = run_compare(request, db)
        except MetricsModuleError as exc:  # a column this task spec does not record, or a
            raise exc.named(flag_name) from None  # whole_set that fails on the records
    _emit(outcome.report.to_json())
    regressed = outcome.report.status == "regressed"
    return EXIT_REGRESSION if regressed and args.fail_on_regression else EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import run_evaluate
    from .store import open_db
    from .tasks import MetricsModuleError

    request = evaluate_request(args, _names(args), run_id=args.run_id, commit=args.commit)
    with open_db(args.db, create=False, readonly=not args.record) as db:
        try:
            outcome = run_evaluate(request, db)
        except MetricsModuleError as exc:
            raise exc.named(flag_name) from None
    _emit(outcome.report.to_json())
    violated = outcome.report.status == "failed"
    return EXIT_REGRESSION if violated and args.fail_on_violation else EXIT_OK


def cmd_runs_add(args: argparse.Namespace) -> int:
    from .app import register_checkpoint
    from .store import open_db

    task = task_from(args, flag_name)
    assert task is not None, "--task is a required flag"
    request = checkpoint_request(
        args,
        checkpoint=args.checkpoint,
        task=task,
        git_sha=args.git_sha,
        name=args.name,
        format=args.format,
    )
    with open_db(args.db) as db:
        run = register_checkpoint(db, request)
    _emit(run.id)
    return EXIT_OK


def cmd_runs_list(args: argparse.Namespace) -> int:
    from .store import open_db

    with open_db(args.db, readonly=True) as db:
        runs = db.list_runs()
    if args.json:
        _emit(json.dumps([run.model_dump(mode="json") for run in runs], indent=2))
        return EXIT_OK
    _emit(f"{'id':>4}  {'name':<28} {'task':<15} {'format':<12} sha256")
    for run in runs:
        _emit(
            f"{run.id:>4}  {one_line(run.name)[:28]:<28} {run.task.task:<15} "
            f"{run.source.format:<12} {run.source.sha256[:12]}"
        )
    return EXIT_OK


def cmd_comparisons_list(args: argparse.Namespace) -> int:
    from .store import open_db

    with open_db(args.db, readonly=True) as db:
        rows = db.list_comparisons(
            limit=args.limit, report_name=args.report_name, dataset=args.dataset
        )
    if args.json:
        _emit(json.dumps([_comparison_summary(row) for row in rows], indent=2))
        return EXIT_OK
    _emit(f"{'id':>4}  {'created (UTC)':<19} {'base':>5} {'cand':>5} {'status':<10} notes")
    for row in rows:
        created = row.created_at.strftime("%Y-%m-%d %H:%M:%S")
        _emit(
            f"{row.id:>4}  {created:<19} {row.baseline_run_id:>5} {row.candidate_run_id:>5} "
            f"{row.status:<10} {one_line(row.notes)}"
        )
    return EXIT_OK


def _comparison_summary(row: object) -> dict[str, object]:
    fields = (
        "id",
        "created_at",
        "baseline_run_id",
        "candidate_run_id",
        "report_name",
        "dataset",
        "status",
        "notes",
    )
    summary = {name: getattr(row, name) for name in fields}
    summary["created_at"] = str(summary["created_at"])
    return summary


def cmd_comparisons_show(args: argparse.Namespace) -> int:
    from .render import render_markdown
    from .report import Report
    from .store import open_db

    with open_db(args.db, readonly=True) as db:
        row = db.get_comparison(args.id)
    if row.report is None:
        raise ConfigError(f"comparison {args.id} was recorded without a report")
    report = Report.model_validate(row.report)
    _emit(report.to_json() if args.format == "json" else render_markdown(report))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_workdir, run_demo
    from .store import open_db

    # The folder before the database; a failed demo leaves no folder it made behind.
    with demo_workdir(args.workdir), open_db(args.db) as db:
        return run_demo(db, args.workdir, args.db)


def cmd_action(args: argparse.Namespace) -> int:
    from .action import main as action_main

    return action_main()


def cmd_publish(args: argparse.Namespace) -> int:
    from .publish import Lifecycle, publish

    return publish(
        args.report,
        report_name=args.report_name,
        verdict=verdict_config(args, _names(args)),
        comment=args.comment,
        fail_on_regression=args.fail_on_regression,
        pr_number=args.pr_number,
        lifecycle=Lifecycle(
            comment_on=args.comment_on,
            hide_previous=args.hide_previous,
            on_clean=args.on_clean,
            artifact_name=args.artifact_name,
            commit_comment=args.commit_comment,
        ),
    )


def cmd_config_check(args: argparse.Namespace) -> int:
    """The configuration `compare` would use, as JSON: the file's values over the defaults,
    under the flags given."""
    from .spec import check_device

    names = _names(args)
    verdict = verdict_config(args, names)
    data = data_options(args, names)
    try:
        device = check_device(args.device)
    except ValueError as exc:
        raise ConfigError(f"{names('device')}: {exc}") from None
    check_precision(args, names)
    effective = {
        "config": args.config_source,
        "verdict": verdict.model_dump(mode="json"),
        "data": data.model_dump(mode="json"),
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "max_examples": args.max_examples,
        "workers": args.workers,
        "device": device,
        "precision": args.precision,
        "report_name": args.report_name,
        "fail_on_regression": args.fail_on_regression,
    }
    _emit(json.dumps(effective, indent=2))
    print(f"regress-action: {one_line(args.config_source)}: valid", file=sys.stderr)
    return EXIT_OK


def _names(args: argparse.Namespace) -> Names:
    """Spell an option as the user gave it: a config file's key as `FILE: key`, else the flag."""
    from_file: set[str] = getattr(args, "config_keys", set())
    source = getattr(args, "config_source", "")

    def name(attribute: str) -> str:
        return f"{source}: {attribute}" if attribute in from_file else flag_name(attribute)

    return name


def _configured(handler: Handler, argv: Sequence[str] | None) -> Handler:
    """`handler` run with the config file's values under the flags given explicitly."""

    def run(args: argparse.Namespace) -> int:
        from .config_file import apply_to_namespace, find_config, read_config

        loaded = read_config(find_config(args.config), "--config")
        apply_to_namespace(args, loaded, explicit_options(argv))
        return handler(args)

    return run


# ---------------------------------------------------------------- entry point

HANDLERS: dict[str, Handler] = {
    "compare": cmd_compare,
    "evaluate": cmd_evaluate,
    "runs_add": cmd_runs_add,
    "runs_list": cmd_runs_list,
    "comparisons_list": cmd_comparisons_list,
    "comparisons_show": cmd_comparisons_show,
    "demo": cmd_demo,
    "action": cmd_action,
    "publish": cmd_publish,
    "config_check": cmd_config_check,
}
# Commands that read the config file (`--config`, or ./.regress-action.yml).
CONFIGURED = {"compare", "evaluate", "publish", "config_check"}
SHARDED = {"compare", "evaluate"}  # under torchrun, every rank evaluates a shard


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(_OneLineFormatter("regress-action: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[stream])
    handler = HANDLERS[args.handler]
    if args.handler in CONFIGURED:
        handler = _configured(handler, argv)
    if not _under_torchrun():
        return _run(handler, args, None)
    if args.handler not in SHARDED:  # nothing to shard: rank 0 does it once
        return _run(handler, args, None) if os.environ.get("RANK") == "0" else EXIT_OK
    from .distributed import DistributedError, session

    try:
        with session() as joined:
            assert joined is not None
            return joined.agree(_run(handler, args, joined))
    except DistributedError as exc:
        _error(exc)
        return exc.exit_code


def _under_torchrun() -> bool:
    # torchrun's environment; checked without importing torch.distributed.
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ


def _run(handler: Handler, args: argparse.Namespace, joined: Session | None) -> int:
    """The command's exit code; errors become one line on stderr. Under torchrun, a rank that
    fails before the records are exchanged still takes part in the exchange (with its error),
    and only rank 0 prints: it reports every rank's failure."""
    try:
        return handler(args)
    except FollowerDone:
        return EXIT_OK
    except RegressActionError as exc:
        if joined is not None:
            joined.fail(exc)  # takes part in the exchange if it has not happened yet
            if not joined.leader:
                return exc.exit_code  # rank 0 reports it, naming this rank
        _error(exc)
        return exc.exit_code
    except ValidationError as exc:
        _error(f"invalid value: {_first_error(exc)}")
        return ConfigError.exit_code
    except KeyboardInterrupt:
        print("regress-action: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: show everything needed to report it
        traceback.print_exc()
        print(
            "regress-action: internal error (a bug); please report it with the traceback above",
            file=sys.stderr,
        )
        if joined is not None:
            joined.fail(RegressActionError(f"internal error ({type(exc).__name__}: {exc})"))
        return EXIT_INTERNAL
