"""A comparison's slices in the ExperimentDB: one row per slice × metric in
`comparison_slice_metrics` (SQLite and PostgreSQL), read back as the report had them; a
version-5 database is upgraded in place to hold them, its comparisons kept."""

from __future__ import annotations

import math

import sqlalchemy
from sqlalchemy import func, select

from regress_action.report import SliceResult
from regress_action.store import ExperimentDB
from regress_action.store_schema import SCHEMA_VERSION, comparison_slice_metrics, schema_version
from tests.integration.test_store import make_metric, make_run, report_of


def _slices() -> list[SliceResult]:
    def one(name: str, n: int, drop: float, gated: bool) -> SliceResult:
        accuracy = make_metric("accuracy", 0.8, 0.8 - drop, status="regressed", gated=gated)
        loss = make_metric("loss", 0.5, math.inf, status="failed", gated=gated)
        return SliceResult(
            name=name,
            n=n,
            status="regressed",
            gated=gated,
            why_not=None if gated else "not selected by gate-slices",
            family_size=4 if gated else 1,
            metrics={"accuracy": accuracy, "loss": loss},
        )

    return [one("night | <rain>", 300, 0.1, True), one("day", 700, 0.0, False)]


def _with_slices():  # type: ignore[no-untyped-def]
    return report_of([make_metric("accuracy", 0.8, 0.79)], slices=_slices())


def test_each_slice_metric_is_a_row_read_back_as_stored(db_url: str) -> None:
    with ExperimentDB(db_url) as db:
        db.add_run(make_run("baseline"))
        db.add_run(make_run("candidate"))
        with_slices = db.create_comparison(_with_slices())
        without = db.create_comparison(report_of([make_metric("accuracy", 0.8, 0.79)]))
        assert db.comparison_slices(with_slices) == _slices()
        assert db.comparison_slices(without) == []
        shown = db.get_comparison(with_slices)  # `comparisons show` reads this
        assert [m.name for m in shown.metrics] == ["accuracy"]
        assert shown.report is not None and len(shown.report["slices"]) == 2
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            count = select(func.count()).select_from(comparison_slice_metrics)
            assert conn.execute(count).scalar_one() == 2 * 2
    finally:
        engine.dispose()


def test_a_version_5_database_is_upgraded_in_place(db_url: str) -> None:
    with ExperimentDB(db_url) as db:
        db.add_run(make_run("baseline"))
        db.add_run(make_run("candidate"))
        old = db.create_comparison(report_of([make_metric("accuracy", 0.8, 0.79)]))
    engine = sqlalchemy.create_engine(db_url)
    try:  # back to version 5: no slice table
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE comparison_slice_metrics")
            conn.execute(schema_version.update().values(version=5))
    finally:
        engine.dispose()
    with ExperimentDB(db_url) as db:
        assert db.get_comparison(old).metrics[0].candidate == 0.79
        assert db.comparison_slices(old) == []
        new = db.create_comparison(_with_slices())
        assert db.comparison_slices(new) == _slices()
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(select(schema_version.c.version)).scalars().all()
    finally:
        engine.dispose()
    assert versions == [SCHEMA_VERSION] == [6]
