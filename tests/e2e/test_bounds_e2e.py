"""Floors and ceilings end to end: `compare` and `evaluate` with a violated floor (exit code,
JSON, the ExperimentDB's rows), the Action's `metric-bounds` input, and `publish` deriving a
bound's status from the report's numbers under its own `--bound`, never from the report."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from regress_action.models import save_checkpoint
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_lm
from tests.e2e.test_action_e2e import Runner, bodies, new_runner
from tests.e2e.test_cli import Workspace, compare_args
from tests.gh_server import BOT_TOKEN, FakeGitHub
from tests.report_factory import make_report

# An untrained tiny LM predicts ~1/256 of the tokens: far below this floor.
FLOOR = "token_accuracy>=0.9"
FAST = ("--max-examples", "16", "--device", "cpu")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("bounds")
    workspace = Workspace(root, f"sqlite:///{root / 'regress.db'}", {})
    for seed, name in ((0, "lm_a"), (1, "lm_b")):
        torch.manual_seed(seed)
        save_checkpoint(tiny_lm(), root / f"{name}.safetensors", "safetensors")
        out = workspace.run(
            "runs", "add", str(root / f"{name}.safetensors"), "--task", "lm",
            "--factory", "regress_action.zoo:tiny_lm", check=True,
        )  # fmt: skip
        workspace.runs[name] = int(out.stdout.strip())
    yield workspace


def _metric_row(db: Path, comparison_id: int, name: str) -> tuple[str, int]:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT status, gated FROM comparison_metrics WHERE comparison_id = ? AND name = ?",
            (comparison_id, name),
        ).fetchone()
    return row[0], row[1]


def test_compare_with_a_violated_floor_fails_and_records_it(ws: Workspace) -> None:
    # The same model on both sides: no change at all, only the floor can fail it.
    args = [*compare_args(1, 1, "lm_tiny"), *FAST, "--significance", "off", "--gate", "loss"]
    result = ws.run(*args, "--bound", FLOOR, "--fail-on-regression")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "regressed" and report["regressed_metrics"] == ["token_accuracy"]
    metric = report["metrics"]["token_accuracy"]
    assert metric["status"] == "failed_bound" and metric["bound"] == {"min": 0.9, "max": None}
    assert metric["delta"] == 0 and not metric["gated"]
    assert "< floor 0.9" in metric["reason"]
    assert "token_accuracy is outside its bound" in result.stderr  # the warning
    status, gated = _metric_row(ws.root / "regress.db", report["comparison_id"], "token_accuracy")
    assert (status, gated) == ("failed_bound", 0)
    with ExperimentDB(ws.db) as db:
        stored = db.get_comparison(report["comparison_id"])
    assert stored.status == "regressed"
    assert stored.metrics[2].name == "token_accuracy" and stored.metrics[2].bound is not None
    # Without --fail-on-regression the verdict is the same, the exit code 0.
    unasked = ws.run(*args, "--bound", FLOOR, "--no-record")
    assert unasked.returncode == 0 and json.loads(unasked.stdout)["status"] == "regressed"
    # A floor the model meets leaves the neutral verdict alone.
    met = ws.run(*args, "--bound", "token_accuracy>=0", "--no-record", "--fail-on-regression")
    assert met.returncode == 0 and json.loads(met.stdout)["status"] == "neutral"


def test_compare_markdown_names_the_bound_in_the_main_table(ws: Workspace) -> None:
    md = ws.root / "bound.md"
    args = [*compare_args(1, 2, "lm_tiny"), *FAST, "--significance", "off", "--no-record"]
    result = ws.run(*args, "--bound", FLOOR, "--markdown-out", str(md))
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in md.read_text().splitlines() if line.startswith("| token")]
    assert "⛔ failed_bound" in row and "&lt; floor 0.9 |" in row


def test_a_bad_bound_exits_2_with_one_line_and_runs_nothing(ws: Workspace) -> None:
    before = ws.comparisons()
    for bound, needle in [
        ("acuracy>=0.9", "acuracy"),
        ("token_accuracy>=0.9,token_accuracy<=0.1", "floor 0.9 is above ceiling 0.1"),
        ("token_accuracy>=nan", "not a finite number"),
    ]:
        result = ws.run(*compare_args(1, 2, "lm_tiny"), *FAST, "--bound", bound)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert needle in line and "Traceback" not in line
    assert ws.comparisons() == before


def test_evaluate_with_a_violated_floor_exits_1_when_asked(ws: Workspace) -> None:
    args = ["evaluate", "--run-id", "1", "--dataset", "lm_tiny", *FAST, "--bound", FLOOR]
    result = ws.run(*args, "--bound", "loss<=100", "--fail-on-violation")
    assert result.returncode == 1, result.stderr
    evaluation = json.loads(result.stdout)
    assert evaluation["status"] == "failed" and evaluation["failed_metrics"] == ["token_accuracy"]
    assert evaluation["metrics"]["token_accuracy"]["status"] == "failed_bound"
    assert evaluation["metrics"]["token_accuracy"]["bound"] == {"min": 0.9, "max": None}
    assert evaluation["metrics"]["loss"]["status"] == "passed"
    assert evaluation["metrics"]["perplexity"]["status"] is None
    with ExperimentDB(ws.db) as db:
        stored = db.get_evaluation(evaluation["evaluation_id"])
    assert stored.status == "failed" and stored.metrics["token_accuracy"].status == "failed_bound"
    unasked = ws.run(*args, "--no-record")
    assert unasked.returncode == 0 and json.loads(unasked.stdout)["status"] == "failed"
    plain = ws.run("evaluate", "--run-id", "1", "--dataset", "lm_tiny", *FAST, "--no-record")
    assert plain.returncode == 0 and json.loads(plain.stdout)["status"] is None
    unknown = ws.run(*args[:-2], "--bound", "accuracy>=0.5", "--no-record")
    assert unknown.returncode == 2 and "accuracy" in unknown.stderr


# ---------------------------------------------------------------- the Action and publish


@pytest.fixture
def runner(gh_server: FakeGitHub, tmp_path: Path) -> Runner:
    return new_runner(gh_server, tmp_path)


def test_the_action_input_fails_the_job_on_a_violated_floor(runner: Runner, ws: Workspace) -> None:
    inputs = {
        "baseline-run-id": "1",
        "candidate-run-id": "1",
        "dataset": "lm_tiny",
        "db-url": ws.db,
        "github-token": BOT_TOKEN,
        "device": "cpu",
        "max-examples": "16",
        "significance": "off",
        "gate": "loss",
        "metric-bounds": f"{FLOOR}\nloss<=100\n",
    }
    result = runner.run("action", inputs=inputs)
    assert result.rc == 1, result.stdout + result.stderr
    assert result.outputs["status"] == "regressed"
    assert result.outputs["regressed-metrics"] == "token_accuracy"
    (error,) = result.lines("::error")
    assert "token_accuracy outside its bound" in error  # the title
    assert "token_accuracy is outside its bound: " in error and "< floor 0.9" in error
    (body,) = bodies(runner.server)
    assert "⛔ failed_bound" in body and "floor 0.9" in body
    bad = runner.run("action", inputs={**inputs, "metric-bounds": "token_accuracy>=x"})
    assert bad.rc == 2
    (line,) = bad.lines("::error")
    assert "input metric-bounds" in line and "'x' is not a number" in line


def test_publish_derives_bound_statuses_from_the_numbers(runner: Runner) -> None:
    report = make_report("lm")  # token_accuracy 0.4012 → 0.40121, loss and perplexity improved
    forged = dict(report.metrics)
    forged["loss"] = forged["loss"].model_copy(update={"status": "failed_bound"})
    report = report.model_copy(update={"metrics": forged, "status": "improved"})
    own = runner.publish(report, "--bound", "token_accuracy>=0.5")
    assert own.rc == 1, own.stdout + own.stderr
    assert own.outputs["status"] == "regressed"
    assert own.outputs["regressed-metrics"] == "token_accuracy"  # not the forged loss
    relabelled = dict(report.metrics)
    relabelled["token_accuracy"] = relabelled["token_accuracy"].model_copy(
        update={"status": "neutral", "bound": None}
    )
    again = runner.publish(
        report.model_copy(update={"metrics": relabelled}), "--bound", "token_accuracy>=0.5"
    )
    assert again.rc == 1 and again.outputs["regressed-metrics"] == "token_accuracy"
    # Without a bound of this job, the report's own claim decides nothing.
    loose = runner.publish(report)
    assert loose.rc == 0 and loose.outputs["regressed-metrics"] == ""
