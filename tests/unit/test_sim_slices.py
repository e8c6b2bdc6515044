"""The slice simulation (benchmarks/sim_slices.py) runs end to end through the real
`build_report`: its A/A records are of equal quality, its drop confined to slice s0, and a
couple of simulations give the JSON it quotes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sim_slices", ROOT / "benchmarks" / "sim_slices.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sim_slices"] = module
    spec.loader.exec_module(module)
    return module


def test_the_drop_is_confined_to_one_slice(sim: ModuleType) -> None:
    aa = sim.records(np.random.default_rng(0))
    assert aa.n == 8000 and len(set(aa.slices.tolist())) == 8
    drop = sim.records(np.random.default_rng(0), drop=0.05)
    s0 = drop.slices == "s0"
    change = drop.candidate["correct"].astype(float) - drop.baseline["correct"].astype(float)
    assert change[s0].mean() < -0.03
    assert abs(change[~s0].mean()) < 0.02


def test_a_short_run_prints_the_rates(sim: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--sims", "2", "--processes", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["aa"]["family_size"] == 40 and out["sims"] == 2
    assert set(out["power_5pt_one_slice"]) == {
        "all_5_metrics_gated_m40",
        "accuracy_gated_m8",
        "whole_set_accuracy_only",
    }
