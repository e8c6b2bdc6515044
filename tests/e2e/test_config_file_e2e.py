"""The config file end to end: `regress-action config check`, `compare` picking up
`.regress-action.yml` from the current folder (a flag still winning) with the report recording
the configuration it was judged under, and the Action reading the file of its workspace (or its
`config` input, never one outside the workspace)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from regress_action.models import save_checkpoint
from regress_action.report import Report
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_lm
from tests.e2e.test_action_e2e import Result as ActionResult
from tests.e2e.test_action_e2e import Runner
from tests.e2e.test_cli import Result, run_main
from tests.gh_server import FakeGitHub

CONFIG = """\
# yaml-language-server: $schema=https://example.invalid/config.schema.json
threshold: 0.3
tolerances:
  loss: 5%
significance: report
alpha: 0.1
resamples: 200
seed: 3
dataset: lm_tiny
max_examples: 16
device: cpu
report_name: from-file
"""


class Repo:
    """A user's repository: two tiny lm runs in `regress.db`, commands run from `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = f"sqlite:///{root / 'regress.db'}"

    def run(self, *args: str, cwd: Path | None = None) -> Result:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("REGRESS_DB", self.db)
            patch.chdir(cwd or self.root)
            return run_main(list(args))

    def config(self, text: str, name: str = ".regress-action.yml") -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    repo = Repo(tmp_path_factory.mktemp("config-file") / "ws")
    repo.root.mkdir()
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        save_checkpoint(tiny_lm(), repo.root / f"{name}.safetensors", "safetensors")
        added = repo.run(
            "runs", "add", f"{name}.safetensors", "--task", "lm", "--factory",
            "regress_action.zoo:tiny_lm",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    yield repo


@pytest.fixture
def clean(repo: Repo) -> Iterator[Repo]:
    yield repo
    for name in (".regress-action.yml", "ci.yml"):
        (repo.root / name).unlink(missing_ok=True)


COMPARE = ("compare", "--baseline-run-id", "1", "--candidate-run-id", "2")


# ---------------------------------------------------------------- config check


def test_config_check_prints_the_effective_configuration(clean: Repo) -> None:
    clean.config(CONFIG)
    result = clean.run("config", "check", "--alpha", "0.2")
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["config"] == ".regress-action.yml"
    verdict = effective["verdict"]
    assert (verdict["threshold"], verdict["significance"], verdict["resamples"]) == (
        0.3, "report", 200
    )  # fmt: skip
    assert verdict["alpha"] == 0.2  # the flag wins
    assert verdict["tolerances"] == {"loss": {"abs": None, "rel": 0.05}}
    assert (effective["dataset"], effective["device"], effective["max_examples"]) == (
        "lm_tiny", "cpu", 16
    )  # fmt: skip
    assert effective["report_name"] == "from-file"
    assert ".regress-action.yml: valid" in result.stderr


def test_config_check_without_a_file_prints_the_defaults(clean: Repo) -> None:
    result = clean.run("config", "check")
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["config"] == "defaults"
    assert effective["verdict"]["significance"] == "gate"  # the CLI's default


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("tolerence:\n  loss: 0.02\n", (".regress-action.yml: tolerence", "'tolerances'")),
        ("tolerances:\n  perplexity: lots\n", (".regress-action.yml: tolerances.perplexity",)),
        ("threshold: [\n", (".regress-action.yml:2:1: not valid YAML",)),
    ],
)
def test_config_check_refuses_a_bad_file_in_one_line(
    clean: Repo, text: str, needles: tuple[str, ...]
) -> None:
    clean.config(text)
    result = clean.run("config", "check")
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("regress-action: error: ")
    for needle in needles:
        assert needle in line, line


def test_config_check_as_a_process_exits_2_on_a_bad_file(clean: Repo) -> None:
    clean.config("threshold: 0.02\n", "ci.yml")
    ok = subprocess.run(
        [sys.executable, "-m", "regress_action", "config", "check", "--config", "ci.yml"],
        cwd=clean.root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"]["threshold"] == 0.02
    clean.config("threshold: -1\n", "ci.yml")
    bad = subprocess.run(
        [sys.executable, "-m", "regress_action", "config", "check", "--config", "ci.yml"],
        cwd=clean.root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "regress-action: error: ci.yml: threshold: input should be greater than or equal to 0 "
        "(got '-1'); fix the value (docs/regress-action.example.yml)"
    ]


# ---------------------------------------------------------------- compare


def test_compare_reads_the_file_of_the_current_folder_and_records_it(clean: Repo) -> None:
    clean.config(CONFIG)
    result = clean.run(*COMPARE, "--json-out", "r.json")
    assert result.returncode == 0, result.stderr
    report = Report.model_validate_json(result.stdout)
    assert report.report_name == "from-file" and report.dataset.n == 16
    assert report.threshold == 0.3 and report.stats.significance == "report"
    assert (report.stats.alpha, report.stats.resamples, report.stats.seed) == (0.1, 200, 3)
    loss = report.metrics["loss"]
    assert loss.tolerance == pytest.approx(0.05 * abs(loss.baseline or 0))
    assert report.config is not None
    assert report.config.source == ".regress-action.yml"
    assert report.config.verdict.threshold == 0.3
    # The written artifact and the recorded comparison carry it too.
    written = json.loads((clean.root / "r.json").read_text())
    assert written["config"]["source"] == ".regress-action.yml"
    with ExperimentDB(clean.db) as db:
        stored = db.get_comparison(report.comparison_id or 0).report
    assert stored is not None and stored["config"]["verdict"]["significance"] == "report"


def test_a_flag_overrides_the_files_value(clean: Repo) -> None:
    clean.config(CONFIG)
    result = clean.run(*COMPARE, "--threshold", "0.01", "--tolerance", "loss=0.5",
                       "--no-record")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = Report.model_validate_json(result.stdout)
    assert report.threshold == 0.01 and report.metrics["loss"].tolerance == 0.5
    assert report.report_name == "from-file"  # not given: the file's
    assert report.config is not None and report.config.verdict.threshold == 0.01


def test_compare_without_a_file_records_the_defaults(clean: Repo) -> None:
    result = clean.run(*COMPARE, "--dataset", "lm_tiny", "--max-examples", "8", "--device",
                       "cpu", "--significance", "off", "--no-record")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = Report.model_validate_json(result.stdout)
    assert report.config is not None and report.config.source == "defaults"


def test_an_error_about_a_files_value_names_the_files_key(clean: Repo) -> None:
    clean.config(CONFIG + "metrics_module: nowhere_to_be_found\n")
    result = clean.run(*COMPARE, "--no-record")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert ".regress-action.yml: metrics_module" in line and "--metrics-module" not in line


def test_a_missing_config_path_is_one_line(clean: Repo) -> None:
    result = clean.run(*COMPARE, "--config", "nope.yml")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"regress-action: error: --config: no config file 'nope.yml' (relative to {clean.root}); "
        "check the path"
    ]


# ---------------------------------------------------------------- the Action

ACTION = {
    "baseline-run-id": "1",
    "candidate-run-id": "2",
    "comment": "off",
    # What the runner passes for the inputs the workflow leaves out: action.yml's defaults.
    "threshold": "0.01",
    "significance": "gate",
    "alpha": "0.05",
    "report-name": "default",
    "fail-on-regression": "true",
}


def _action(repo: Repo, inputs: dict[str, str]) -> ActionResult:
    home = repo.root.parent / "home"
    home.mkdir(exist_ok=True)
    runner = Runner(FakeGitHub(), repo.root, home)
    result = runner.run("action", inputs={**ACTION, "db-url": repo.db, **inputs})
    return result


def test_the_action_reads_the_workspace_file_and_records_it(clean: Repo) -> None:
    clean.config(CONFIG + "fail_on_regression: false\n")
    result = _action(clean, {"alpha": "0.2"})
    assert result.rc == 0, result.stdout + result.stderr
    path = clean.root / "regress-action" / "from-file.json"  # the file's report name
    report = Report.model_validate_json(path.read_text())
    assert report.threshold == 0.3 and report.stats.alpha == 0.2  # the input set wins
    assert report.config is not None and report.config.source == ".regress-action.yml"


def test_the_config_input_chooses_the_file(clean: Repo) -> None:
    clean.config(
        "threshold: 0.9\ndataset: lm_tiny\nmax_examples: 8\ndevice: cpu\n"
        "fail_on_regression: false\n",
        "ci.yml",
    )
    result = _action(clean, {"config": "ci.yml", "significance": "off"})
    assert result.rc == 0, result.stdout + result.stderr
    report = Report.model_validate_json((clean.root / "regress-action/default.json").read_text())
    assert report.threshold == 0.9
    assert report.config is not None and report.config.source == "ci.yml"


def test_the_action_refuses_a_config_outside_the_workspace(clean: Repo) -> None:
    outside = clean.root.parent / "elsewhere.yml"
    outside.write_text("threshold: 0.9\ndataset: lm_tiny\n")
    with ExperimentDB(clean.db) as db:
        before = len(db.list_comparisons(limit=1000))
    result = _action(clean, {"config": str(outside)})
    assert result.rc == 2
    (line,) = result.lines("::error")
    assert "input config" in line and "outside the workspace" in line
    with ExperimentDB(clean.db) as db:
        assert len(db.list_comparisons(limit=1000)) == before
