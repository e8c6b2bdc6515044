"""The `regress-action` argument parser: option types and sub-commands.

Standard library plus `spec` (value checks shared with the Action), `formats` (the `--format`
choices) and the package version; no torch, no database. Each sub-command names its handler
in `cli.HANDLERS`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, overload

from . import __version__
from .formats import REGISTRY
from .spec import PRECISIONS, check_report_name, parse_bounds, parse_tolerances

if TYPE_CHECKING:  # argparse's class is not subscriptable at run time
    Subparsers = argparse._SubParsersAction[Any]


# ---------------------------------------------------------------- argument types


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    # inf would pass every change as within the tolerance, nan would compare false everywhere
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number ≥ 0")
    return value


def _int_between(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be ≥ {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be ≤ {maximum:,}")
        return value

    return parse


_positive_int = _int_between(1)


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


class _Gathered(argparse.Action):
    """A repeatable per-metric option (`--tolerance`, `--bound`) gathered into one dict; a
    metric given in two occurrences is refused with how to give it in one."""

    parse: Callable[[str], dict[str, Any]]
    both: str  # how to give a metric's two parts in one, e.g. "{metric}=0.02|5%"

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        gathered = dict(getattr(namespace, self.dest) or {})
        try:
            parsed = type(self).parse(str(values))
        except ValueError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        repeated = sorted(parsed.keys() & gathered.keys())
        if repeated:
            metric = repeated[0]
            example = self.both.format(metric=metric)
            raise argparse.ArgumentError(self, f"{metric} is given twice; {example}")
        setattr(namespace, self.dest, gathered | parsed)


class _Tolerances(_Gathered):
    """Repeatable `--tolerance METRIC=VALUE[, ...]`."""

    parse = staticmethod(parse_tolerances)
    both = "give both parts in one ({metric}=0.02|5%)"


class _Bounds(_Gathered):
    """Repeatable `--bound METRIC>=VALUE[, METRIC<=VALUE ...]`."""

    parse = staticmethod(parse_bounds)
    both = "give both sides in one ({metric}>=0.9,{metric}<=1)"


def _add_bound(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--bound",
        dest="bounds",
        action=_Bounds,
        default={},
        metavar="METRIC>=VALUE",
        help="absolute floor or ceiling on the candidate's value (accuracy>=0.9, ece<=0.05; "
        'or JSON {"accuracy": {"min": 0.9}}): a value outside it fails like a regression, '
        "even for a metric not in --gate; repeatable",
    )


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"dim\": 64}'")
    return value


class _TaskRegistry(Sequence[str]):
    """Choices read from the task registry when argparse first needs them (to check a value or
    print that sub-command's help): the registry imports numpy, which `regress-action --help`
    and the commands that evaluate nothing have no use for."""

    def __init__(self, names: str) -> None:
        self._names = names

    def _values(self) -> tuple[str, ...]:
        from . import tasks

        values: tuple[str, ...] = getattr(tasks, self._names)()
        return values

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._values()[index]

    def __len__(self) -> int:
        return len(self._values())


# ---------------------------------------------------------------- parser

# Options whose flag is not their attribute name with dashes (see `flag_name`).
_FLAGS = {
    "tolerances": "--tolerance",
    "bounds": "--bound",
    "json_path": "--json-out",
    "markdown_path": "--markdown-out",
    "record": "--no-record",
    "cache": "--no-cache",
}


def flag_name(attribute: str) -> str:
    """The flag of a parsed option, to name it in an error: `tolerances` -> `--tolerance`."""
    return _FLAGS.get(attribute, "--" + attribute.replace("_", "-"))


# Line breaks inside a message (a file or run name can hold them) are shown escaped: a name
# must not start a line of its own, which a runner would read as a workflow command (`::error`).
_LINE_BREAKS = str.maketrans(
    {"\r": "\\r", "\n": "\\n", "\x85": "\\x85", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def one_line(text: object) -> str:
    """`text` as one line of the terminal, its line breaks escaped (`\\n`)."""
    return str(text).translate(_LINE_BREAKS)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming the option) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="URL",
        help="ExperimentDB: sqlite:///path, a file path, or postgresql+psycopg://... "
        "(default: $REGRESS_DB, else ./regress.db)",
    )


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="the repository's config file (default: ./.regress-action.yml when it exists); "
        "flags given here win over it",
    )


def _add_verdict_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("verdict")
    group.add_argument(
        "--threshold",
        type=_non_negative_float,
        default=0.01,
        help="absolute tolerance for every metric without its own (default 0.01)",
    )
    group.add_argument(
        "--metrics",
        type=_name_list,
        help="comma-separated metrics to report (default: the task's default set and the "
        "custom ones)",
    )
    group.add_argument(
        "--tolerance",
        dest="tolerances",
        action=_Tolerances,
        default={},
        metavar="METRIC=VALUE",
        help="per-metric tolerance: absolute (loss=0.02) or relative to |baseline| "
        "(perplexity=5%%); repeatable",
    )
    _add_bound(group)
    group.add_argument(
        "--gate",
        type=_name_list,
        help="metrics that can fail the job, or primary (the task's primary metric) or all "
        "(default: primary with --significance gate/margin, all with report/off)",
    )
    group.add_argument(
        "--metrics-module",
        metavar="MODULE",
        help="module importable from the working directory (ci.metrics for ci/metrics.py) "
        "defining `metrics(task) -> list[Metric]`: custom metrics, reported like the task's own",
    )
    group.add_argument(
        "--significance",
        choices=["gate", "margin", "report", "off"],
        default="gate",
        help="gate (default): a regression must be beyond the tolerance and significant; "
        "margin: the whole CI beyond the tolerance; report: the tolerance alone, p-values and "
        "CIs shown; off: the tolerance alone, no statistics",
    )
    group.add_argument(
        "--alpha",
        type=_probability,
        default=0.05,
        help="significance level, Bonferroni-adjusted across the gated metrics (default 0.05)",
    )
    group.add_argument(
        "--resamples",
        type=_int_between(100, 100_000),
        default=2000,
        help="bootstrap resamples (100 to 100,000; default 2000)",
    )
    group.add_argument(
        "--seed", type=_int_between(0, 2**32 - 1), default=0, help="seed of the resampling"
    )
    group.add_argument(
        "--gate-slices",
        type=_name_list,
        default=[],
        metavar="all|none|SLICE,...",
        help="slices of the eval set (its `slice` key) whose regressions fail the job: all, "
        "none (default: slices are reported, not gated) or slice names; Bonferroni-corrected "
        "over gated slices × gated metrics",
    )
    group.add_argument(
        "--min-slice-size",
        type=_int_between(1, 2**31 - 1),
        default=200,
        metavar="N",
        help="a slice with fewer examples is reported but not gated (default 200)",
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("eval set")
    group.add_argument(
        "--dataset-factory",
        metavar="MODULE:CALLABLE",
        help="a function importable from the working directory returning the eval set "
        "(a torch Dataset of (input, target)); instead of --dataset",
    )
    group.add_argument("--dataset-kwargs", type=_json_object, default={}, metavar="JSON")
    group.add_argument(
        "--slice-fn",
        metavar="MODULE:CALLABLE",
        help="a function importable from the working directory, called as fn(index, input, "
        "target) on every example, returning its slice name (instead of the data's slice key)",
    )
    group.add_argument(
        "--tokenizer",
        default="bytes",
        help="text: bytes (default, UTF-8 bytes), model (the tokenizer in the baseline's "
        "Hugging Face folder) or the path to a tokenizer.json",
    )
    group.add_argument(
        "--context-length",
        type=_int_between(2),
        metavar="N",
        help="lm: tokens per sliding window (default: the model's maximum positions, else 256)",
    )
    group.add_argument(
        "--stride",
        type=_int_between(1),
        metavar="N",
        help="lm: tokens the window moves by (default: half the context)",
    )
    group.add_argument(
        "--token-dtype",
        choices=("uint16", "uint32", "int32", "int64"),
        help="lm: dtype of the ids in a raw .bin token file",
    )
    group.add_argument(
        "--image-size", metavar="H,W", help="images: resize every image to H,W (or SIZE)"
    )
    group.add_argument(
        "--normalize",
        metavar="SPEC",
        help='images: imagenet, or {"mean": [...], "std": [...]} after scaling to [0, 1]',
    )


def _add_compare(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare two registered runs on an eval set",
        description="Evaluate a candidate and a baseline run on the same eval set (the "
        "baseline's records read from the DB when stored: see --no-cache), record the "
        "comparison and print the JSON report on stdout.",
    )
    add_compare_arguments(parser)
    parser.set_defaults(handler="compare")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """The `compare` flags (shared with scripts/run_regression_test.py)."""
    parser.add_argument("--baseline-run-id", type=_positive_int, required=True)
    parser.add_argument("--candidate-run-id", type=_positive_int, required=True)
    _add_pass_arguments(parser, "report")
    _add_verdict_options(parser)
    _add_config(parser)
    parser.add_argument(
        "--report-name",
        type=_report_name,
        default="default",
        help="names the comparison series (and its sticky PR comment)",
    )
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when a gated metric regressed or a metric is outside its --bound",
    )
    parser.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="do not record the comparison in the DB",
    )
    parser.add_argument(
        "--no-cache",
        dest="cache",
        action="store_false",
        help="evaluate the baseline even when the DB holds its records for this eval set "
        "(same checkpoint, data options, engine, device type and precision)",
    )
    parser.add_argument(
        "--records-path",
        type=Path,
        help="write every example's paired records here (.parquet, or .npz); the JSON report "
        "keeps the largest flips and loss increases",
    )


def _add_pass_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """The flags of a pass over an eval set (`compare` and `evaluate`): the eval set and how it
    is read, the device and precision, the database and the output files."""
    parser.add_argument(
        "--dataset",
        help="built-in name (lm_tiny, vision_tiny, ...) or a path (.jsonl, .npz, .npy/.bin "
        "tokens, .parquet/.arrow, a datasets folder, an image folder); or --dataset-factory",
    )
    _add_data_options(parser)
    _add_db(parser)
    parser.add_argument(
        "--json-out", dest="json_path", type=Path, help=f"write the JSON {what} here"
    )
    parser.add_argument(
        "--markdown-out", dest="markdown_path", type=Path, help=f"write the Markdown {what} here"
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="dtype of the forward passes: fp32 (default), or bf16 / fp16 under torch.autocast "
        "(fp16 on CUDA only)",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument("--max-examples", type=_positive_int)
    parser.add_argument(
        "--workers",
        type=_int_between(0),
        metavar="N",
        help="DataLoader worker processes decoding an image folder or reading a Dataset "
        "(default: min(4, CPUs - 1); 0 reads in the main process)",
    )
    parser.add_argument("--commit", help="commit sha recorded with the result")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading pickled whole-model checkpoints (runs arbitrary code: trusted only)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="hf folders: run the model code the folders ship (trusted folders only)",
    )


def _add_evaluate(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="evaluate one registered run on an eval set (no comparison)",
        description="Evaluate one registered run on an eval set, record its metrics and "
        "per-example records in the ExperimentDB (e.g. on the default branch, for later "
        "comparisons) and print the JSON evaluation on stdout. Runs under torchrun like compare.",
    )
    parser.add_argument("--run-id", type=_positive_int, required=True)
    _add_pass_arguments(parser, "evaluation")
    parser.add_argument(
        "--metrics",
        type=_name_list,
        help="comma-separated metrics (default: the task's default set and the custom ones)",
    )
    parser.add_argument(
        "--metrics-module",
        metavar="MODULE",
        help="module importable from the working directory defining `metrics(task) -> "
        "list[Metric]`: custom metrics",
    )
    _add_bound(parser)
    parser.add_argument(
        "--fail-on-violation",
        action="store_true",
        help="exit 1 when a metric is outside its --bound (or not finite)",
    )
    parser.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="do not record the evaluation in the DB",
    )
    _add_config(parser)
    parser.set_defaults(handler="evaluate")


def _add_runs(sub: Subparsers) -> None:
    runs = sub.add_parser("runs", help="register and list model runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, metavar="{add,list}")
    add = runs_sub.add_parser("add", help="register a checkpoint; prints the new run id")
    add.add_argument(
        "checkpoint", help="a .safetensors, .pt (state dict), .pt2 or TorchScript file"
    )
    # An explicit metavar: argparse would otherwise read the choices to build one.
    add.add_argument(
        "--task",
        choices=_TaskRegistry("task_names"),
        required=True,
        metavar="TASK",
        help="%(choices)s",
    )
    add.add_argument(
        "--modality",
        choices=_TaskRegistry("modality_names"),
        metavar="MODALITY",
        help="%(choices)s (default: the task's first)",
    )
    add.add_argument("--num-classes", type=_positive_int)
    add.add_argument("--vocab-size", type=_positive_int)
    add.add_argument("--name", help="run name (default: the file name)")
    add.add_argument("--factory", help='"package.module:callable" building the model')
    add.add_argument("--factory-kwargs", type=_json_object, default={}, metavar="JSON")
    add.add_argument("--format", choices=REGISTRY.names())
    add.add_argument("--git-sha")
    add.add_argument("--allow-pickle", action="store_true")
    add.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="hf folders: run the model code the folder ships (trusted folders only)",
    )
    _add_db(add)
    add.set_defaults(handler="runs_add")
    listing = runs_sub.add_parser("list", help="list registered runs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    _add_db(listing)
    listing.set_defaults(handler="runs_list")


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
    listing.set_defaults(handler="comparisons_list")
    show = comp_sub.add_parser("show", help="print one comparison's report")
    show.add_argument("id", type=_positive_int)
    show.add_argument("--format", choices=["json", "markdown"], default="json")
    _add_db(show)
    show.set_defaults(handler="comparisons_show")


def _add_demo(sub: Subparsers) -> None:
    demo = sub.add_parser(
        "demo",
        help="train tiny models on the built-in data, compare them and print the reports",
    )
    demo.add_argument(
        "--workdir", type=Path, default=Path("regress-demo"), help="checkpoints and reports"
    )
    _add_db(demo)
    demo.set_defaults(handler="demo")


def _add_action(sub: Subparsers) -> None:
    action = sub.add_parser(
        "action",
        help="the GitHub Action entrypoint (reads INPUT_* and GITHUB_* from the environment)",
    )
    action.set_defaults(handler="action")
    publish = sub.add_parser(
        "publish",
        help="post or update the PR comment from an existing JSON report (fork-safe workflows)",
    )
    publish.add_argument("--report", type=Path, required=True, help="the JSON report artifact")
    publish.add_argument(
        "--report-name",
        type=_report_name,
        default="default",
        help="the sticky comment's name, as the job that wrote the report was given it "
        "(default: default); the report's own name is not used",
    )
    _add_verdict_options(publish)
    publish.add_argument("--comment", choices=["update", "create", "off"], default="update")
    publish.add_argument(
        "--fail-on-regression",
        type=_boolean,
        default=True,
        metavar="BOOL",
        help="exit 1 when the report regressed (default true)",
    )
    publish.add_argument("--pr-number", type=_positive_int, help="default: from the event")
    publish.add_argument(
        "--comment-on",
        choices=["always", "change", "regression"],
        default="always",
        help="when to write the comment: always (default), change (the verdict or values "
        "changed since the sticky comment) or regression (only when something regressed)",
    )
    publish.add_argument(
        "--hide-previous",
        type=_boolean,
        default=False,
        metavar="BOOL",
        help="with --comment create, minimize this report's older comments as outdated",
    )
    publish.add_argument(
        "--on-clean",
        choices=["keep", "delete", "collapse"],
        default="keep",
        help="what a clean run does to an existing sticky comment (default keep)",
    )
    publish.add_argument(
        "--artifact-name", help="the report artifact's name, noted in the comment's footer"
    )
    publish.add_argument(
        "--commit-comment",
        type=_boolean,
        default=False,
        metavar="BOOL",
        help="on a push event, comment the report on the pushed commit (default false)",
    )
    _add_config(publish)
    publish.set_defaults(handler="publish")


def _add_config_commands(sub: Subparsers) -> None:
    config = sub.add_parser("config", help="check the repository's config file")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="{check}")
    check = config_sub.add_parser(
        "check",
        help="validate .regress-action.yml and print the effective configuration",
        description="Validate the config file and print, as JSON, the configuration `compare` "
        "would use: the file's values over the defaults, under the flags given here.",
    )
    _add_config(check)
    check.add_argument("--dataset")
    _add_data_options(check)
    _add_verdict_options(check)
    check.add_argument("--report-name", type=_report_name, default="default")
    check.add_argument("--device", default="auto")
    check.add_argument("--precision", choices=PRECISIONS, default="fp32")
    check.add_argument("--batch-size", type=_positive_int, default=64)
    check.add_argument("--max-examples", type=_positive_int)
    check.add_argument("--workers", type=_int_between(0), metavar="N")
    check.add_argument("--fail-on-regression", action="store_true")
    check.set_defaults(handler="config_check")


def explicit_options(argv: Sequence[str] | None) -> set[str]:
    """The options `argv` gives explicitly (their attribute names), so that a config file
    fills only the others: argparse's defaults are not "given". The command line is parsed
    again with every default suppressed; the repeatable per-metric options (our own Action
    classes, which add to their default) count as given when they gathered an entry."""
    parser = build_parser()
    gathering: set[str] = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif type(action).__module__ == __name__:
                gathering.add(action.dest)
            elif action.dest not in ("help", "version"):
                action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    return {dest for dest, value in given.items() if dest not in gathering or value}


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
    _add_evaluate(sub)
    _add_runs(sub)
    _add_comparisons(sub)
    _add_demo(sub)
    _add_action(sub)
    _add_config_commands(sub)
    return parser
