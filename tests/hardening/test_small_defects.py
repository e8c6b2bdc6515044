"""Small defects at the edges: tolerances that are not finite numbers, read-only and empty
database files, names that would become links or workflow commands, a NaN loss's perplexity,
library noise before a format error, the Action's messages naming its inputs, corrupt report
artifacts, a modality mismatch, the demo's leftovers and the example workflows."""

from __future__ import annotations

import argparse
import io
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from regress_action.cli import main
from regress_action.cli_args import flag_name
from regress_action.config import verdict_config
from regress_action.errors import ConfigError
from regress_action.settings import load_inputs
from regress_action.spec import VerdictConfig


def cli(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """`regress-action ARGS` in this process; an argparse usage error is exit code 2 too."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.chdir(cwd)
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as stopped:
            code = int(stopped.code or 0)
    return code, out.getvalue(), err.getvalue()


# --- tolerances must be finite numbers >= 0 ---------------------------------------------------

NOT_TOLERANCES = ["inf", "Infinity", "nan", "-1", "-inf"]


@pytest.mark.parametrize("value", NOT_TOLERANCES)
def test_cli_threshold_must_be_finite_and_not_negative(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "lm_tiny"]
    for command in (["compare", *args], ["publish", "--report", "r.json"]):
        code, _, err = cli([*command, f"--threshold={value}"], tmp_path, monkeypatch)
        assert code == 2
        assert "--threshold" in err and "finite number" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_per_metric_tolerances_must_be_finite(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["publish", "--report", "r.json", f"--tolerance=loss={value}"]
    code, _, err = cli(args, tmp_path, monkeypatch)
    assert code == 2 and "--tolerance" in err
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "lm_tiny")
    monkeypatch.setenv("INPUT_METRIC-TOLERANCES", '{"loss": Infinity}')
    with pytest.raises(ConfigError, match="input metric-tolerances"):
        load_inputs()


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_action_threshold_must_be_finite(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "lm_tiny")
    monkeypatch.setenv("INPUT_THRESHOLD", value)
    with pytest.raises(ConfigError, match="input threshold"):
        load_inputs()


@pytest.mark.parametrize("value", [math.inf, math.nan, -0.5])
def test_config_and_api_threshold_must_be_finite(value: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        VerdictConfig(threshold=value)
    options = argparse.Namespace(threshold=value)
    with pytest.raises(ConfigError, match="--threshold"):
        verdict_config(options, flag_name)
    from regress_action import compare_models
    from regress_action.spec import EvalConfig, TaskSpec

    task = TaskSpec(modality="text", task="lm", vocab_size=256)
    with pytest.raises(ConfigError, match="threshold"):
        # Refused before the models are looked at.
        compare_models(None, None, None, task, EvalConfig(dataset="lm_tiny"), threshold=value)  # type: ignore[arg-type]
