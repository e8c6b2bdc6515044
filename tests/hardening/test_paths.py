"""No writes outside the workspace, no links followed when a file is created, no stale temp files.

The Action (run as root in its container) accepts only paths that resolve inside
GITHUB_WORKSPACE or RUNNER_TEMP, symlinks included; the CLI accepts any path. In both, a report
is staged under a hidden name in its target's real folder (created exclusively, never through a
link) and renamed over the target; a report path that is itself a symlink is updated in place only
when it leads to an existing file in the link's own folder or below. A run killed while its files
are staged leaves hidden `.NAME.HEX.tmp` files, which the next run writing there removes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regress_action import cli
from regress_action.config import task_from
from regress_action.errors import ConfigError
from regress_action.files import StagedFile, check_writable
from regress_action.preflight import check_inputs
from regress_action.settings import input_label, load_inputs
from regress_action.store import ExperimentDB

EXE = str(Path(sys.executable).parent / "regress-action")
SECRET = "do not touch"


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


# --------------------------------------------------------------------------- files (CLI rules)


@dataclass
class Tree:
    """A user's folder `work/` and, beside it, `outside/` with a file that must stay intact."""

    work: Path
    outside: Path

    @property
    def secret(self) -> Path:
        return self.outside / "secret.txt"


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    return Tree(work, outside)


def _link_out(tree: Tree) -> Path:
    (tree.work / "report.json").symlink_to(tree.secret)
    return tree.work / "report.json"


def _link_up(tree: Tree) -> Path:
    (tree.work / "sub").mkdir()
    (tree.work / "sub" / "report.json").symlink_to(Path("..") / ".." / "outside" / "secret.txt")
    return tree.work / "sub" / "report.json"


def _dangling_out(tree: Tree) -> Path:
    (tree.work / "report.json").symlink_to(tree.outside / "new.json")
    return tree.work / "report.json"


def _dangling_beside(tree: Tree) -> Path:
    (tree.work / "report.json").symlink_to("missing.json")
    return tree.work / "report.json"


def _link_to_folder(tree: Tree) -> Path:
    (tree.work / "report.json").symlink_to(tree.outside)
    return tree.work / "report.json"


@pytest.mark.parametrize(
    ("make", "says"),
    [
        pytest.param(_link_out, "outside its folder", id="link-to-a-file-elsewhere"),
        pytest.param(_link_up, "outside its folder", id="relative-link-climbing-out"),
        pytest.param(_dangling_out, "missing file", id="dangling-link-elsewhere"),
        pytest.param(_dangling_beside, "missing file", id="dangling-link-beside-it"),
        pytest.param(_link_to_folder, "outside its folder", id="link-to-a-folder"),
    ],
)
def test_a_report_path_that_is_a_link_leading_out_is_refused(
    tree: Tree, make: Callable[[Tree], Path], says: str
) -> None:
    path = make(tree)
    with pytest.raises(ConfigError) as info:
        StagedFile(path, "JSON report")
    message = str(info.value)
    assert "\n" not in message and str(path) in message and says in message
    assert "remove the link" in message
    assert tree.secret.read_text() == SECRET
    assert sorted(p.name for p in tree.outside.iterdir()) == ["secret.txt"]
    assert _tmp_files(tree.work) == [] and path.is_symlink()


def test_check_writable_refuses_the_same_links(tree: Tree) -> None:
    with pytest.raises(ConfigError, match="outside its folder"):
        check_writable(_link_out(tree), "--json-out")
    assert tree.secret.read_text() == SECRET


@pytest.mark.parametrize(
    "target",
    [pytest.param("real.json", id="beside"), pytest.param("reports/real.json", id="below")],
)
def test_a_link_to_a_file_in_its_own_folder_updates_that_file(tree: Tree, target: str) -> None:
    real = tree.work / target
    real.parent.mkdir(exist_ok=True)
    real.write_text("old")
    link = tree.work / "report.json"
    link.symlink_to(target)
    assert StagedFile(link).commit("new") == real
    assert link.is_symlink() and real.read_text() == "new"
    assert _tmp_files(tree.work) == []


def test_a_link_planted_at_the_target_after_staging_is_replaced_not_followed(tree: Tree) -> None:
    target = tree.work / "report.json"
    staged = StagedFile(target)
    target.symlink_to(tree.secret)  # appears while the run evaluates
    staged.commit("report")
    assert not target.is_symlink() and target.read_text() == "report"
    assert tree.secret.read_text() == SECRET


def test_the_staged_file_lands_in_the_folder_it_was_staged_in(tree: Tree) -> None:
    """The folder is held open: swapping it for a link before the rename cannot redirect it."""
    folder = tree.work / "out"
    folder.mkdir()
    staged = StagedFile(folder / "report.json")
    folder.rename(tree.work / "moved")
    folder.symlink_to(tree.outside)
    staged.commit("report")
    assert (tree.work / "moved" / "report.json").read_text() == "report"
    assert sorted(p.name for p in tree.outside.iterdir()) == ["secret.txt"]


def test_staged_files_are_hidden_and_follow_the_umask(tree: Tree) -> None:
    staged = StagedFile(tree.work / "report.json")
    (name,) = _tmp_files(tree.work)
    assert name.startswith(".report.json.") and name.endswith(".tmp")
    old = os.umask(0o027)
    try:
        path = StagedFile(tree.work / "other.json").commit("x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    staged.discard()
    assert _tmp_files(tree.work) == []


# --------------------------------------------------------------------------- stale temp files


def _stale(folder: Path, name: str, age_s: float = 3600) -> Path:
    path = folder / name
    path.write_text("")
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


def test_stale_temp_files_of_the_target_are_removed_when_it_is_staged_again(tree: Tree) -> None:
    stale = _stale(tree.work, ".report.json.0123456789ab.tmp")
    others = [
        _stale(tree.work, ".other.json.0123456789ab.tmp"),  # another report's: not ours to judge
        _stale(tree.work, ".report.json.tmp"),  # not our pattern
        _stale(tree.work, "report.json.0123456789ab.tmp"),  # not hidden: not ours
    ]
    (tree.work / ".report.json.fedcba987654.tmp").symlink_to(tree.secret)  # a link: left alone
    StagedFile(tree.work / "report.json").commit("{}")
    assert not stale.exists()
    assert all(path.exists() for path in others)
    assert tree.secret.read_text() == SECRET


def test_a_live_staged_file_of_another_writer_is_kept(tree: Tree) -> None:
    """Another process staging the same target holds its file locked: it is not stale."""
    script = (
        "import sys, time\n"
        "from regress_action.files import StagedFile\n"
        "s = StagedFile(sys.argv[1])\n"
        "print('staged', flush=True)\n"
        "time.sleep(60)\n"
    )
    target = tree.work / "report.json"
    with subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "staged"
            (theirs,) = _tmp_files(tree.work)
            past = time.time() - 3600  # even one that looks old
            os.utime(tree.work / theirs, (past, past))
            StagedFile(target).commit("{}")
            assert _tmp_files(tree.work) == [theirs]
        finally:
            proc.kill()


def test_a_staging_process_killed_leaves_nothing_after_the_next_run(tree: Tree) -> None:
    script = (
        "import sys, time\n"
        "from regress_action.files import StagedFile\n"
        "StagedFile(sys.argv[1]); StagedFile(sys.argv[2])\n"
        "print('staged', flush=True)\n"
        "time.sleep(60)\n"
    )
    paths = [tree.work / "report.json", tree.work / "report.md"]
    with subprocess.Popen(
        [sys.executable, "-c", script, *map(str, paths)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "staged"
        proc.send_signal(signal.SIGKILL)
    left = _tmp_files(tree.work)
    assert len(left) == 2 and all(name.startswith(".") for name in left)
    rerun = "import sys\nfrom regress_action.files import StagedFile\n" + "".join(
        f"StagedFile(sys.argv[{i}]).commit('x')\n" for i in (1, 2)
    )
    subprocess.run([sys.executable, "-c", rerun, *map(str, paths)], check=True)
    assert _tmp_files(tree.work) == []
    assert [p.read_text() for p in paths] == ["x", "x"]


@pytest.mark.slow
def test_cli_compare_killed_while_recording_leaves_no_temp_files(tmp_path: Path) -> None:
    """The real CLI, held on a SQLite write lock after staging its reports, then SIGKILLed."""
    import torch

    from regress_action.app import CheckpointRequest, register_checkpoint
    from regress_action.config import task_spec
    from regress_action.models import save_checkpoint
    from regress_action.zoo import tiny_lm

    database = tmp_path / "runs.db"
    with ExperimentDB(database) as db:
        for seed in (0, 1):
            torch.manual_seed(seed)
            path = tmp_path / f"m{seed}.safetensors"
            save_checkpoint(tiny_lm(), path, "safetensors")
            request = CheckpointRequest(
                checkpoint=str(path), task=task_spec("lm"), factory="regress_action.zoo:tiny_lm"
            )
            register_checkpoint(db, request)
    out = tmp_path / "out"
    args = [
        EXE, "compare", "--baseline-run", "1", "--candidate-run", "2", "--dataset", "lm_tiny",
        "--max-examples", "8", "--device", "cpu", "--db", f"sqlite:///{database}",
        "--json-out", str(out / "r.json"), "--markdown-out", str(out / "r.md"),
    ]  # fmt: skip
    log = tmp_path / "killed.log"
    lock = sqlite3.connect(database, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the comparison's write waits (busy timeout 30 s)
    try:
        with (
            log.open("w") as sink,
            subprocess.Popen(args, cwd=tmp_path, stdout=sink, stderr=sink) as proc,
        ):
            try:
                deadline = time.monotonic() + 120
                while len(_tmp_files(out) if out.exists() else []) < 2:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "the reports were never staged"
                    time.sleep(0.05)
            finally:
                proc.send_signal(signal.SIGKILL)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert len(_tmp_files(out)) == 2 and not (out / "r.json").exists()
    subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)
    assert _tmp_files(out) == []
    assert json.loads((out / "r.json").read_text())["dataset"]["n"] == 8


# --------------------------------------------------------------------------- the Action


@dataclass
class Workspace:
    root: Path  # GITHUB_WORKSPACE, the cwd
    outside: Path  # beside it: must stay untouched
    temp: Path  # RUNNER_TEMP

    def snapshot(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.outside)): p.read_bytes()
            for p in self.outside.rglob("*")
            if p.is_file()
        }


@pytest.fixture
def action_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    ws = Workspace(tmp_path / "workspace", tmp_path / "outside", tmp_path / "runner-temp")
    for folder in (ws.root, ws.outside, ws.temp):
        folder.mkdir()
    for folder in (ws.root, ws.outside, ws.temp):
        (folder / "model.safetensors").write_bytes(b"not read: the inputs fail first")
        (folder / "data.jsonl").write_text('{"text": "hello"}\n')
        (folder / "tokenizer.json").write_text("{}")
        (folder / "models").mkdir()
    (ws.outside / "secret.json").write_text(SECRET)
    for name in list(os.environ):
        if name.startswith(("INPUT_", "GITHUB_", "RUNNER_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GITHUB_WORKSPACE", str(ws.root))
    monkeypatch.setenv("RUNNER_TEMP", str(ws.temp))
    monkeypatch.setenv("GITHUB_OUTPUT", str(ws.temp / "output"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(ws.temp / "summary.md"))
    monkeypatch.chdir(ws.root)
    yield ws


BASE_INPUTS = {
    "baseline-checkpoint": "model.safetensors",
    "candidate-checkpoint": "model.safetensors",
    "model-factory": "regress_action.zoo:tiny_lm",
    "task": "lm",
    "dataset": "lm_tiny",
    "device": "cpu",
    "comment": "off",
}


def _set_inputs(monkeypatch: pytest.MonkeyPatch, inputs: dict[str, str]) -> None:
    for name, value in inputs.items():
        monkeypatch.setenv(f"INPUT_{name.upper()}", value)


def _link(at: str, to: str) -> Callable[[Workspace], dict[str, str]]:
    def make(ws: Workspace) -> dict[str, str]:
        (ws.root / at).symlink_to(ws.outside / to)
        return {}

    return make


def _given(**inputs: str) -> Callable[[Workspace], dict[str, str]]:
    def make(ws: Workspace) -> dict[str, str]:
        return {
            name.replace("_", "-"): value.format(outside=ws.outside)
            for name, value in inputs.items()
        }

    return make


def _both(*makers: Callable[[Workspace], dict[str, str]]) -> Callable[[Workspace], dict[str, str]]:
    def make(ws: Workspace) -> dict[str, str]:
        merged: dict[str, str] = {}
        for maker in makers:
            merged.update(maker(ws))
        return merged

    return make


OUTSIDE_CASES = [
    pytest.param(_given(json_path="../x.json"), "json-path", id="json-path-dotdot"),
    pytest.param(_given(json_path="{outside}/x.json"), "json-path", id="json-path-absolute"),
    pytest.param(_given(markdown_path="{outside}/x.md"), "markdown-path", id="md-abs"),
    pytest.param(_given(records_path="../r.parquet"), "records-path", id="records-dotdot"),
    pytest.param(
        _both(_link("r.npz", "secret.json"), _given(records_path="r.npz")),
        "records-path",
        id="records-path-a-committed-link",
    ),
    pytest.param(
        _both(_link("out", "models"), _given(json_path="out/x.json")),
        "json-path",
        id="json-path-through-a-linked-folder",
    ),
    pytest.param(
        _both(_link("r.json", "secret.json"), _given(json_path="r.json")),
        "json-path",
        id="json-path-a-committed-link",
    ),
    pytest.param(
        _both(_link("r.md", "new.md"), _given(markdown_path="r.md")),
        "markdown-path",
        id="markdown-path-a-dangling-link",
    ),
    pytest.param(_link("regress-action", "models"), "json-path", id="default-folder-a-link"),
    pytest.param(_given(dataset="{outside}/data.jsonl"), "dataset", id="dataset-absolute"),
    pytest.param(_given(dataset="../outside/data.jsonl"), "dataset", id="dataset-dotdot"),
    pytest.param(
        _both(_link("data", "models"), _given(dataset="data")), "dataset", id="dataset-a-link"
    ),
    pytest.param(
        _given(baseline_checkpoint="{outside}/model.safetensors"),
        "baseline-checkpoint",
        id="baseline-checkpoint-absolute",
    ),
    pytest.param(
        _both(
            _link("c.safetensors", "model.safetensors"),
            _given(candidate_checkpoint="c.safetensors"),
        ),
        "candidate-checkpoint",
        id="candidate-checkpoint-a-link",
    ),
    pytest.param(
        _given(dataset="data.jsonl", tokenizer="{outside}/tokenizer.json"),
        "tokenizer",
        id="tokenizer-absolute",
    ),
]


@pytest.mark.parametrize(("make", "named"), OUTSIDE_CASES)
def test_action_refuses_a_path_outside_the_workspace(
    action_ws: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Workspace], dict[str, str]],
    named: str,
) -> None:
    before = action_ws.snapshot()
    _set_inputs(monkeypatch, {**BASE_INPUTS, **make(action_ws)})
    workspace_before = sorted(p.name for p in action_ws.root.iterdir())
    rc = cli.main(["action"])
    out, err = capsys.readouterr()
    assert rc == 2, out + err
    (error,) = [line for line in out.splitlines() if line.startswith("::error")]
    assert f"input {named}" in error and "outside the workspace" in error
    assert "Traceback" not in err
    assert action_ws.snapshot() == before
    after = sorted(p.name for p in action_ws.root.iterdir())
    assert {*after} - {"regress-action.db"} == {*workspace_before}  # no report folder made
    with ExperimentDB(action_ws.root / "regress-action.db") as db:
        assert db.list_runs() == []
    assert _tmp_files(action_ws.root) == [] and _tmp_files(action_ws.outside) == []


INSIDE_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"json-path": "reports/r.json", "markdown-path": "./r.md"}, id="relative"),
    pytest.param({"json-path": "{root}/r.json"}, id="absolute-in-workspace"),
    pytest.param({"json-path": "{temp}/r.json", "dataset": "{temp}/data.jsonl"}, id="runner-temp"),
    pytest.param({"baseline-checkpoint": "{temp}/model.safetensors"}, id="checkpoint-in-temp"),
    pytest.param({"dataset": "data.jsonl", "tokenizer": "tokenizer.json"}, id="tokenizer-file"),
    pytest.param({"json-path": "linked/r.json"}, id="a-link-inside-the-workspace"),
]


@pytest.mark.parametrize("more", INSIDE_CASES)
def test_action_accepts_paths_inside_the_workspace_or_runner_temp(
    action_ws: Workspace, monkeypatch: pytest.MonkeyPatch, more: dict[str, str]
) -> None:
    (action_ws.root / "linked").symlink_to(action_ws.root / "models")
    values = {k: v.format(root=action_ws.root, temp=action_ws.temp) for k, v in more.items()}
    _set_inputs(monkeypatch, {**BASE_INPUTS, **values})
    inputs = load_inputs()
    with ExperimentDB(action_ws.root / "regress-action.db") as db:
        check_inputs(inputs, task_from(inputs, input_label), db)
        assert db.list_runs() == []
    assert _tmp_files(action_ws.root) == [] and _tmp_files(action_ws.temp) == []


def test_the_workspace_defaults_to_the_current_folder(
    action_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_WORKSPACE")
    monkeypatch.delenv("RUNNER_TEMP")
    _set_inputs(monkeypatch, {**BASE_INPUTS, "json-path": f"{action_ws.temp}/r.json"})
    inputs = load_inputs()
    with (
        ExperimentDB(action_ws.root / "regress-action.db") as db,
        pytest.raises(ConfigError, match=r"input json-path: .* outside the workspace"),
    ):
        check_inputs(inputs, task_from(inputs, input_label), db)
