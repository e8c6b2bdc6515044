"""`regress-action demo` as `make demo` runs it, then the original script line against its
database: a fresh directory, real processes, real training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # trains six tiny models: ~20 s on two cores


def test_the_demo_then_the_original_script_line(tmp_path: Path) -> None:
    env = {**os.environ, "REGRESS_DB": f"sqlite:///{tmp_path / 'regress.db'}"}
    demo = subprocess.run(
        [sys.executable, "-m", "regress_action", "demo", "--workdir", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    # The improved candidates improve, the regressed ones regress, on both built-in sets.
    for name, status in [
        ("lm_tiny-improved: IMPROVED", "improved"),
        ("lm_tiny-regressed: REGRESSED", "regressed"),
        ("vision_tiny-improved: IMPROVED", "improved"),
        ("vision_tiny-regressed: REGRESSED", "regressed"),
    ]:
        assert name in demo.stdout, demo.stdout
        report = json.loads((tmp_path / "out" / f"{name.split(':')[0]}.json").read_text())
        assert report["status"] == status
        assert (tmp_path / "out" / f"{name.split(':')[0]}.md").read_text().startswith("### ")
    assert "--baseline-run-id 1 --candidate-run-id 2 --dataset lm_tiny" in demo.stdout

    line = ["--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "lm_tiny"]
    script = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_regression_test.py"), *line],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert script.returncode == 0, script.stderr
    report = json.loads(script.stdout)
    assert (report["baseline"]["name"], report["candidate"]["name"]) == (
        "lm_tiny-baseline",
        "lm_tiny-improved",
    )
    assert report["status"] == "improved"
    assert report["comparison_id"] == 5  # after the demo's four
