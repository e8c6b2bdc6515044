#!/usr/bin/env python3
"""Simulation harness: every statistical figure quoted about the verdicts, reproduced.

Each scenario simulates paired per-example records (`PairedRecords`) of two synthetic models,
runs them through the real decision path, `compare.build_report`, and reads what a user reads:
the job's status (`regressed` fails the job) and each metric's status, p, adjusted p and CI.

    .venv/bin/python benchmarks/sim_stats.py [--quick] [--sims N] [--only SCENARIO]
                                             [--json PATH] [--processes 2] [--seed 0]

Scenarios (`--only` takes a name or its number; comma-separated for several):
1 `aa`: A/A job failure rate of two different models of equal quality (classification and
  LM), under the Action's defaults (`significance="gate"`) and the old default (`report`,
  every metric gated).
2 `power`: a true 2-point accuracy drop at n = 5000, under the Action's defaults and with the
  five classification metrics gated (the cost of the family correction).
3 `calibration`: false alarms of the calibration metrics for two perfectly calibrated models,
  and CI coverage of the true calibration delta (calibrated vs 0.05 overconfident; the true
  delta from a 2,000,000-example population).
4 `clusters`: LM A/A with a per-document effect on the difference (windows of one document),
  without and with `PairedRecords.groups`.
5 `agreement`: how often "0 outside the CI" disagrees with "p (adjusted) < alpha".
6 `coverage`: CI coverage of a mean metric (classification `loss`) whose per-example
  differences are skewed or heavy-tailed.
7 `tolerance`: a true drop exactly at the tolerance, under `gate` and `margin`.

Every scenario is a list of cases: a data generator with its parameters, a `VerdictConfig`
and readouts (one row each). A case whose option or metric this version does not have is
skipped with a note, so the harness runs before and after a change of the decision rule.
`verdict.resamples` is 1000 throughout, to bound the run time. Deterministic given `--seed`:
a simulation's data depend only on the seed, the generator, its parameters, n and its index
(cases that differ only in the verdict see the same data), and its bootstrap seed is its index.
Measured on 2 cores: `--quick` about 2 minutes (170 CPU s), the full run about 10 minutes
(1200 CPU s); a busy machine takes longer.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from regress_action.compare import ReportContext, build_report
from regress_action.records import PairedRecords
from regress_action.report import DatasetInfo, Report
from regress_action.spec import TaskSpec, VerdictConfig
from regress_action.tasks import get_task

RESAMPLES = 1000
ALPHA = 0.05
NUM_CLASSES = 10
LM_TOKENS = 64
CLS_METRICS = ("accuracy", "loss", "top5_accuracy", "macro_f1", "ece")
CALIBRATION_METRICS = ("ece", "calibration_error_sq")
POPULATION = 2_000_000
CHUNK = 10  # simulations per worker task

Array = NDArray[np.float64]
Columns = dict[str, Any]


# --- data generators: (rng, n, **params) -> PairedRecords --------------------------------------


def _cls_side(
    rng: np.random.Generator,
    label: NDArray[np.int64],
    correct: NDArray[np.bool_],
    confidence: Array | None = None,
    shared_wrong: NDArray[np.int64] | None = None,
) -> Columns:
    """One classifier's columns given which examples it gets right: the confidence of the
    predicted class, the loss -log p(label), the Brier score with the rest of the mass spread
    evenly, a wrong prediction (the `shared_wrong` class where given) and top-5."""
    n, k = label.size, NUM_CLASSES
    if confidence is None:
        confidence = np.where(correct, rng.beta(9.0, 2.0, n), rng.beta(4.0, 4.0, n))
    confidence = np.clip(confidence, 1.0 / k, 1.0)
    wrong = (label + rng.integers(1, k, n)) % k
    if shared_wrong is not None:
        wrong = np.where(shared_wrong >= 0, shared_wrong, wrong)
    p_label = np.where(correct, confidence, (1.0 - confidence) * rng.beta(2.0, 3.0, n))
    p_label = np.maximum(p_label, 1e-6)
    rest = np.where(correct, 1.0 - confidence, 1.0 - confidence - p_label)
    brier = np.where(
        correct,
        (1.0 - confidence) ** 2 + rest**2 / (k - 1),
        confidence**2 + (1.0 - p_label) ** 2 + rest**2 / (k - 2),
    )
    return {
        "label": label,
        "prediction": np.where(correct, label, wrong).astype(np.int64),
        "correct": correct,
        "loss": -np.log(p_label),
        "confidence": confidence,
        "brier": brier,
        "top5_correct": correct | (rng.random(n) < 0.6),
    }


def gen_classification(
    rng: np.random.Generator,
    n: int,
    *,
    accuracy: float = 0.80,
    fixed: float = 0.10,
    broken: float = 0.10,
) -> PairedRecords:
    """Baseline accuracy `accuracy`; `fixed` / `broken`: the shares of examples only the
    candidate / only the baseline gets right (disagreement fixed + broken; true accuracy
    delta fixed - broken). With fixed == broken the two sides are exchangeable: every metric's
    true delta is 0. Both wrong: the same wrong class half the time."""
    both_right = accuracy - broken
    both_wrong = 1.0 - both_right - fixed - broken
    cell = rng.choice(4, size=n, p=[both_right, broken, fixed, both_wrong])
    label = rng.integers(0, NUM_CLASSES, n)
    base_correct, cand_correct = (cell == 0) | (cell == 1), (cell == 0) | (cell == 2)
    same = (cell == 3) & (rng.random(n) < 0.5)
    shared = np.where(same, (label + rng.integers(1, NUM_CLASSES, n)) % NUM_CLASSES, -1)
    base = _cls_side(rng, label, base_correct, shared_wrong=shared)
    cand = _cls_side(rng, label, cand_correct, shared_wrong=shared)
    return PairedRecords("classification", np.arange(n), base, cand, NUM_CLASSES)


def _noise(rng: np.random.Generator, dist: str, n: int) -> Array:
    """Mean-zero noise: `normal` (sd 1), `exponential` (sd 1, skewness 2), `lognormal`
    (lognormal(0, 1) minus its mean, sd 2.16, skewness 6.2) or `t3` (Student t with 3 df,
    sd 1.73, infinite kurtosis)."""
    if dist == "normal":
        return rng.standard_normal(n)
    if dist == "lognormal":
        return rng.lognormal(0.0, 1.0, n) - math.exp(0.5)
    if dist == "exponential":
        return rng.exponential(1.0, n) - 1.0
    if dist == "t3":
        return rng.standard_t(3, n)
    raise ValueError(f"unknown noise {dist!r}")


def gen_classification_loss(
    rng: np.random.Generator, n: int, *, dist: str, shift: float, scale: float = 0.5
) -> PairedRecords:
    """A/A classification records whose candidate loss is the baseline's plus `shift` plus
    `scale` × mean-zero `dist` noise: the true loss delta is exactly `shift`."""
    records = gen_classification(rng, n)
    loss = records.baseline["loss"] + shift + scale * _noise(rng, dist, n)
    records.candidate = {**records.candidate, "loss": loss}
    return records


def gen_calibration(
    rng: np.random.Generator,
    n: int,
    *,
    base: tuple[float, float] = (20.0, 1.5),
    cand: tuple[float, float] | None = (5.0, 2.0),
    overconfident: float = 0.0,
) -> PairedRecords:
    """Calibrated classifiers: confidence ~ Beta(*base) (baseline) and Beta(*cand)
    (candidate), each example right with probability its confidence. `cand` None: the
    candidate shares the baseline's per-example probability (its own right/wrong draw) and
    states `overconfident` more confidence than it has."""
    label = rng.integers(0, NUM_CLASSES, n)
    p_base = np.clip(rng.beta(*base, n), 1.0 / NUM_CLASSES, 1.0)
    p_cand = p_base if cand is None else np.clip(rng.beta(*cand, n), 1.0 / NUM_CLASSES, 1.0)
    stated = np.minimum(p_cand + overconfident, 1.0)
    base_cols = _cls_side(rng, label, rng.random(n) < p_base, p_base)
    cand_cols = _cls_side(rng, label, rng.random(n) < p_cand, stated)
    return PairedRecords("classification", np.arange(n), base_cols, cand_cols, NUM_CLASSES)


def gen_lm(
    rng: np.random.Generator,
    n: int,
    *,
    windows: int | None = None,
    doc_sd: float = 0.0,
) -> PairedRecords:
    """Two language models of equal expected loss on `n` examples of LM_TOKENS tokens.

    Per-example token loss: a shared hardness (Gamma, mean 3 nats) times each side's own
    lognormal(0, 0.1) noise, so the two sides' losses correlate. `windows`: consecutive runs of
    that many examples are windows of one document, which share the document's hardness and a
    document effect u ~ N(0, doc_sd) on the log-loss difference (+u/2 on the candidate, -u/2
    on the baseline: the sides stay exchangeable); the records' `groups` name the documents."""
    tokens = np.full(n, float(LM_TOKENS))
    if windows:
        doc = np.arange(n) // windows
        docs = int(doc[-1]) + 1
        hardness = rng.gamma(4.0, 0.75, docs)[doc] * rng.lognormal(0.0, 0.2, n)
        effect = rng.normal(0.0, doc_sd, docs)[doc]
    else:
        doc = np.arange(n)
        hardness = rng.gamma(4.0, 0.75, n)
        effect = np.zeros(n)
    p_token = np.clip(0.9 - 0.15 * hardness, 0.05, 0.95)

    def side(sign: float) -> Columns:
        nll = tokens * hardness * np.exp(rng.normal(0.0, 0.1, n) + sign * effect / 2)
        correct = rng.binomial(LM_TOKENS, p_token).astype(np.float64)
        return {"nll_sum": nll, "tokens": tokens, "correct_tokens": correct, "bytes": tokens * 4}

    base, cand = side(-1.0), side(1.0)
    records = PairedRecords("lm", np.arange(n), base, cand)
    if windows:
        records.groups = doc.astype(np.int64)
    return records


GENERATORS: dict[str, Callable[..., PairedRecords]] = {
    "classification": gen_classification,
    "classification_loss": gen_classification_loss,
    "calibration": gen_calibration,
    "lm": gen_lm,
}
TASKS = {
    "classification": TaskSpec(modality="vision", task="classification", num_classes=NUM_CLASSES),
    "lm": TaskSpec(modality="text", task="lm", vocab_size=256),
}


# --- readouts: (report, metric, truth) -> 1.0 / 0.0, or a reason it does not apply -------------

Value = float | str  # a str: why this simulation has no value (e.g. the metric has no test)


def _metric(report: Report, name: str) -> Any:
    result = report.metrics.get(name)
    return result if result is not None else f"no {name} in the report here"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def read_job_fails(report: Report, metric: str, truth: float) -> Value:
    return float(report.status == "regressed")


def read_regressed(report: Report, metric: str, truth: float) -> Value:
    result = _metric(report, metric)
    return result if isinstance(result, str) else float(result.status == "regressed")


def read_p_below(report: Report, metric: str, truth: float) -> Value:
    result = _metric(report, metric)
    if isinstance(result, str):
        return result
    if not _finite(result.p_value):
        return f"{metric} has no p-value here"
    return float(result.p_value < ALPHA)


def read_covers(report: Report, metric: str, truth: float) -> Value:
    result = _metric(report, metric)
    if isinstance(result, str):
        return result
    if not (_finite(result.ci_low) and _finite(result.ci_high)):
        return f"{metric} has no CI here"
    if not math.isfinite(truth):
        return f"no true delta of {metric}"
    return float(result.ci_low <= truth <= result.ci_high)


def _disagree(report: Report, metric: str, adjusted: bool) -> Value:
    result = _metric(report, metric)
    if isinstance(result, str):
        return result
    p = result.p_adjusted if adjusted and result.p_adjusted is not None else result.p_value
    if not (_finite(result.ci_low) and _finite(result.ci_high) and _finite(p)):
        return f"{metric} has no p-value or CI here"
    outside = result.ci_low > 0 or result.ci_high < 0
    return float(outside != (p < ALPHA))


def read_disagree_adjusted(report: Report, metric: str, truth: float) -> Value:
    return _disagree(report, metric, adjusted=True)


def read_disagree_raw(report: Report, metric: str, truth: float) -> Value:
    return _disagree(report, metric, adjusted=False)


READOUTS: dict[str, Callable[[Report, str, float], Value]] = {
    "job_fails": read_job_fails,
    "regressed": read_regressed,
    "p_below": read_p_below,
    "covers": read_covers,
    "disagree_adjusted": read_disagree_adjusted,
    "disagree_raw": read_disagree_raw,
}


# --- cases and rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readout:
    """One table row of a case: what is read from each report, and its target."""

    label: str
    kind: str  # a READOUTS key
    metric: str = ""
    target: tuple[str, float] | None = None  # ("<=" or ">=", value); None: for information
    truth_key: str = ""  # coverage: the case's truths[truth_key] is the true delta


@dataclass(frozen=True)
class Case:
    """Simulations of one generator at one n, judged under one verdict."""

    scenario: str
    generator: str
    n: int
    sims: int
    verdict: dict[str, Any]
    readouts: tuple[Readout, ...]
    params: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    truths: dict[str, float] = field(default_factory=dict)
    groups: bool = False  # keep the generator's cluster ids (else the records get none)
    skip: str = ""  # why the case is not run, when it cannot be

    @property
    def data_key(self) -> str:
        return f"{self.generator}|{sorted(self.params.items())}|{self.n}"


# Verdicts: the Action's defaults, and the old default with every reported metric gated
# (`gate=None` is filled in by `verdict_config`, whatever None means in this version).
ACTION: dict[str, Any] = {"significance": "gate"}
OLD_DEFAULT: dict[str, Any] = {"significance": "report", "gate": None}
ALL_GATED: dict[str, Any] = {"significance": "gate", "gate": CLS_METRICS}
MARGIN: dict[str, Any] = {"significance": "margin"}
CALIBRATION_ONLY: dict[str, Any] = {
    "significance": "report",
    "metrics": CALIBRATION_METRICS,
    "gate": CALIBRATION_METRICS,
}
AGREEMENT: dict[str, Any] = {"significance": "report", "gate": CLS_METRICS}
LOSS_ONLY: dict[str, Any] = {"significance": "report", "metrics": ("loss",), "gate": ("loss",)}
Verdicts = Sequence[tuple[str, dict[str, Any], tuple[str, float] | None]]


@dataclass(frozen=True)
class Counts:
    """Simulations per case: the full run's, the quick run's, or one override for all."""

    quick: bool = False
    override: int | None = None

    def __call__(self, full: int, short: int) -> int:
        if self.override is not None:
            return self.override
        return short if self.quick else full


def scenario_aa(
    count: Counts,
    verdicts: Verdicts = (
        ("Action defaults (gate)", ACTION, ("<=", 0.05)),
        ("old default (report, all gated)", OLD_DEFAULT, None),
    ),
    sizes: Sequence[int] = (100, 1000, 5000),
) -> list[Case]:
    """1. A/A job failure rate: two different models of equal quality."""
    cases = []
    for task, what in (
        ("classification", "classification, 10 classes, acc 0.80, 20 % disagree"),
        ("lm", f"LM, {LM_TOKENS} tokens/example, correlated, equal expected loss"),
    ):
        for n in sizes:
            sims = count(400, 80 if n < 5000 else 50)
            for name, verdict, target in verdicts:
                label = f"A/A job fails: {what}; {name}"
                readout = Readout(label, "job_fails", target=target)
                cases.append(Case("aa", task, n, sims, verdict, (readout,), task=task))
    return cases


def scenario_power(
    count: Counts,
    verdicts: Verdicts = (
        ("Action defaults", ACTION, (">=", 0.80)),
        ("5 metrics gated (Bonferroni over 5)", ALL_GATED, None),
    ),
    n: int = 5000,
) -> list[Case]:
    """2. Power for a true 2-point accuracy drop (9 % fixed, 11 % broken)."""
    cases = []
    for name, verdict, target in verdicts:
        readouts = (
            Readout(f"power, acc −0.02 (9 % fixed, 11 % broken): job fails, {name}",
                    "job_fails", target=target),
            Readout(f"power, acc −0.02: accuracy flagged, {name}", "regressed", "accuracy"),
        )  # fmt: skip
        params = {"fixed": 0.09, "broken": 0.11}
        cases.append(Case("power", "classification", n, count(400, 50), verdict, readouts, params))
    return cases


def scenario_calibration(count: Counts, verdict: dict[str, Any] = CALIBRATION_ONLY) -> list[Case]:
    """3. Calibration metrics: false alarms for two calibrated models, and CI coverage of the
    true delta (calibrated vs 0.05 overconfident; the truth from a population draw)."""
    cases = []
    for n in (1000, 5000):
        readouts = tuple(
            Readout(f"calibrated A/A (Beta(20,1.5) vs Beta(5,2)): {m} p < .05", "p_below", m,
                    ("<=", ALPHA))
            for m in CALIBRATION_METRICS
        )  # fmt: skip
        sims = count(400, 60 if n < 5000 else 40)
        cases.append(Case("calibration", "calibration", n, sims, verdict, readouts))
    overconfident = {"base": (5.0, 2.0), "cand": None, "overconfident": 0.05}
    for n in (100, 300, 1000, 5000):
        readouts = tuple(
            Readout(f"calibrated vs 0.05 overconfident (Beta(5,2)): {m} CI covers the true delta",
                    "covers", m, (">=", 0.90) if n >= 1000 else None, truth_key=m)
            for m in CALIBRATION_METRICS
        )  # fmt: skip
        sims = count(400, 60 if n < 5000 else 40)
        cases.append(Case("calibration", "calibration", n, sims, verdict, readouts, overconfident))
    return cases


def scenario_clusters(
    count: Counts,
    verdict: dict[str, Any] = OLD_DEFAULT,
    documents: int = 100,
    doc_sd: float = 0.1,
) -> list[Case]:
    """4. LM A/A with a per-document effect on the difference, without and with groups."""
    cases = []
    for windows in (5, 10):
        for groups in (False, True):
            target = ("<=", 0.06) if groups and windows == 10 else None
            label = (
                f"LM A/A, {documents} documents × {windows} windows, document effect sd "
                f"{doc_sd}: loss p < .05, {'with' if groups else 'without'} groups"
            )
            readouts = (Readout(label, "p_below", "loss", target),)
            params = {"windows": windows, "doc_sd": doc_sd}
            n, sims = documents * windows, count(400, 60)
            cases.append(
                Case("clusters", "lm", n, sims, verdict, readouts, params, "lm", groups=groups)
            )
    return cases


def scenario_agreement(count: Counts, verdict: dict[str, Any] = AGREEMENT) -> list[Case]:
    """5. "0 outside the CI" vs "p_adjusted (or p) < alpha", every metric gated, for data
    near the boundary (a true delta of about two standard errors)."""
    cases = []
    for n in (100, 300, 1000):
        readouts = (
            Readout("accuracy (McNemar) near the boundary: CI and p_adjusted disagree",
                    "disagree_adjusted", "accuracy", ("<=", 0.0)),
            Readout("accuracy near the boundary: CI and raw p disagree", "disagree_raw",
                    "accuracy"),
        )  # fmt: skip
        params = _boundary_fixed_broken(n)
        cases.append(Case("agreement", "classification", n, count(400, 80), verdict, readouts,
                          params))  # fmt: skip
    for n in (50, 100, 200):
        readouts = (
            Readout("loss (mean metric), lognormal differences near the boundary: CI and "
                    "p_adjusted disagree", "disagree_adjusted", "loss",
                    ("<=", 0.0)),
            Readout("loss near the boundary: CI and raw p disagree", "disagree_raw", "loss"),
        )  # fmt: skip
        shift = 2.0 * 0.5 * math.sqrt(math.e * (math.e - 1)) / math.sqrt(n)  # 2 SE of the mean
        params = {"dist": "lognormal", "shift": round(shift, 6)}
        cases.append(Case("agreement", "classification_loss", n, count(400, 80), verdict,
                          readouts, params))  # fmt: skip
    return cases


def scenario_coverage(
    count: Counts,
    verdict: dict[str, Any] = LOSS_ONLY,
    shift: float = 0.05,
) -> list[Case]:
    """6. CI coverage of a mean metric (loss) with skewed / heavy-tailed differences."""
    cases = []
    for dist in ("exponential", "lognormal", "t3"):
        for n in (100, 300, 1000):
            label = f"loss CI coverage, {dist} per-example differences (sd ≈ 1)"
            readouts = (Readout(label, "covers", "loss", (">=", 0.94), truth_key="shift"),)
            params = {"dist": dist, "shift": shift}
            cases.append(
                Case("coverage", "classification_loss", n, count(400, 80), verdict, readouts,
                     params, truths={"shift": shift})
            )  # fmt: skip
    return cases


def scenario_tolerance(
    count: Counts,
    verdicts: Verdicts = (("gate (Action defaults)", ACTION, None), ("margin", MARGIN, None)),
    n: int = 5000,
) -> list[Case]:
    """7. A true accuracy drop exactly at the tolerance (0.01): how often the job fails."""
    params = {"fixed": 0.095, "broken": 0.105}
    return [
        Case("tolerance", "classification", n, count(400, 50), verdict,
             (Readout(f"acc −0.01 = tolerance: job fails, {name}", "job_fails", target=t),),
             params)
        for name, verdict, t in verdicts
    ]  # fmt: skip


SCENARIOS: dict[str, Callable[[Counts], list[Case]]] = {
    "aa": scenario_aa,
    "power": scenario_power,
    "calibration": scenario_calibration,
    "clusters": scenario_clusters,
    "agreement": scenario_agreement,
    "coverage": scenario_coverage,
    "tolerance": scenario_tolerance,
}


def build_cases(quick: bool, sims: int | None, only: Sequence[str] = ()) -> list[Case]:
    """The cases of the scenarios in `only` (every scenario when empty)."""
    count = Counts(quick, sims)
    return [case for name, scenario in SCENARIOS.items() if not only or name in only
            for case in scenario(count)]  # fmt: skip


def _boundary_fixed_broken(n: int, disagreement: float = 0.2) -> dict[str, float]:
    """fixed / broken shares whose accuracy drop is about two standard errors at n (McNemar's
    p lands near the boundary, where a p and a CI can disagree)."""
    drop = 2.0 * math.sqrt(disagreement / n)
    return {"fixed": (disagreement - drop) / 2, "broken": (disagreement + drop) / 2}


# --- running ---------------------------------------------------------------------------------


def verdict_config(case: Case, seed: int) -> VerdictConfig:
    """The case's VerdictConfig with the harness's resamples and a per-simulation seed; an
    old-default `gate=None` names every metric the task reports (all gated, whatever None
    means in this version)."""
    options = {**case.verdict, "resamples": RESAMPLES, "seed": seed}
    if "gate" in options and options["gate"] is None:
        spec = TASKS[case.task]
        options["gate"] = tuple(
            name for name, m in get_task(spec.task).metrics(spec).items() if m.default
        )
    return VerdictConfig(**options)


def check_case(case: Case) -> Case:
    """The case, or the case marked skipped when this version lacks an option or metric."""
    try:
        verdict_config(case, 0)
    except Exception as exc:  # e.g. a significance mode this version does not have
        return replace(case, skip=f"verdict not available here: {_first_line(exc)}")
    known = get_task(TASKS[case.task].task).all_metrics()
    wanted = case.verdict.get("metrics")
    if wanted:  # keep the metrics this version has (a row of a missing one says so)
        present = tuple(m for m in wanted if m in known) or wanted[:1]
        gate = case.verdict.get("gate")
        verdict = {**case.verdict, "metrics": present}
        if gate:
            verdict["gate"] = tuple(m for m in gate if m in known)
        case = replace(case, verdict=verdict)
    if case.groups and "groups" not in PairedRecords.__dataclass_fields__:
        return replace(case, skip="PairedRecords has no groups here")
    return case


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def sim_seed(base: int, case: Case, sim: int) -> list[int]:
    return [base, zlib.crc32(case.data_key.encode()), sim]


# A simulation's readout values and its statistics' signature (every metric's p and CI).
Outcome = tuple[list[Value], str]
Chunk = tuple[int, int, list[Outcome], str, float]


def run_chunk(job: tuple[int, Case, int, int, int]) -> Chunk:
    """Simulations start..stop of one case: each one's readout values and signature (and the
    chunk's error, if any, and its CPU seconds)."""
    index, case, start, stop, base_seed = job
    began = time.process_time()
    logging.getLogger("regress_action").setLevel(logging.CRITICAL)
    generate = GENERATORS[case.generator]
    out: list[Outcome] = []
    try:
        for sim in range(start, stop):
            rng = np.random.default_rng(sim_seed(base_seed, case, sim))
            records = generate(rng, case.n, **case.params)
            if not case.groups and getattr(records, "groups", None) is not None:
                records.groups = None
            context = ReportContext(
                task=TASKS[case.task],
                dataset=DatasetInfo(name="sim", fingerprint="", n=case.n),
                verdict=verdict_config(case, sim),
            )
            report = build_report(records, context, 0.0)
            readings = [
                READOUTS[r.kind](report, r.metric, case.truths.get(r.truth_key, math.nan))
                for r in case.readouts
            ]
            signature = repr([(m.p_value, m.ci_low, m.ci_high) for m in report.metrics.values()])
            out.append((readings, signature))
    except Exception as exc:  # an option this version rejects only when judging
        error = f"{type(exc).__name__}: {_first_line(exc)}"
        return index, start, out, error, time.process_time() - began
    return index, start, out, "", time.process_time() - began


def population_truths(cases: Sequence[Case], base_seed: int) -> list[Case]:
    """Each coverage case's true delta per metric: the metric's value on a POPULATION-example
    draw of each side, candidate minus baseline (computed once per generator setting)."""
    cache: dict[str, dict[str, float]] = {}
    out = []
    for case in cases:
        keys = [r.truth_key for r in case.readouts if r.kind == "covers"]
        if case.skip or not keys or all(k in case.truths for k in keys):
            out.append(case)
            continue
        setting = f"{case.generator}|{sorted(case.params.items())}"
        if setting not in cache:
            rng = np.random.default_rng([base_seed, zlib.crc32(setting.encode()), 2**31])
            records = GENERATORS[case.generator](rng, POPULATION, **case.params)
            metrics = get_task(case.task).all_metrics()
            cache[setting] = {
                name: metric.value(records.candidate, NUM_CLASSES)
                - metric.value(records.baseline, NUM_CLASSES)
                for name, metric in metrics.items()
                if all(c in records.baseline for c in metric.columns)
            }
        out.append(replace(case, truths={**cache[setting], **case.truths}))
    return out


@dataclass
class Row:
    scenario: str
    label: str
    n: int
    sims: int
    rate: float | None
    se: float | None
    target: str
    ok: bool | None
    note: str = ""
    cpu_s: float = 0.0  # the case's CPU seconds, on its first row (the others 0)


def _target_text(target: tuple[str, float] | None) -> str:
    if target is None:
        return "—"
    op, value = target
    sign = "≤" if op == "<=" else "≥"
    return f"{sign} {value:.0%}" if value not in (0.0,) else f"{sign} 0"


def summarise(case: Case, values: list[list[Value]], error: str) -> list[Row]:
    """One row per readout: the mean over simulations of its 0/1 values (the rate), with its
    Monte-Carlo SE and a note (why a row is skipped, simulations without a value)."""
    rows = []
    for j, readout in enumerate(case.readouts):
        row = Row(case.scenario, readout.label, case.n, 0, None, None,
                  _target_text(readout.target), None)  # fmt: skip
        rows.append(row)
        if case.skip or (error and not values):
            row.note = f"skipped: {case.skip or error}"
            continue
        column = [v[j] for v in values]
        valid = np.asarray([v for v in column if not isinstance(v, str)], dtype=np.float64)
        reasons = Counter(v for v in column if isinstance(v, str))
        if valid.size == 0:
            row.note = f"skipped: {reasons.most_common(1)[0][0]}" if reasons else "skipped"
            continue
        notes = []
        if reasons:
            notes.append(f"{sum(reasons.values())} sims without a value: {', '.join(reasons)}")
        if readout.kind == "covers":
            notes.append(f"true delta {case.truths.get(readout.truth_key, math.nan):.4g}")
        if error:
            notes.append(f"stopped after {len(values)} sims: {error}")
        row.sims, row.rate = int(valid.size), float(valid.mean())
        row.se = math.sqrt(max(row.rate * (1 - row.rate), 0.0) / valid.size)
        if readout.target is not None:
            op, value = readout.target
            row.ok = row.rate <= value if op == "<=" else row.rate >= value
            if not row.ok and abs(row.rate - value) <= 2 * row.se:
                notes.append("misses the target by less than 2 MC SE")
        row.note = "; ".join(notes)
    return rows


def jobs(cases: Sequence[Case], base_seed: int) -> Iterator[tuple[int, Case, int, int, int]]:
    # Large cases first, so the two processes finish together.
    order = sorted(range(len(cases)), key=lambda i: -cases[i].n * cases[i].sims)
    for i in order:
        case = cases[i]
        if case.skip:
            continue
        for start in range(0, case.sims, CHUNK):
            yield i, case, start, min(start + CHUNK, case.sims), base_seed


def run(cases: Sequence[Case], processes: int, base_seed: int) -> list[Row]:
    values: dict[int, dict[int, list[Outcome]]] = {i: {} for i in range(len(cases))}
    errors: dict[int, str] = {}
    work = list(jobs(cases, base_seed))
    if processes > 1:
        context = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
        with context.Pool(processes) as pool:
            results = list(pool.imap_unordered(run_chunk, work))
    else:
        results = [run_chunk(job) for job in work]
    cpu = [0.0] * len(cases)
    for index, start, out, error, seconds in results:
        values[index][start] = out
        cpu[index] += seconds
        if error:
            errors[index] = error
    ordered = {
        i: [row for start in sorted(values[i]) for row in values[i][start]]
        for i in range(len(cases))
    }
    rows = []
    for i, case in enumerate(cases):
        case_rows = summarise(case, [readings for readings, _ in ordered[i]], errors.get(i, ""))
        twin = _without_groups(cases, i)
        signatures = [signature for _, signature in ordered[i]]
        if twin is not None and signatures and signatures == [s for _, s in ordered[twin]]:
            for row in case_rows:
                row.note = (row.note + "; " if row.note else "") + (
                    "every p and CI as without groups: groups had no effect"
                )
        case_rows[0].cpu_s = round(cpu[i], 2)
        rows.extend(case_rows)
    return rows


def _without_groups(cases: Sequence[Case], i: int) -> int | None:
    """The case that differs from case i only in not passing groups, if any."""
    if not cases[i].groups:
        return None
    for j, other in enumerate(cases):
        if j != i and other == replace(cases[i], groups=False, readouts=other.readouts):
            return j
    return None


def scenario_names(only: str | None) -> list[str]:
    """`--only`: scenario names or numbers, comma-separated; every scenario when None."""
    names = list(SCENARIOS)
    if not only:
        return names
    wanted = []
    for item in only.split(","):
        item = item.strip()
        if item.isdigit() and 1 <= int(item) <= len(names):
            wanted.append(names[int(item) - 1])
        elif item in SCENARIOS:
            wanted.append(item)
        else:
            raise SystemExit(f"unknown scenario {item!r}; use one of {', '.join(names)} or 1-7")
    return wanted


def markdown(rows: Sequence[Row]) -> str:
    lines = [
        "| # | scenario | n | sims | rate / coverage | MC SE | target | meets | note |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for row in rows:
        number = list(SCENARIOS).index(row.scenario) + 1
        rate = "—" if row.rate is None else f"{row.rate:.1%}"
        se = "—" if row.se is None else f"{row.se:.1%}"
        ok = "" if row.ok is None else ("yes" if row.ok else "**no**")
        lines.append(
            f"| {number} | {row.label} | {row.n} | {row.sims} | {rate} | {se} | {row.target} "
            f"| {ok} | {row.note} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer simulations (≤ 3 minutes)")
    parser.add_argument("--sims", type=int, default=None, help="simulations per case")
    parser.add_argument("--only", default=None, help=f"scenarios: {', '.join(SCENARIOS)} or 1-7")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.sims is not None and args.sims < 1:
        parser.error("--sims must be at least 1")
    started = time.perf_counter()
    only = scenario_names(args.only)
    cases = [check_case(case) for case in build_cases(args.quick, args.sims, only)]
    cases = population_truths(cases, args.seed)
    rows = run(cases, max(1, args.processes), args.seed)
    elapsed = time.perf_counter() - started
    cpu = sum(row.cpu_s for row in rows)
    print(
        f"Simulated through `compare.build_report` with resamples = {RESAMPLES}, alpha = {ALPHA}, "
        f"seed {args.seed}; {'quick' if args.quick else 'full'} run, {args.processes} processes, "
        f"{elapsed:.0f} s ({cpu:.0f} CPU s in simulations). Rates are over simulations; "
        "MC SE = sqrt(rate (1 - rate) / sims).\n"
    )
    print(markdown(rows))
    if args.json:
        payload = {
            "resamples": RESAMPLES,
            "alpha": ALPHA,
            "seed": args.seed,
            "quick": args.quick,
            "seconds": round(elapsed, 1),
            "rows": [row.__dict__ for row in rows],
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
