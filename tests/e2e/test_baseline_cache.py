"""The baseline's cached records in `regress-action compare`: a comparison stores each side's
evaluation, the next comparison against the same baseline (same cache key) evaluates only the
candidate and builds the same report from the stored records; a changed key element, or
`--no-cache`, evaluates the baseline again; a failed or unrecorded comparison stores nothing."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from regress_action.models import save_checkpoint
from regress_action.records import records_from_npz, records_to_npz
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_cnn, tiny_lm
from tests.cli_runner import run_cli

TORCHRUN = Path(sys.executable).with_name("torchrun")
# A baseline whose forward fails when the test says so: the comparison fails after the
# candidate's pass, before anything is recorded.
FAILING_FACTORY = """
import os
from regress_action.zoo import tiny_cnn

class Failing(type(tiny_cnn())):
    def forward(self, x):
        if os.environ.get("REGRESS_TEST_FAIL_FORWARD"):
            raise RuntimeError("this model fails on purpose")
        return super().forward(x)

def build(**kwargs):
    model = tiny_cnn(**kwargs)
    model.__class__ = Failing
    return model
"""
# Metadata that differs between two comparisons of the same records.
VOLATILE = {"created_at", "duration_s", "comparison_id", "baseline_source", "trend"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs 1, 2, 3: CNNs; 4, 5: LMs; 6: a CNN whose forward can be made to fail. An image
    folder `images/` (ten classes) and a text file `docs.jsonl`."""
    from regress_action.cli import main

    root = tmp_path_factory.mktemp("cache")
    (root / "failing.py").write_text(FAILING_FACTORY)
    db = f"sqlite:///{root / 'regress.db'}"
    specs = [("cnn_a", "cnn"), ("cnn_b", "cnn"), ("cnn_c", "cnn"), ("lm_a", "lm"), ("lm_b", "lm")]
    for seed, (name, kind) in enumerate(specs):
        torch.manual_seed(seed)
        model = tiny_cnn() if kind == "cnn" else tiny_lm()
        shape = (2, 3, 16, 16) if kind == "cnn" else (2, 8)
        example = torch.zeros(shape, dtype=torch.float32 if kind == "cnn" else torch.int64)
        path = root / f"{name}.pt2"
        save_checkpoint(model, path, "export", example)
        task = ["classification", "--num-classes", "10"] if kind == "cnn" else ["lm"]
        assert main(["runs", "add", str(path), "--task", *task, "--db", db]) == 0
    torch.manual_seed(9)
    save_checkpoint(tiny_cnn(), root / "failing.safetensors", "safetensors")
    flags = ["--factory", "failing:build", "--task", "classification", "--num-classes", "10"]
    cwd = Path.cwd()
    os.chdir(root)  # the factory is imported from the workspace
    try:
        assert main(["runs", "add", "failing.safetensors", *flags, "--db", db]) == 0
    finally:
        os.chdir(cwd)
    rng = np.random.default_rng(0)
    for label in range(10):
        for i in range(4):
            folder = root / "images" / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    text = " ".join(f"The {i}th sentence of a long document about rivers." for i in range(200))
    lines = [json.dumps({"text": text[: 500 + 41 * i]}) for i in range(8)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _compare(
    root: Path, monkeypatch: pytest.MonkeyPatch, runs: tuple[int, int], *args: str
) -> dict[str, Any]:
    code, stdout, stderr = _cli(root, monkeypatch, runs, *args)
    assert code in (0, 1), stderr
    report: dict[str, Any] = json.loads(stdout)
    return report


def _cli(
    root: Path, monkeypatch: pytest.MonkeyPatch, runs: tuple[int, int], *args: str
) -> tuple[int, str, str]:
    argv = [
        "compare", "--baseline-run-id", str(runs[0]), "--candidate-run-id", str(runs[1]),
        *args, "--db", f"sqlite:///{root / 'regress.db'}",
    ]  # fmt: skip
    return run_cli(argv, root, monkeypatch)


def _counts(root: Path) -> tuple[int, int]:
    """(evaluations, comparisons) recorded."""
    with sqlite3.connect(root / "regress.db") as conn:
        evaluations = conn.execute("SELECT count(*) FROM evaluations").fetchone()[0]
        comparisons = conn.execute("SELECT count(*) FROM comparisons").fetchone()[0]
    return int(evaluations), int(comparisons)


def _stable(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key not in VOLATILE}


@pytest.mark.parametrize(
    ("dataset", "flags"),
    [("vision_tiny", ("--max-examples", "300")), ("images", ())],
    ids=["builtin", "image-folder"],
)
def test_the_second_comparison_reads_the_baseline_from_the_db_and_reports_the_same(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, flags: tuple[str, ...]
) -> None:
    args = ("--dataset", dataset, *flags, "--seed", "3")
    before = _counts(workspace)
    cold = _compare(workspace, monkeypatch, (1, 2), *args)
    assert cold["baseline_source"] is None
    # Both sides' evaluations recorded with the comparison, in its transaction.
    assert _counts(workspace) == (before[0] + 2, before[1] + 1)
    with ExperimentDB(workspace / "regress.db") as db:
        (stored,) = db.list_evaluations(run_id=1, limit=1)
    assert stored.records_stored and stored.dataset == _dataset(cold)
    assert stored.metrics["accuracy"].value == cold["metrics"]["accuracy"]["baseline"]

    markdown = workspace / f"cached-{dataset}.md"
    cached = _compare(workspace, monkeypatch, (1, 2), *args, "--markdown-out", str(markdown))
    source = cached["baseline_source"]
    assert source is not None and source["evaluation_id"] == stored.evaluation_id
    assert source["device"] == "cpu" and source["precision"] == "fp32"
    day = stored.created_at.strftime("%Y-%m-%d")
    line = f"from evaluation #{stored.evaluation_id} ({day}, `cpu`, `fp32`)"
    assert line in markdown.read_text()
    # Nothing evaluated twice is stored twice: both keys already have their records.
    assert _counts(workspace) == (before[0] + 2, before[1] + 2)
    fresh = _compare(workspace, monkeypatch, (1, 2), *args, "--no-cache", "--no-record")
    assert fresh["baseline_source"] is None
    assert _stable(cached) == _stable(fresh) == _stable(cold)


def _dataset(report: dict[str, Any]) -> Any:
    from regress_action.report import DatasetInfo

    return DatasetInfo.model_validate(report["dataset"])


def test_the_baseline_is_not_evaluated_when_its_records_are_stored(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored records are what the report reads: rewritten in the database (every
    baseline prediction wrong), they make the baseline's accuracy 0, which no pass of the
    baseline model would give."""
    args = ("--dataset", "vision_tiny", "--max-examples", "200", "--significance", "off")
    cold = _compare(workspace, monkeypatch, (1, 3), *args)
    assert cold["metrics"]["accuracy"]["baseline"] > 0
    with ExperimentDB(workspace / "regress.db") as db:
        (stored,) = db.list_evaluations(run_id=1, limit=1)
        assert stored.evaluation_id is not None
        blob = db.evaluation_records(stored.evaluation_id)
    assert blob is not None
    records = records_from_npz(blob)
    records.columns["correct"] = np.zeros_like(records.columns["correct"])
    with sqlite3.connect(workspace / "regress.db") as conn:
        conn.execute(
            "UPDATE evaluations SET records = ? WHERE id = ?",
            (records_to_npz(records), stored.evaluation_id),
        )
    other = _compare(workspace, monkeypatch, (1, 2), *args)
    assert other["baseline_source"]["evaluation_id"] == stored.evaluation_id
    assert other["metrics"]["accuracy"]["baseline"] == 0.0
    assert other["metrics"]["accuracy"]["candidate"] > 0
    again = _compare(workspace, monkeypatch, (1, 2), *args, "--no-cache", "--no-record")
    assert again["metrics"]["accuracy"]["baseline"] == cold["metrics"]["accuracy"]["baseline"]


@pytest.mark.parametrize(
    ("runs", "base", "changed"),
    [
        ((1, 2), ("--dataset", "vision_tiny", "--max-examples", "120"), ("--precision", "bf16")),
        ((1, 2), ("--dataset", "vision_tiny", "--max-examples", "120"), ("--max-examples", "121")),
        ((1, 2), ("--dataset", "vision_tiny", "--max-examples", "120"), ("--image-size", "8")),
        ((4, 5), ("--dataset", "docs.jsonl", "--context-length", "32"), ("--stride", "16")),
        ((4, 5), ("--dataset", "docs.jsonl", "--context-length", "32"), ("--context-length", "31")),
    ],
    ids=["precision", "eval-set", "image-size", "stride", "context-length"],
)
def test_a_changed_key_element_evaluates_the_baseline_again(
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    runs: tuple[int, int],
    base: tuple[str, ...],
    changed: tuple[str, ...],
) -> None:
    _compare(workspace, monkeypatch, runs, *base)
    assert _compare(workspace, monkeypatch, runs, *base)["baseline_source"] is not None
    before = _counts(workspace)
    missed = _compare(workspace, monkeypatch, runs, *base, *changed)
    assert missed["baseline_source"] is None
    assert _counts(workspace)[0] == before[0] + 2  # both sides stored under the new keys


def test_no_cache_evaluates_both_models_and_still_stores_them(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--dataset", "vision_tiny", "--max-examples", "150")
    _compare(workspace, monkeypatch, (1, 2), *args)
    before = _counts(workspace)
    report = _compare(workspace, monkeypatch, (1, 2), *args, "--no-cache")
    assert report["baseline_source"] is None
    assert _counts(workspace) == (before[0] + 2, before[1] + 1)
    assert _compare(workspace, monkeypatch, (1, 2), *args)["baseline_source"] is not None


def test_a_failed_or_unrecorded_comparison_stores_no_evaluation(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("--dataset", "vision_tiny", "--max-examples", "170")
    before = _counts(workspace)
    report = _compare(workspace, monkeypatch, (1, 2), *args, "--no-record")
    assert report["comparison_id"] is None and _counts(workspace) == before
    # The candidate's pass succeeds, the baseline's fails: nothing of the comparison is kept.
    monkeypatch.setenv("REGRESS_TEST_FAIL_FORWARD", "1")
    code, stdout, stderr = _cli(workspace, monkeypatch, (6, 2), *args)
    assert code == 2, stderr
    assert "fails on purpose" in stderr and "Traceback" not in stderr
    assert stdout == "" and _counts(workspace) == before
    monkeypatch.delenv("REGRESS_TEST_FAIL_FORWARD")
    # A path that cannot be written, found after the passes: nothing recorded either.
    (workspace / "taken").mkdir(exist_ok=True)
    blocked = workspace / "taken" / "sub"
    blocked.write_text("a file where a folder is needed")
    code, _, stderr = _cli(
        workspace, monkeypatch, (1, 2), *args, "--json-out", str(blocked / "r.json")
    )
    assert code == 2, stderr
    assert _counts(workspace) == before


@pytest.mark.slow
def test_under_torchrun_both_models_are_evaluated_and_the_report_is_the_same(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun does not read the cache (every rank must run the same passes): both models are
    evaluated, and the report is what one process reports."""
    args = ["--dataset", "vision_tiny", "--max-examples", "90", "--seed", "1"]
    single = _compare(workspace, monkeypatch, (1, 2), *args)
    assert _compare(workspace, monkeypatch, (1, 2), *args)["baseline_source"] is not None
    out = workspace / "torchrun.json"
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", "-m", "regress_action"]
    command += ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", *args]
    command += ["--db", f"sqlite:///{workspace / 'regress.db'}", "--json-out", str(out)]
    before = _counts(workspace)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=workspace, capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sharded = json.loads(out.read_text())
    assert sharded["baseline_source"] is None and sharded["world_size"] == 2
    # Both sides' records are already stored under the same keys: not stored again.
    assert _counts(workspace) == (before[0], before[1] + 1)
    volatile = {"world_size"}
    assert {k: v for k, v in _stable(sharded).items() if k not in volatile} == {
        k: v for k, v in _stable(single).items() if k not in volatile
    }
