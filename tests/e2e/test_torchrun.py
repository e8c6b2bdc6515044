"""`torchrun --nproc-per-node 2 -m regress_action compare` (gloo, CPU) against one process:
the same examples, the same metrics, statuses and p-values; a failing rank fails every rank.
The same on two "nodes" (two torchrun launchers on 127.0.0.1, as on two machines)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
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
    result = subprocess.run(
        command, cwd=root, env=_env(root), capture_output=True, text=True, timeout=300
    )
    report = json.loads(out.read_text()) if out.exists() else None
    return result, report


def _env(root: Path) -> dict[str, str]:
    env = {**os.environ, "REGRESS_DB": f"sqlite:///{root / 'regress.db'}"}
    env["REGRESS_ACTION_DIST_TIMEOUT"] = "60"
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _single(root: Path, *args: str) -> Any:
    """The reference: the comparison in this process (world size 1)."""
    reference = root / f"single-{abs(hash(args))}.json"
    cwd = Path.cwd()
    os.chdir(root)
    try:
        db = ["--db", f"sqlite:///{root / 'regress.db'}"]
        assert main(["compare", *args, *db, "--json-out", str(reference)]) == 0
    finally:
        os.chdir(cwd)
    return json.loads(reference.read_text())


def _comparisons(root: Path) -> int:
    with ExperimentDB(f"sqlite:///{root / 'regress.db'}") as db:
        return len(db.list_comparisons(limit=1000))


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
    one = _single(workspace, *args)
    multi, two = _compare(workspace, 2, *args)
    assert multi.returncode == 0, multi.stderr
    assert (one["world_size"], two["world_size"]) == (1, 2)
    _assert_same_result(two, one)
    assert multi.stdout.count('"schema_version"') == 1  # rank 0 alone prints the report


def test_a_failing_rank_fails_every_rank_with_one_message(workspace: Path) -> None:
    before = _comparisons(workspace)
    args = ("--baseline-run-id", "1", "--candidate-run-id", "5", "--dataset", "vision_tiny")
    result, report = _compare(workspace, 2, *args)
    assert result.returncode != 0 and report is None
    errors = [line for line in result.stderr.splitlines() if "regress-action: error:" in line]
    assert len(errors) == 1, result.stderr
    assert "rank 1:" in errors[0] and "no copy of the weights' code" in errors[0]
    assert "exitcode  : 2" in result.stderr  # torchrun's summary: every rank exited with 2
    assert _comparisons(workspace) == before


def _assert_same_result(two: Any, one: Any) -> None:
    """`two` (several ranks) is `one` (one process): examples, metrics, statuses, p-values."""
    assert two["dataset"] == one["dataset"]  # n, fingerprint of the examples, class names
    assert two["status"] == one["status"]
    for name, metric in one["metrics"].items():
        for field in ("baseline", "candidate", "delta", "p_value", "p_adjusted", "ci_low"):
            assert _same(two["metrics"][name][field], metric[field]), (name, field)
        for field in ("status", "n", "n_fixed", "n_broken"):
            assert two["metrics"][name].get(field) == metric.get(field), (name, field)
    flips = ("newly_wrong", "newly_right", "loss_increases")
    assert all(
        [e["example_id"] for e in two["flips"][k]] == [e["example_id"] for e in one["flips"][k]]
        for k in flips
    )


# Two nodes: two torchrun launchers, one worker each, as on two machines. "c10d" is the
# multi-node form of torchrun's documentation (the launchers meet at an endpoint and the
# rendezvous deals the ranks: `--node-rank` means nothing to it); "static" is the README's form
# (`--node-rank N --rdzv-endpoint HOST:PORT`: node 0 hosts the store and holds rank 0).
RENDEZVOUS = ["c10d", "static"]
CLASSIFICATION = ("--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "vision_tiny")


@dataclass
class _Node:
    returncode: int
    stdout: str
    stderr: str
    report: Any  # its --json-out, None when it wrote none


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _compare_on_two_nodes(root: Path, rendezvous: str, *args: str) -> tuple[list[_Node], float]:
    """Both nodes' outcomes (each with its own --json-out path, as on separate disks) and the
    seconds until both launchers exited. Everything listens on 127.0.0.1 only."""
    tag = f"{rendezvous}-{abs(hash(args))}"
    endpoint = f"127.0.0.1:{_free_port()}"
    launch = [str(TORCHRUN), "--nnodes=2", "--nproc-per-node=1", "--local-addr=127.0.0.1"]
    if rendezvous == "c10d":
        launch += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={tag}"]
    env = _env(root)
    env["GLOO_SOCKET_IFNAME"] = "lo0" if sys.platform == "darwin" else "lo"  # gloo: loopback
    started = time.monotonic()
    launched = []
    for node in (0, 1):
        out, log = root / f"report-{tag}-node{node}.json", root / f"{tag}-node{node}"
        out.unlink(missing_ok=True)
        command = [*launch]
        if rendezvous == "static":
            command += [f"--node-rank={node}", f"--rdzv-endpoint={endpoint}"]
        command += ["-m", "regress_action", "compare", *args, "--json-out", str(out)]
        with open(f"{log}.out", "w") as stdout, open(f"{log}.err", "w") as stderr:
            process = subprocess.Popen(
                command, cwd=root, env=env, stdout=stdout, stderr=stderr, start_new_session=True
            )
        launched.append((process, out, log))
    try:
        codes = [process.wait(timeout=max(1.0, 300 - (time.monotonic() - started)))
                 for process, _, _ in launched]  # fmt: skip
    finally:
        for process, _, _ in launched:  # a hung node: end its launcher and its worker
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    elapsed = time.monotonic() - started
    nodes = [
        _Node(
            code,
            Path(f"{log}.out").read_text(),
            Path(f"{log}.err").read_text(),
            json.loads(out.read_text()) if out.exists() else None,
        )
        for code, (_, out, log) in zip(codes, launched, strict=True)
    ]
    return nodes, elapsed


@pytest.mark.parametrize("rendezvous", RENDEZVOUS)
def test_two_nodes_give_the_single_process_result(workspace: Path, rendezvous: str) -> None:
    args = (*CLASSIFICATION, "--max-examples", "301")
    one = _single(workspace, *args)
    before = _comparisons(workspace)
    nodes, _ = _compare_on_two_nodes(workspace, rendezvous, *args)
    assert [node.returncode for node in nodes] == [0, 0], [node.stderr for node in nodes]
    leaders = [node for node in nodes if node.report is not None]
    assert len(leaders) == 1  # only the node holding rank 0 writes the report...
    leader = leaders[0]
    if rendezvous == "static":
        assert leader is nodes[0]  # ...which --node-rank 0 holds under static rendezvous
    assert [node.stdout.count('"schema_version"') for node in nodes] == [
        int(node is leader) for node in nodes
    ]  # ...and prints it
    assert _comparisons(workspace) == before + 1  # ...and records it, once
    assert (one["world_size"], leader.report["world_size"]) == (1, 2)
    _assert_same_result(leader.report, one)


@pytest.mark.parametrize("rendezvous", RENDEZVOUS)
def test_a_failing_rank_on_one_node_fails_both_nodes(workspace: Path, rendezvous: str) -> None:
    before = _comparisons(workspace)
    args = ("--baseline-run-id", "1", "--candidate-run-id", "5", "--dataset", "vision_tiny")
    nodes, elapsed = _compare_on_two_nodes(workspace, rendezvous, *args)
    codes = [node.returncode for node in nodes]
    assert codes[0] == codes[1] != 0, codes
    assert all(node.report is None for node in nodes)
    errors = [
        (index, line)
        for index, node in enumerate(nodes)
        for line in node.stderr.splitlines()
        if "regress-action: error:" in line
    ]
    assert len(errors) == 1, [node.stderr for node in nodes]  # from rank 0's node alone
    where, line = errors[0]
    if rendezvous == "static":
        assert where == 0  # --node-rank 0 holds rank 0; rank 1, on node 1, failed
    assert "rank 1:" in line and "no copy of the weights' code" in line
    assert all("exitcode  : 2" in node.stderr for node in nodes)  # each node's worker exited 2
    assert elapsed < 60  # the error travelled with the collectives: no rank waited for a timeout
    assert _comparisons(workspace) == before


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
line = json.dumps({"rank": dist.get_rank(), "world_size": result["world_size"],
                   "accuracy": result["metrics"]["accuracy"], "n": result["dataset"]["n"]})
sys.stdout.write(line + "\\n")  # one write: the two ranks share the launcher's stdout
sys.stdout.flush()
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
