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
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from . import __version__
from .errors import EXIT_INTERNAL, EXIT_OK, EXIT_REGRESSION, ConfigError, RegressActionError
from .spec import TaskSpec, VerdictConfig, check_report_name, parse_tolerances

if TYPE_CHECKING:
    from .store import ExperimentDB

log = logging.getLogger("regress_action")
Handler = Callable[[argparse.Namespace], int]
if TYPE_CHECKING:  # argparse's class is not subscriptable at run time
    Subparsers = argparse._SubParsersAction[Any]


# ---------------------------------------------------------------- argument types


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number ≥ 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be ≥ 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be ≥ 0")
    return value


def _probability(text: str) -> float:
    value = _non_negative_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _report_name(text: str) -> str:
    try:
        return check_report_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"dim\": 64}'")
    return value


# ---------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming the option) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        help="ExperimentDB: sqlite:///path, a file path, or postgresql+psycopg://... "
        "(default: $REGRESS_DB, else ./regress.db)",
    )


def _add_verdict_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("verdict")
    group.add_argument(
        "--threshold",
        type=_non_negative_float,
        default=0.01,
        help="absolute tolerance for every metric without its own (default 0.01)",
    )
    group.add_argument("--metrics", type=_name_list, help="comma-separated metrics to report")
    group.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="per-metric tolerance: absolute (loss=0.02) or relative to |baseline| "
        "(perplexity=5%%); repeatable",
    )
    group.add_argument("--gate", type=_name_list, help="metrics that gate (default: all)")
    group.add_argument(
        "--significance",
        choices=["report", "gate", "off"],
        default="report",
        help="report: show p-values and CIs; gate: a change must also be significant; "
        "off: no statistics (default report)",
    )
    group.add_argument("--alpha", type=_probability, default=0.05, help="significance level")
    group.add_argument("--resamples", type=_positive_int, default=2000, help="bootstrap resamples")
    group.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the resampling (≥ 0)"
    )


def _add_compare(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare two registered runs on an eval set",
        description="Evaluate a baseline and a candidate run on the same eval set in one pass, "
        "record the comparison and print the JSON report on stdout.",
    )
    add_compare_arguments(parser)
    parser.set_defaults(handler=cmd_compare)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The `compare` flags (shared with scripts/run_regression_test.py)."""
    parser.add_argument("--baseline-run-id", type=_positive_int, required=True)
    parser.add_argument("--candidate-run-id", type=_positive_int, required=True)
    parser.add_argument(
        "--dataset",
        required=True,
        help="built-in name (lm_tiny, vision_tiny) or a path (.jsonl, .npz, image folder)",
    )
    _add_verdict_options(parser)
    _add_db(parser)
    parser.add_argument("--json-out", type=Path, help="write the JSON report here")
    parser.add_argument("--markdown-out", type=Path, help="write the Markdown report here")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--max-examples", type=_positive_int)
    parser.add_argument(
        "--report-name",
        type=_report_name,
        default="default",
        help="names the comparison series (and its sticky PR comment)",
    )
    parser.add_argument("--commit", help="commit sha recorded with the comparison")
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when a gated metric regressed",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading pickled whole-model checkpoints (runs arbitrary code: trusted only)",
    )
    parser.add_argument(
        "--no-record", action="store_true", help="do not record the comparison in the DB"
    )


def _add_runs(sub: Subparsers) -> None:
    runs = sub.add_parser("runs", help="register and list model runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="{add,list}")
    add = runs_sub.add_parser("add", help="register a checkpoint; prints the new run id")
    add.add_argument(
        "checkpoint", help="a .safetensors, .pt (state dict), .pt2 or TorchScript file"
    )
    add.add_argument("--task", choices=["lm", "classification"], required=True)
    add.add_argument("--modality", choices=["text", "vision"])
    add.add_argument("--num-classes", type=_positive_int)
    add.add_argument("--vocab-size", type=_positive_int)
    add.add_argument("--name", help="run name (default: the file name)")
    add.add_argument("--factory", help='"package.module:callable" building the model')
    add.add_argument("--factory-kwargs", type=_json_object, default={}, metavar="JSON")
    add.add_argument(
        "--format", choices=["safetensors", "state_dict", "export", "torchscript", "pickle"]
    )
    add.add_argument("--git-sha")
    add.add_argument("--allow-pickle", action="store_true")
    _add_db(add)
    add.set_defaults(handler=cmd_runs_add)
    listing = runs_sub.add_parser("list", help="list registered runs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_db(listing)
    listing.set_defaults(handler=cmd_runs_list)


def _add_comparisons(sub: Subparsers) -> None:
    comparisons = sub.add_parser("comparisons", help="list and show recorded comparisons")
    comp_sub = comparisons.add_subparsers(
        dest="comparisons_command", required=True, metavar="{list,show}"
    )
    listing = comp_sub.add_parser("list", help="list recorded comparisons, newest first")
    listing.add_argument("--limit", type=_positive_int, default=50)
    listing.add_argument("--report-name")
    listing.add_argument("--dataset")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_db(listing)
    listing.set_defaults(handler=cmd_comparisons_list)
    show = comp_sub.add_parser("show", help="print one comparison's report")
    show.add_argument("id", type=_positive_int)
    show.add_argument("--format", choices=["json", "markdown"], default="json")
    _add_db(show)
    show.set_defaults(handler=cmd_comparisons_show)


def _add_demo(sub: Subparsers) -> None:
    demo = sub.add_parser(
        "demo",
        help="train tiny models on the built-in data, compare them and print the reports",
    )
    demo.add_argument(
        "--workdir", type=Path, default=Path("regress-demo"), help="checkpoints and reports"
    )
    _add_db(demo)
    demo.set_defaults(handler=cmd_demo)


def _add_action(sub: Subparsers) -> None:
    action = sub.add_parser(
        "action",
        help="the GitHub Action entrypoint (reads INPUT_* and GITHUB_* from the environment)",
    )
    action.set_defaults(handler=cmd_action)
    publish = sub.add_parser(
        "publish",
        help="post or update the PR comment from an existing JSON report (fork-safe workflows)",
    )
    publish.add_argument("--report", type=Path, required=True, help="the JSON report artifact")
    publish.add_argument(
        "--report-name", type=_report_name, help="sticky comment name (default: the report's)"
    )
    publish.add_argument("--comment", choices=["update", "create", "off"], default="update")
    publish.add_argument(
        "--fail-on-regression",
        type=_boolean,
        default=True,
        metavar="BOOL",
        help="exit 1 when the report regressed (default true)",
    )
    publish.add_argument("--pr-number", type=_positive_int, help="default: from the event")
    publish.set_defaults(handler=cmd_publish)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="regress-action",
        description="Catch ML model regressions: compare a baseline and a candidate model on "
        "the same eval set, record the verdict, and report it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_compare(sub)
    _add_runs(sub)
    _add_comparisons(sub)
    _add_demo(sub)
    _add_action(sub)
    return parser


# ---------------------------------------------------------------- commands


def _emit(text: object) -> None:
    """Print to stdout; a reader that went away (`| head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _open_db(args: argparse.Namespace, *, create: bool = True) -> ExperimentDB:
    from .store import ExperimentDB

    return ExperimentDB(args.db, create=create)


def verdict_config(args: argparse.Namespace) -> VerdictConfig:
    try:
        tolerances = parse_tolerances(",".join(args.tolerance))
    except ValueError as exc:
        raise ConfigError(f"--tolerance: {exc}") from None
    return VerdictConfig(
        threshold=args.threshold,
        tolerances=tolerances,
        metrics=tuple(args.metrics) if args.metrics else None,
        gate=tuple(args.gate) if args.gate else None,
        significance=args.significance,
        alpha=args.alpha,
        resamples=args.resamples,
        seed=args.seed,
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from .app import CompareRequest, run_compare

    request = CompareRequest(
        baseline_run_id=args.baseline_run_id,
        candidate_run_id=args.candidate_run_id,
        dataset=args.dataset,
        verdict=verdict_config(args),
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        device=args.device,
        report_name=args.report_name,
        json_path=args.json_out,
        markdown_path=args.markdown_out,
        commit=args.commit,
        allow_pickle=args.allow_pickle,
        record=not args.no_record,
    )
    with _open_db(args) as db:
        outcome = run_compare(request, db)
    _emit(outcome.report.to_json())
    regressed = outcome.report.status == "regressed"
    return EXIT_REGRESSION if regressed and args.fail_on_regression else EXIT_OK


def cmd_runs_add(args: argparse.Namespace) -> int:
    from .app import CheckpointRequest, register_checkpoint

    if args.task == "lm" and args.num_classes is not None:
        raise ConfigError("--num-classes is for --task classification; an lm has --vocab-size")
    if args.task == "classification" and args.vocab_size is not None:
        raise ConfigError("--vocab-size is for --task lm; a classifier has --num-classes")
    defaults = (
        {"modality": "text", "vocab_size": 256} if args.task == "lm" else {"modality": "vision"}
    )
    given = {"modality": args.modality, "vocab_size": args.vocab_size}
    try:
        task = TaskSpec.model_validate(
            {
                **defaults,
                **{key: value for key, value in given.items() if value is not None},
                "task": args.task,
                "num_classes": args.num_classes,
            }
        )
    except ValidationError as exc:
        raise ConfigError(f"task: {_first_error(exc)}; pass --num-classes N") from None
    request = CheckpointRequest(
        checkpoint=args.checkpoint,
        task=task,
        name=args.name,
        factory=args.factory,
        factory_kwargs=args.factory_kwargs,
        format=args.format,
        git_sha=args.git_sha,
        allow_pickle=args.allow_pickle,
    )
    with _open_db(args) as db:
        run = register_checkpoint(db, request)
    _emit(run.id)
    return EXIT_OK


def cmd_runs_list(args: argparse.Namespace) -> int:
    with _open_db(args, create=False) as db:
        runs = db.list_runs()
    if args.json:
        _emit(json.dumps([run.model_dump(mode="json") for run in runs], indent=2))
        return EXIT_OK
    _emit(f"{'id':>4}  {'name':<28} {'task':<15} {'format':<12} sha256")
    for run in runs:
        _emit(
            f"{run.id:>4}  {run.name[:28]:<28} {run.task.task:<15} "
            f"{run.source.format:<12} {run.source.sha256[:12]}"
        )
    return EXIT_OK


def cmd_comparisons_list(args: argparse.Namespace) -> int:
    with _open_db(args, create=False) as db:
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
            f"{row.status:<10} {row.notes}"
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

    with _open_db(args, create=False) as db:
        row = db.get_comparison(args.id)
    if row.report is None:
        raise ConfigError(f"comparison {args.id} was recorded without a report")
    report = Report.model_validate(row.report)
    _emit(report.to_json() if args.format == "json" else render_markdown(report))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    with _open_db(args) as db:
        return run_demo(db, args.workdir, args.db)


def cmd_action(args: argparse.Namespace) -> int:
    from .action import main as action_main

    return action_main()


def cmd_publish(args: argparse.Namespace) -> int:
    from .action import publish

    return publish(
        args.report,
        report_name=args.report_name,
        comment=args.comment,
        fail_on_regression=args.fail_on_regression,
        pr_number=args.pr_number,
    )


# ---------------------------------------------------------------- entry point


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="regress-action: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except RegressActionError as exc:
        print(f"regress-action: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:
        print(f"regress-action: error: invalid value: {_first_error(exc)}", file=sys.stderr)
        return ConfigError.exit_code
    except KeyboardInterrupt:
        print("regress-action: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: show everything needed to report it
        traceback.print_exc()
        print(
            "regress-action: internal error (a bug); please report it with the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
