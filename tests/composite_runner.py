"""Runs run/action.yml, the composite action, the way the Actions runner does: each `run:` step
with `bash --noprofile --norc -eo pipefail` (the runner's `shell: bash`), its `${{ }}` expressions
(`inputs.*`, `github.*`, `steps.<id>.outputs.*`) evaluated first, the inputs' defaults applied,
every step given its own GITHUB_OUTPUT file, and the action's outputs read from its steps'."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
COMPOSITE = ROOT / "run" / "action.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load_composite() -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(COMPOSITE.read_text(encoding="utf-8"))
    return loaded


@dataclass
class StepResult:
    name: str
    rc: int
    stdout: str
    stderr: str
    outputs: dict[str, str]


@dataclass
class CompositeResult:
    rc: int
    steps: list[StepResult]
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return "".join(step.stdout for step in self.steps)

    @property
    def stderr(self) -> str:
        return "".join(step.stderr for step in self.steps)

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith(prefix)]


def parse_outputs(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT as the runner reads it (name=value and name<<DELIMITER blocks)."""
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block: list[str] = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            outputs[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


class Contexts:
    """The values `${{ }}` expressions read; any other expression fails the test, so the
    action cannot use one this evaluator (and its tests) would not check."""

    def __init__(self, inputs: dict[str, str], github: dict[str, str]) -> None:
        self.inputs, self.github = inputs, github
        self.steps: dict[str, dict[str, str]] = {}

    def value(self, expression: str) -> str:
        parts = expression.split(".")
        if parts[0] == "inputs" and len(parts) == 2:
            return self.inputs.get(parts[1], "")
        if parts[0] == "github" and len(parts) == 2 and parts[1] in self.github:
            return self.github[parts[1]]
        if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
            return self.steps.get(parts[1], {}).get(parts[3], "")
        raise AssertionError(f"run/action.yml: unsupported expression ${{{{ {expression} }}}}")

    def expand(self, text: str) -> str:
        return EXPRESSION.sub(lambda found: self.value(found[1]), str(text))


def run_composite(
    inputs: dict[str, str],
    *,
    workspace: Path,
    home: Path,
    environ: dict[str, str],
    only: set[str] | None = None,
) -> CompositeResult:
    """Run the composite action's steps (those named in `only`, else all) with `inputs` (the
    workflow's `with:`) over the job's `environ`; stop at the first failing step."""
    action = load_composite()
    assert action["runs"]["using"] == "composite"
    given = dict(inputs)
    unknown = set(given) - set(action["inputs"])
    assert not unknown, f"undeclared inputs {sorted(unknown)}"
    github = {
        "action_path": str(COMPOSITE.parent),
        "workspace": str(workspace),
        "token": environ.get("GITHUB_TOKEN", ""),
    }
    defaults = Contexts({}, github)
    values = {
        name: given[name] if name in given else defaults.expand(spec.get("default", ""))
        for name, spec in action["inputs"].items()
    }
    contexts = Contexts(values, github)
    steps: list[StepResult] = []
    for index, step in enumerate(action["runs"]["steps"]):
        assert step["shell"] == "bash" and "run" in step and "if" not in step, step
        if only is not None and step["name"] not in only:
            continue
        output = home / f"output-{index}"
        output.write_text("")
        script = home / f"step-{index}.sh"
        script.write_text(contexts.expand(step["run"]))
        env = {
            **environ,
            "GITHUB_OUTPUT": str(output),
            **{key: contexts.expand(value) for key, value in step.get("env", {}).items()},
        }
        cwd = contexts.expand(step.get("working-directory", str(workspace)))
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        outputs = parse_outputs(output.read_text())
        steps.append(StepResult(step["name"], proc.returncode, proc.stdout, proc.stderr, outputs))
        if "id" in step:
            contexts.steps[step["id"]] = outputs
        if proc.returncode != 0:
            return CompositeResult(proc.returncode, steps)
    declared = {name: contexts.expand(spec["value"]) for name, spec in action["outputs"].items()}
    return CompositeResult(0, steps, declared)


def base_environ(**more: str) -> dict[str, str]:
    """The job's environment: the tests' Python first on PATH as `python`, as after
    actions/setup-python."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {"PATH": path, "HOME": os.environ.get("HOME", ""), **more}
