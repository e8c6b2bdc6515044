"""The CLI run in this process, as a test sees it: exit code, stdout and stderr."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from regress_action.cli import main


def run_cli(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """`regress-action ARGS` from `cwd` (the user's repository), in this process."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.chdir(cwd)
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()
