"""Write run/action.yml, the composite action that runs regress-action in the job's own Python,
from action.yml: its inputs are copied verbatim (names, descriptions, defaults), each becomes an
INPUT_* variable of the step running the entrypoint, and each output maps the step's output.
action.yml stays the one definition of both actions' interface.

    python scripts/composite_action.py          # rewrite run/action.yml (make manifests)
    python scripts/composite_action.py --check  # exit 1 when run/action.yml is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "action.yml"
TARGET = ROOT / "run" / "action.yml"

HEADER = """\
# GENERATED from ../action.yml by `make manifests` (scripts/composite_action.py): edit action.yml
# and regenerate; the tests fail while this file is stale.
#
# The composite action: regress-action in the job's own Python (your torch build, your GPUs,
# macOS and Windows runners), with the Docker action's inputs and outputs.
name: "regress-action (your environment): ML model regression gate"
description: >-
  Like the Docker action, in the job's own Python: install your torch first, then this action
  installs regress-action (never torch) and compares the baseline and the candidate.
author: regress-action
branding:
  icon: activity
  color: red

"""

# Inputs of the composite action alone: how it installs itself.
OWN_INPUTS = """\
  install:
    description: >-
      Install regress-action from this action's source into the job's Python with pip (torch,
      already there, is left as it is); false when an earlier step installs it.
    required: false
    default: "true"
  extras:
    description: >-
      Optional dependencies installed with it, comma-separated: hf (Hugging Face model folders
      and tokenizers), arrow (Parquet / Arrow files and datasets folders).
    required: false
    default: ""
"""

CHECK_TORCH = r"""
import re, sys
try:
    import torch
except ImportError as exc:
    print(f"::error::regress-action needs PyTorch in this job's Python ({sys.executable}), "
          f"which cannot import it ({exc}): install your torch build (pip install torch ...) in a "
          "step before this action; the action never installs torch itself")
    sys.exit(1)
found = re.match(r"(\d+)\.(\d+)", torch.__version__)
if found is None or (int(found[1]), int(found[2])) < (2, 3):
    print(f"::error::regress-action needs torch>=2.3; this job's Python ({sys.executable}) has "
          f"torch {torch.__version__}: install a newer torch before this action")
    sys.exit(1)
print(f"torch {torch.__version__} in {sys.executable}")
""".strip()

STEPS = """\
runs:
  using: composite
  steps:
    - name: Check the job's Python has torch
      shell: bash
      run: |
        if ! command -v python >/dev/null 2>&1; then
          echo "::error::no python on PATH: set up Python and install your torch before this action"
          exit 1
        fi
        python -c "$CHECK_TORCH"
      env:
        CHECK_TORCH: |
{check_torch}
    - name: Install regress-action
      shell: bash
      run: |
        case "$INSTALL" in
          true | True | TRUE) ;;
          false | False | FALSE) echo "input install is false: not installing"; exit 0 ;;
          *) echo "::error::input install: expected true or false, got '$INSTALL'"; exit 1 ;;
        esac
        extras="${{EXTRAS//[[:space:]]/}}"
        python -m pip install --disable-pip-version-check "$SOURCE${{extras:+[$extras]}}"
      env:
        INSTALL: ${{{{ inputs.install }}}}
        EXTRAS: ${{{{ inputs.extras }}}}
        SOURCE: ${{{{ github.action_path }}}}/..
    - name: Run regress-action
      id: run
      shell: bash
      working-directory: ${{{{ github.workspace }}}}
      run: python -m regress_action action
      env:
        PYTHONIOENCODING: utf-8
{env}
"""


def input_variable(name: str) -> str:
    """The variable the entrypoint reads an input from: the runner's spelling with underscores
    (INPUT_FAIL_ON_REGRESSION), which every shell (and Windows) can carry."""
    return "INPUT_" + name.upper().replace("-", "_")


def _section(text: str, key: str) -> str:
    """The lines of the top-level mapping `key:` of action.yml, verbatim."""
    found = re.search(rf"^{key}:\n((?:(?:[ \t]+.*)?\n)*)", text, flags=re.MULTILINE)
    if found is None:
        raise SystemExit(f"action.yml has no top-level {key}:")
    return found[1].rstrip("\n") + "\n"


def render(action_text: str) -> str:
    """run/action.yml for the Docker action's action.yml text."""
    action = yaml.safe_load(action_text)
    own = yaml.safe_load("inputs:\n" + OWN_INPUTS)["inputs"]
    clash = set(own) & set(action["inputs"])
    if clash:
        raise SystemExit(f"action.yml declares {sorted(clash)}, the composite action's own inputs")
    env = "".join(
        f"        {input_variable(name)}: ${{{{ inputs.{name} }}}}\n" for name in action["inputs"]
    )
    outputs = "".join(
        f"  {name}:\n"
        f"    description: {json.dumps(spec['description'], ensure_ascii=False)}\n"
        f"    value: ${{{{ steps.run.outputs.{name} }}}}\n"
        for name, spec in action["outputs"].items()
    )
    check_torch = "".join(
        f"          {line}\n" if line else "\n" for line in CHECK_TORCH.split("\n")
    )
    steps = STEPS.format(check_torch=check_torch.rstrip("\n"), env=env.rstrip("\n"))
    return (
        HEADER
        + "inputs:\n"
        + _section(action_text, "inputs")
        + OWN_INPUTS
        + "\noutputs:\n"
        + outputs
        + "\n"
        + steps
    )


def main(argv: list[str]) -> int:
    text = render(SOURCE.read_text(encoding="utf-8"))
    if argv == ["--check"]:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print("run/action.yml is stale: run `make manifests`", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
