"""Small defects at the edges: tolerances that are not finite numbers, read-only and empty
database files, names that would become links or workflow commands, a NaN loss's perplexity,
library noise before a format error, the Action's messages naming its inputs, corrupt report
artifacts, a modality mismatch, the demo's leftovers and the example workflows."""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from regress_action.cli import main
from regress_action.cli_args import flag_name
from regress_action.config import verdict_config
from regress_action.errors import ConfigError
from regress_action.settings import load_inputs
from regress_action.spec import VerdictConfig
from regress_action.store import ExperimentDB
from tests.e2e.test_action_e2e import Runner
from tests.hardening import test_action_failures as failures
from tests.hardening.test_action_failures import existing_db, inputs_for


def cli(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """`regress-action ARGS` in this process; an argparse usage error is exit code 2 too."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.chdir(cwd)
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as stopped:
            code = int(stopped.code or 0)
    return code, out.getvalue(), err.getvalue()


# The Action failure tests' workspace: tiny LM checkpoints, a pickled one, a broken JSONL file.
checkpoints = failures.checkpoints
runner = failures.runner


# --- tolerances must be finite numbers >= 0 ---------------------------------------------------

NOT_TOLERANCES = ["inf", "Infinity", "nan", "-1", "-inf"]


@pytest.mark.parametrize("value", NOT_TOLERANCES)
def test_cli_threshold_must_be_finite_and_not_negative(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "lm_tiny"]
    for command in (["compare", *args], ["publish", "--report", "r.json"]):
        code, _, err = cli([*command, f"--threshold={value}"], tmp_path, monkeypatch)
        assert code == 2
        assert "--threshold" in err and "finite number" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_per_metric_tolerances_must_be_finite(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["publish", "--report", "r.json", f"--tolerance=loss={value}"]
    code, _, err = cli(args, tmp_path, monkeypatch)
    assert code == 2 and "--tolerance" in err and "finite numbers ≥ 0" in err
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "lm_tiny")
    monkeypatch.setenv("INPUT_METRIC-TOLERANCES", '{"loss": Infinity}')
    with pytest.raises(ConfigError, match="input metric-tolerances"):
        load_inputs()


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_action_threshold_must_be_finite(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "lm_tiny")
    monkeypatch.setenv("INPUT_THRESHOLD", value)
    with pytest.raises(ConfigError, match="input threshold"):
        load_inputs()


@pytest.mark.parametrize("value", [math.inf, math.nan, -0.5])
def test_config_and_api_threshold_must_be_finite(value: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        VerdictConfig(threshold=value)
    options = argparse.Namespace(threshold=value)
    with pytest.raises(ConfigError, match="--threshold"):
        verdict_config(options, flag_name)
    from regress_action import compare_models
    from regress_action.spec import EvalConfig, TaskSpec

    task = TaskSpec(modality="text", task="lm", vocab_size=256)
    with pytest.raises(ConfigError, match="threshold"):
        # Refused before the models are looked at.
        compare_models(None, None, None, task, EvalConfig(dataset="lm_tiny"), threshold=value)  # type: ignore[arg-type]


# --- a line break in a name cannot start a workflow command -----------------------------------

INJECTED = "\n::warning::pwned"


def no_injected_line(text: str) -> bool:
    return not any(line.lstrip().startswith("::warning::pwned") for line in text.splitlines())


def test_cli_errors_print_a_path_with_line_breaks_on_one_line(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = runner.workspace
    db_file = workspace / "runs.db"
    existing_db(db_file, workspace / "baseline.safetensors")
    dataset = f"d{INJECTED}.jsonl"
    (workspace / dataset).write_text('{"text": "fine"}\n{"text": \n')
    args = ["--baseline-run-id", "1", "--candidate-run-id", "1", "--no-record"]
    code, _, err = cli(
        ["compare", *args, "--dataset", dataset, "--db", str(db_file)], workspace, monkeypatch
    )
    assert code == 2 and len(err.splitlines()) == 1, err
    assert no_injected_line(err) and "d\\n::warning::pwned.jsonl" in err
    checkpoint = f"e{INJECTED}.pt"
    (workspace / checkpoint).write_bytes(b"garbage")
    code, _, err = cli(
        ["runs", "add", checkpoint, "--task", "lm", "--db", str(db_file)], workspace, monkeypatch
    )
    assert code == 2 and len(err.splitlines()) == 1 and no_injected_line(err), err


def test_the_action_logs_a_checkpoint_name_with_line_breaks_on_one_line(runner: Runner) -> None:
    workspace = runner.workspace
    checkpoint = f"cand{INJECTED}.safetensors"
    shutil.copy(workspace / "candidate.safetensors", workspace / checkpoint)
    bad = {"candidate-checkpoint": checkpoint, "dataset": "data/broken.jsonl"}
    inputs = inputs_for(workspace / "runs.db", **bad)
    result = runner.run("action", inputs=inputs)
    assert result.rc == 2, result.stdout + result.stderr
    assert no_injected_line(result.stdout) and no_injected_line(result.stderr)
    assert any("as run" in line and "pwned" in line for line in result.stdout.splitlines())


# --- the Action's messages name its inputs, not the CLI's flags --------------------------------


def test_action_errors_name_inputs_not_cli_flags(runner: Runner) -> None:
    workspace = runner.workspace
    not_ours = workspace / "other.db"
    with sqlite3.connect(not_ours) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER)")
    conn.close()
    db_file = workspace / "runs.db"
    cases = [
        ({"candidate-checkpoint": "pickled.pt"}, "set input allow-pickle: true"),
        ({"db-url": f"sqlite:///{not_ours}"}, "input db-url"),
        ({"threshold": "inf"}, "input threshold"),
        ({"dataset": "no/such.jsonl"}, "input dataset"),
    ]
    for bad, named in cases:
        result = runner.run("action", inputs=inputs_for(db_file, **bad))
        assert result.rc == 2, result.stdout + result.stderr
        (error,) = result.lines("::error")
        assert named in error, error
        assert " --" not in error and "(--" not in error, error


def test_cli_flags_map_to_action_inputs() -> None:
    from regress_action.settings import flag_inputs, name_inputs

    mapping = flag_inputs()
    assert mapping["--db"] == "db-url" and mapping["--factory"] == "model-factory"
    assert mapping["--tolerance"] == "metric-tolerances" and mapping["--json-out"] == "json-path"
    assert name_inputs("check --db / REGRESS_DB") == "check input db-url"
    assert name_inputs("pass --vocab-size 300 if so") == "set input vocab-size: 300 if so"
    assert name_inputs("lower --batch-size") == "lower input batch-size"
    assert name_inputs("pass --format x") == "pass --format x"  # no such input: left as it is


# --- read-only, empty and foreign database files -----------------------------------------------


def unprivileged() -> list[str]:
    """A prefix that runs a command without root's override of file permissions, so that a
    read-only file is read-only to it (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run without root's permission override")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def run_readonly(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [*unprivileged(), sys.executable, "-m", "regress_action", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def recorded_db(path: Path) -> None:
    """A database with one run and one comparison."""
    from tests.hardening.test_store_hardening import make_run
    from tests.report_factory import make_report

    with ExperimentDB(path) as db:
        run = db.add_run(make_run("kept-run"))
        report = make_report("lm")
        report.baseline.run_id = report.candidate.run_id = run.id
        db.create_comparison(report)


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    modes = {path: path.stat().st_mode for path in paths}
    for path in paths:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


READ_COMMANDS = [["runs", "list"], ["comparisons", "list"], ["comparisons", "show", "1"]]


@pytest.mark.parametrize("folder_too", [False, True], ids=["file", "file-and-folder"])
def test_read_commands_work_on_a_read_only_database(tmp_path: Path, folder_too: bool) -> None:
    folder = tmp_path / "dbs"
    folder.mkdir()
    db_file = folder / "ro.db"
    recorded_db(db_file)
    before = db_file.read_bytes()
    with read_only(db_file, *([folder] if folder_too else [])):
        for command in READ_COMMANDS:
            done = run_readonly([*command, "--db", str(db_file)], tmp_path)
            assert done.returncode == 0, done.stderr
        assert "kept-run" in run_readonly(["runs", "list", "--db", str(db_file)], tmp_path).stdout
        compare = ["compare", "--baseline-run-id", "1", "--candidate-run-id", "1"]
        add = ["runs", "add", "model.safetensors", "--task", "lm"]
        writes = [add, [*compare, "--dataset", "x"]]
        for command in writes:
            done = run_readonly([*command, "--db", str(db_file)], tmp_path)
            assert done.returncode == 2, done.stderr
            (line,) = done.stderr.splitlines()
            assert str(db_file) in line and "read-only" in line and "writable" in line, line
    assert db_file.read_bytes() == before


def test_an_older_read_only_database_says_it_needs_an_upgrade(tmp_path: Path) -> None:
    from tests.hardening.test_store_hardening import _downgrade_to_4

    folder = tmp_path / "dbs"
    folder.mkdir()
    db_file = folder / "old.db"
    recorded_db(db_file)
    _downgrade_to_4(f"sqlite:///{db_file}")
    with read_only(db_file, folder):
        done = run_readonly(["runs", "list", "--db", str(db_file)], tmp_path)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert "schema version 4" in line and "cannot be upgraded here" in line
    # Writable, the same command upgrades it in place as before.
    done = run_readonly(["runs", "list", "--db", str(db_file)], tmp_path)
    assert done.returncode == 0 and "kept-run" in done.stdout, done.stderr


def test_an_empty_file_is_not_taken_for_an_experiment_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    commands = [
        *READ_COMMANDS,
        ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "lm_tiny"],
        ["evaluate", "--run-id", "1", "--dataset", "lm_tiny"],
    ]
    for command in commands:
        code, _, err = cli([*command, "--db", str(empty)], tmp_path, monkeypatch)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert f"{empty} is an empty file, not an ExperimentDB" in err
        assert empty.stat().st_size == 0  # no schema written into it
    # A command that creates the database takes an empty file as a new one (SQLite's rule).
    with ExperimentDB(empty) as db:
        assert db.list_runs() == []


def test_a_file_that_is_not_sqlite_is_refused_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    for command in [["runs", "list"], ["runs", "add", "m.safetensors", "--task", "lm"]]:
        code, _, err = cli([*command, "--db", str(notes)], tmp_path, monkeypatch)
        assert code == 2 and f"{notes} is not a SQLite database" in err, err
    assert notes.read_text() == "not a database\n"


# --- class and run names never become links in the report -------------------------------------

LINKY = [
    "https://evil.example/x",
    "www.evil.example",
    "WWW.Evil.Example/path?q=1",
    "_www.evil.example",
    "cat_www.evil.example",
    "(www.evil.example)",
    "mail me at a.b@evil.example",
    "mailto:a@evil.example",
    "xmpp:a@evil.example/r",
    "ftp://files.evil.example",
]


def gfm_html(markdown: str) -> str:
    """GitHub's own renderer (cmark-gfm with its autolink extension)."""
    import cmarkgfm

    html: str = cmarkgfm.github_flavored_markdown_to_html(markdown)
    return html


@pytest.mark.parametrize("name", LINKY)
def test_names_in_the_report_never_become_links(name: str) -> None:
    from regress_action.render import md_escape, render_markdown
    from tests.report_factory import CLASS_NAMES, make_report

    assert "<a " not in gfm_html(md_escape(name)), md_escape(name)
    report = make_report(per_class=True, flips=True)
    report.candidate = report.candidate.model_copy(update={"name": name})
    report.dataset = report.dataset.model_copy(update={"class_names": [name, *CLASS_NAMES[1:]]})
    html = gfm_html(render_markdown(report))
    assert "<a " not in html.replace('<a href="#', ""), html


# --- a forced wrong format is one line, without the libraries' warnings -------------------------

# torch.export logs a whole traceback (14 lines) before it raises on a file of another format.
WRONG_FORMATS = [("baseline.safetensors", "export"), ("pickled.pt", "export")]


@pytest.mark.slow  # a process that imports torch per case
@pytest.mark.parametrize(("checkpoint", "forced"), WRONG_FORMATS)
def test_a_forced_wrong_format_is_one_error_line(
    checkpoints: failures.Checkpoints, tmp_path: Path, checkpoint: str, forced: str
) -> None:
    shutil.copy(checkpoints.folder / checkpoint, tmp_path / checkpoint)
    args = ["runs", "add", checkpoint, "--task", "lm", "--format", forced, "--db", "runs.db"]
    args += ["--factory", "regress_action.zoo:tiny_lm", "--allow-pickle"]
    command = [sys.executable, "-m", "regress_action", *args]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("regress-action: error: cannot load checkpoint") and checkpoint in line
    assert "warnings above" not in line


# --- a corrupt report artifact is one line naming its fields -----------------------------------


def test_a_corrupt_report_names_the_file_and_each_bad_field(runner: Runner) -> None:
    import json

    from tests.report_factory import make_report

    data = json.loads(make_report().to_json())
    data["metrics"]["accuracy"]["baseline"] = "ninety"
    data["metrics"]["loss"]["status"] = "great"
    (runner.workspace / "corrupt.json").write_text(json.dumps(data))
    result = runner.run("publish", "--report", "corrupt.json", "--comment", "off")
    assert result.rc == 2, result.stdout + result.stderr
    (error,) = result.lines("::error")
    assert "corrupt.json" in error and "validation error" not in error
    assert "metrics.accuracy.baseline: Input should be a valid number" in error
    assert "; metrics.loss.status: Input should be" in error
    assert "Traceback" not in result.stdout + result.stderr


# --- a failed demo leaves no folder it made ----------------------------------------------------


def test_a_failed_demo_removes_the_workdir_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")  # the demo fails opening its database
    code, _, err = cli(["demo", "--workdir", "new/demo", "--db", str(notes)], tmp_path, monkeypatch)
    assert code == 2 and "notes.txt" in err, err
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    (kept / "mine.txt").parent.mkdir()
    (kept / "mine.txt").write_text("the user's")
    code, _, err = cli(["demo", "--workdir", str(kept), "--db", str(notes)], tmp_path, monkeypatch)
    assert code == 2, err
    assert (kept / "mine.txt").read_text() == "the user's"


# --- a NaN loss is a NaN perplexity ------------------------------------------------------------


def test_a_nan_lm_loss_gives_a_nan_perplexity_shown_as_nan() -> None:
    import numpy as np

    from regress_action.metrics import apply_transform
    from regress_action.render import render_markdown
    from regress_action.tasks.lm import METRICS
    from regress_action.verdict import judge_metric
    from tests.report_factory import make_report

    columns = {
        "nll_sum": np.array([np.nan, 3.0]),
        "tokens": np.array([4.0, 4.0]),
        "correct_tokens": np.array([1.0, 2.0]),
        "bytes": np.array([4.0, 4.0]),
    }
    assert math.isnan(METRICS["loss"].value(columns))
    assert math.isnan(METRICS["perplexity"].value(columns))  # exp(NaN), not inf
    assert math.isnan(apply_transform(math.nan, "exp"))
    assert apply_transform(1000.0, "exp") == math.inf  # an overflow is inf, as before
    report = make_report("lm")
    result = judge_metric("perplexity", 287.5, math.nan, VerdictConfig())
    assert result.status == "failed"
    report.metrics["perplexity"] = result
    (row,) = [line for line in render_markdown(report).splitlines() if "| perplexity" in line]
    assert "NaN" in row and "inf" not in row.lower()


# --- publish needs no torch --------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
FORK_COMMENT = ROOT / "docs" / "workflows" / "regress-fork-comment.yml"
# Distribution name -> the module it installs, for the package's own dependencies.
IMPORT_NAMES = {
    "torch": "torch",
    "numpy": "numpy",
    "scipy": "scipy",
    "pydantic": "pydantic",
    "pydantic-settings": "pydantic_settings",
    "jinja2": "jinja2",
    "PyGithub": "github",
    "requests": "requests",
    "urllib3": "urllib3",
    "SQLAlchemy": "sqlalchemy",
    "psycopg": "psycopg",
    "safetensors": "safetensors",
    "tqdm": "tqdm",
    "pillow": "PIL",
    "PyYAML": "yaml",
}
EXTRA_MODULES = ["transformers", "tokenizers", "pyarrow"]

# Runs `regress-action` as if only some distributions were installed.
WITHOUT = """#!{python}
import importlib.abc
import sys

MISSING = {missing!r}


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
from regress_action.cli import main

sys.exit(main())
"""


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0]


def publish_dependencies() -> set[str]:
    """The distributions the fork-comment workflow installs besides regress-action (which it
    installs with --no-deps)."""
    text = FORK_COMMENT.read_text(encoding="utf-8").replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        if "pip install" in line and "--no-deps" not in line:
            names |= {_name(item) for item in re.findall(r'"([^"]+)"', line)}
    return names


def test_the_fork_comment_workflow_installs_no_torch() -> None:
    text = FORK_COMMENT.read_text(encoding="utf-8")
    assert "torch" not in publish_dependencies() and "download.pytorch.org" not in text
    (install,) = [line for line in text.splitlines() if "--no-deps" in line]
    ref = install.rsplit("@", 1)[-1]
    assert not re.match(r"v\d", ref), f"installs from a movable tag: {install.strip()}"


def test_publish_runs_with_only_what_the_fork_comment_workflow_installs(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomllib

    from tests.e2e import test_action_e2e
    from tests.report_factory import make_report

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {_name(item) for item in pyproject["project"]["dependencies"]}
    unmapped = declared - set(IMPORT_NAMES)
    assert not unmapped, f"add the module name of {sorted(unmapped)} to IMPORT_NAMES"
    installed = publish_dependencies()
    assert installed <= declared, sorted(installed - declared)
    missing = sorted({IMPORT_NAMES[name] for name in declared - installed} | set(EXTRA_MODULES))
    assert "torch" in missing and "sqlalchemy" in missing
    program = tmp_path / "regress-action-without"
    program.write_text(WITHOUT.format(python=sys.executable, missing=missing))
    program.chmod(0o755)
    monkeypatch.setattr(test_action_e2e, "EXE", str(program))
    result = runner.publish(make_report(), "--report-name", "lm", process=True)
    assert result.rc == 0, result.stdout + result.stderr
    assert "No module named" not in result.stdout + result.stderr
    (body,) = test_action_e2e.bodies(runner.server)
    assert "<!-- regress-action:lm -->" in body


# --- a modality mismatch says which input each side is -----------------------------------------

MISMATCHES = [
    ("lm_tiny", "vision", "classification", "text eval set", "images (batch, channels"),
    ("vision_tiny", "text", "lm", "vision eval set", "token ids (batch, tokens)"),
    ("text.jsonl", "vision", "classification", "text eval set", "images (batch, channels"),
]


@pytest.mark.parametrize(("dataset", "modality", "task", "data_is", "models_take"), MISMATCHES)
def test_a_modality_mismatch_names_both_inputs_and_the_fix(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dataset: str,
    modality: str,
    task: str,
    data_is: str,
    models_take: str,
) -> None:
    from regress_action.data import load_eval_set
    from regress_action.errors import DataError
    from regress_action.spec import TaskSpec

    monkeypatch.chdir(tmp_path)
    lines = [f'{{"text": "review {i}", "label": {i % 3}}}' for i in range(12)]
    (tmp_path / "text.jsonl").write_text("\n".join(lines) + "\n")
    sizes = {"num_classes": 10} if task == "classification" else {"vocab_size": 256}
    spec = TaskSpec(modality=modality, task=task, **sizes)
    with pytest.raises(DataError) as caught:
        load_eval_set(dataset, task=spec)
    message = str(caught.value)
    assert f"{dataset} is a {data_is}" in message and models_take in message
    assert f"compare them on a {modality} eval set" in message
    assert "num_classes" not in message and "num-classes" not in message
