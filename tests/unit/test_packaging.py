"""Packaging: every third-party module the code imports is declared in pyproject.toml, and the
torch version is pinned in one place (requirements-torch.txt) that everything else follows."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
TORCH_PIN = ROOT / "requirements-torch.txt"
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "build", "dist", "htmlcov", "node_modules"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    """The distribution a PEP 508 requirement names: `psycopg[binary]>=3.1` → `psycopg`."""
    return _normalise(re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0])


def _names(requirements: list[str]) -> set[str]:
    return {_name(requirement) for requirement in requirements}


RUNTIME = _names(PYPROJECT["project"]["dependencies"])
DEV = _names(PYPROJECT["project"]["optional-dependencies"]["dev"])
# The extras users opt into (hf, arrow); the dev extra pulls them all.
OPTIONAL = {
    name
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items()
    if extra != "dev"
    for name in _names(requirements)
}


def _top_level_imports(folder: Path) -> dict[str, set[str]]:
    """Absolute top-level module → the files importing it (anywhere: functions included)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for name in _imported(node):
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _imported(node: ast.AST) -> list[str]:
    """The absolute module names an import statement names (none for anything else)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _third_party(imports: dict[str, set[str]], folder: Path) -> dict[str, set[str]]:
    local = {"regress_action", "tests"} | {p.stem for p in folder.glob("*.py")}
    return {
        name: files
        for name, files in imports.items()
        if name not in sys.stdlib_module_names and name not in local and name != "__future__"
    }


@pytest.mark.parametrize(
    ("folder", "allowed"),
    [
        ("regress_action", RUNTIME | OPTIONAL),
        ("tests", RUNTIME | DEV | OPTIONAL),
        ("benchmarks", RUNTIME | DEV | OPTIONAL),
        ("scripts", RUNTIME | DEV | OPTIONAL),
    ],
)
def test_every_imported_module_is_declared(folder: str, allowed: set[str]) -> None:
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, files in _third_party(_top_level_imports(ROOT / folder), ROOT / folder).items():
        distributions = {_normalise(dist) for dist in providers.get(module, [])}
        if not distributions & allowed:
            undeclared[module] = (sorted(distributions) or "not installed", sorted(files))
    kind = "dependencies" if folder == "regress_action" else "dependencies or the dev extra"
    assert not undeclared, f"declare in pyproject.toml's {kind}: {undeclared}"


def test_the_dev_extra_installs_every_optional_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    (itself,) = [r for r in extras["dev"] if _name(r) == "regress-action"]
    wanted = set(itself[itself.index("[") + 1 : itself.index("]")].split(","))
    assert wanted == set(extras) - {"dev"}


def test_optional_packages_are_imported_only_inside_functions() -> None:
    """The package imports and runs without its extras: transformers, tokenizers and pyarrow
    are imported where a Hugging Face folder, a tokenizer or a table is read, never at module
    level (an annotation-only import under TYPE_CHECKING is fine)."""
    providers = importlib.metadata.packages_distributions()
    eager = []
    for path in (ROOT / "regress_action").rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            for name in _imported(node):
                top = name.split(".")[0]
                if {_normalise(d) for d in providers.get(top, [])} & OPTIONAL:
                    eager.append(f"{path.relative_to(ROOT)}: {name}")
    assert not eager, f"imported at module level: {eager}"


def _pinned_torch() -> str:
    pins = re.findall(r"^torch==(\S+)$", TORCH_PIN.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(pins) == 1, "requirements-torch.txt pins torch exactly once"
    return pins[0]


def _text_files() -> list[Path]:
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in SKIP_DIRS and not d.endswith("egg-info")]
        files += [Path(folder) / name for name in names if not name.endswith((".pyc", ".db"))]
    return files


def test_the_torch_version_lives_in_requirements_torch_txt() -> None:
    version = _pinned_torch()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "TORCH_REQUIREMENT := requirements-torch.txt" in makefile
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    # Any other pin (docs, example workflows) names the same version.
    for path in _text_files():
        if path == TORCH_PIN:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for other in re.findall(r"torch==([0-9][\w.+]*)", text):
            other = other.partition("+")[0]  # requirements.lock: the CPU build, 2.13.0+cpu
            assert other == version, f"{path.relative_to(ROOT)} pins torch=={other}, not {version}"


def test_the_package_accepts_the_pinned_torch() -> None:
    (torch,) = [r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "torch"]
    minimum = re.fullmatch(r"torch>=([\d.]+)", torch)
    assert minimum, f"torch is required as a lower bound only: {torch}"

    def release(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])

    assert release(minimum.group(1)) <= release(_pinned_torch())


def test_every_subpackage_ships_in_the_wheel() -> None:
    """A regular install (the image's `pip install .`) holds only the listed packages: a folder
    with an __init__.py left off the list imports in the editable checkout and nowhere else."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "regress_action").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
