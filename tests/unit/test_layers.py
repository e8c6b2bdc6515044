"""The layer arrows of DESIGN §2, checked by scanning imports (ast) and by importing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "regress_action"

TORCH_LAYER = {
    "engine", "data", "sources", "models", "zoo", "train", "distributed",
    "textcls", "tables",
}  # fmt: skip
TORCH_LAYER |= {"textlm"}  # LM eval sets from text and token arrays
# Trains models (torch) and orchestrates through `app`, like the CLI does, but never GitHub.
DEMO = {"demo"}
# Modules that must never import torch, anywhere (not even inside a function).
TORCH_FREE = {
    "errors", "spec", "records", "metrics", "verdict", "stats", "analysis", "compare",
    "report", "render", "store", "store_schema", "github", "gha", "settings", "files",
    "preflight", "resampling", "config", "publish", "schema",
}  # fmt: skip
# Modules that may import torch only lazily, inside a function (CLI start-up speed).
LAZY_TORCH = {"__init__", "cli", "cli_args", "app", "action", "api", "formats", "checkpoints"}
LAZY_TORCH |= {"evaluation"}  # orchestrates one model's evaluation, like `app`
# The task registry and the built-in generators: read by torch-free layers (metric names,
# TaskSpec validation), so torch only inside the adapters and the dataset constructors.
LAZY_TORCH |= {"builtin_data", "tasks", "tasks.base", "tasks.classification", "tasks.lm"}
LAZY_TORCH |= {"tasks.regression"}
# Text tokenizers: `tokenizers` / `transformers` (which import torch) only inside the loaders.
LAZY_TORCH |= {"vocab"}
# Hugging Face model folders: `transformers` (which imports torch) only inside load and save.
LAZY_TORCH |= {"hf"}
# Imports the user's metrics module (which may import torch itself), never torch directly.
TORCH_FREE |= {"tasks.custom"}
# The debiased calibration error: numpy only.
TORCH_FREE |= {"tasks.calibration"}
TORCH_FREE |= {"records_file"}  # the per-example records file (numpy; pyarrow when asked)
TORCH_FREE |= {"config_file"}  # the repository's .regress-action.yml (pydantic, PyYAML)
TORCH_FREE |= {"slices"}  # each slice of the eval set judged from the masked paired records
TORCH_FREE |= {"gitref"}  # the Action's baseline checkpoint read from a commit with git
ONLY_IN = {"github": {"github"}, "sqlalchemy": {"store", "store_schema"}, "jinja2": {"render"}}
ENGINE_MUST_NOT = {
    ".store", ".store_schema", ".render", ".github", ".gha", ".settings", ".action", ".app",
    ".cli", ".compare", "sqlalchemy", "jinja2", "github",
}  # fmt: skip


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Absolute top-level names (`torch`) and package-relative modules (`.store`) imported.

    `if TYPE_CHECKING:` blocks are skipped: they never run.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt | ast.ExceptHandler]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    if node.module:
                        found.add("." + node.module.split(".")[0])
                    else:
                        found.update("." + alias.name for alias in node.names)
                elif node.module:
                    found.add(node.module.split(".")[0])
            is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if is_def and top_level_only:
                continue
            for child in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, child, None)
                if isinstance(inner, list):
                    visit([n for n in inner if isinstance(n, ast.stmt | ast.ExceptHandler)])

    visit(tree.body)
    return found


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name below it (`engine`, `tasks.lm`; a
    subpackage's `__init__` by the subpackage's name)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if len(parts) > 1 and parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def test_every_module_is_classified() -> None:
    known = TORCH_LAYER | TORCH_FREE | LAZY_TORCH | DEMO | {"__main__"}
    unknown = set(_modules()) - known
    assert not unknown, f"classify these modules in tests/test_layers.py: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(TORCH_FREE))
def test_torch_free_modules_never_import_torch(name: str) -> None:
    path = _modules()[name]
    imports = _imports(path, top_level_only=False)
    assert "torch" not in imports
    assert not imports & _relative(TORCH_LAYER | DEMO | {"api"})


@pytest.mark.parametrize("name", sorted(LAZY_TORCH))
def test_entry_modules_import_torch_only_lazily(name: str) -> None:
    top = _imports(_modules()[name], top_level_only=True)
    assert "torch" not in top
    assert not top & _relative(TORCH_LAYER | DEMO | {"api"})


@pytest.mark.parametrize("library", sorted(ONLY_IN))
def test_libraries_stay_in_their_module(library: str) -> None:
    offenders = {
        name
        for name, path in _modules().items()
        if library in _imports(path, top_level_only=False) and name not in ONLY_IN[library]
    }
    assert not offenders


@pytest.mark.parametrize("name", sorted(TORCH_LAYER))
def test_engine_layer_knows_nothing_of_sql_github_or_templates(name: str) -> None:
    assert not _imports(_modules()[name], top_level_only=False) & ENGINE_MUST_NOT


@pytest.mark.parametrize("name", sorted(n for n in _modules() if n.startswith("tasks")))
def test_tasks_know_nothing_of_the_engine_sql_github_or_templates(name: str) -> None:
    """A task is read by every layer (TaskSpec validation, the verdict, the report): it may
    only use the contract modules, the metric machinery and the built-in generators."""
    found = _imports(_modules()[name], top_level_only=False)
    assert not found & (ENGINE_MUST_NOT | {".engine", ".data", ".sources", ".models"})


def test_demo_never_reaches_github() -> None:
    imports = _imports(_modules()["demo"], top_level_only=False)
    assert not imports & {".github", ".gha", ".settings", ".action", ".cli", "github"}


def _relative(names: set[str]) -> set[str]:
    return {"." + name for name in names}


def test_importing_the_package_and_cli_does_not_import_torch() -> None:
    code = (
        "import sys, regress_action, regress_action.cli, regress_action.app; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_help_does_not_import_torch_or_numpy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from regress_action.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
