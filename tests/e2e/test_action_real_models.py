"""End to end through the Action's entrypoint with the models and data people have: Hugging Face
model folders (an image classifier on scikit-learn's handwritten digits as PNG files, a BERT
text classifier with a tokenizer trained here), and state-dict checkpoints whose architecture
changed between baseline and candidate. Everything is built offline in the test; the comment
goes over real HTTP to the local GitHub-compatible server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regress_action.report import Report
from regress_action.store import ExperimentDB
from tests.e2e.test_action_e2e import Runner, bodies, runner  # noqa: F401 (fixture)
from tests.gh_server import BOT_TOKEN

pytestmark = pytest.mark.slow


def _common(**more: str) -> dict[str, str]:
    return {"github-token": BOT_TOKEN, "device": "cpu", "significance": "off", **more}


def test_an_architecture_change_compares_from_state_dicts(runner: Runner) -> None:  # noqa: F811
    import torch

    from regress_action.models import save_checkpoint
    from regress_action.zoo import tiny_cnn

    torch.manual_seed(0)
    models = runner.workspace / "models"
    save_checkpoint(tiny_cnn(width=16).eval(), models / "baseline.safetensors", "safetensors")
    save_checkpoint(tiny_cnn(width=4).eval(), models / "candidate.safetensors", "safetensors")
    inputs = _common(
        **{
            "baseline-checkpoint": "models/baseline.safetensors",
            "candidate-checkpoint": "models/candidate.safetensors",
            "task": "classification",
            "num-classes": "10",
            "dataset": "vision_tiny",
            "model-factory": "regress_action.zoo:tiny_cnn",
            "model-kwargs": '{"width": 16}',
            "candidate-model-kwargs": '{"width": 4}',
            "fail-on-regression": "false",
        }
    )
    result = runner.run("action", inputs=inputs)
    assert result.rc == 0, result.stdout + result.stderr
    with ExperimentDB(runner.workspace / "regress-action.db") as db:
        runs = {run.name: run.source for run in db.list_runs()}
    assert runs["baseline"].factory_kwargs == {"width": 16}
    assert runs["candidate"].factory_kwargs == {"width": 4}
    report = Report.load(runner.workspace / result.outputs["report-json"])
    assert report.dataset.n > 0 and set(report.metrics) >= {"accuracy", "loss"}
    assert len(bodies(runner.server)) == 1
    # Without the candidate's own kwargs the shared factory cannot load the narrower weights:
    # one line naming the inputs, nothing registered for the failed side.
    del inputs["candidate-model-kwargs"]
    inputs["report-name"] = "shared factory"
    failed = runner.run("action", inputs=inputs)
    assert failed.rc == 2, failed.stdout + failed.stderr
    (error,) = failed.lines("::error")
    assert "candidate-model-factory" in error


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
