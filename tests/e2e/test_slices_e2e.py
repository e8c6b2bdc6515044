"""Slices end to end: `compare` on an `.npz` with a slice key, where the candidate
breaks one slice only (diluted below the tolerance over the whole set): reported but passing by
default, failing with `--gate-slices`; the JSON, the Markdown and the database rows; the
Action's `gate-slices` input; and `publish` re-deriving a relabelled slice's verdict."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from regress_action.models import save_checkpoint
from regress_action.report import Report
from tests.e2e.test_action_e2e import Runner, bodies, new_runner
from tests.e2e.test_cli import Workspace, compare_args
from tests.gh_server import BOT_TOKEN, FakeGitHub

PER_SLICE = 400
# The whole set loses about 7.5 points, slice b about 15: only the slice is beyond 0.1.
LOOSE = ("--threshold", "0.1", "--device", "cpu", "--no-cache")


def _model(trap: float) -> nn.Module:
    """Class 1 when pixel 0 is positive; with `trap`, pixel 1 (set only in slice b) pushes it
    to class 0."""
    linear = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[-1.0, trap, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    return nn.Sequential(nn.Flatten(), linear).eval()


def _data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 2 * PER_SLICE
    images = np.zeros((n, 1, 2, 2), dtype=np.float32)
    images[:, 0, 0, 0] = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.0, n)
    slices = np.repeat(np.array(["a", "b"]), PER_SLICE)
    trapped = (slices == "b") & (rng.random(n) < 0.3)
    images[trapped, 0, 0, 1] = 1.0
    labels = (images[:, 0, 0, 0] > 0).astype(np.int64)
    path = root / "eval.npz"
    np.savez(path, images=images, labels=labels, slices=slices)
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("slices")
    workspace = Workspace(root, f"sqlite:///{root / 'regress.db'}", {})
    for name, trap in (("base", 0.0), ("cand", 10.0)):
        path = root / f"{name}.pt2"
        save_checkpoint(_model(trap), path, "export", torch.zeros(2, 1, 2, 2))
        out = workspace.run(
            "runs", "add", str(path), "--format", "export",
            "--task", "classification", "--num-classes", "2", check=True,
        )  # fmt: skip
        workspace.runs[name] = int(out.stdout.strip())
    _data(root)
    yield workspace


def _args(ws: Workspace) -> list[str]:
    return [*compare_args(ws.runs["base"], ws.runs["cand"], "eval.npz"), *LOOSE]


def test_a_regression_in_one_slice_is_reported_and_fails_only_when_gated(ws: Workspace) -> None:
    reported = ws.run(*_args(ws), "--fail-on-regression", "--no-record")
    assert reported.returncode == 0, reported.stderr
    report = json.loads(reported.stdout)
    assert report["status"] == "neutral" and report["metrics"]["accuracy"]["status"] == "neutral"
    slices = {item["name"]: item for item in report["slices"]}
    assert set(slices) == {"a", "b"} and slices["b"]["n"] == PER_SLICE
    assert slices["b"]["metrics"]["accuracy"]["status"] == "regressed"
    assert not slices["b"]["gated"] and slices["b"]["why_not"] == "not selected by gate-slices"

    md = ws.root / "gated.md"
    gated = ws.run(
        *_args(ws), "--gate-slices", "all", "--fail-on-regression", "--markdown-out", str(md)
    )
    assert gated.returncode == 1, gated.stderr
    report = json.loads(gated.stdout)
    assert report["status"] == "regressed" and report["regressed_metrics"] == ["accuracy[b]"]
    b = next(item for item in report["slices"] if item["name"] == "b")
    assert b["gated"] and b["family_size"] == 2
    text = md.read_text()
    assert "**Worst slices**" in text and "| b | 400 | accuracy |" in text
    with sqlite3.connect(ws.root / "regress.db") as conn:
        rows = conn.execute(
            "SELECT slice, name, status, slice_gated FROM comparison_slice_metrics "
            "WHERE comparison_id = ? ORDER BY slice_position, position",
            (report["comparison_id"],),
        ).fetchall()
    assert ("b", "accuracy", "regressed", 1) in rows
    assert {row[0] for row in rows} == {"a", "b"} and len(rows) == 2 * len(b["metrics"])
    shown = ws.run("comparisons", "show", str(report["comparison_id"]))
    assert shown.returncode == 0, shown.stderr


def test_min_slice_size_and_named_slices(ws: Workspace) -> None:
    small = ws.run(*_args(ws), "--gate-slices", "b", "--min-slice-size", "401", "--no-record")
    assert small.returncode == 0 and json.loads(small.stdout)["status"] == "neutral"
    only_a = ws.run(*_args(ws), "--gate-slices", "a", "--fail-on-regression", "--no-record")
    assert only_a.returncode == 0, only_a.stderr
    unknown = ws.run(*_args(ws), "--gate-slices", "c", "--no-record")
    assert unknown.returncode == 2
    (line,) = unknown.stderr.strip().splitlines()  # before the models ran: no other log
    assert "gate-slices" in line and "'c'" in line and "a, b" in line


# ---------------------------------------------------------------- the Action and publish


@pytest.fixture
def runner(gh_server: FakeGitHub, tmp_path: Path) -> Runner:
    return new_runner(gh_server, tmp_path)


def test_the_action_s_gate_slices_input_fails_the_job(runner: Runner, ws: Workspace) -> None:
    (runner.workspace / "eval.npz").write_bytes((ws.root / "eval.npz").read_bytes())
    inputs = {
        "baseline-run-id": str(ws.runs["base"]),
        "candidate-run-id": str(ws.runs["cand"]),
        "dataset": "eval.npz",
        "db-url": ws.db,
        "github-token": BOT_TOKEN,
        "device": "cpu",
        "threshold": "0.1",
        "cache": "false",
    }
    passed = runner.run("action", inputs=inputs)
    assert passed.rc == 0, passed.stdout + passed.stderr
    assert passed.outputs["status"] == "neutral"
    result = runner.run("action", inputs={**inputs, "gate-slices": "all"})
    assert result.rc == 1, result.stdout + result.stderr
    assert result.outputs["status"] == "regressed"
    assert result.outputs["regressed-metrics"] == "accuracy[b]"
    (error,) = result.lines("::error")
    assert "accuracy[b] regressed" in error  # the title
    assert "slice b: accuracy regressed beyond the tolerance 0.1" in error
    body = bodies(runner.server)[-1]
    assert "**Worst slices**" in body and "Gated slices failed: accuracy\\[b\\]" in body


def test_publish_rederives_a_relabelled_slice(runner: Runner, ws: Workspace) -> None:
    result = ws.run(*_args(ws), "--gate-slices", "all", "--no-record")
    report = Report.model_validate_json(result.stdout)
    forged = report.model_copy(deep=True)
    forged.status, forged.regressed_metrics = "neutral", []
    for item in forged.slices:
        item.status, item.gated = "neutral", False
        for metric in item.metrics.values():
            metric.status, metric.gated = "neutral", False
    own = runner.publish(forged, "--threshold", "0.1", "--gate-slices", "all")
    assert own.rc == 1, own.stdout + own.stderr
    assert own.outputs["regressed-metrics"] == "accuracy[b]"
    loose = runner.publish(forged, "--threshold", "0.1")  # this job gates no slice
    assert loose.rc == 0 and loose.outputs["status"] == "neutral"
