"""`torchrun --nproc-per-node 2 -m regress_action compare` (gloo, CPU) against one process:
the same examples, the same metrics, statuses and p-values; a failing rank fails every rank."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from regress_action.cli import main
from regress_action.models import save_checkpoint
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_cnn, tiny_lm

pytestmark = pytest.mark.slow  # each torchrun starts two Python processes: ~5 s

TORCHRUN = Path(sys.executable).with_name("torchrun")
FAILING_FACTORY = """
import os
from regress_action.zoo import tiny_cnn

def build(**kwargs):
    if os.environ.get("RANK") == "1":
        raise RuntimeError("this node has no copy of the weights' code")
    return tiny_cnn(**kwargs)
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torchrun")
    (root / "failing.py").write_text(FAILING_FACTORY)
    text = " ".join(f"The {i}th sentence of a long document about rivers." for i in range(300))
    lines = [json.dumps({"text": text[: 700 + 37 * i]}) for i in range(12)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    db = f"sqlite:///{root / 'regress.db'}"
    for seed, (name, task) in enumerate(
        [("cnn_a", "classification"), ("cnn_b", "classification"), ("lm_a", "lm"), ("lm_b", "lm")]
    ):
        torch.manual_seed(seed)
        model = tiny_cnn() if task == "classification" else tiny_lm()
        shape = (2, 3, 16, 16) if task == "classification" else (2, 8)
        example = torch.zeros(shape, dtype=torch.float32 if len(shape) == 4 else torch.int64)
        path = root / f"{name}.pt2"
        save_checkpoint(model, path, "export", example)
        assert main(["runs", "add", str(path), "--task", task, *_sizes(task), "--db", db]) == 0
    path = root / "cnn_state.safetensors"
    save_checkpoint(tiny_cnn(), path, "safetensors")
    flags = ["--factory", "failing:build", "--num-classes", "10"]
    argv = ["runs", "add", str(path), "--task", "classification", *flags, "--db", db]
    cwd = Path.cwd()
    os.chdir(root)  # the factory is imported from the workspace
    try:
        assert main(argv) == 0
    finally:
        os.chdir(cwd)
    return root


def _sizes(task: str) -> list[str]:
    return ["--num-classes", "10"] if task == "classification" else []


def _compare(root: Path, ranks: int, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = root / f"report-{ranks}-{abs(hash(args))}.json"
    command = [str(TORCHRUN), "--standalone", f"--nproc-per-node={ranks}"]
    command += ["-m", "regress_action", "compare", *args, "--json-out", str(out)]
    env = {**os.environ, "REGRESS_DB": f"sqlite:///{root / 'regress.db'}"}
    env["REGRESS_ACTION_DIST_TIMEOUT"] = "60"
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    report = json.loads(out.read_text()) if out.exists() else None
    return result, report


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


@pytest.mark.parametrize(
    ("runs", "dataset"),
    [(("1", "2"), "vision_tiny"), (("3", "4"), "docs.jsonl")],
    ids=["classification", "lm-windows"],
)
def test_two_ranks_give_the_single_process_result(
    workspace: Path, runs: tuple[str, str], dataset: str
) -> None:
    args = ("--baseline-run-id", runs[0], "--candidate-run-id", runs[1], "--dataset", dataset)
    args += ("--max-examples", "301") if dataset == "vision_tiny" else ()
    reference = workspace / f"single-{dataset}.json"
    cwd = Path.cwd()
    os.chdir(workspace)  # the reference, in this process
    try:
        db = ["--db", f"sqlite:///{workspace / 'regress.db'}"]
        assert main(["compare", *args, *db, "--json-out", str(reference)]) == 0
    finally:
        os.chdir(cwd)
    one = json.loads(reference.read_text())
    multi, two = _compare(workspace, 2, *args)
    assert multi.returncode == 0, multi.stderr
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["dataset"] == one["dataset"]
    assert two["status"] == one["status"]
    for name, metric in one["metrics"].items():
        for field in ("baseline", "candidate", "delta", "p_value", "p_adjusted", "ci_low"):
            assert _same(two["metrics"][name][field], metric[field]), (name, field)
        assert two["metrics"][name]["status"] == metric["status"]
    flips = ("newly_wrong", "newly_right", "loss_increases")
    assert all(
        [e["example_id"] for e in two["flips"][k]] == [e["example_id"] for e in one["flips"][k]]
        for k in flips
    )
    assert multi.stdout.count('"schema_version"') == 1  # rank 0 alone prints the report


def test_a_failing_rank_fails_every_rank_with_one_message(workspace: Path) -> None:
    with ExperimentDB(f"sqlite:///{workspace / 'regress.db'}") as db:
        before = len(db.list_comparisons(limit=1000))
    args = ("--baseline-run-id", "1", "--candidate-run-id", "5", "--dataset", "vision_tiny")
    result, report = _compare(workspace, 2, *args)
    assert result.returncode != 0 and report is None
    errors = [line for line in result.stderr.splitlines() if "regress-action: error:" in line]
    assert len(errors) == 1, result.stderr
    assert "rank 1:" in errors[0] and "no copy of the weights' code" in errors[0]
    assert "exitcode  : 2" in result.stderr  # torchrun's summary: every rank exited with 2
    with ExperimentDB(f"sqlite:///{workspace / 'regress.db'}") as db:
        assert len(db.list_comparisons(limit=1000)) == before


API_SCRIPT = """
import json, sys
import torch
import torch.distributed as dist
from regress_action import compare_models
from regress_action.spec import EvalConfig, TaskSpec
from regress_action.zoo import tiny_cnn

dist.init_process_group("gloo")
torch.manual_seed(0)
baseline, candidate = tiny_cnn(), tiny_cnn()
task = TaskSpec(modality="vision", task="classification", num_classes=10)
config = EvalConfig(dataset="vision_tiny", max_examples=201, device="cpu")
result = compare_models(baseline, candidate, None, task, config, comparison_name="ddp")
print(json.dumps({"rank": dist.get_rank(), "world_size": result["world_size"],
                  "accuracy": result["metrics"]["accuracy"], "n": result["dataset"]["n"]}))
dist.destroy_process_group()
"""


def test_the_python_api_under_an_initialised_process_group(tmp_path: Path) -> None:
    script = tmp_path / "ddp_compare.py"
    script.write_text(API_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", str(script)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(line["rank"] for line in lines) == [0, 1]
    assert all(line["world_size"] == 2 and line["n"] == 201 for line in lines)
    assert lines[0]["accuracy"] == lines[1]["accuracy"]  # rank 0's result on every rank
