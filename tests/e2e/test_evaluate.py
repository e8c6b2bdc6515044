"""`regress-action evaluate`: one registered run on an eval set, its metrics the same values a
comparison reports for that side, its report and per-example records in the ExperimentDB,
bad input refused with nothing recorded, and the same records under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from regress_action.models import save_checkpoint
from regress_action.records import records_from_npz
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_cnn, tiny_lm
from tests.cli_runner import run_cli

TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs 1, 2: two CNNs (vision_tiny); runs 3, 4: two LMs (lm_tiny)."""
    root = tmp_path_factory.mktemp("evaluate")
    db = f"sqlite:///{root / 'regress.db'}"
    from regress_action.cli import main

    for seed, (name, task) in enumerate(
        [("cnn_a", "classification"), ("cnn_b", "classification"), ("lm_a", "lm"), ("lm_b", "lm")]
    ):
        torch.manual_seed(seed)
        model = tiny_cnn() if task == "classification" else tiny_lm()
        shape = (2, 3, 16, 16) if task == "classification" else (2, 8)
        example = torch.zeros(
            shape, dtype=torch.float32 if task == "classification" else torch.int64
        )
        path = root / f"{name}.pt2"
        save_checkpoint(model, path, "export", example)
        sizes = ["--num-classes", "10"] if task == "classification" else []
        assert main(["runs", "add", str(path), "--task", task, *sizes, "--db", db]) == 0
    return root


def _cli(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    return run_cli([*args, "--db", f"sqlite:///{root / 'regress.db'}"], root, monkeypatch)


def _evaluations(root: Path) -> int:
    with ExperimentDB(root / "regress.db") as db:
        return len(db.list_evaluations(limit=1000))


@pytest.mark.parametrize(("runs", "dataset"), [((1, 2), "vision_tiny"), ((3, 4), "lm_tiny")])
def test_evaluate_gives_the_values_a_comparison_reports_and_stores_the_records(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, runs: tuple[int, int], dataset: str
) -> None:
    before = _evaluations(workspace)
    out, md = workspace / f"eval-{dataset}.json", workspace / f"eval-{dataset}.md"
    code, stdout, stderr = _cli(
        workspace, monkeypatch, "evaluate", "--run-id", str(runs[1]), "--dataset", dataset,
        "--json-out", str(out), "--markdown-out", str(md),
    )  # fmt: skip
    assert code == 0, stderr
    evaluation = json.loads(stdout)
    assert json.loads(out.read_text()) == evaluation
    assert evaluation["kind"] == "evaluation" and evaluation["run"]["run_id"] == runs[1]
    assert evaluation["records_stored"] and len(evaluation["cache_key"]) == 64
    code, stdout, stderr = _cli(
        workspace, monkeypatch, "compare", "--baseline-run-id", str(runs[0]),
        "--candidate-run-id", str(runs[1]), "--dataset", dataset, "--significance", "off",
    )  # fmt: skip
    assert code == 0, stderr
    comparison = json.loads(stdout)
    assert set(evaluation["metrics"]) == set(comparison["metrics"])
    for name, metric in comparison["metrics"].items():
        value = evaluation["metrics"][name]["value"]
        assert value == pytest.approx(metric["candidate"], rel=1e-12), name
        assert evaluation["metrics"][name]["higher_is_better"] == metric["higher_is_better"]
    assert evaluation["dataset"] == comparison["dataset"]
    text = md.read_text()
    assert f"run #{runs[1]}" in text and "| Metric | Value | Better |" in text
    # The evaluation, and the baseline's row the comparison stored (the candidate's records
    # were already stored under its key).
    assert _evaluations(workspace) == before + 2
    with ExperimentDB(workspace / "regress.db") as db:
        stored = db.get_evaluation(evaluation["evaluation_id"])
        assert stored.model_dump(mode="json") == evaluation
        blob = db.evaluation_records(evaluation["evaluation_id"])
    assert blob is not None
    records = records_from_npz(blob)
    assert records.example_ids.tolist() == list(range(evaluation["dataset"]["n"]))


def test_the_cache_key_changes_with_what_changes_the_records(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def key(*extra: str) -> str:
        code, stdout, stderr = _cli(
            workspace, monkeypatch, "evaluate", "--run-id", "1", "--dataset", "vision_tiny",
            "--no-record", *extra,
        )  # fmt: skip
        assert code == 0, stderr
        result: dict[str, Any] = json.loads(stdout)
        assert result["evaluation_id"] is None and not result["records_stored"]
        return str(result["cache_key"])

    before = _evaluations(workspace)
    plain = key("--max-examples", "200")
    assert key("--max-examples", "200", "--batch-size", "7") == plain  # same records
    assert key("--max-examples", "200", "--metrics", "accuracy") == plain
    assert key("--max-examples", "100") != plain  # another eval set
    assert key("--max-examples", "200", "--precision", "bf16") != plain
    assert _evaluations(workspace) == before  # --no-record


def test_bad_input_exits_2_with_one_line_and_records_nothing(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _evaluations(workspace)
    vision, lm = ["--run-id", "1", "--dataset", "vision_tiny"], ["--run-id", "3"]
    cases = [
        ([*vision, "--metrics", "accuracy,nope"], "nope"),
        (["--run-id", "99", "--dataset", "vision_tiny"], "unknown run id 99"),
        (["--run-id", "1"], "--dataset"),
        (["--run-id", "1", "--dataset", "lm_tiny"], "lm_tiny"),
        ([*lm, "--dataset", "lm_tiny", "--precision", "fp16", "--device", "cpu"], "fp16"),
        ([*vision, "--json-out", "."], "--json-out '.' is a folder"),
        ([*vision, "--markdown-out", "regress.db"], "also the ExperimentDB file"),
    ]
    for args, needle in cases:
        code, stdout, stderr = _cli(workspace, monkeypatch, "evaluate", *args)
        assert code == 2, (args, stderr)
        assert needle in stderr and stderr.count("\n") == 1, (args, stderr)
        assert "Traceback" not in stderr and stdout == ""
    assert _evaluations(workspace) == before


@pytest.mark.slow  # two Python processes under torchrun
def test_torchrun_evaluate_stores_the_single_process_records(workspace: Path) -> None:
    outputs = []
    for ranks in (1, 2):
        out = workspace / f"torchrun-{ranks}.json"
        command = [str(TORCHRUN), "--standalone", f"--nproc-per-node={ranks}", "-m"]
        command += ["regress_action", "evaluate", "--run-id", "3", "--dataset", "lm_tiny"]
        command += ["--db", f"sqlite:///{workspace / 'regress.db'}", "--json-out", str(out)]
        env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE"}}
        env["REGRESS_ACTION_DIST_TIMEOUT"] = "60"
        done = subprocess.run(
            command, cwd=workspace, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(json.loads(out.read_text()))
    single, sharded = outputs
    assert (single["world_size"], sharded["world_size"]) == (1, 2)
    assert single["cache_key"] == sharded["cache_key"]
    for name, metric in single["metrics"].items():
        assert sharded["metrics"][name]["value"] == pytest.approx(metric["value"], rel=1e-9)
    with ExperimentDB(workspace / "regress.db") as db:
        blobs = [db.evaluation_records(o["evaluation_id"]) for o in outputs]
    first, second = (records_from_npz(b) for b in blobs if b is not None)
    assert np.array_equal(first.example_ids, second.example_ids)
    assert first.columns.keys() == second.columns.keys()
    for name, column in first.columns.items():
        assert column.tobytes() == second.columns[name].tobytes(), name
