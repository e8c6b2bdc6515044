"""`regress-action demo`: tiny models trained on the built-in data, compared and reported.

Torch layer (it trains models); reaches the ExperimentDB only through the `db` it is given
and `app`. For each built-in dataset it trains a baseline, an improved and a regressed
candidate (deterministic, seconds on 2 CPU cores), registers them (re-using identical runs
from an earlier demo, so `lm_tiny`'s baseline and improved candidate stay runs 1 and 2 of a
fresh database), compares baseline → improved and baseline → regressed, records the results,
writes JSON + Markdown, and prints a table per comparison.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from torch import nn

from .app import CheckpointRequest, CompareRequest, register_checkpoint, run_compare
from .errors import ConfigError
from .models import save_checkpoint
from .report import Report
from .spec import RunRecord, TaskSpec, VerdictConfig
from .tasks import builtin_datasets
from .train import VARIANTS, Variant, train_tiny_cnn, train_tiny_lm

if TYPE_CHECKING:
    from .store import ExperimentDB


T = TypeVar("T")


@dataclass(frozen=True)
class Suite:
    dataset: str
    factory: str
    train: Callable[[Variant], nn.Module]


SUITES = (
    Suite("lm_tiny", "regress_action.zoo:tiny_lm", train_tiny_lm),
    Suite("vision_tiny", "regress_action.zoo:tiny_cnn", train_tiny_cnn),
)


# The demo gates on significance too: a change within chance on these small eval sets (such as
# the improved CNN's slightly worse calibration) is reported but does not fail the comparison.
DEMO_VERDICT = VerdictConfig(significance="gate")


def _quietly(function: Callable[..., T], *args: object) -> T:
    """Run without the per-metric warnings: the demo prints each table itself."""
    logger = logging.getLogger("regress_action")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return function(*args)
    finally:
        logger.setLevel(level)


def _register(db: ExperimentDB, path: Path, name: str, suite: Suite, task: TaskSpec) -> RunRecord:
    """Identical checkpoints re-use their run (deterministic training gives identical files)."""
    request = CheckpointRequest(checkpoint=str(path), task=task, name=name, factory=suite.factory)
    return register_checkpoint(db, request)


def text_table(report: Report) -> str:
    """A plain-text delta table for the terminal."""
    lines = [
        f"{report.report_name}: {report.status.upper()}  "
        f"(run {report.baseline.run_id} → run {report.candidate.run_id}, "
        f"{report.dataset.name}, n={report.dataset.n})",
        f"  {'metric':<16}{'':2}{'baseline':>12}{'candidate':>12}{'delta':>12}  status",
    ]
    for m in report.metrics.values():
        arrow = "↑" if m.higher_is_better else "↓"
        base = "—" if m.baseline is None else f"{m.baseline:.4g}"
        cand = "—" if m.candidate is None else f"{m.candidate:.4g}"
        delta = "—" if m.delta is None else f"{m.delta:+.4g}"
        p = "" if m.p_adjusted is None else f"  (p_adj={m.p_adjusted:.2g})"
        lines.append(f"  {m.name:<16}{arrow:2}{base:>12}{cand:>12}{delta:>12}  {m.status}{p}")
    return "\n".join(lines)


def make_workdir(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create --workdir {str(workdir)!r}: {exc.strerror}; choose a writable folder"
        ) from None


@contextmanager
def demo_workdir(workdir: Path) -> Iterator[None]:
    """The demo's folder, made when missing. When the demo fails, a folder it made is removed
    again with everything written into it; one that was there before is kept."""
    made = _first_missing(workdir)
    make_workdir(workdir)
    try:
        yield
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: it exists)."""
    missing = None
    for folder in [path.absolute(), *path.absolute().parents]:
        if folder.exists() or folder.is_symlink():
            break
        missing = folder
    return missing


def run_demo(
    db: ExperimentDB, workdir: Path, db_arg: str | None = None, out: TextIO = sys.stdout
) -> int:
    """Train, register, compare and print; `db_arg` is the --db the user gave, if any."""
    make_workdir(workdir)
    lm_runs: dict[str, RunRecord] = {}
    for suite in SUITES:
        task = TaskSpec.model_validate(builtin_datasets()[suite.dataset].spec)
        runs: dict[str, RunRecord] = {}
        for variant in VARIANTS:
            print(f"training {suite.dataset} {variant} …", file=sys.stderr)
            path = (workdir / f"{suite.dataset}-{variant}.safetensors").resolve()
            save_checkpoint(suite.train(variant), path, "safetensors")
            runs[variant] = _register(db, path, f"{suite.dataset}-{variant}", suite, task)
        lm_runs = lm_runs or runs
        for candidate in ("improved", "regressed"):
            stem = workdir / f"{suite.dataset}-{candidate}"
            request = CompareRequest(
                baseline_run_id=runs["baseline"].id,
                candidate_run_id=runs[candidate].id,
                dataset=suite.dataset,
                report_name=f"{suite.dataset}-{candidate}",
                json_path=stem.with_suffix(".json"),
                markdown_path=stem.with_suffix(".md"),
                device="cpu",
                verdict=DEMO_VERDICT,
            )
            outcome = _quietly(run_compare, request, db)
            print(text_table(outcome.report), file=out)
            print(f"  report: {request.json_path}  {request.markdown_path}\n", file=out)
    db_flag = f" --db {shlex.quote(db_arg)}" if db_arg else ""
    print(
        "Statuses above use --significance gate: a change must be beyond the threshold and "
        "statistically significant (Bonferroni-adjusted p < 0.05).",
        file=out,
    )
    print(
        f"ExperimentDB: {db.url_display}\nTry: python scripts/run_regression_test.py "
        f"--baseline-run-id {lm_runs['baseline'].id} --candidate-run-id "
        f"{lm_runs['improved'].id} --dataset lm_tiny{db_flag}",
        file=out,
    )
    return 0
