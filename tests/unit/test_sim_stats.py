"""The statistics simulation harness (benchmarks/sim_stats.py) runs end to end: a handful of
simulations at tiny n through the real `build_report`, checked for the table's structure and
for gross properties a broken harness would miss."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sim_stats", ROOT / "benchmarks" / "sim_stats.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sim_stats"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_every_scenario_builds_cases_whose_generators_fit_their_n(sim: ModuleType) -> None:
    cases = sim.build_cases(quick=True, sims=2)
    assert {case.scenario for case in cases} == set(sim.SCENARIOS)
    for case in cases:
        records = sim.GENERATORS[case.generator](sim.np.random.default_rng(0), 50, **case.params)
        assert records.n == 50
        assert set(records.baseline) == set(records.candidate)


def test_a_huge_drop_is_detected_and_the_aa_rate_is_a_rate(sim: ModuleType) -> None:
    judge = sim.ACTION
    huge = sim.Readout("huge drop: job fails", "job_fails", target=(">=", 0.9))
    aa = sim.Readout("A/A: job fails", "job_fails", target=("<=", 0.05))
    cases = [
        sim.Case("power", "classification", 200, 20, judge, (huge,), {"fixed": 0.0, "broken": 0.3}),
        sim.Case("aa", "lm", 100, 20, judge, (aa,), task="lm"),
    ]
    rows = sim.run([sim.check_case(case) for case in cases], processes=1, base_seed=0)
    assert [row.label for row in rows] == ["huge drop: job fails", "A/A: job fails"]
    drop, null = rows
    assert drop.sims == 20 and drop.rate is not None and drop.rate >= 0.9 and drop.ok
    assert null.sims == 20 and null.rate is not None and 0.0 <= null.rate <= 1.0
    assert null.se is not None and math.isclose(
        null.se, math.sqrt(null.rate * (1 - null.rate) / 20)
    )
    again = sim.run([sim.check_case(cases[1])], processes=1, base_seed=0)
    assert again[0].rate == null.rate  # deterministic given the seed


def test_coverage_reads_the_truth_and_a_missing_option_is_skipped_with_a_note(
    sim: ModuleType,
) -> None:
    covers = sim.Readout("loss CI covers 0.05", "covers", "loss", truth_key="shift")
    coverage = sim.Case(
        "coverage", "classification_loss", 60, 6, sim.LOSS_ONLY, (covers,),
        {"dist": "t3", "shift": 0.05}, truths={"shift": 0.05},
    )  # fmt: skip
    unknown = sim.Case(
        "tolerance", "classification", 60, 6, {"significance": "no-such-mode"},
        (sim.Readout("unknown mode", "job_fails"),),
    )  # fmt: skip
    rows = sim.run([sim.check_case(c) for c in (coverage, unknown)], processes=1, base_seed=1)
    assert rows[0].rate is not None and 0.0 <= rows[0].rate <= 1.0
    assert "true delta 0.05" in rows[0].note
    assert rows[1].rate is None and rows[1].sims == 0 and rows[1].note.startswith("skipped")
    table = sim.markdown(rows).splitlines()
    assert table[0].startswith("| # | scenario | n | sims | rate / coverage | MC SE | target")
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_only_takes_names_and_numbers(sim: ModuleType) -> None:
    assert sim.scenario_names("1,clusters") == ["aa", "clusters"]
    assert sim.scenario_names(None) == list(sim.SCENARIOS)
    with pytest.raises(SystemExit):
        sim.scenario_names("nonsense")
