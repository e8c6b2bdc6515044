"""The published JSON schema: current with the Report model, and the artifact validates against
it, non-finite values included."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema

from regress_action import schema
from regress_action.report import Report
from tests.report_factory import make_report

COMMITTED = Path(__file__).resolve().parents[2] / "regress_action/schemas/report.schema.json"
SCHEMA = json.loads(COMMITTED.read_text(encoding="utf-8"))


def test_the_committed_schema_is_what_the_model_generates(tmp_path: Path) -> None:
    assert schema.main(["--output", str(tmp_path / "schema.json")]) == 0
    assert (tmp_path / "schema.json").read_text(encoding="utf-8") == COMMITTED.read_text(
        encoding="utf-8"
    ), "the Report model changed: regenerate the schema with `make schema` and commit it"


def test_reports_validate_against_the_published_schema() -> None:
    for report in (make_report(stats=True, flips=True, per_class=True, trend=3), make_report("lm")):
        jsonschema.validate(json.loads(report.to_json()), SCHEMA)


def test_non_finite_values_round_trip_and_validate() -> None:
    report = make_report(stats=True)
    metric = report.metrics["accuracy"]
    metric.candidate, metric.ci_low, metric.ci_high = math.nan, -math.inf, math.inf
    document = json.loads(report.to_json())
    assert document["metrics"]["accuracy"]["candidate"] == "NaN"
    jsonschema.validate(document, SCHEMA)
    back = Report.model_validate_json(report.to_json()).metrics["accuracy"]
    assert math.isnan(back.candidate or 0.0) and back.ci_low == -math.inf
    # The Python API keeps them as floats.
    assert math.isnan(report.to_dict()["metrics"]["accuracy"]["candidate"])
