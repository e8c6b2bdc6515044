"""The CLI end to end: real checkpoints, a real SQLite file, every subcommand a user runs.

Both modalities run through `runs add` + `compare` on the built-in datasets; every bad input
exits 2 with one line on stderr, no traceback, no new run or comparison row and no file.

Most tests call `regress_action.cli.main([...])` in this process (a fresh Python process costs
seconds of torch import); the tests whose subject is the process itself - its exit status, the
original script line, `python -m regress_action`, a closed stdout pipe - start a real one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import torch

from regress_action.cli import main
from regress_action.models import save_checkpoint
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_cnn, tiny_lm

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_main(args: list[str]) -> Result:
    """`main(args)` with stdout and stderr captured as the process would print them.

    The CLI's `logging.basicConfig` does nothing under pytest (whose handlers are already on
    the root logger), so a handler with the CLI's format puts log records on the captured
    stderr, where a real process would print them.
    """
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("regress-action: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse: usage errors, --help, --version
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        root.removeHandler(handler)
    return Result(code, out.getvalue(), err.getvalue())


@dataclass
class Workspace:
    root: Path
    db: str
    runs: dict[str, int]

    def run(self, *args: str, check: bool = False) -> Result:
        """The CLI in this process, in the workspace, with REGRESS_DB set."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("REGRESS_DB", self.db)
            patch.chdir(self.root)
            result = run_main(list(args))
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def process(self, *command: str, stdout: Any = subprocess.PIPE) -> CompletedProcess[str]:
        """A real process (`python <command>`), in the workspace, with REGRESS_DB set."""
        return subprocess.run(
            [sys.executable, *command],
            cwd=self.root,
            env={**os.environ, "REGRESS_DB": self.db},
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )

    def comparisons(self) -> int:
        with ExperimentDB(self.db) as db:
            return len(db.list_comparisons(limit=1000))

    def state(self) -> tuple[int, int, dict[str, tuple[int, int]]]:
        """Runs, comparisons, and every file but the database's (name → size, mtime)."""
        with ExperimentDB(self.db) as db:
            counts = len(db.list_runs()), len(db.list_comparisons(limit=1000))
        files = {
            str(path.relative_to(self.root)): _size_and_mtime(path)
            for path in self.root.rglob("*")
            if not path.name.startswith("regress.db")
        }
        return *counts, files


def _size_and_mtime(path: Path) -> tuple[int, int]:
    if path.is_dir() and not path.is_symlink():
        return 0, 0  # a folder: only that it exists
    status = path.lstat()
    return status.st_size, status.st_mtime_ns


def _add(ws: Workspace, path: Path | str, *args: str) -> int:
    out = ws.run("runs", "add", str(path), *args, check=True)
    return int(out.stdout.strip())


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("cli")
    workspace = Workspace(root, f"sqlite:///{root / 'regress.db'}", {})
    for seed, name in ((0, "lm_a"), (1, "lm_b")):
        torch.manual_seed(seed)
        save_checkpoint(tiny_lm(), root / f"{name}.safetensors", "safetensors")
        workspace.runs[name] = _add(
            workspace,
            root / f"{name}.safetensors",
            "--task",
            "lm",
            "--factory",
            "regress_action.zoo:tiny_lm",
        )
    for seed, name in ((0, "cnn_a"), (1, "cnn_b")):
        torch.manual_seed(seed)
        save_checkpoint(tiny_cnn(), root / f"{name}.pt", "state_dict")
        workspace.runs[name] = _add(
            workspace,
            root / f"{name}.pt",
            "--task",
            "classification",
            "--num-classes",
            "10",
            "--factory",
            "regress_action.zoo:tiny_cnn",
        )
    yield workspace


def compare_args(base: int | str, cand: int | str, dataset: str) -> list[str]:
    return ["compare", "--baseline-run-id", str(base), "--candidate-run-id", str(cand),
            "--dataset", dataset]  # fmt: skip


# ---------------------------------------------------------------- what works


def test_runs_are_numbered_from_one_and_listed(ws: Workspace) -> None:
    assert ws.runs == {"lm_a": 1, "lm_b": 2, "cnn_a": 3, "cnn_b": 4}
    listing = json.loads(ws.run("runs", "list", "--json", check=True).stdout)
    assert [run["name"] for run in listing] == ["lm_a", "lm_b", "cnn_a", "cnn_b"]
    assert listing[2]["source"]["format"] == "state_dict"
    table = ws.run("runs", "list", check=True).stdout.splitlines()
    assert table[0].split() == ["id", "name", "task", "format", "sha256"]
    assert table[3].split()[:4] == ["3", "cnn_a", "classification", "state_dict"]


@pytest.mark.parametrize(
    ("dataset", "base", "cand", "metrics"),
    [
        ("lm_tiny", "lm_a", "lm_b", ["loss", "perplexity", "token_accuracy", "bits_per_byte"]),
        (
            "vision_tiny",
            "cnn_a",
            "cnn_b",
            ["accuracy", "loss", "top5_accuracy", "macro_f1", "ece", "calibration_error_sq"],
        ),
    ],
)
def test_compare_prints_the_json_report_and_records_it(
    ws: Workspace, dataset: str, base: str, cand: str, metrics: list[str]
) -> None:
    out_json, out_md = ws.root / f"{dataset}.json", ws.root / f"{dataset}.md"
    result = ws.run(
        *compare_args(str(ws.runs[base]), str(ws.runs[cand]), dataset),
        "--max-examples",
        "200",
        "--json-out",
        str(out_json),
        "--markdown-out",
        str(out_md),
        check=True,
    )
    report = json.loads(result.stdout)
    assert list(report["metrics"]) == metrics
    assert report["dataset"]["name"] == dataset and report["dataset"]["n"] == 200
    assert report["baseline"]["run_id"] == ws.runs[base]
    assert json.loads(out_json.read_text()) == report
    assert "| Metric |" in out_md.read_text()
    shown = json.loads(
        ws.run("comparisons", "show", str(report["comparison_id"]), check=True).stdout
    )
    assert shown["metrics"] == report["metrics"]
    listing = ws.run("comparisons", "list", check=True).stdout
    assert report["notes"] in listing
    rows = json.loads(ws.run("comparisons", "list", "--json", "--dataset", dataset).stdout)
    assert rows[0]["id"] == report["comparison_id"] and rows[0]["dataset"] == dataset
    assert {row["dataset"] for row in rows} == {dataset}
    markdown = ws.run("comparisons", "show", str(report["comparison_id"]), "--format", "markdown")
    # The stored report is the one recorded, before the trend of its series was attached.
    head = out_md.read_text().split("<details>")[0]
    assert markdown.stdout.startswith(head) and "| Metric |" in head


def test_the_original_script_line_works(ws: Workspace) -> None:
    result = ws.process(
        str(REPO / "scripts" / "run_regression_test.py"),
        "--baseline-run-id",
        "1",
        "--candidate-run-id",
        "2",
        "--dataset",
        "lm_tiny",
        "--max-examples",
        "32",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] in ("improved", "neutral", "regressed")


def test_fail_on_regression_exits_1_only_when_asked(ws: Workspace) -> None:
    args = [
        *compare_args("1", "1", "lm_tiny"),
        "--max-examples",
        "16",
        "--no-record",
        "--significance",
        "off",
    ]
    same = ws.run(*args, "--fail-on-regression")
    assert same.returncode == 0 and json.loads(same.stdout)["status"] == "neutral"
    # Any change at all regresses with a zero threshold; random models differ.
    regress = [
        *compare_args("2", "1", "lm_tiny"),
        "--max-examples",
        "16",
        "--no-record",
        "--threshold",
        "0",
    ]
    if json.loads(ws.run(*regress).stdout)["status"] != "regressed":
        regress[2], regress[4] = regress[4], regress[2]  # then the other direction regresses
    unasked = ws.run(*regress)
    assert unasked.returncode == 0 and json.loads(unasked.stdout)["status"] == "regressed"
    # The exit status of the real process is what CI sees.
    asked = ws.process("-m", "regress_action", *regress, "--fail-on-regression")
    assert asked.returncode == 1, asked.stderr
    assert json.loads(asked.stdout)["status"] == "regressed"


def test_the_report_carries_the_trend_of_its_series(ws: Workspace) -> None:
    args = [
        *compare_args("1", "2", "lm_tiny"),
        "--max-examples",
        "16",
        "--report-name",
        "trend-series",
        "--significance",
        "off",
    ]
    first = json.loads(ws.run(*args, check=True).stdout)
    second = json.loads(ws.run(*args, check=True).stdout)
    assert [p["comparison_id"] for p in second["trend"]] == [
        first["comparison_id"],
        second["comparison_id"],
    ]
    assert (
        second["trend"][-1]["metrics"]["perplexity"] == second["metrics"]["perplexity"]["candidate"]
    )
    assert second["trend"][-1]["fingerprint"] == second["dataset"]["fingerprint"]


def test_a_symlinked_output_updates_its_target(ws: Workspace) -> None:
    target = ws.root / "target.json"
    target.write_text("old")
    link = ws.root / "link.json"
    link.symlink_to(target)
    ws.run(
        *compare_args("1", "2", "lm_tiny"),
        "--max-examples",
        "8",
        "--json-out",
        str(link),
        check=True,
    )
    assert link.is_symlink() and json.loads(target.read_text())["dataset"]["n"] == 8


def test_the_same_file_under_another_spelling_is_the_same_run(ws: Workspace) -> None:
    path = ws.root / "lm_a.safetensors"
    first = _add(ws, path, "--task", "lm", "--factory", "regress_action.zoo:tiny_lm")
    dotted = _add(
        ws,
        "./lm_a.safetensors",
        "--task",
        "lm",
        "--name",
        "lm_a",
        "--factory",
        "regress_action.zoo:tiny_lm",
    )
    assert first == ws.runs["lm_a"] == dotted


def test_pickled_checkpoint_needs_opt_in(ws: Workspace) -> None:
    path = ws.root / "whole.pt"
    torch.save(tiny_lm(), path)
    _assert_bad_input(ws, ["runs", "add", str(path), "--task", "lm"], "--allow-pickle")
    run_id = _add(ws, path, "--task", "lm", "--allow-pickle")
    _assert_bad_input(ws, _compare(1, run_id, "lm_tiny"), "--allow-pickle")
    allowed = ws.run(*_compare(1, run_id, "lm_tiny"), "--allow-pickle", "--max-examples", "8")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["candidate"]["run_id"] == run_id


# ---------------------------------------------------------------- the process itself


def test_help_and_version(ws: Workspace) -> None:
    assert "compare" in ws.process("-m", "regress_action", "--help").stdout
    version = ws.process("-m", "regress_action", "--version")
    assert version.returncode == 0 and version.stdout.startswith("regress-action ")


def test_bad_input_exits_2_from_the_process_with_one_line(ws: Workspace) -> None:
    missing = ws.root / "typo" / "regres.db"
    result = ws.process("-m", "regress_action", "runs", "list", "--db", str(missing))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("regress-action: error: no ExperimentDB")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not missing.parent.exists()


def test_a_closed_pipe_is_not_an_error(ws: Workspace) -> None:
    # `regress-action runs list | head -1`: the reader has gone, every write gets EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = ws.process("-m", "regress_action", "runs", "list", stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# ---------------------------------------------------------------- bad input


def _assert_bad_input(ws: Workspace, args: list[str], *needles: str) -> str:
    """Exit 2, one line on stderr naming the problem; nothing recorded, written or printed."""
    before = ws.state()
    result = ws.run(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"regress-action( [a-z]+)*: error: ", lines[0]), lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert ws.state() == before
    return lines[0]


def _compare(base: int, cand: int, dataset: str, *extra: str) -> list[str]:
    return [*compare_args(base, cand, dataset), "--json-out", "bad.json", *extra]


def test_unknown_run_id(ws: Workspace) -> None:
    _assert_bad_input(ws, _compare(1, 99, "lm_tiny"), "unknown run id 99", "runs list")


def test_unknown_dataset_suggests_the_closest(ws: Workspace) -> None:
    _assert_bad_input(ws, _compare(1, 2, "lm_tiy"), "did you mean 'lm_tiny'")


def test_dataset_of_another_task(ws: Workspace) -> None:
    _assert_bad_input(ws, _compare(1, 2, "vision_tiny"), "vision_tiny")


def test_negative_threshold(ws: Workspace) -> None:
    _assert_bad_input(ws, _compare(1, 2, "lm_tiny", "--threshold", "-0.1"), "--threshold")


def test_unreachable_database(ws: Workspace) -> None:
    url = "postgresql+psycopg://user:s3cret@127.0.0.1:9/none"
    line = _assert_bad_input(
        ws, _compare(1, 2, "lm_tiny", "--db", url), "127.0.0.1:9", "REGRESS_DB"
    )
    assert "s3cret" not in line


def test_empty_dataset(ws: Workspace) -> None:
    (ws.root / "empty.jsonl").write_text("")
    _assert_bad_input(ws, _compare(1, 2, str(ws.root / "empty.jsonl")), "empty.jsonl")


def test_missing_checkpoint(ws: Workspace) -> None:
    args = ["runs", "add", "nope.safetensors", "--task", "lm", "--factory", "x:y"]
    _assert_bad_input(ws, args, "nope.safetensors")


def test_corrupt_checkpoint(ws: Workspace) -> None:
    (ws.root / "corrupt.safetensors").write_bytes(b"\x00garbage" * 10)
    args = ["runs", "add", "corrupt.safetensors", "--task", "lm"]
    _assert_bad_input(ws, [*args, "--factory", "regress_action.zoo:tiny_lm"], "corrupt.safetensors")


def test_checksum_mismatch(ws: Workspace) -> None:
    path = ws.root / "changing.safetensors"
    torch.manual_seed(5)
    save_checkpoint(tiny_lm(), path, "safetensors")
    run_id = _add(ws, path, "--task", "lm", "--factory", "regress_action.zoo:tiny_lm")
    torch.manual_seed(6)
    save_checkpoint(tiny_lm(), path, "safetensors")
    _assert_bad_input(ws, _compare(1, run_id, "lm_tiny"), "changing.safetensors", "runs add")


def test_model_with_the_wrong_number_of_classes(ws: Workspace) -> None:
    path = ws.root / "five.safetensors"
    save_checkpoint(tiny_cnn(num_classes=5), path, "safetensors")
    run_id = _add(
        ws,
        path,
        "--task",
        "classification",
        "--num-classes",
        "10",
        "--factory",
        "regress_action.zoo:tiny_cnn",
        "--factory-kwargs",
        '{"num_classes": 5}',
    )
    _assert_bad_input(ws, _compare(ws.runs["cnn_a"], run_id, "vision_tiny"), "num_classes=10")


def test_model_with_the_wrong_vocabulary(ws: Workspace) -> None:
    path = ws.root / "vocab100.safetensors"
    save_checkpoint(tiny_lm(vocab_size=100), path, "safetensors")
    factory = ["--factory", "regress_action.zoo:tiny_lm", "--factory-kwargs", '{"vocab_size": 100}']
    # Registration runs an lm once on dummy tokens: the mismatch fails at `runs add`.
    args = ["runs", "add", str(path), "--task", "lm", *factory]
    _assert_bad_input(ws, args, "predicts 100 tokens", "--vocab-size 100")


def test_unwritable_report_path_fails_before_evaluating(ws: Workspace) -> None:
    (ws.root / "a_dir").mkdir(exist_ok=True)
    args = [*compare_args("1", "2", "lm_tiny"), "--json-out", str(ws.root / "a_dir")]
    _assert_bad_input(ws, args, "--json-out")


def test_one_unwritable_output_writes_nothing(ws: Workspace) -> None:
    good = ws.root / "new_folder" / "good.json"
    args = [*compare_args("1", "2", "lm_tiny"), "--json-out", str(good)]
    _assert_bad_input(ws, [*args, "--markdown-out", "/proc/none/r.md"], "/proc/none/r.md")
    assert not good.parent.exists()


def test_read_only_commands_do_not_create_a_database(ws: Workspace) -> None:
    missing = ws.root / "typo" / "regres.db"
    _assert_bad_input(ws, ["runs", "list", "--db", str(missing)], "no ExperimentDB")
    assert not missing.parent.exists()


def test_gate_must_name_a_reported_metric(ws: Workspace) -> None:
    args = _compare(3, 4, "vision_tiny", "--metrics", "accuracy", "--gate", "loss")
    _assert_bad_input(ws, args, "'loss'", "--metrics")


def test_runs_add_refuses_flags_of_the_other_task(ws: Workspace) -> None:
    args = ["runs", "add", "x.pt", "--task", "classification", "--vocab-size", "5"]
    _assert_bad_input(ws, args, "--vocab-size")


def test_a_report_path_may_not_replace_the_database(ws: Workspace) -> None:
    database = ws.db.removeprefix("sqlite:///")
    before = Path(database).read_bytes()[:16]
    _assert_bad_input(ws, _compare(1, 2, "lm_tiny", "--json-out", database), "ExperimentDB file")
    assert Path(database).read_bytes()[:16] == before == b"SQLite format 3\x00"
    same = [*compare_args("1", "2", "lm_tiny"), "--json-out", "r.out", "--markdown-out", "./r.out"]
    _assert_bad_input(ws, same, "--markdown-out")


def test_a_file_that_is_not_a_database(ws: Workspace) -> None:
    (ws.root / "notes.txt").write_text("not sqlite " * 100)
    _assert_bad_input(ws, ["runs", "list", "--db", "notes.txt"], "notes.txt", "--db")


def test_compare_does_not_create_a_missing_database(ws: Workspace) -> None:
    _assert_bad_input(ws, _compare(1, 2, "lm_tiny", "--db", "typo.db"), "no ExperimentDB")
    assert not (ws.root / "typo.db").exists()


def test_resamples_are_bounded(ws: Workspace) -> None:
    _assert_bad_input(ws, _compare(1, 2, "lm_tiny", "--resamples", "10000000"), "--resamples")


def test_a_bug_is_exit_3_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from regress_action import cli

    def broken(args: object) -> int:
        raise KeyError("boom")

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.HANDLERS, "runs_list", broken)
    assert cli.main(["runs", "list"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'boom'" in err and "internal error (a bug)" in err
    monkeypatch.setitem(cli.HANDLERS, "runs_list", interrupted)
    assert cli.main(["runs", "list"]) == 130
    assert capsys.readouterr().err == "regress-action: interrupted\n"
