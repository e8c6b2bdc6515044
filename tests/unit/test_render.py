"""Tests of the Markdown report (regress_action.render + templates/*.j2).

Golden files in tests/unit/golden/ pin the rendered Markdown. After an intended change, regenerate
them and review the diff:

    REGRESS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render.py
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from regress_action import render
from regress_action.render import (
    MAX_COMMENT_CHARS,
    comment_length,
    fmt_delta,
    fmt_p,
    fmt_percent,
    fmt_value,
    md_escape,
    mermaid_label,
    render_markdown,
)
from regress_action.report import (
    DatasetInfo,
    FlipExample,
    Flips,
    Report,
    RunInfo,
    SliceResult,
    StatsInfo,
    TrendPoint,
)
from regress_action.spec import TaskSpec
from tests.report_factory import (
    CREATED_AT,
    make_flips,
    make_per_class,
    make_report,
    metric,
)

GOLDEN = Path(__file__).parent / "golden"
HOSTILE = "<img src=x onerror=alert(1)>|**bold**"
TABLE_HEADER = ["Metric", "", "Baseline", "Candidate", "Δ", "Δ %", "Status", "Why"]
STATS_HEADER = [*TABLE_HEADER[:6], "CI", "p (adj.)", "Status", "Why"]  # levels in the footnote


def _regressed_with_failed_and_new() -> Report:
    """Accuracy regressed, loss NaN on the candidate (failed), top-5 new, hostile run name."""
    metrics = [
        metric("accuracy", 0.8, 0.7, "regressed"),
        metric("loss", 0.6512, math.nan, "failed", delta=None, rel_delta=None,
               reason="loss is not finite: 0.6512 → nan"),
        metric("top5_accuracy", None, 0.91, "new", gated=False,
               reason="top5_accuracy is new: 0.91 (no baseline value)"),
        metric("macro_f1", 0.7, 0.7, "neutral"),
    ]  # fmt: skip
    return make_report(
        metrics={m.name: m for m in metrics},
        status="regressed",
        regressed_metrics=["accuracy", "loss"],
        candidate=RunInfo(run_id=7, name=HOSTILE, sha256="ff" * 32),
        commit=None,
    )


def _with_slices() -> Report:
    """Three gated slices, one regressed (failing the job), one too small to gate, and a
    hostile slice name."""

    def one(name: str, n: int, base: float, cand: float, status: str, **slice_fields: object):  # type: ignore[no-untyped-def]
        gated = slice_fields.get("gated", True)
        metrics = {
            "accuracy": metric(
                "accuracy", base, cand, status, gated=gated, p_value=0.0004, p_adjusted=0.0024
            ),
            "loss": metric("loss", 0.6, 0.6 + (base - cand), "neutral", gated=False, p_value=0.3),
        }
        return SliceResult(
            name=name,
            n=n,
            status="regressed" if status == "regressed" else "neutral",
            metrics=metrics,
            **({"gated": True, "family_size": 3} | slice_fields),  # type: ignore[arg-type]
        )

    slices = [
        one("day", 4000, 0.84, 0.845, "neutral"),
        one("night", 900, 0.80, 0.74, "regressed"),
        one(HOSTILE, 1000, 0.81, 0.80, "neutral"),
        one("fog", 120, 0.7, 0.6, "regressed", gated=False, family_size=1,
            why_not="120 examples, under min-slice-size 200"),
    ]  # fmt: skip
    return make_report(
        stats=True,
        status="regressed",
        regressed_metrics=["accuracy[night]"],
        slices=slices,
    )


CASES: dict[str, Callable[[], Report]] = {
    "classification_slices": _with_slices,
    "classification_full": lambda: make_report(stats=True, flips=True, per_class=True, trend=5),
    "lm_plain": lambda: make_report("lm", flips=True),
    "regressed_failed_new": _regressed_with_failed_and_new,
}


def _parser() -> MarkdownIt:
    # GitHub Flavored Markdown's table extension on CommonMark, raw HTML allowed as on GitHub.
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def _tables(text: str) -> list[list[list[str]]]:
    """Every table as rows of cell texts (header row first)."""
    tables: list[list[list[str]]] = []
    tokens = _parser().parse(text)
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            tables[-1].append([])
        elif token.type in ("th_open", "td_open"):
            inline: Token = tokens[i + 1]
            tables[-1][-1].append(inline.content if inline.type == "inline" else "")
    return tables


def _cell_text(markdown: str) -> str:
    """A cell's content as rendered text (escapes resolved), without the surrounding <p>."""
    html = _parser().renderInline(markdown)
    return re.sub(r"<[^>]+>", "", html).replace("&amp;", "&").replace("&lt;", "<")


# --------------------------------------------------------------------------- golden files


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    text = render_markdown(CASES[case]())
    path = GOLDEN / f"{case}.md"
    if os.environ.get("REGRESS_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing {path}; create it with REGRESS_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"{path.name} differs from the rendered report; if the change is intended, rerun with "
        "REGRESS_UPDATE_GOLDEN=1 and review the diff"
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_delta_table_parses_with_one_row_per_metric(case: str) -> None:
    report = CASES[case]()
    table = _tables(render_markdown(report))[0]
    has_stats = case in ("classification_full", "classification_slices")
    assert [_cell_text(c) for c in table[0]] == (STATS_HEADER if has_stats else TABLE_HEADER)
    assert [_cell_text(row[0]) for row in table[1:]] == list(report.metrics)
    assert all(len(row) == len(table[0]) for row in table)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_details_section_is_closed(case: str) -> None:
    text = render_markdown(CASES[case]())
    depth = 0
    for tag in re.findall(r"</?details>", text):
        depth += 1 if tag == "<details>" else -1
        assert depth in (0, 1), "a <details> nested or closed before it was opened"
    assert depth == 0
    # GitHub renders Markdown inside <details> only after a blank line following </summary>.
    assert text.count("</summary>\n\n") == text.count("<details>")


@pytest.mark.parametrize("case", sorted(CASES))
def test_mermaid_charts_are_well_formed(case: str) -> None:
    fences = [t for t in _parser().parse(render_markdown(CASES[case]())) if t.type == "fence"]
    assert fences or case == "lm_plain", "expected at least one Mermaid chart"
    for fence in fences:
        assert fence.info == "mermaid"
        lines = fence.content.splitlines()
        assert lines[0] in ("xychart-beta", "xychart-beta horizontal")
        labels = re.findall(r'"([^"]*)"', next(ln for ln in lines if "x-axis" in ln))
        for series in (ln for ln in lines if ln.strip().startswith(("bar", "line"))):
            values = series.split("[", 1)[1].rstrip("]").split(", ")
            assert len(values) == len(labels)
            assert all(re.fullmatch(r"-?\d+(\.\d+)?", v) for v in values), series


def test_classification_chart_interleaves_baseline_and_candidate() -> None:
    text = render_markdown(make_report())
    assert '"accuracy · base", "accuracy · cand"' in text
    assert "bar [0.8, 0, " in text
    assert "bar [0, 0.72, " in text


def test_an_lm_report_has_no_bar_chart_for_its_one_bounded_metric() -> None:
    """token_accuracy alone in 0-1: two bars would repeat its table row at ten times the size."""
    report = make_report("lm")
    assert render.build_view(report).chart is None
    assert "```mermaid" not in render_markdown(report)


# --------------------------------------------------------------------------- content


def test_heading_and_summary_for_each_overall_status() -> None:
    regressed = render_markdown(make_report())
    assert regressed.startswith("### ❌ regress-action · `default` — regressed\n")
    assert "2 of 4 gated metrics regressed: accuracy, macro\\_f1." in regressed
    improved = render_markdown(make_report("lm"))
    assert improved.startswith("### ✅ regress-action · `default` — improved\n")
    assert (
        "3 of 4 metrics improved: loss, perplexity, bits\\_per\\_byte; none regressed." in improved
    )
    neutral_metrics = {"accuracy": metric("accuracy", 0.8, 0.801, "neutral")}
    neutral = render_markdown(make_report(metrics=neutral_metrics, status="neutral"))
    assert neutral.startswith("### ➖ regress-action · `default` — neutral\n")
    assert "No gated metric changed beyond its tolerance (1 gated)." in neutral


def test_a_change_gate_mode_found_not_significant_is_named_not_hidden() -> None:
    accuracy = metric(
        "accuracy", 0.82, 0.803, "neutral", significant=False, p_value=0.43, p_adjusted=0.43,
        ci_low=-0.054, ci_high=0.022, test="mcnemar_exact", n=600,
    )  # fmt: skip
    report = make_report(
        status="neutral",
        regressed_metrics=[],
        metrics={"accuracy": accuracy},
        stats=StatsInfo(significance="gate"),
    )
    text = render_markdown(report)
    assert (
        "No gated metric changed credibly (1 gated): accuracy moved beyond the tolerance, but "
        "not significantly." in text
    )
    row = _tables(text)[0][1]
    assert _cell_text(row[-2]) == "⚪ neutral (n.s.)"
    assert _cell_text(row[-1]) == "Δ −0.0170 beyond ±0.01; n.s.: p=0.43"


def test_failed_metric_is_named_in_the_summary() -> None:
    text = render_markdown(_regressed_with_failed_and_new())
    assert "2 of 3 gated metrics regressed or failed: accuracy, loss (failed)." in text


def test_statistics_columns_and_not_significant_mark() -> None:
    table = _tables(render_markdown(make_report(stats=True)))[0]
    rows = {_cell_text(row[0]): [_cell_text(c) for c in row] for row in table[1:]}
    assert rows["accuracy"][6:9] == ["[−0.112, −0.0479]", "<0.0001", "🔴 regressed"]
    assert rows["macro_f1"][8] == "🔴 regressed (n.s.)"
    assert rows["ece"][6:9] == ["—", "—", "⚪ neutral (not gated)"]  # no valid test


def test_confidence_level_labels_the_ci_column() -> None:
    report = make_report(stats=True)
    report.stats.confidence, report.stats.alpha = 0.9, 0.1
    text = render_markdown(report)  # four gated tests: their level is in the footnote
    assert "| CI |" in text and "p Bonferroni-adjusted over 4 tests and 97.5% CI" in text
    report.stats.family_size = 1
    text = render_markdown(report)
    assert "| 90% CI |" in text and "p of the gated metric unadjusted (one gated test)" in text


def test_underpowered_gated_metrics_get_one_warning() -> None:
    text = render_markdown(make_report(stats=True))
    assert text.count("> [!WARNING]") == 1
    assert "too small to see a change of the tolerance in loss, top5\\_accuracy" in text
    line = "> - loss: tolerance 0.01, smallest change found with 80 % power at n = 500: 0.0436"
    assert line in text
    assert "[!WARNING]" not in render_markdown(make_report(stats=False))


def test_detail_sections_absent_without_data() -> None:
    text = render_markdown(make_report())
    assert "CI" not in text and "p (adj.)" not in text
    for section in ("Flips", "Per-class", "Trend", "**Statistics.**", "Commit** `9c8b7a6`"):
        assert (section in text) == (section.startswith("Commit")), section
    assert text.count("<details>") == 1  # the per-metric reasons only


def test_dataset_runs_and_commit_are_shortened() -> None:
    text = render_markdown(make_report())
    assert "- **Dataset** vision\\_tiny · fingerprint `3f9a1c0be4d2` · 500 examples" in text
    assert "- **Baseline** run #1 baseline-cnn · sha256 `a1b2c3d4e5f6`" in text
    assert "- **Commit** `9c8b7a6` · comparison #42" in text


def test_flips_show_ten_of_each_and_the_totals() -> None:
    report = make_report(flips=True)
    report.flips = make_flips("classification", n_wrong=5000, n_right=37)
    text = render_markdown(report)
    assert "<summary>Flips: 5,000 newly wrong, 37 newly right</summary>" in text
    assert "**Newly wrong** (first 10 of 5,000)" in text
    assert "**Newly right** (first 10 of 37)" in text
    assert "The JSON report lists them all." in text
    flip_tables = _tables(text)[1:3]
    assert [len(t) - 1 for t in flip_tables] == [10, 10]
    assert flip_tables[0][1] == ["1000", "0 (airplane)", "0 (airplane)", "3 (cat)"]


def test_bounded_flips_show_the_totals_and_where_every_example_is() -> None:
    """A report that lists the largest flips counts them all: the totals come from the counts,
    and the comment says the records file has every example."""
    report = make_report(flips=True)
    flips = make_flips("classification", n_wrong=100, n_right=37)
    report.flips = flips.model_copy(update={"newly_wrong_count": 5000, "newly_right_count": 37})
    text = render_markdown(report)
    assert "<summary>Flips: 5,000 newly wrong, 37 newly right</summary>" in text
    assert "**Newly wrong** (first 10 of 5,000)" in text
    assert "The JSON report lists the 100 largest changes of each kind" in text
    assert "records file (`--records-path`, the Action's `records-path`)" in text


def test_lm_flips_show_the_largest_loss_increases_first() -> None:
    flips = make_flips("lm", n_wrong=30)
    shuffled = flips.loss_increases[::2] + flips.loss_increases[1::2]
    shuffled.append(FlipExample(example_id=999, loss_delta=None))
    report = make_report("lm", flips=True)
    report.flips = Flips(loss_increases=shuffled)
    table = _tables(render_markdown(report))[1]
    assert [row[0] for row in table[1:]] == [str(i * 7) for i in range(10)]
    assert "(first 10 of 31)" in render_markdown(report)


def test_per_class_keeps_the_given_order() -> None:
    report = make_report(per_class=True)
    assert report.per_class is not None
    table = _tables(render_markdown(report))[-1]
    assert [row[0] for row in table[1:]] == [f"{c.label} {c.name}" for c in report.per_class]


def test_trend_table_and_line_chart() -> None:
    text = render_markdown(make_report(trend=12))
    assert "<summary>Trend: last 10 comparisons (accuracy)</summary>" in text
    assert '"#12", "#13"' in text and '"#11"' not in text  # the last 10 of 12, oldest first
    one_point = render_markdown(make_report(trend=1))
    assert "Trend: last 1 comparison (accuracy)" in one_point
    assert one_point.count("```mermaid") == 1  # the bar chart only: a line needs 2 points


def test_trend_skips_missing_headline_values_in_the_chart() -> None:
    headline: list[float | None] = [0.8, None, 0.7]
    points = [
        TrendPoint(
            comparison_id=i, created_at=CREATED_AT, status="neutral", metrics={"accuracy": v}
        )
        for i, v in enumerate(headline)
    ]
    text = render_markdown(make_report(trend=0).model_copy(update={"trend": points}))
    assert 'x-axis ["#0", "#2"]' in text
    assert "line [0.8, 0.7]" in text


# --------------------------------------------------------------------------- escaping


def _hostile_report() -> Report:
    report = make_report(stats=True, flips=True, per_class=True, trend=3)
    hostile_metric = metric(HOSTILE + '"]\n```\n<script>', 0.5, 0.6, "improved", reason=HOSTILE)
    names = [HOSTILE + str(i) for i in range(10)]
    return report.model_copy(
        update={
            "report_name": "x`y" + HOSTILE,
            "baseline": RunInfo(run_id=1, name=HOSTILE, sha256="<b>ab|cd</b>"),
            "candidate": RunInfo(checkpoint="[link](javascript:alert(1))\nnext_line"),
            "dataset": DatasetInfo(name=HOSTILE, fingerprint="<i>", n=3, class_names=names),
            "commit": "`<x>|",
            "metrics": report.metrics | {hostile_metric.name: hostile_metric},
            "per_class": make_per_class(names),
            "trend": [p.model_copy(update={"commit": HOSTILE, "status": HOSTILE})
                      for p in report.trend],
        }
    )  # fmt: skip


def test_user_text_renders_inert() -> None:
    report = _hostile_report()
    text = render_markdown(report)
    html = _parser().render(text)
    assert "<img" not in html and "<script" not in html and "<b>" not in html
    assert "<strong>bold" not in html and "<em>" not in html
    assert 'href="javascript' not in html and "<a " not in html
    for table in _tables(text):
        assert len({len(row) for row in table}) == 1, "a | in user text broke a table row"
    assert len(_tables(text)[0]) == len(report.metrics) + 1
    assert "&lt;img src=x onerror=alert(1)&gt;|**bold**" in html  # shown, as text


def test_user_text_cannot_break_out_of_mermaid() -> None:
    text = render_markdown(_hostile_report())
    fences = [t for t in _parser().parse(text) if t.type == "fence"]
    assert [f.info for f in fences] == ["mermaid", "mermaid"]
    for fence in fences:
        for label in re.findall(r'"([^"]*)"', fence.content):
            assert not set(label) & set('<>"`|[]\n'), label


def test_md_escape_of_each_special_character() -> None:
    assert md_escape("a|b") == "a\\|b"
    assert md_escape("<&>") == "&lt;&amp;&gt;"
    assert md_escape("`*_[]~#\\") == "\\`\\*\\_\\[\\]\\~\\#\\\\"
    assert md_escape("line\r\nbreak\ttab") == "line break tab"
    assert md_escape("x" * 500).endswith("x…") and len(md_escape("x" * 500)) == 120
    assert mermaid_label('a"b<c>\nd]') == "a_b_c_ d_"


# --------------------------------------------------------------------------- truncation


def _huge_report(metrics: int = 0) -> Report:
    report = make_report(stats=True, flips=True, per_class=True, trend=40)
    names = [f"metric_{'m' * 60}_{i}" for i in range(metrics)]
    extra = {name: metric(name, 0.5, 0.4, "regressed", reason="r" * 500) for name in names}
    long_names = [f"class {'n' * 200} {i}" for i in range(1000)]
    return report.model_copy(
        update={
            "flips": make_flips("classification", n_wrong=5000, n_right=5000),
            "dataset": report.dataset.model_copy(update={"class_names": long_names}),
            "per_class": make_per_class(long_names),
            "metrics": report.metrics | extra,
        }
    )


@pytest.mark.parametrize("max_chars", [MAX_COMMENT_CHARS, 12_000, 6_000, 4_000, 3_000])
def test_truncation_fits_and_keeps_the_table(max_chars: int) -> None:
    report = _huge_report()
    full = render_markdown(report)
    text = render_markdown(report, max_chars=max_chars, full_report_hint="the `report` artifact")
    assert comment_length(text) <= max_chars
    assert _tables(text)[0][0] == _tables(full)[0][0]
    assert len(_tables(text)[0]) == len(report.metrics) + 1
    assert text.startswith(full.split("\n", 1)[0])
    truncated = comment_length(full) > max_chars
    assert ("the full report is in the `report` artifact._" in text) == truncated
    if truncated:
        assert "<summary>Trend" not in text  # dropped first
        assert text.count("<details>") == text.count("</details>")


def test_truncation_at_githubs_limit_names_the_limit() -> None:
    report = _huge_report(metrics=250)
    full = render_markdown(report)
    assert comment_length(full) > MAX_COMMENT_CHARS
    text = render_markdown(report, max_chars=MAX_COMMENT_CHARS)
    assert comment_length(text) <= MAX_COMMENT_CHARS
    assert len(_tables(text)[0]) == len(report.metrics) + 1
    assert text.endswith(
        "_Report truncated to fit GitHub's 65,536-character comment limit; "
        "the full report is in the JSON report artifact._\n"
    )


def test_truncation_drops_sections_in_order() -> None:
    report = _huge_report()
    sizes = {}
    for detail in render.TRUNCATION_STEPS:
        view = render.build_view(report, detail)
        sizes[detail] = len(render._render(view))
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True)
    without_trend = len(render._render(render.build_view(report, render.TRUNCATION_STEPS[1])))
    text = render_markdown(report, max_chars=without_trend + 200)
    assert "<summary>Trend" not in text and "<summary>Per-class" in text


def test_a_limit_below_the_table_still_holds() -> None:
    text = render_markdown(_huge_report(), max_chars=500)
    assert comment_length(text) <= 500
    assert text.startswith("### ❌ regress-action")
    assert text.endswith("the full report is in the JSON report artifact._\n")


def test_emoji_count_as_two_utf16_units() -> None:
    assert comment_length("⚪") == 1 and comment_length("🟢") == 2


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.75, "0.7500"),
        (0.041218, "0.04122"),
        (2.34567, "2.346"),
        (123456.7, "123,457"),
        (9.99996, "10.00"),
        (0.000012, "1.2e-05"),
        (4.85e9, "4.85e+09"),
        (-0.5, "−0.5000"),
        (0.0, "0"),
        (-0.0, "0"),
        (math.nan, "NaN"),
        (math.inf, "inf"),
        (-math.inf, "−inf"),
        (None, "—"),
    ],
)
def test_fmt_value(value: float | None, expected: str) -> None:
    assert fmt_value(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.000012, "+1.2e-05"),
        (-0.000012, "−1.2e-05"),
        (0.05000000000000004, "+0.0500"),
        (-0.08, "−0.0800"),
        (0.0012, "+0.00120"),
        (12.3456, "+12.3"),
        (-0.0, "0"),
        (math.nan, "NaN"),
        (math.inf, "+inf"),
    ],
)
def test_fmt_delta(value: float, expected: str) -> None:
    assert fmt_delta(value) == expected


def test_a_nonzero_delta_never_shows_as_zero() -> None:
    for exponent in range(-300, 10):
        for value in (10.0**exponent, -(10.0**exponent)):
            assert re.search(r"[1-9]", fmt_delta(value)), value


def test_fmt_percent_and_p() -> None:
    assert fmt_percent(0.0714285) == "+7.14%"
    assert fmt_percent(-0.1) == "−10.0%"
    assert fmt_percent(None) == "—"
    assert fmt_p(0.0312) == "0.031"
    assert fmt_p(0.00001) == "<0.0001"
    assert fmt_p(1.0) == "1.0"


# --------------------------------------------------------------------------- packaging


def test_templates_load_from_the_package_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert render_markdown(make_report()).startswith("### ❌")


def test_user_text_cannot_mention_people() -> None:
    # GitHub notifies @name mentions found in a comment; class or run names must not ping.
    assert "@octocat" not in render.md_escape("ping @octocat")
    report = make_report(candidate=make_report().candidate.model_copy(update={"name": "@team"}))
    assert "@team" not in render_markdown(report)


def test_user_text_cannot_become_a_link() -> None:
    # GFM links bare URLs and www. names; a flipped example's text or a class name must not.
    text = render.md_escape("see https://evil.example/x, WWW.evil.example and ftp://x")
    assert "https://" not in text and "ftp://" not in text and "www." not in text.lower()
    flip = FlipExample(example_id=3, key="line 4", text="visit http://spam.example", label=0,
                       baseline_prediction=0, candidate_prediction=1)  # fmt: skip
    report = make_report()
    report.flips = Flips(newly_wrong=[flip])
    text = render_markdown(report)
    assert "line 4" in text and "spam" in text and "http://spam" not in text


def test_trend_points_on_another_eval_set_are_flagged() -> None:
    report = make_report(trend=3)
    report.trend[1].fingerprint = report.dataset.fingerprint
    text = render_markdown(report)
    trend_rows = [line for line in text.splitlines() if line.startswith("| #1")]
    assert [("⚠️" in row) for row in trend_rows] == [True, False, False]
    assert "different eval set" in text


def test_only_metrics_bounded_to_the_unit_interval_are_charted() -> None:
    """A loss or an error below 1 is still not a score on a 0-1 axis; a task without bounded
    metrics (regression: mse, mae, r2) gets no chart at all."""
    report = make_report(stats=True)
    assert 0 <= (report.metrics["loss"].baseline or 0) <= 1
    chart = render.build_view(report).chart
    assert chart is not None and not any(label.startswith("loss") for label in chart.labels)
    assert chart.skipped == ["loss"]
    regression = report.model_copy(
        update={
            "task": TaskSpec(modality="tabular", task="regression"),
            "metrics": {
                name: report.metrics["loss"].model_copy(update={"name": name})
                for name in ("mse", "mae", "r2")
            },
        }
    )
    view = render.build_view(regression)
    assert view.chart is None and view.example_loss == "squared error"
    assert "Largest squared error increases" in render.render_markdown(
        regression.model_copy(update={"flips": make_report("lm", flips=True).flips})
    )
