"""`--slice-fn` end to end: the same `.npz` as tests/e2e/test_slices_e2e.py without its slice
key, sliced instead by a function in the workspace; the one-slice regression is found and gated
as with the data's key, through the CLI and the Action's `slice-fn` input, and the data's key
together with the function is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_action_e2e import Runner, new_runner
from tests.e2e.test_cli import Workspace, compare_args
from tests.e2e.test_slices_e2e import LOOSE, PER_SLICE, ws  # noqa: F401 (a fixture)
from tests.gh_server import BOT_TOKEN, FakeGitHub

SLICING = f"""
def by_half(index, input, target):
    return "a" if index < {PER_SLICE} else "b"


def by_label(index, input, target):
    return int(target)


def broken(index, input, target):
    if index == 7:
        raise KeyError("no weather for this one")
    return "a"
"""


def _plain(root: Path) -> None:
    """eval.npz without its slices, and the slicing module, in `root`."""
    with np.load(root / "eval.npz") as data:
        np.savez(root / "plain.npz", images=data["images"], labels=data["labels"])
    (root / "slicing_fns.py").write_text(SLICING)


def _args(ws: Workspace, dataset: str = "plain.npz") -> list[str]:  # noqa: F811
    return [*compare_args(ws.runs["base"], ws.runs["cand"], dataset), *LOOSE, "--no-record"]


def test_a_slice_function_slices_the_eval_set(ws: Workspace) -> None:  # noqa: F811
    _plain(ws.root)
    plain = ws.run(*_args(ws), "--fail-on-regression")
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["slices"] == []
    gated = ws.run(*_args(ws), "--slice-fn", "slicing_fns:by_half", "--gate-slices", "all",
                   "--fail-on-regression")  # fmt: skip
    assert gated.returncode == 1, gated.stderr
    report = json.loads(gated.stdout)
    assert report["regressed_metrics"] == ["accuracy[b]"]
    assert {item["name"]: item["n"] for item in report["slices"]} == {"a": 400, "b": 400}
    labels = ws.run(*_args(ws), "--slice-fn", "slicing_fns:by_label")
    assert labels.returncode == 0, labels.stderr
    assert {item["name"] for item in json.loads(labels.stdout)["slices"]} == {"0", "1"}


def test_slice_function_errors_are_one_line(ws: Workspace) -> None:  # noqa: F811
    _plain(ws.root)
    cases = {
        ("plain.npz", "slicing_fns:broken"): ["--slice-fn", "example 7", "KeyError", "weather"],
        ("plain.npz", "slicing_fns:nowhere"): ["--slice-fn", "nowhere"],
        ("plain.npz", "no_such_module:fn"): ["--slice-fn", "no_such_module"],
        ("eval.npz", "slicing_fns:by_half"): ["--slice-fn", "slice key", "eval.npz"],
    }
    for (dataset, fn), words in cases.items():
        result = ws.run(*_args(ws, dataset), "--slice-fn", fn)
        assert result.returncode == 2, (fn, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert all(word in line for word in words), line


@pytest.fixture
def runner(gh_server: FakeGitHub, tmp_path: Path) -> Runner:
    return new_runner(gh_server, tmp_path)


def test_the_action_s_slice_fn_input(runner: Runner, ws: Workspace) -> None:  # noqa: F811
    (runner.workspace / "eval.npz").write_bytes((ws.root / "eval.npz").read_bytes())
    _plain(runner.workspace)
    inputs = {
        "baseline-run-id": str(ws.runs["base"]),
        "candidate-run-id": str(ws.runs["cand"]),
        "dataset": "plain.npz",
        "db-url": ws.db,
        "github-token": BOT_TOKEN,
        "device": "cpu",
        "threshold": "0.1",
        "cache": "false",
        "slice-fn": "slicing_fns:by_half",
        "gate-slices": "all",
    }
    result = runner.run("action", inputs=inputs)
    assert result.rc == 1, result.stdout + result.stderr
    assert result.outputs["regressed-metrics"] == "accuracy[b]"
