"""run/action.yml, the composite action: generated from action.yml (the same inputs and
outputs), valid, every input reaching the entrypoint, and its torch check and install steps run
with bash as the runner runs them."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ruamel.yaml import YAML

from regress_action.settings import ActionInputs, input_names
from tests.composite_runner import COMPOSITE, ROOT, base_environ, load_composite, run_composite
from tests.unit.test_action_files import check_schema

CHECK, INSTALL = "Check the job's Python has torch", "Install regress-action"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "composite_action", ROOT / "scripts" / "composite_action.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docker_action() -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load((ROOT / "action.yml").read_text("utf-8"))
    return loaded


def test_the_composite_action_is_generated_from_action_yml() -> None:
    expected = generator().render((ROOT / "action.yml").read_text(encoding="utf-8"))
    assert COMPOSITE.read_text(encoding="utf-8") == expected, "stale: run `make manifests`"


def test_the_generator_follows_action_yml(tmp_path: Path) -> None:
    """A new input of action.yml becomes an input of the composite and an INPUT_ variable of
    its run step; a changed description is copied too."""
    text = (ROOT / "action.yml").read_text(encoding="utf-8")
    text = text.replace("\noutputs:", '  new-input:\n    description: "Brand new."\n\noutputs:', 1)
    composite = YAML(typ="safe").load(generator().render(text))
    assert composite["inputs"]["new-input"] == {"description": "Brand new."}
    run = composite["runs"]["steps"][-1]
    assert run["env"]["INPUT_NEW_INPUT"] == "${{ inputs.new-input }}"


def test_the_composite_action_declares_the_docker_actions_inputs_and_outputs() -> None:
    docker, composite = docker_action(), load_composite()
    own = {
        name: composite["inputs"][name] for name in set(composite["inputs"]) - set(docker["inputs"])
    }
    assert set(own) == {"install", "extras"}
    assert {k: v for k, v in composite["inputs"].items() if k not in own} == docker["inputs"]
    assert list(composite["inputs"])[: len(docker["inputs"])] == list(docker["inputs"])
    assert set(composite["outputs"]) == set(docker["outputs"])
    for name, spec in composite["outputs"].items():
        assert spec == {**docker["outputs"][name], "value": f"${{{{ steps.run.outputs.{name} }}}}"}


def test_the_composite_action_validates() -> None:
    check_schema("vendor.github-actions", COMPOSITE)


def test_every_input_reaches_the_entrypoint_under_a_name_the_settings_read() -> None:
    composite = load_composite()
    run = next(step for step in composite["runs"]["steps"] if step.get("id") == "run")
    assert run["run"].strip() == "python -m regress_action action"
    env = {k: v for k, v in run["env"].items() if k.startswith("INPUT_")}
    declared = docker_action()["inputs"]
    assert env == {
        "INPUT_" + name.upper().replace("-", "_"): f"${{{{ inputs.{name} }}}}" for name in declared
    }
    # ActionInputs reads each variable: a distinct value per input lands in its own field.
    names = input_names()
    probe = {"INPUT_BASELINE_RUN_ID": "1", "INPUT_CANDIDATE_RUN_ID": "2", "INPUT_DATASET": "x"}
    parsed = ActionInputs.model_validate({**probe, "INPUT_REPORT_NAME": "probe-name"})
    assert getattr(parsed, names["report-name"]) == "probe-name"
    assert parsed.baseline_run_id == 1


def _fake_torch(folder: Path, body: str) -> dict[str, str]:
    """A `torch` package first on PYTHONPATH, as in a Python with no (or an old) torch."""
    (folder / "torch").mkdir(parents=True)
    (folder / "torch" / "__init__.py").write_text(body)
    return base_environ(PYTHONPATH=str(folder))


def test_a_python_without_torch_is_one_error_line(tmp_path: Path) -> None:
    environ = _fake_torch(
        tmp_path / "site", "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
    )
    result = run_composite(
        {"dataset": "lm_tiny"}, workspace=tmp_path, home=tmp_path, environ=environ
    )
    assert result.rc == 1 and [step.name for step in result.steps] == [CHECK]  # nothing installed
    errors = result.lines("::error")
    assert len(errors) == 1 and len(result.stdout.splitlines()) == 1, result.stdout
    assert "needs PyTorch" in errors[0] and "No module named 'torch'" in errors[0]
    assert "install your torch build" in errors[0] and "never installs torch" in errors[0]
    assert "Traceback" not in result.stderr


def test_an_old_torch_is_refused_before_pip_could_replace_it(tmp_path: Path) -> None:
    environ = _fake_torch(tmp_path / "site", "__version__ = '2.1.2+cu121'\n")
    result = run_composite({}, workspace=tmp_path, home=tmp_path, environ=environ)
    assert result.rc == 1 and len(result.steps) == 1
    [error] = result.lines("::error")
    assert "needs torch>=2.3" in error and "torch 2.1.2+cu121" in error


def test_no_python_on_path_is_one_error_line(tmp_path: Path) -> None:
    result = run_composite({}, workspace=tmp_path, home=tmp_path, environ={"PATH": "/usr/bin:/bin"})
    if result.rc == 0:
        pytest.skip("this machine has a python on /usr/bin")
    assert result.rc == 1 and "no python on PATH" in result.lines("::error")[0]


def _recording_python(folder: Path) -> tuple[dict[str, str], Path]:
    """A `python` first on PATH that records its arguments instead of running pip."""
    folder.mkdir()
    log = folder / "args"
    python = folder / "python"
    python.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{log}"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    environ = base_environ()
    environ["PATH"] = f"{folder}:{environ['PATH']}"
    return environ, log


@pytest.mark.parametrize(
    ("extras", "suffix"), [("", ""), ("hf", "[hf]"), (" hf, arrow ", "[hf,arrow]")]
)
def test_the_action_installs_its_own_source_with_the_extras(
    tmp_path: Path, extras: str, suffix: str
) -> None:
    environ, log = _recording_python(tmp_path / "bin")
    inputs = {"extras": extras} if extras else {}
    result = run_composite(
        inputs, workspace=tmp_path, home=tmp_path, environ=environ, only={INSTALL}
    )
    assert result.rc == 0, result.stdout + result.stderr
    source = f"{COMPOSITE.parent}/..{suffix}"
    assert log.read_text().splitlines() == [
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        source,
    ]
    assert (COMPOSITE.parent / ".." / "pyproject.toml").exists()  # what pip installs


def test_install_false_installs_nothing_and_a_bad_value_is_one_error(tmp_path: Path) -> None:
    environ, log = _recording_python(tmp_path / "bin")
    skipped = run_composite(
        {"install": "false"}, workspace=tmp_path, home=tmp_path, environ=environ, only={INSTALL}
    )
    assert skipped.rc == 0 and not log.exists()
    bad = run_composite(
        {"install": "yes"}, workspace=tmp_path, home=tmp_path, environ=environ, only={INSTALL}
    )
    assert bad.rc == 1 and bad.lines("::error") == [
        "::error::input install: expected true or false, got 'yes'"
    ]
    assert not log.exists()
