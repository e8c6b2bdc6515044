"""The Action's step fails after it began registering its checkpoints: the ExperimentDB keeps
the row counts it had (runs, comparisons, evaluations), runs registered earlier are kept, and
a bad `db-url` is one error line naming the input, its password masked."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import func, select

from regress_action.store import ExperimentDB
from regress_action.store_schema import comparisons, evaluations, runs
from tests.e2e.test_action_e2e import BOT_TOKEN, Runner
from tests.gh_server import FakeGitHub

# A model that passes registration (its output fits on the (1, 8) probe batch) and then
# answers real batches with one logit too few.
BAD_OUTPUT_MODULE = """
from regress_action.zoo import TinyLM


class ShortLogits(TinyLM):
    def forward(self, input_ids, *args, **kwargs):
        out = super().forward(input_ids, *args, **kwargs)
        return out if input_ids.shape[0] == 1 else out[..., :-1]


def build():
    return ShortLogits(256, 64, 32, 2)
"""


@dataclass(frozen=True)
class Checkpoints:
    folder: Path  # baseline / candidate / short .safetensors, pickled.pt


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    import torch

    from regress_action.models import save_checkpoint
    from regress_action.zoo import tiny_lm

    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    save_checkpoint(tiny_lm().eval(), folder / "baseline.safetensors", "safetensors")
    save_checkpoint(tiny_lm().eval(), folder / "candidate.safetensors", "safetensors")
    shutil.copy(folder / "candidate.safetensors", folder / "short.safetensors")
    torch.save(tiny_lm().eval(), folder / "pickled.pt")
    return Checkpoints(folder)


def existing_db(db_file: Path, baseline: Path) -> None:
    """A database that already holds the baseline's run and one comparison."""
    from regress_action.app import CheckpointRequest, register_checkpoint
    from regress_action.config import task_spec
    from tests.report_factory import make_report

    with ExperimentDB(db_file) as db:
        request = CheckpointRequest(
            checkpoint=str(baseline), task=task_spec("lm"), factory="regress_action.zoo:tiny_lm"
        )
        run = register_checkpoint(db, request)
        report = make_report("lm")
        report.baseline.run_id = report.candidate.run_id = run.id
        db.create_comparison(report)


def row_counts(db_file: Path) -> dict[str, int]:
    engine = sqlalchemy.create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            return {
                table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for table in (runs, comparisons, evaluations)
            }
    finally:
        engine.dispose()


def inputs_for(db_file: Path, **more: str) -> dict[str, str]:
    return {
        "baseline-checkpoint": "baseline.safetensors",
        "candidate-checkpoint": "candidate.safetensors",
        "model-factory": "regress_action.zoo:tiny_lm",
        "task": "lm",
        "dataset": "lm_tiny",
        "db-url": f"sqlite:///{db_file}",
        "github-token": BOT_TOKEN,
        "device": "cpu",
        "significance": "off",
        **more,
    }


@pytest.fixture
def runner(gh_server: FakeGitHub, tmp_path: Path, checkpoints: Checkpoints) -> Runner:
    workspace, home = tmp_path / "workspace", tmp_path / "home"
    shutil.copytree(checkpoints.folder, workspace)
    home.mkdir()
    (workspace / "badmodels.py").write_text(BAD_OUTPUT_MODULE)
    (workspace / "data").mkdir()
    (workspace / "data" / "broken.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    return Runner(gh_server, workspace, home)


FAILURES = [
    ({"candidate-checkpoint": "pickled.pt"}, "candidate-checkpoint"),  # baseline registered
    ({"dataset": "data/broken.jsonl"}, "broken.jsonl"),
    (
        {
            "candidate-checkpoint": "short.safetensors",
            "candidate-model-factory": "badmodels:build",
        },
        "",
    ),
]
FAILURE_IDS = ["pickle-candidate", "malformed-dataset", "bad-model-output"]


@pytest.mark.slow
@pytest.mark.parametrize("fresh_db", [False, True], ids=["existing-db", "new-db"])
@pytest.mark.parametrize(("bad", "named"), FAILURES, ids=FAILURE_IDS)
def test_a_failed_step_leaves_the_db_row_counts_unchanged(
    runner: Runner, bad: dict[str, str], named: str, fresh_db: bool
) -> None:
    db_file = runner.workspace / "runs.db"
    if fresh_db:
        ExperimentDB(db_file).close()
    else:
        existing_db(db_file, runner.workspace / "baseline.safetensors")
    before = row_counts(db_file)
    result = runner.run("action", inputs=inputs_for(db_file, **bad))
    assert result.rc == 2, result.stdout + result.stderr
    (error,) = result.lines("::error")
    assert named in error
    assert "Traceback" not in result.stdout + result.stderr
    assert row_counts(db_file) == before
    assert not (runner.workspace / "regress-action").exists()
    assert runner.server.requests == []


@pytest.mark.slow
def test_after_a_failed_step_the_same_checkpoints_register_and_compare(runner: Runner) -> None:
    db_file = runner.workspace / "runs.db"
    existing_db(db_file, runner.workspace / "baseline.safetensors")
    bad = inputs_for(db_file, dataset="data/broken.jsonl")
    assert runner.run("action", inputs=bad).rc == 2
    good = runner.run("action", inputs=inputs_for(db_file))
    assert good.rc in (0, 1), good.stdout + good.stderr
    # The good comparison stored both sides' records (the next one against them reuses them).
    assert row_counts(db_file) == {"runs": 2, "comparisons": 2, "evaluations": 2}


# Each password breaks a naive parse; no piece of it may reach the log.
SECRET_DB_URLS = [
    ("postgresql://ci:QZ@XK7@127.0.0.1:1/db", "QZ@XK7"),
    ("postgresql://ci:QZ@XK7@127.0.0.1:notaport/db", "QZ@XK7"),
    ("postgresql://ci:QZ:X/K7%@127.0.0.1:notaport/db", "QZ:X/K7%"),
    ("postgresql://ci:QZ/XK7@127.0.0.1:1/db", "QZ/XK7"),
]


@pytest.mark.parametrize(
    ("url", "password"), SECRET_DB_URLS, ids=["at", "at-bad-port", "mixed-bad-port", "refused"]
)
def test_a_bad_db_url_is_one_error_line_naming_db_url_without_its_password(
    runner: Runner, url: str, password: str
) -> None:
    inputs = {"baseline-run-id": "1", "candidate-run-id": "2", "dataset": "lm_tiny"}
    result = runner.run("action", inputs={**inputs, "db-url": url, "comment": "off"})
    assert result.rc == 2, result.stdout + result.stderr
    (error,) = result.lines("::error")
    assert "db-url" in error and "--db" not in error
    log = result.stdout + result.stderr
    assert "Traceback" not in log
    pieces = {password} | {p for sep in "@:/%" for p in password.split(sep) if len(p) >= 2}
    for piece in pieces:
        assert piece not in log
    created = {path.name for path in runner.workspace.iterdir()}
    assert created == {"baseline.safetensors", "candidate.safetensors", "short.safetensors",
                       "pickled.pt", "badmodels.py", "data"}  # fmt: skip
