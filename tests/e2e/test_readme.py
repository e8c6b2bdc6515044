"""The README's Python example runs as written and returns what its comments say.

Every ```python block of README.md that calls `compare_models` is executed in a fresh folder;
then each line of the form `expression  # claim` is checked, where a claim is either
`"a" | "b"` (the value is one of these strings) or `{"key", ...}` (the value is a dict with
these keys; without the trailing `...`, exactly these keys).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_examples() -> list[str]:
    return [block for block in FENCE.findall(README.read_text()) if "compare_models" in block]


def claims(block: str) -> list[tuple[str, str]]:
    """(expression, claim) for every line that is an expression followed by a checkable claim."""
    found = []
    for line in block.splitlines():
        code, _, comment = line.partition("  #")
        comment = comment.strip()
        if not code.strip() or not comment.startswith(('"', "{")):
            continue
        ast.parse(code.strip(), mode="eval")  # a claim is about an expression's value
        found.append((code.strip(), comment))
    return found


def check(value: Any, claim: str, where: str) -> None:
    if claim.startswith('"'):
        allowed = {ast.literal_eval(part.strip()) for part in claim.split("|")}
        assert value in allowed, f"{where}: {value!r} is not one of {sorted(allowed)}"
        return
    body = claim.strip("{}").split(",")
    keys = {ast.literal_eval(part.strip()) for part in body if part.strip() != "..."}
    assert isinstance(value, dict), f"{where}: {value!r} is not a dict"
    if "..." in (part.strip() for part in body):
        assert keys <= set(value), f"{where}: missing {sorted(keys - set(value))}"
    else:
        assert set(value) == keys, f"{where}: keys {sorted(value)} are not {sorted(keys)}"


def test_the_readme_has_a_python_example_with_claims() -> None:
    examples = python_examples()
    assert examples, "README.md has no ```python block calling compare_models"
    assert all(claims(block) for block in examples)


@pytest.mark.parametrize("index", range(len(python_examples())))
def test_the_readme_python_example_runs_and_keeps_its_promises(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = python_examples()[index]
    monkeypatch.chdir(tmp_path)  # anything the example writes lands here
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(block, f"README.md python block {index + 1}", "exec"), namespace)
    for expression, claim in claims(block):
        check(eval(expression, namespace), claim, expression)
