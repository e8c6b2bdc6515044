"""Bounded reports and the per-example records file, through the CLI and the Python API.

The JSON report (and its ExperimentDB row) lists the `TOP_EXAMPLES` largest flips and loss
increases and counts them all; `--records-path` writes every example's paired records as
Parquet or `.npz`, which must agree with the report: its rows are the eval set's examples, its
flips are the report's counts, and the report's lists are its largest changes.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch

from regress_action.models import save_checkpoint
from regress_action.records_file import read_table
from regress_action.report import TOP_EXAMPLES
from regress_action.zoo import tiny_cnn, tiny_lm
from tests.e2e.test_cli import Workspace, compare_args

TOKENS = 48_000  # 3,000 windows of 16 tokens


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("records")
    workspace = Workspace(root, f"sqlite:///{root / 'regress.db'}", {})
    for seed, name in ((0, "lm_a"), (1, "lm_b")):
        torch.manual_seed(seed)
        save_checkpoint(tiny_lm(), root / f"{name}.safetensors", "safetensors")
        out = workspace.run(
            "runs", "add", str(root / f"{name}.safetensors"), "--task", "lm",
            "--factory", "regress_action.zoo:tiny_lm", check=True,
        )  # fmt: skip
        workspace.runs[name] = int(out.stdout)
    for seed, name in ((0, "cnn_a"), (1, "cnn_b")):
        torch.manual_seed(seed)
        save_checkpoint(tiny_cnn(), root / f"{name}.pt", "state_dict")
        out = workspace.run(
            "runs", "add", str(root / f"{name}.pt"), "--task", "classification",
            "--num-classes", "10", "--factory", "regress_action.zoo:tiny_cnn", check=True,
        )  # fmt: skip
        workspace.runs[name] = int(out.stdout)
    rng = np.random.default_rng(0)
    np.save(root / "tokens.npy", rng.integers(0, 256, TOKENS, dtype=np.uint16))
    return workspace


def lm_args(ws: Workspace, *extra: str) -> list[str]:
    return [
        *compare_args(ws.runs["lm_a"], ws.runs["lm_b"], "tokens.npy"),
        "--context-length", "16", "--stride", "16", "--significance", "off", *extra,
    ]  # fmt: skip


def test_an_lm_report_lists_the_largest_increases_and_the_records_file_has_every_window(
    ws: Workspace,
) -> None:
    ws.run(*lm_args(ws, "--json-out", "lm.json", "--records-path", "lm.npz"), check=True)
    report = json.loads((ws.root / "lm.json").read_text())
    table = read_table(ws.root / "lm.npz")
    n = report["dataset"]["n"]
    assert n == TOKENS // 16  # windows of 16 targets, the first token only as context
    assert len(table["example_id"]) == n
    assert sorted(table["example_id"].tolist()) == list(range(n))
    assert table["key"][0].startswith("tokens ")
    rose = table["loss_delta"] > 0
    flips = report["flips"]
    assert flips["loss_increases_count"] == int(rose.sum()) > TOP_EXAMPLES
    listed = flips["loss_increases"]
    assert len(listed) == TOP_EXAMPLES
    # The report's list is the file's largest increases, in order.
    order = np.argsort(-table["loss_delta"], kind="stable")[:TOP_EXAMPLES]
    assert [e["example_id"] for e in listed] == table["example_id"][order].tolist()
    np.testing.assert_allclose(
        [e["loss_delta"] for e in listed], table["loss_delta"][order], rtol=1e-12
    )
    # The per-example mean loss is nll_sum / tokens, and the metric is their ratio of sums.
    np.testing.assert_allclose(
        table["baseline_loss"], table["baseline_nll_sum"] / table["baseline_tokens"]
    )
    loss = table["baseline_nll_sum"].sum() / table["baseline_tokens"].sum()
    assert report["metrics"]["loss"]["baseline"] == pytest.approx(loss, rel=1e-9)


def test_a_classifier_records_file_in_parquet_matches_the_flip_counts(ws: Workspace) -> None:
    args = compare_args(ws.runs["cnn_a"], ws.runs["cnn_b"], "vision_tiny")
    ws.run(*args, "--json-out", "cnn.json", "--records-path", "out/cnn.parquet", check=True)
    report = json.loads((ws.root / "cnn.json").read_text())
    table = read_table(ws.root / "out" / "cnn.parquet")
    assert len(table["example_id"]) == report["dataset"]["n"] == 1000
    base_ok, cand_ok = table["baseline_correct"] > 0.5, table["candidate_correct"] > 0.5
    flips = report["flips"]
    assert flips["newly_wrong_count"] == int((base_ok & ~cand_ok).sum())
    assert flips["newly_right_count"] == int((~base_ok & cand_ok).sum())
    assert len(flips["newly_wrong"]) == min(TOP_EXAMPLES, flips["newly_wrong_count"])
    assert report["metrics"]["accuracy"]["candidate"] == pytest.approx(cand_ok.mean())
    wrong = {e["example_id"] for e in flips["newly_wrong"]}
    assert wrong <= set(table["example_id"][base_ok & ~cand_ok].tolist())
    assert (table["baseline_label"] == table["candidate_label"]).all()


def test_the_db_row_does_not_grow_with_the_eval_set(ws: Workspace) -> None:
    """The recorded report of 3,000 windows is about the size of the one of 400: both list the
    largest 100 increases, and neither lists the others."""
    sizes = []
    for n in (400, 3000):
        out = ws.run(*lm_args(ws, "--max-examples", str(n)), check=True)
        comparison_id = json.loads(out.stdout)["comparison_id"]
        with closing(sqlite3.connect(ws.root / "regress.db")) as conn:
            (row,) = conn.execute(
                "SELECT report_json FROM comparisons WHERE id = ?", (comparison_id,)
            ).fetchone()
        assert json.loads(row)["flips"]["loss_increases_count"] > TOP_EXAMPLES
        sizes.append(len(row))
    assert sizes[1] < 1.1 * sizes[0], sizes


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("records.csv", "--records-path 'records.csv': the records file is written as .parquet"),
        ("records", "not a file without a suffix; name it records.parquet or records.npz"),
        ("folder.npz", "--records-path 'folder.npz' is a directory; pass a file path"),
    ],
)
def test_a_bad_records_path_records_nothing_and_writes_nothing(
    ws: Workspace, path: str, message: str
) -> None:
    (ws.root / "folder.npz").mkdir(exist_ok=True)
    before = ws.state()
    result = ws.run(*lm_args(ws, "--json-out", "bad.json", "--records-path", path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert "Traceback" not in result.stderr
    assert ws.state() == before


def test_the_api_writes_the_records_file(ws: Workspace, tmp_path: Path) -> None:
    from regress_action import compare_models
    from regress_action.spec import EvalConfig, TaskSpec

    torch.manual_seed(0)
    base, cand = tiny_lm().eval(), tiny_lm().eval()
    report = compare_models(
        base, cand, None, TaskSpec(modality="text", task="lm", vocab_size=256),
        EvalConfig(dataset="lm_tiny"), records_path=tmp_path / "r.npz",
    )  # fmt: skip
    table = read_table(tmp_path / "r.npz")
    assert len(table["example_id"]) == report["dataset"]["n"]
    assert report["flips"]["loss_increases_count"] == int((table["loss_delta"] > 0).sum())
