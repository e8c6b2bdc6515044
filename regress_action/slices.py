"""Slices: every metric judged again on each slice of the eval set, from the same paired records.

A slice is the set of examples sharing a `slice` key in the data (a JSONL line's `"slice"`, a
table's `slice` column, an `.npz`'s `slices` array; an LM window inherits its document's). Each
slice's records are the paired records masked to it (`PairedRecords.subset`): no model runs
again. Its metrics get values, deltas, statuses, bounds and paired statistics like the whole
set's.

Which slices gate the job: those `VerdictConfig.gate_slices` selects (none by default: slices
are reported only) with at least `min_slice_size` examples. The gated slices' tests form their
own family, corrected by Bonferroni over (gated slices × gated hypotheses): each slice-metric
test runs at α / (s · m), so the chance that any gated slice fails by chance stays at most α
(docs/statistics.md). A slice not gated is judged at α alone, for reading only.

Imports numpy and the torch-free modules (`records`, `verdict`, `stats`, `report`, `spec`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError
from .metrics import Metric
from .records import PairedRecords
from .report import MetricResult, SliceResult
from .spec import GATE_ALL, VerdictConfig
from .stats import paired_statistics
from .verdict import (
    PairedStats,
    apply_significance,
    family_size,
    judge,
    overall_status,
    regressed_metrics,
)

SLICE_COLUMN = "slice"

StatsOf = Callable[[str, Mapping[str, float]], Mapping[str, PairedStats]]


def slice_labels(values: Any, where: str) -> NDArray[np.str_]:
    """A slice name per example from the data's values (strings or integers), as a string
    array; an empty or missing value is a DataError naming `where`."""
    from .errors import DataError

    labels: list[str] = []
    for index, value in enumerate(list(values)):
        named = isinstance(value, str | int | np.integer) and not isinstance(value, bool)
        if not named:
            raise DataError(
                f"{where}: example {index} has slice {value!r}; give every example a string "
                "slice name (or none at all)"
            )
        text = str(value)
        if not text.strip():
            raise DataError(f"{where}: example {index} has an empty slice name; name it")
        labels.append(text)
    return np.asarray(labels, dtype=np.str_)


def gating(
    sizes: Mapping[str, int], verdict: VerdictConfig, *, strict: bool = True
) -> dict[str, str | None]:
    """Each slice → None when it gates the job, else why not. With `strict`, a slice named in
    `gate_slices` that the data does not have is a ConfigError naming --gate-slices."""
    selected = verdict.gate_slices
    if strict:
        unknown = [name for name in selected if name != GATE_ALL and name not in sizes]
        if unknown:
            found = ", ".join(sorted(sizes)) or "none (the data has no slice key)"
            raise ConfigError(
                f"--gate-slices / gate-slices names slice(s) {', '.join(map(repr, unknown))} "
                f"that the eval set does not have (its slices: {found}); fix the names"
            )
    why: dict[str, str | None] = {}
    for name, n in sizes.items():
        if not selected or (selected != (GATE_ALL,) and name not in selected):
            why[name] = "not selected by gate-slices"
        elif n < verdict.min_slice_size:
            why[name] = f"{n} examples, under min-slice-size {verdict.min_slice_size}"
        else:
            why[name] = None
    return why


def slices_family_size(gated_slices: int, members: Mapping[str, str]) -> int:
    """m of the slices' family: gated slices × gated hypotheses (at least 1)."""
    return max(1, gated_slices) * family_size(members)


def judge_slice(
    name: str,
    n: int,
    values: tuple[Mapping[str, float | None], Mapping[str, float | None]],
    verdict: VerdictConfig,
    specs: Mapping[str, Metric],
    members: Mapping[str, str],
    why_not: str | None,
    size: int,
    stats_of: StatsOf | None,
) -> SliceResult:
    """One slice judged: `values` its (baseline, candidate) metric values, `members` the whole
    set's gated family, `size` the slices' family size, `stats_of(name, alphas)` its paired
    statistics at those levels (None: significance off)."""
    gated = why_not is None
    results = judge(values[0], values[1], verdict, specs, log_regressions=False)
    slice_members = dict(members) if gated else {}
    if not gated:
        for result in results.values():
            result.gated = False
    if stats_of is not None and verdict.significance != "off":
        alphas = {
            metric: verdict.alpha / size if metric in slice_members else verdict.alpha
            for metric in specs
        }
        apply_significance(
            results, stats_of(name, alphas), verdict, slice_members, size=size if gated else 1
        )
    return SliceResult(
        name=name,
        n=n,
        status=overall_status(results.values()),
        gated=gated,
        why_not=why_not,
        family_size=size if gated else 1,
        metrics=results,
    )


def judge_slices(
    records: PairedRecords,
    specs: Mapping[str, Metric],
    verdict: VerdictConfig,
    members: Mapping[str, str],
) -> list[SliceResult]:
    """Every slice of `records` judged (see the module docstring); [] without slices. `verdict`
    has its gate resolved to metric names; `members` is the whole set's gated family."""
    if records.slices is None:
        if verdict.gate_slices and verdict.gate_slices != (GATE_ALL,):
            gating({}, verdict)  # names slices the data does not have
        return []
    names, counts = np.unique(records.slices, return_counts=True)
    sizes = {str(name): int(count) for name, count in zip(names, counts, strict=True)}
    why = gating(sizes, verdict)
    size = slices_family_size(sum(reason is None for reason in why.values()), members)
    masked = {name: records.subset(records.slices == name) for name in sizes}

    def stats_of(name: str, alphas: Mapping[str, float]) -> Mapping[str, PairedStats]:
        return paired_statistics(
            masked[name],
            specs,
            alpha=verdict.alpha,
            alphas=alphas,
            resamples=verdict.resamples,
            seed=verdict.seed,
        )

    out = []
    for name, sub in masked.items():
        values = tuple(
            {metric: spec.value(side, records.num_classes) for metric, spec in specs.items()}
            for side in (sub.baseline, sub.candidate)
        )
        out.append(
            judge_slice(
                name,
                sub.n,
                (values[0], values[1]),
                verdict,
                specs,
                members,
                why[name],
                size,
                stats_of,
            )
        )
    return out


def slice_failures(slices: list[SliceResult]) -> list[str]:
    """The gated slices' metrics that fail the job, as `metric[slice]`."""
    return [
        f"{metric}[{item.name}]"
        for item in slices
        if item.gated
        for metric in regressed_metrics(item.metrics.values())
    ]


def worst_slices(
    slices: list[SliceResult], metric: str | None, count: int = 5
) -> list[SliceResult]:
    """The slices to show first: every gated failure, then the `count` worst changes of
    `metric` (the primary one; an improvement's sign counts), worst first."""

    def harm(item: SliceResult) -> float:
        result: MetricResult | None = item.metrics.get(metric) if metric else None
        if result is None or result.delta is None:
            return 0.0
        return -result.delta if result.higher_is_better else result.delta

    failing = [item for item in slices if item.gated and item.status == "regressed"]
    rest = sorted((item for item in slices if item not in failing), key=harm, reverse=True)
    return sorted(failing, key=harm, reverse=True) + rest[: max(0, count - len(failing))]
