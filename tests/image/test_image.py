"""The action's image, built from the Dockerfile and run exactly as the Actions runner runs a
Docker action: the workspace mounted at /github/workspace and owned by the runner's user (not
root), the inputs as INPUT_* (every declared one, with action.yml's default when unset), the
runner's files (GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, the event) under mounted folders, against the
local GitHub-compatible server. Run by `make image-test`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.composite_runner import parse_outputs
from tests.gh_server import BOT_LOGIN, BOT_TOKEN, FakeGitHub
from tests.image.docker_env import ROOT, base_image, build_image, docker, docker_daemon

TAG = "regress-action:image-test"
RUNNER_UID, RUNNER_GID = 1001, 118  # the hosted runner's user and its docker group
REPO, PR, HEAD = "octo/models", 7, "c" * 40


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    with docker_daemon():
        seconds = build_image(TAG, base_image())
        print(f"\nbuilt {TAG} in {seconds:.1f} s")
        yield TAG


@dataclass
class Job:
    rc: int
    log: str
    outputs: dict[str, str]
    summary: str
    seconds: float


def _declared_inputs() -> dict[str, str]:
    """Every input of action.yml with its default: the runner passes them all."""
    declared = YAML(typ="safe").load((ROOT / "action.yml").read_text(encoding="utf-8"))["inputs"]
    return {name: str(spec.get("default", "")) for name, spec in declared.items()}


def _owned(path: Path) -> Path:
    os.chown(path, RUNNER_UID, RUNNER_GID)
    return path


def _folder(path: Path) -> Path:
    """A folder of the runner's, as the runner makes its workspace and file folders."""
    path.mkdir(exist_ok=True)
    return _owned(path)


def run_job(image: str, temp: Path, server: FakeGitHub, inputs: dict[str, str]) -> Job:
    """One step of a job: `docker run` with the mounts and variables the runner gives."""
    workspace = temp / "workspace"
    home, files, workflow = (_folder(temp / name) for name in ("home", "files", "workflow"))
    event = workflow / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": PR, "head": {"sha": HEAD}}}))
    output, summary = files / "set_output", files / "step_summary"
    for path in (output, summary):
        path.write_text("")
    for path in (output, summary, event):
        _owned(path)
    environ = {
        "HOME": "/github/home",
        "GITHUB_ACTIONS": "true",
        "CI": "true",
        "GITHUB_WORKSPACE": "/github/workspace",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": "/github/workflow/event.json",
        "GITHUB_OUTPUT": "/github/file_commands/set_output",
        "GITHUB_STEP_SUMMARY": "/github/file_commands/step_summary",
        "GITHUB_API_URL": server.api_url,
        "GITHUB_SERVER_URL": server.base_url,
        "GITHUB_REPOSITORY": REPO,
        "GITHUB_SHA": "m" * 40,
        "GITHUB_RUN_ID": "4242",
        **{f"INPUT_{name.upper()}": value for name, value in _declared_inputs().items()},
        **{f"INPUT_{name.upper()}": value for name, value in inputs.items()},
    }
    args = ["run", "--rm", "--network", "host", "--workdir", "/github/workspace"]
    for source, target in [
        (workspace, "/github/workspace"),
        (home, "/github/home"),
        (files, "/github/file_commands"),
        (workflow, "/github/workflow"),
    ]:
        args += ["-v", f"{source}:{target}"]
    for name, value in environ.items():
        args += ["-e", f"{name}={value}"]
    started = time.perf_counter()
    done = docker(*args, image, timeout=600)
    seconds = time.perf_counter() - started
    return Job(
        done.returncode,
        done.stdout + done.stderr,
        parse_outputs(output.read_text()),
        summary.read_text(),
        seconds,
    )


def _workspace(temp: Path) -> Path:
    """A checkout with two checkpoints: the candidate was trained on half-random labels."""
    from regress_action.models import save_checkpoint
    from regress_action.train import train_tiny_cnn

    workspace = _folder(temp / "workspace")
    models = _folder(workspace / "models")
    for name, variant in (("baseline", "baseline"), ("candidate", "regressed")):
        path = models / f"{name}.safetensors"
        save_checkpoint(train_tiny_cnn(variant), path, "safetensors")
        _owned(path)
    return workspace


INPUTS = {
    "github-token": BOT_TOKEN,
    "baseline-checkpoint": "models/baseline.safetensors",
    "candidate-checkpoint": "models/candidate.safetensors",
    "model-factory": "regress_action.zoo:tiny_cnn",
    "task": "classification",
    "num-classes": "10",
    "dataset": "vision_tiny",
    "device": "cpu",
    "records-path": "regress-action/records.npz",
}


def _not_the_runners(workspace: Path) -> list[str]:
    wrong = []
    for folder, names, files in os.walk(workspace):
        for name in [".", *names, *files]:
            path = Path(folder) / name
            info = path.lstat()
            if (info.st_uid, info.st_gid) != (RUNNER_UID, RUNNER_GID):
                wrong.append(f"{path.relative_to(workspace)} {info.st_uid}:{info.st_gid}")
    return wrong


def test_the_image_runs_as_the_runner_runs_it(
    image: str, gh_server: FakeGitHub, tmp_path: Path
) -> None:
    workspace = _workspace(tmp_path)
    regressed = run_job(image, tmp_path, gh_server, INPUTS)
    print(f"\nregressed run: {regressed.seconds:.1f} s")
    assert regressed.rc == 1, regressed.log
    assert regressed.outputs["status"] == "regressed", regressed.outputs
    assert regressed.outputs["comparison-id"] == "1"
    assert (workspace / regressed.outputs["report-json"]).is_file()
    assert (workspace / regressed.outputs["report-records"]).is_file()
    assert "| accuracy |" in regressed.summary.replace("**", "")
    assert "regressed" in regressed.summary
    (comment,) = gh_server.comments_on(REPO, PR)
    assert comment.author == BOT_LOGIN and "regress-action" in comment.body
    # The token only in the command that has the runner mask it.
    assert [line for line in regressed.log.splitlines() if BOT_TOKEN in line] == [
        f"::add-mask::{BOT_TOKEN}"
    ]
    # Every file the step left in the workspace (the database, the reports) is the runner's.
    assert (workspace / "regress-action.db").is_file()
    assert _not_the_runners(workspace) == []

    # The fixed pull request: the same model on both sides, the sticky comment updated.
    fixed = run_job(
        image,
        tmp_path,
        gh_server,
        {**INPUTS, "candidate-checkpoint": INPUTS["baseline-checkpoint"]},
    )
    assert fixed.rc == 0, fixed.log
    assert fixed.outputs["status"] != "regressed" and fixed.outputs["comparison-id"] == "2"
    (comment,) = gh_server.comments_on(REPO, PR)
    assert comment.updated == 1
    assert _not_the_runners(workspace) == []


def test_bad_input_is_one_line_and_exit_2(
    image: str, gh_server: FakeGitHub, tmp_path: Path
) -> None:
    workspace = _workspace(tmp_path)
    job = run_job(image, tmp_path, gh_server, {**INPUTS, "num-classes": "ten"})
    assert job.rc == 2, job.log
    errors = [line for line in job.log.splitlines() if line.startswith("::error")]
    assert len(errors) == 1 and "num-classes" in errors[0], job.log
    assert "Traceback" not in job.log
    assert _not_the_runners(workspace) == []
