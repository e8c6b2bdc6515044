"""End to end: the composite action (run/action.yml) run step by step with bash as the runner
runs it, in this Python (its torch), against the local GitHub-compatible server: the workflow's
`with:` values reach the entrypoint, and its outputs, job summary and PR comment come back the
same as from the Docker action. `install: false` stands for pip installing this source, which
is already installed here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regress_action.report import Report
from tests.composite_runner import CompositeResult, base_environ, run_composite
from tests.e2e.test_action_e2e import FAST_CLIENT, HEAD, PR, REPO
from tests.gh_server import BOT_TOKEN, FakeGitHub


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """Two copies of one tiny LM's checkpoint: the candidate equals the baseline."""
    import torch

    from regress_action.models import save_checkpoint
    from regress_action.zoo import tiny_lm

    folder = tmp_path / "workspace"
    folder.mkdir()
    torch.manual_seed(0)
    model = tiny_lm().eval()
    for name in ("baseline", "candidate"):
        save_checkpoint(model, folder / f"{name}.safetensors", "safetensors")
    return folder


def run(server: FakeGitHub, workspace: Path, inputs: dict[str, str]) -> CompositeResult:
    home = workspace.parent / "home"
    home.mkdir(exist_ok=True)
    event = home / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": PR, "head": {"sha": HEAD}}}))
    summary = home / "summary.md"
    summary.write_text("")
    environ = base_environ(
        GITHUB_ACTIONS="true",
        GITHUB_API_URL=server.api_url,
        GITHUB_SERVER_URL=server.base_url,
        GITHUB_REPOSITORY=REPO,
        GITHUB_EVENT_NAME="pull_request",
        GITHUB_EVENT_PATH=str(event),
        GITHUB_SHA="m" * 40,
        GITHUB_RUN_ID="4242",
        GITHUB_STEP_SUMMARY=str(summary),
        GITHUB_WORKSPACE=str(workspace),
        **FAST_CLIENT,
    )
    return run_composite(
        {"install": "false", **inputs}, workspace=workspace, home=home, environ=environ
    )


CHECKPOINTS = {
    "baseline-checkpoint": "baseline.safetensors",
    "candidate-checkpoint": "candidate.safetensors",
    "model-factory": "regress_action.zoo:tiny_lm",
    "task": "lm",
    "dataset": "lm_tiny",
    "max-examples": "64",
    "github-token": BOT_TOKEN,
    "device": "cpu",
    "significance": "off",
}


@pytest.mark.slow
def test_the_composite_action_compares_comments_and_fails_on_a_bound(
    gh_server: FakeGitHub, workspace: Path
) -> None:
    inputs = {**CHECKPOINTS, "metric-bounds": "loss<=0.001", "report-name": "composite"}
    result = run(gh_server, workspace, inputs)
    assert result.rc == 1, result.stdout + result.stderr
    assert [step.name for step in result.steps] == [
        "Check the job's Python has torch",
        "Install regress-action",
        "Run regress-action",
    ]
    assert result.steps[0].stdout.startswith("torch ")
    # The action's outputs map its run step's, read here from the failed step itself.
    outputs = result.steps[-1].outputs
    assert outputs["status"] == "regressed" and "loss" in outputs["regressed-metrics"]
    assert outputs["report-json"] == "regress-action/composite.json"
    report = Report.load(workspace / outputs["report-json"])
    assert report.status == "regressed" and outputs["comparison-id"].isdigit()
    assert outputs["comment-url"]
    comments = gh_server.comments_on(REPO, PR)
    assert len(comments) == 1 and "composite" in comments[0].body
    assert (workspace.parent / "home" / "summary.md").read_text().strip()
    assert (workspace / "regress-action.db").exists()  # db-url's default, in the workspace


@pytest.mark.slow
def test_the_composite_actions_outputs_on_success(gh_server: FakeGitHub, workspace: Path) -> None:
    result = run(gh_server, workspace, {**CHECKPOINTS, "comment": "off"})
    assert result.rc == 0, result.stdout + result.stderr
    assert result.outputs["status"] == "neutral"
    assert result.outputs["regressed-metrics"] == "" and result.outputs["comment-url"] == ""
    assert result.outputs["report-markdown"] == "regress-action/default.md"
    assert (workspace / result.outputs["report-markdown"]).read_text()
    assert gh_server.comments_on(REPO, PR) == []


def test_a_bad_input_is_one_error_line_naming_it(gh_server: FakeGitHub, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    inputs = {"baseline-run-id": "1", "candidate-run-id": "2", "dataset": "lm_tiny"}
    result = run(gh_server, workspace, {**inputs, "fail-on-regression": "maybe"})
    assert result.rc == 2 and len(result.steps) == 3
    [error] = result.lines("::error")
    assert "fail-on-regression" in error and "Traceback" not in result.stderr
