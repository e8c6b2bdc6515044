"""The action's files: action.yml and the example workflows validate against GitHub's schemas,
the Dockerfile is hadolint-clean, runs the entrypoint without a USER and copies files the build
context has, and action.yml's inputs and outputs match the settings and what the entrypoint
writes."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from regress_action.action import EVALUATION_OUTPUTS
from regress_action.errors import ConfigError
from regress_action.publish import Publication, report_outputs
from regress_action.settings import ActionInputs, input_names, load_inputs
from tests.report_factory import make_report

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / "docs" / "workflows").glob("*.yml"))
# This repository's own workflows (the release); hardened like the examples.
REPOSITORY_WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def check_schema(schema: str, *files: Path) -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_action_yml_validates() -> None:
    check_schema("vendor.github-actions", ROOT / "action.yml")


def test_example_workflows_validate() -> None:
    names = {path.name for path in WORKFLOWS}
    assert {"regress.yml", "regress-fork-pr.yml", "regress-fork-comment.yml"} <= names
    check_schema("vendor.github-workflows", *WORKFLOWS)


def test_repository_workflows_validate() -> None:
    assert {path.name for path in REPOSITORY_WORKFLOWS} >= {"release.yml"}
    check_schema("vendor.github-workflows", *REPOSITORY_WORKFLOWS)


def test_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split()[0].upper(), line.partition(" ")[2].strip())
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_runs_the_entrypoint_as_the_runners_user() -> None:
    instructions = _instructions()
    # DESIGN.md §6: a USER would lose write access to the workspace the runner mounts.
    assert "USER" not in {name for name, _ in instructions}
    entrypoints = [json.loads(args) for name, args in instructions if name == "ENTRYPOINT"]
    assert entrypoints[-1] == ["regress-action", "action"]


def test_dockerfile_copies_only_what_the_build_context_has() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "tests"} <= ignored  # never shipped in the image
    for name, args in _instructions():
        if name == "COPY" and not args.startswith("--from="):
            for source in args.split()[:-1]:
                if source == "pip-buil[d]":  # optional: a build context's own pip settings
                    assert "pip-build/" in (ROOT / ".gitignore").read_text().split()
                    continue
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, source


def test_the_image_installs_the_lock_on_a_pinned_base() -> None:
    instructions = _instructions()
    base = [args for name, args in instructions if name == "ARG" and args.startswith("BASE_")]
    assert re.fullmatch(r"BASE_IMAGE=[\w./:-]+@sha256:[0-9a-f]{64}", base[0]), base
    assert [args for name, args in instructions if name == "FROM"] == [
        "${BASE_IMAGE} AS build",
        "${BASE_IMAGE}",
    ]
    runs = " ".join(args for name, args in instructions if name == "RUN")
    assert "pip install --require-hashes --no-deps -r requirements.lock" in runs
    assert "pip install --no-deps --no-build-isolation ." in runs  # nothing unpinned fetched


def test_the_lock_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_the_lock_check_fails_when_a_requirement_changes(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "requirements-torch.txt", "requirements.lock"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"scipy>=1.11"', '"scipy>=99"'))
    command = [
        sys.executable,
        str(ROOT / "scripts" / "lock.py"),
        "--check",
        "--root",
        str(tmp_path),
    ]
    stale = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "make lock" in stale.stderr
    # Made from these inputs, but a pin outside a requirement: named.
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    text = (tmp_path / "requirements.lock").read_text()
    line = f"# inputs: sha256:{lock.fingerprint(tmp_path)}"
    fresh = re.sub(r"^# inputs: sha256:[0-9a-f]+$", line, text, flags=re.MULTILINE)
    (tmp_path / "requirements.lock").write_text(fresh)
    outside = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert outside.returncode == 1 and "scipy==" in outside.stderr and "scipy>=99" in outside.stderr


def test_action_runs_the_dockerfile() -> None:
    action = load_yaml(ROOT / "action.yml")
    assert action["runs"] == {"using": "docker", "image": "Dockerfile"}
    assert action["branding"]["icon"] and action["branding"]["color"]


def test_every_input_maps_to_a_setting_with_the_same_default() -> None:
    declared: dict[str, Any] = load_yaml(ROOT / "action.yml")["inputs"]
    names = input_names()
    assert set(declared) == set(names)
    for name, spec in declared.items():
        assert name == name.lower() and "_" not in name, f"{name}: inputs are kebab-case"
        info = ActionInputs.model_fields[names[name]]
        default = info.get_default(call_default_factory=True)
        if name == "github-token":
            assert spec["default"] == "${{ github.token }}" and default is None
        elif spec.get("required"):
            assert info.is_required(), name
        elif "default" in spec:
            parsed = ActionInputs.model_validate(
                {f"INPUT_{name.upper()}": spec["default"], **_required()}
            )
            assert getattr(parsed, names[name]) == default, name
        else:
            # No default in action.yml: None (or empty) in the settings, never a hidden value.
            assert not info.is_required() and default in (None, {}, ()), name


def test_required_inputs_match() -> None:
    declared = load_yaml(ROOT / "action.yml")["inputs"]
    required = {name for name, spec in declared.items() if spec.get("required")}
    # The run ids are "one of id or checkpoint", the eval set "dataset or dataset-factory":
    # both checked in code.
    assert required == set()


def test_an_eval_set_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    with pytest.raises(ConfigError, match="inputs dataset / dataset-factory: set one of them"):
        load_inputs()
    monkeypatch.setenv("INPUT_DATASET-FACTORY", "evals:load")
    assert load_inputs().dataset is None
    monkeypatch.setenv("INPUT_DATASET", "lm_tiny")
    with pytest.raises(ConfigError, match="set one of them"):
        load_inputs()


def test_outputs_are_exactly_those_the_entrypoint_writes() -> None:
    declared = set(load_yaml(ROOT / "action.yml")["outputs"])
    written = set(report_outputs(Publication(make_report(), "", "default"))) | {"comment-url"}
    assert declared == written | set(EVALUATION_OUTPUTS)  # mode evaluate's own


def _required() -> dict[str, str]:
    return {"INPUT_BASELINE-RUN-ID": "1", "INPUT_CANDIDATE-RUN-ID": "2", "INPUT_DATASET": "x"}


def test_example_workflows_set_only_declared_inputs() -> None:
    docker = set(load_yaml(ROOT / "action.yml")["inputs"])
    composite = set(load_yaml(ROOT / "run" / "action.yml")["inputs"])
    for workflow in WORKFLOWS:
        for job in load_yaml(workflow)["jobs"].values():
            for step in job.get("steps", []):
                uses = str(step.get("uses", ""))
                if "regress-action" in uses:
                    declared = composite if "regress-action/run@" in uses else docker
                    unknown = set(step.get("with", {})) - declared
                    assert not unknown, f"{workflow.name}: undeclared inputs {sorted(unknown)}"


# --- the example workflows are hardened ---------------------------------------------------------

# `uses:` of a third-party action: owner/repo[/path]@ref, and the comment after it.
USES = re.compile(r"^\s*-?\s*uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<comment>.*))?$")
PINNED = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")
RELEASE = re.compile(r"v\d+\.\d+\.\d+\b")
# This project's own actions (the Docker one and the composite one in run/) are a placeholder
# (OWNER) in the examples: their users pin them.
OWN_ACTIONS = ("OWNER/regress-action@", "OWNER/regress-action/run@")


def readme_workflows() -> list[str]:
    """The YAML blocks of the README that are workflows."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    return [block for block in blocks if "\njobs:" in block]


def all_workflows() -> list[tuple[str, str]]:
    files = [(path.name, path.read_text(encoding="utf-8")) for path in WORKFLOWS]
    files += [
        (str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        for path in REPOSITORY_WORKFLOWS
    ]
    readme = [(f"README.md workflow {i}", text) for i, text in enumerate(readme_workflows(), 1)]
    assert readme, "the README shows a workflow"
    return files + readme


def test_readme_workflows_validate(tmp_path: Path) -> None:
    paths = []
    for i, text in enumerate(readme_workflows()):
        paths.append(tmp_path / f"readme-{i}.yml")
        paths[-1].write_text(text, encoding="utf-8")
    check_schema("vendor.github-workflows", *paths)


def test_example_workflows_pin_actions_to_a_release_commit() -> None:
    """Every third-party action by a full commit sha (a tag can be moved to other code) with
    the release it is as a comment; one sha is one release in every file."""
    releases: dict[str, str] = {}
    for name, text in all_workflows():
        for line in text.splitlines():
            found = USES.match(line)
            if found is None:
                continue
            ref, comment = found["ref"], found["comment"] or ""
            if ref.startswith(("./", "docker://", *OWN_ACTIONS)):
                continue
            assert PINNED.fullmatch(ref), f"{name}: {ref} is not pinned to a full commit sha"
            release = RELEASE.match(comment)
            assert release, f"{name}: {ref} has no `# vX.Y.Z` comment naming its release"
            assert releases.setdefault(ref, release[0]) == release[0], f"{name}: {ref}"


def test_example_workflows_grant_permissions_per_job_with_a_timeout() -> None:
    for name, text in all_workflows():
        workflow = YAML(typ="safe").load(text)
        assert workflow.get("permissions") == {}, f"{name}: workflow-level `permissions: {{}}`"
        for job_name, job in workflow["jobs"].items():
            where = f"{name}: job {job_name}"
            assert isinstance(job.get("permissions"), dict), f"{where} declares its permissions"
            assert all(v in ("read", "write", "none") for v in job["permissions"].values())
            timeout = job.get("timeout-minutes")
            assert isinstance(timeout, int) and 0 < timeout <= 360, f"{where} has a timeout"


def test_the_composite_example_uses_the_composite_action_after_setting_up_python() -> None:
    steps = load_yaml(ROOT / "docs" / "workflows" / "regress-composite.yml")["jobs"]["regress"]
    uses = [str(step.get("uses", step.get("name"))) for step in steps["steps"]]
    composite = uses.index("OWNER/regress-action/run@v1")
    assert uses.index("Install torch and the project") < composite
    assert any(use.startswith("actions/setup-python@") for use in uses[:composite])


def test_the_release_workflow_publishes_the_checked_tag_with_the_docker_cli() -> None:
    path = ROOT / ".github" / "workflows" / "release.yml"
    text = path.read_text(encoding="utf-8")
    workflow = load_yaml(path)
    assert workflow["on"] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    jobs = workflow["jobs"]
    assert jobs["image"]["permissions"] == {"contents": "read", "packages": "write"}
    assert jobs["major-tag"]["permissions"] == {"contents": "write"}
    assert jobs["major-tag"]["needs"] == "image"
    # The checkout pinned as in the examples; no other action (no docker/* ones).
    checkout = next(
        line.strip().removeprefix("- ")
        for line in (ROOT / "docs" / "workflows" / "regress.yml").read_text().splitlines()
        if "actions/checkout@" in line
    )
    for job in jobs.values():
        uses = [step["uses"] for step in job["steps"] if "uses" in step]
        assert uses == [checkout.split()[1]], uses
    assert text.count(checkout) == len(jobs)
    runs = "\n".join(step.get("run", "") for job in jobs.values() for step in job["steps"])
    # No ${{ }} expression inside a script: values reach it through the environment.
    assert "${{" not in runs
    assert 'python3 scripts/release.py check "$GITHUB_REF_NAME"' in runs
    assert '--image "ghcr.io/${GITHUB_REPOSITORY,,}"' in runs
    assert "--password-stdin" in runs
    for label in ("source", "revision", "version"):
        assert f'--label "org.opencontainers.image.{label}=' in runs
    assert 'docker run --rm --entrypoint regress-action "$IMAGE" --version' in runs
    # X.Y.Z, and X.Y and X where it is the newest release (scripts/release.py moving-tags)
    assert 'for tag in "$VERSION" $moving; do' in runs
    assert runs.count('scripts/release.py moving-tags "$GITHUB_REF_NAME"') == 2
    assert all(job["steps"][0]["with"]["fetch-depth"] == 0 for job in jobs.values())  # the tags
    assert "{{index .RepoDigests 0}}" in runs and "$GITHUB_STEP_SUMMARY" in runs
    assert 'git push --force origin "refs/tags/$major"' in runs
