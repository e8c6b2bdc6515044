"""Markdown rendering of a `Report`: the job summary, the PR comment and `--markdown-out`.

Owns the view model handed to the Jinja2 templates (shipped as `regress_action.templates`,
loaded through importlib.resources, never from the cwd), the number formatting and escaping
filters, and the truncation that keeps a comment under GitHub's 65,536-character limit.
Imports jinja2, pydantic and the contract modules only: no torch, SQLAlchemy or PyGithub.

Chart choice: Mermaid's xychart draws several bar series on top of each other, so the chart
uses one x category per metric *and side* ("accuracy · base", "accuracy · cand") with the
baseline and candidate in two series (two colours), zero where the other side stands. Only
metrics bounded to [0, 1] by definition (`Metric.unit_interval`: accuracies, F1, ECE) are
charted, on a fixed 0–1 axis; unbounded ones (loss, perplexity, MSE, R²) are named under the
chart instead, even when their values happen to lie in [0, 1]: on a shared axis they would
flatten every other bar or read as a score. A chart needs two such metrics: one metric's two
bars say no more than its row in the table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from typing import Any

import jinja2

from .report import (
    EvaluationReport,
    FlipExample,
    MetricResult,
    MetricValue,
    Report,
    SliceResult,
    TrendPoint,
)
from .slices import worst_slices
from .tasks import TASKS
from .verdict import fails_job

MAX_COMMENT_CHARS = 65_536
FLIP_ROWS = 10
PER_CLASS_ROWS = 100
TREND_POINTS = 10
TEXT_CHARS = 120  # user text (names, reasons) is clipped to this many characters

STATUS_MARKS = {
    "improved": "🟢",
    "regressed": "🔴",
    "neutral": "⚪",
    "new": "🆕",
    "failed": "⚠️",
    "failed_bound": "⛔",
}
OVERALL_MARKS = {"regressed": "❌", "improved": "✅", "neutral": "➖"}


def _sig(magnitude: float, digits: int) -> str:
    """A positive finite number to `digits` significant digits, fixed or scientific."""
    mantissa, exponent_text = f"{magnitude:.{digits - 1}e}".split("e")
    exponent = int(exponent_text)
    if exponent >= 9 or exponent < -4:
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{exponent:+03d}"
    if exponent >= digits - 1:  # never drop integer digits: 123456.7 -> 123,457
        return f"{magnitude:,.0f}"
    return f"{float(mantissa + 'e' + exponent_text):.{digits - 1 - exponent}f}"


def _number(value: float | None, digits: int, signed: bool) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    sign = "−" if value < 0 else ("+" if signed else "")
    if math.isinf(value):
        return f"{sign}inf"
    if value == 0:  # also negative zero
        return "0"
    return sign + _sig(abs(value), digits)


def fmt_value(value: float | None) -> str:
    """A metric value: 4 significant digits, e.g. 0.7500, 2.346, 123,457, 1.2e-05, NaN."""
    return _number(value, 4, signed=False)


def fmt_delta(value: float | None) -> str:
    """A signed delta, 3 significant digits; a nonzero delta never shows as 0 (+1.2e-05)."""
    return _number(value, 3, signed=True)


def fmt_percent(value: float | None) -> str:
    """A relative delta (a fraction) as a signed percentage: 0.0714 -> +7.14%."""
    return "—" if value is None else _number(value * 100, 3, signed=True) + "%"


def fmt_plain(value: float) -> str:
    """A setting such as a tolerance, as written: 0.01, 0.5, 1e-05."""
    return _number(value, 6, signed=False) if not math.isfinite(value) else f"{value:.6g}"


def fmt_p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.0001" if value < 1e-4 else _number(value, 2, signed=False)


_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_MD_ESCAPES = str.maketrans(
    # ":" too: GFM links bare URLs (`https://…`), and an escaped colon splits the text GitHub
    # scans for them.
    {c: "\\" + c for c in "\\`*_[]|~#:"}
    | {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
    # GitHub turns @name into a mention (a notification) after rendering, so an entity would
    # not stop it; a zero-width space after @ does, and reads the same.
    | {"@": "@\u200b"}
)


def clip(text: str, limit: int = TEXT_CHARS) -> str:
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md_escape(text: object, limit: int = TEXT_CHARS) -> str:
    """User text made inert anywhere inline, table cells included: no HTML, links, emphasis,
    code or cell breaks (Markdown punctuation backslash-escaped, HTML specials as entities)."""
    escaped = clip(str(text), limit).translate(_MD_ESCAPES)
    return _WWW.sub(r"\1\\.", escaped)  # `www.example.com` is linked without a scheme


# Every `www.`, not only at a word start: GFM also links one after `_`, which is a word character.
_WWW = re.compile(r"(www)\.", re.IGNORECASE)


def code_span(text: object) -> str:
    """User text as an inline code span (outside tables): everything in it is inert."""
    inner = clip(str(text)).replace("`", "'")
    if not inner:
        return "—"
    return f"` {inner} `" if inner.startswith(" ") or inner.endswith(" ") else f"`{inner}`"


def short(text: object, length: int) -> str:
    return str(text)[:length]


def mermaid_label(text: object) -> str:
    """A Mermaid label: only characters that cannot end the quote, the fence or inject HTML."""
    return re.sub(r"[^\w .:#+/-]", "_", clip(str(text), 30))


def mermaid_number(value: float) -> str:
    """Plain decimal (Mermaid's parser has no exponent notation)."""
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


@dataclass(frozen=True)
class Detail:
    """How much detail goes in: truncation lowers these step by step."""

    trend: bool = True
    per_class_rows: int = PER_CLASS_ROWS
    flip_rows: int = FLIP_ROWS
    reasons: bool = True
    chart: bool = True
    slice_details: bool = True  # every slice × metric (the worst slices always stay)


# Truncation order: trend, per-class (shrunk, then dropped), flips (shrunk, then dropped),
# reasons and statistics notes, the chart. The heading, table and run lines always stay.
TRUNCATION_STEPS = (
    Detail(),
    Detail(trend=False, slice_details=False),
    Detail(trend=False, per_class_rows=20),
    Detail(trend=False, per_class_rows=0),
    Detail(trend=False, per_class_rows=0, flip_rows=3),
    Detail(trend=False, per_class_rows=0, flip_rows=0),
    Detail(trend=False, per_class_rows=0, flip_rows=0, reasons=False),
    Detail(trend=False, per_class_rows=0, flip_rows=0, reasons=False, chart=False),
)


@dataclass(frozen=True)
class Chart:
    labels: list[str]
    baseline: list[str]
    candidate: list[str]
    skipped: list[str]


@dataclass(frozen=True)
class Trend:
    headline: str | None
    points: list[TrendPoint]
    values: list[float | None]
    chart_labels: list[str]  # the points with a finite headline value, for the line chart
    chart_values: list[str]
    other_data: list[bool]  # per point: evaluated on another eval set than this report


@dataclass(frozen=True)
class View:
    """Everything the template shows; formatting is left to the template's filters."""

    report: Report
    metrics: list[MetricResult]
    summary: str
    has_stats: bool
    ci_label: str
    stats_note: str  # how the CI and p columns were computed and adjusted
    rule: str  # what made a gated metric regress
    underpowered: list[MetricResult]  # gated metrics whose test cannot see their tolerance
    tests: list[str]
    chart: Chart | None
    trend: Trend | None
    loss_increases: list[FlipExample]  # largest first, whatever order the engine gave
    detail: Detail
    fragments: tuple[str, ...]  # the task's templates for its analysis, in report order
    example_loss: str  # what a flip's per-example loss measures ("loss", "squared error")
    notice: str | None = None
    worst: list[SliceResult] = field(default_factory=list)  # the slices shown first
    slice_metric: str = ""  # the metric the worst slices are ranked by
    slice_metrics: dict[str, str] = field(default_factory=dict)  # slice → the metric shown
    slices_gated: bool = False
    slice_note: str = ""


def status_cell(metric: MetricResult) -> str:
    text = f"{STATUS_MARKS.get(metric.status, '')} {metric.status}"
    if metric.significant is False:  # beyond the tolerance, not significantly (gate: neutral)
        text += " (n.s.)"
    if not metric.gated and metric.status not in ("new", "failed_bound"):
        text += " (bound only)" if metric.bound is not None else " (not gated)"
    return text


def _crosses(delta: float, tolerance: float) -> bool:
    """|Δ| beyond the tolerance, as the verdict decides it (equal up to rounding is within)."""
    return abs(delta) > tolerance and not math.isclose(
        abs(delta), tolerance, rel_tol=1e-9, abs_tol=1e-12
    )


def _bound_text(metric: MetricResult) -> str:
    """`0.8700 < floor 0.9` for a violated bound, `≥ 0.9 met` for a met one."""
    bound, value = metric.bound, metric.candidate
    if bound is None or value is None or not math.isfinite(value):
        return ""
    if bound.min is not None and value < bound.min:
        return f"{fmt_value(value)} < floor {fmt_plain(bound.min)}"
    if bound.max is not None and value > bound.max:
        return f"{fmt_value(value)} > ceiling {fmt_plain(bound.max)}"
    return f"{bound.describe()} met"


def bound_verdict(metric: MetricValue) -> str:
    """An evaluated metric against its bound: `✅ passed`, `⛔ 0.8700 < floor 0.9`, `⚠️ not
    finite`, or `—` without a bound."""
    bound, value = metric.bound, metric.value
    if bound is None or metric.status is None:
        return "—"
    if metric.status == "failed":
        return "⚠️ not finite"
    if metric.status == "passed":
        return "✅ passed"
    if bound.min is not None and value < bound.min:
        return md_escape(f"⛔ {fmt_value(value)} < floor {fmt_plain(bound.min)}")
    return md_escape(f"⛔ {fmt_value(value)} > ceiling {fmt_plain(bound.max or 0.0)}")


def why_cell(metric: MetricResult, significance: str = "report") -> str:
    """The rule that decided the metric's status, in a few words for the table: the bound
    (`0.8700 < floor 0.9`), the change against its tolerance (`Δ −0.0310 beyond ±0.01`) and
    its test (`significant, p=0.003` / `n.s.: p=0.21`), or why it was not compared."""
    bound = _bound_text(metric)
    if metric.status == "failed_bound":
        return md_escape(bound)
    parts: list[str] = []
    if metric.status == "failed":
        if metric.candidate is None and metric.baseline is None:
            parts.append("missing from the report")
        elif metric.candidate is None:
            parts.append("missing on the candidate")
        else:
            parts.append("not finite")
    elif metric.status == "new" or metric.delta is None:
        parts.append("no baseline")
    else:
        tolerance = f"±{fmt_plain(metric.tolerance)}"
        crosses = _crosses(metric.delta, metric.tolerance)
        where = "beyond" if crosses else "within"
        parts.append(f"Δ {fmt_delta(metric.delta)} {where} {tolerance}")
        p = metric.p_adjusted if metric.p_adjusted is not None else metric.p_value
        shown = "" if p is None or not math.isfinite(p) else "p" + f"={fmt_p(p)}".replace("=<", "<")
        if crosses and metric.status == "neutral" and significance in ("gate", "margin"):
            if metric.test is None:
                parts.append("no paired test")
            elif significance == "margin" and metric.significant is not False:
                parts.append(f"CI reaches within {tolerance}")
        if crosses and shown and metric.significant is not None:
            parts.append(f"significant, {shown}" if metric.significant else f"n.s.: {shown}")
    if bound:
        parts.append(bound)
    return md_escape("; ".join(parts))


RULES = {
    "gate": "a gated metric regresses when its change is beyond its tolerance and significant",
    "margin": "a gated metric regresses when its whole CI lies beyond its tolerance",
    "report": "a gated metric regresses when its change is beyond its tolerance (p shown, "
    "not required)",
    "off": "a gated metric regresses when its change is beyond its tolerance",
}


def _percent(level: float) -> str:
    return f"{level * 100:.4g}%"


def _ci_label(report: Report) -> str:
    return f"{_percent(report.stats.confidence)} CI"


def _stats_note(report: Report) -> str:
    """The footnote on the CI and p columns: levels, and the family correction."""
    stats = report.stats
    size = stats.family_size
    if size <= 1:
        family = "p of the gated metric unadjusted (one gated test)"
    else:
        level = _percent(1 - stats.alpha / size)
        family = (
            f"gated metrics: p Bonferroni-adjusted over {size} tests and {level} CI, so the "
            "CI excludes 0 exactly when p < α; other rows unadjusted"
        )
    return f"{_ci_label(report)} of Δ; {family}; n.s. = not significant at α = {stats.alpha:g}"


def _summary(metrics: list[MetricResult]) -> str:
    gated = [m for m in metrics if m.gated or m.bound is not None]
    bad = [m for m in metrics if fails_job(m)]
    improved = [m for m in metrics if m.status == "improved"]
    marks = {"failed": " (failed)", "failed_bound": " (outside its bound)"}

    def names(items: list[MetricResult]) -> str:
        return ", ".join(md_escape(m.name) + marks.get(m.status, "") for m in items)

    if bad:
        verb = "regressed or failed" if any(m.status != "regressed" for m in bad) else "regressed"
        return f"{len(bad)} of {len(gated)} gated metrics {verb}: {names(bad)}."
    if improved:
        count = f"{len(improved)} of {len(metrics)}"
        return f"{count} metrics improved: {names(improved)}; none regressed."
    noise = [m for m in gated if m.significant is False and m.status == "neutral"]
    if noise:
        return (
            f"No gated metric changed credibly ({len(gated)} gated): {names(noise)} moved beyond "
            "the tolerance, but not significantly."
        )
    return f"No gated metric changed beyond its tolerance ({len(gated)} gated)."


def _slice_summary(report: Report) -> str:
    """What the gated slices add to the summary: the ones that fail the job."""
    failing = [name for name in report.regressed_metrics if name.endswith("]") and "[" in name]
    if not failing:
        return ""
    return f" Gated slices failed: {', '.join(md_escape(name) for name in failing)}."


def _has_stats(metric: MetricResult) -> bool:
    return any(v is not None for v in (metric.test, metric.p_value, metric.ci_low, metric.ci_high))


def _chart(metrics: list[MetricResult], task: str) -> Chart | None:
    """Bars for the metrics that live in [0, 1] by definition (a loss or an error that happens
    to be below 1 would share an axis it has no bound on)."""
    known = TASKS[task].all_metrics() if task in TASKS else {}

    def unit(value: float | None) -> bool:
        return value is not None and 0.0 <= value <= 1.0  # False for NaN

    # Split in one pass: `m not in charted` would compare pydantic models pairwise, O(n²).
    charted: list[MetricResult] = []
    skipped: list[str] = []
    for m in metrics:
        bounded = known[m.name].unit_interval if m.name in known else True
        if bounded and unit(m.baseline) and unit(m.candidate):
            charted.append(m)
        else:
            skipped.append(md_escape(m.name))
    if len(charted) < 2:  # one metric's two bars say no more than its table row
        return None
    labels, baseline, candidate = [], [], []
    for m in charted:
        labels += [f"{mermaid_label(m.name)} · base", f"{mermaid_label(m.name)} · cand"]
        baseline += [mermaid_number(m.baseline or 0.0), "0"]
        candidate += ["0", mermaid_number(m.candidate or 0.0)]
    return Chart(labels, baseline, candidate, skipped)


def _trend(report: Report) -> Trend | None:
    points = sorted(report.trend, key=lambda p: p.created_at)[-TREND_POINTS:]
    if not points:
        return None
    keys = [name for p in points for name in p.metrics]
    headline = next((name for name in report.metrics if name in keys), keys[0] if keys else None)
    values = [p.metrics.get(headline) if headline else None for p in points]
    finite = [(p, v) for p, v in zip(points, values, strict=True) if _finite(v)]
    labels = [f"#{p.comparison_id}" for p, _ in finite] if len(finite) >= 2 else []
    chart_values = [mermaid_number(v or 0.0) for _, v in finite] if labels else []
    current = report.dataset.fingerprint
    other = [bool(p.fingerprint and current and p.fingerprint != current) for p in points]
    return Trend(headline, points, values, labels, chart_values, other)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _largest_loss_increases(report: Report) -> list[FlipExample]:
    items = report.flips.loss_increases if report.flips else []

    def key(example: FlipExample) -> float:
        delta = example.loss_delta
        return math.inf if delta is None or math.isnan(delta) else -delta

    return sorted(items, key=key)


def _fragments(task: str) -> tuple[str, ...]:
    """The task's own report fragments (none for a task this version does not know)."""
    found = TASKS.get(task)
    return found.report_fragments if found is not None else ()


def build_view(report: Report, detail: Detail = TRUNCATION_STEPS[0]) -> View:
    metrics = list(report.metrics.values())
    has_stats = any(_has_stats(m) for m in metrics)
    return View(
        report=report,
        metrics=metrics,
        summary=_summary(metrics) + _slice_summary(report),
        has_stats=has_stats,
        ci_label=_ci_label(report) if report.stats.family_size <= 1 else "CI",
        stats_note=_stats_note(report),
        rule=RULES[report.stats.significance],
        underpowered=[m for m in metrics if m.underpowered],
        tests=sorted({m.test for m in metrics if m.test}),
        chart=_chart(metrics, report.task.task) if detail.chart else None,
        trend=_trend(report) if detail.trend else None,
        loss_increases=_largest_loss_increases(report),
        detail=detail,
        fragments=_fragments(report.task.task),
        example_loss=TASKS[report.task.task].example_loss if report.task.task in TASKS else "loss",
        **_slice_view(report, metrics),
    )


def _slice_view(report: Report, metrics: list[MetricResult]) -> dict[str, Any]:
    """The worst slices and what their table says (nothing without slices)."""
    if not report.slices:
        return {}
    headline = next((m.name for m in metrics if m.gated), metrics[0].name if metrics else "")
    worst = worst_slices(report.slices, headline)
    shown = {}
    for item in worst:
        failing = [m.name for m in item.metrics.values() if item.gated and fails_job(m)]
        shown[item.name] = failing[0] if failing else headline
    gated = [item for item in report.slices if item.gated]
    if gated:
        size = gated[0].family_size
        note = (
            f"{len(gated)} gated slice(s): a regression in one fails the job; p adjusted by "
            f"Bonferroni over gated slices × gated metrics (m = {size})"
        )
    else:
        note = "slices are reported, not gated (--gate-slices / gate-slices to gate them)"
    return {
        "worst": [item for item in worst if shown[item.name] in item.metrics],
        "slice_metric": headline,
        "slice_metrics": shown,
        "slices_gated": bool(gated),
        "slice_note": note,
    }


def slice_gate(item: SliceResult) -> str:
    """The Gated cell: yes, or no with why."""
    return "yes" if item.gated else f"no ({md_escape(item.why_not or 'not gated')})"


def _load_template(name: str) -> str:
    # The templates ship as package data of `regress_action.templates` (a separate package
    # mapped from the top-level templates/ folder), so read them through importlib.resources:
    # this works from a wheel, a zip and an editable install alike.
    return files("regress_action.templates").joinpath(name).read_text(encoding="utf-8")


def _class_name(label: int | None, names: list[str] | None) -> str:
    if label is None:
        return "—"
    if names and 0 <= label < len(names):
        return f"{label} ({md_escape(names[label])})"
    return str(label)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        autoescape=False,  # Markdown, not HTML: user text goes through the `md` filter
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        value=fmt_value,
        delta=fmt_delta,
        percent=fmt_percent,
        pvalue=fmt_p,
        plain=fmt_plain,
        md=md_escape,
        code=code_span,
        short=short,
        mermaid_label=mermaid_label,
        status_cell=status_cell,
        why=why_cell,
        bound_verdict=bound_verdict,
        class_name=_class_name,
        slice_gate=slice_gate,
    )
    env.globals.update(STATUS_MARKS=STATUS_MARKS, OVERALL_MARKS=OVERALL_MARKS)
    return env


def _render(view: View) -> str:
    text = environment().get_template("report.md.j2").render(view=view)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_evaluation(report: EvaluationReport) -> str:
    """One model's evaluation (`regress-action evaluate`) as Markdown: its metric values, the
    model, the eval set and where it ran."""
    text = environment().get_template("evaluation.md.j2").render(view=report)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def comment_length(text: str) -> int:
    """Length in UTF-16 code units: never less than the code-point count GitHub checks, so a
    text within this length is within the limit whichever way emoji are counted."""
    return len(text.encode("utf-16-le")) // 2


def _notice(max_chars: int, hint: str | None) -> str:
    limit = (
        "GitHub's 65,536-character comment limit"
        if max_chars == MAX_COMMENT_CHARS
        else f"the {max_chars:,}-character limit"
    )
    where = hint or "the JSON report artifact"
    return f"_Report truncated to fit {limit}; the full report is in {where}._"


def render_markdown(
    report: Report, *, max_chars: int | None = None, full_report_hint: str | None = None
) -> str:
    """The report as Markdown; with `max_chars`, detail sections are dropped until it fits.

    `full_report_hint` is trusted Markdown (e.g. a link to the run's artifact) naming where the
    full report is; it appears only when the text was truncated. The heading and the delta table
    are always kept; a `max_chars` too small even for those cuts the text at a line boundary.
    """
    full = _render(build_view(report))
    if max_chars is None or comment_length(full) <= max_chars:
        return full
    notice = _notice(max_chars, full_report_hint)
    for detail in TRUNCATION_STEPS[1:]:
        text = _render(replace(build_view(report, detail), notice=notice))
        if comment_length(text) <= max_chars:
            return text
    bare = _render(build_view(report, TRUNCATION_STEPS[-1]))
    return _hard_cut(bare, notice, max_chars)


def _hard_cut(text: str, notice: str, max_chars: int) -> str:
    """Whole lines of `text` that fit before the notice; only for an absurdly small limit."""
    tail = "\n\n" + notice + "\n"
    budget = max_chars - comment_length(tail)
    kept: list[str] = []
    for line in text.splitlines(keepends=True):
        budget -= comment_length(line)
        if budget < 0:
            break
        kept.append(line)
    if kept:
        return "".join(kept).rstrip("\n") + tail
    while comment_length(notice) > max_chars:
        notice = notice[:-1]
    return notice
