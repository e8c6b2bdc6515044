"""The slices in the Markdown report: a compact "Worst slices" table right under the delta
table, every slice × metric in a collapsed <details>, slice names escaped, rendered as GitHub
renders it."""

from __future__ import annotations

import cmarkgfm
import numpy as np
from markdown_it import MarkdownIt

from regress_action.render import render_markdown
from tests.unit.test_slices import records
from tests.unit.test_slices import report as build

EVIL = "<b>x</b>|[y](http://e.vil)"


def _report(gate: tuple[str, ...] = ("all",)):  # type: ignore[no-untyped-def]
    recs = records(300, drop={"gamma": 0.15})
    recs.slices = np.where(recs.slices == "delta", EVIL, recs.slices)
    return build(recs, gate_slices=gate)


def test_the_worst_slices_table_is_right_under_the_delta_table() -> None:
    text = render_markdown(_report())
    delta_table = text.index("| Metric |")
    worst = text.index("**Worst slices**")
    assert delta_table < worst < text.index("- **Dataset**")
    rows = text[worst:].split("\n\n")[1].splitlines()
    assert rows[0].startswith("| Slice | n | Metric |")
    assert rows[2].startswith("| gamma | 300 | accuracy |") and "🔴 regressed" in rows[2]
    assert rows[2].endswith("| yes |")
    assert "Bonferroni over gated slices × gated metrics (m = 4)" in text
    assert "Gated slices failed: accuracy\\[gamma\\]." in text.splitlines()[2]
    html = cmarkgfm.github_flavored_markdown_to_html(text)
    assert html.count(">Slice</th>") == 2  # the worst slices and every slice


def test_slice_names_are_escaped_in_both_tables() -> None:
    text = render_markdown(_report())
    html = cmarkgfm.github_flavored_markdown_to_html(text)
    assert "<b>x</b>" not in html and 'href="http://e.vil"' not in html
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    rows: list[list[str]] = []
    for i, token in enumerate(tokens):
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline" and tokens[i - 1].type in ("td_open", "th_open"):
            rows[-1].append(token.content)
    named = [row for row in rows if row and "x" in row[0] and "b" in row[0]]
    assert len(named) == 2  # the worst slices' row and the first row of its details
    for row in named:  # the | in the name does not split the cell
        assert row[1] == "300" and row[2] == "accuracy"
    widths = {len(row) for row in rows if row and row[0] in ("Slice", "gamma")}
    assert widths == {9}


def test_not_gated_slices_say_why_and_every_slice_is_in_the_details() -> None:
    text = render_markdown(_report(gate=()))
    assert "slices are reported, not gated" in text
    assert "no (not selected by gate-slices)" in text
    details = text[text.index("<details>\n<summary>Every slice") :]
    assert "(4 slices × " in details
    for name in ("alpha", "beta", "gamma"):
        assert f"| {name} |" in details


def test_a_report_without_slices_has_no_slice_tables() -> None:
    recs = records(300)
    recs.slices = None
    text = render_markdown(build(recs))
    assert "Worst slices" not in text and "Every slice" not in text
