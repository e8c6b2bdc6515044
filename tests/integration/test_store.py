"""ExperimentDB against real SQLite and a real PostgreSQL server (the `db_url` fixture runs each
test on both): runs, comparisons, full precision, NaN/inf, atomicity, trend, schema upgrades,
URL errors and concurrent writers in separate processes."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy import func, inspect, select

from regress_action.errors import StoreError
from regress_action.records import Records, records_from_npz, records_to_npz
from regress_action.report import (
    DatasetInfo,
    EvaluationReport,
    MetricResult,
    MetricValue,
    Report,
    RunInfo,
)
from regress_action.spec import ModelSource, RunCreate, TaskSpec
from regress_action.store import ExperimentDB
from regress_action.store_schema import (
    PG_UPGRADE_LOCK_KEY,
    POWER_COLUMNS,
    SCHEMA_VERSION,
    STATS_COLUMNS,
    comparison_metrics,
    comparisons,
    resolve_url,
    schema_version,
)
from tests.pg_server import free_port
from tests.report_factory import make_report

LM_TASK = TaskSpec(modality="text", task="lm", vocab_size=256)


def make_run(name: str, **factory_kwargs: object) -> RunCreate:
    source = ModelSource(
        checkpoint=f"checkpoints/{name}.safetensors",
        format="safetensors",
        sha256="ab" * 32,
        factory="models.tiny:build",
        factory_kwargs=factory_kwargs,
    )
    return RunCreate(name=name, task=LM_TASK, source=source, git_sha="c0ffee")


def make_metric(name: str, baseline: float, candidate: float, **extra: object) -> MetricResult:
    fields: dict[str, object] = {
        "name": name,
        "higher_is_better": True,
        "kind": "binary",
        "baseline": baseline,
        "candidate": candidate,
        "delta": candidate - baseline,
        "rel_delta": (candidate - baseline) / baseline if baseline else None,
        "tolerance": 0.01,
        "status": "improved",
    }
    fields.update(extra)
    return MetricResult.model_validate(fields)


def report_of(metrics: list[MetricResult], **fields: Any) -> Report:
    """A report between runs 1 and 2 on lm_tiny with these metrics; `fields` override."""
    defaults: dict[str, Any] = {
        "report_name": "nightly",
        "status": "improved",
        "notes": "from the report",
        "dataset": DatasetInfo(name="lm_tiny", fingerprint="f1ng3r", n=128),
        "threshold": 0.02,
        "commit": "deadbeef",
        "metrics": {metric.name: metric for metric in metrics},
    }
    return make_report("lm", **(defaults | fields))


@pytest.fixture
def db(db_url: str) -> Iterator[ExperimentDB]:
    with ExperimentDB(db_url) as opened:
        opened.add_run(make_run("baseline"))
        opened.add_run(make_run("candidate"))
        yield opened


def count_rows(url: str, table: sqlalchemy.Table) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    finally:
        engine.dispose()


# --- runs ------------------------------------------------------------------------------------


def test_runs_round_trip(db_url: str) -> None:
    with ExperimentDB(db_url) as db:
        first = db.add_run(make_run("baseline", hidden=64, layers=[2, 2], act="gelu"))
        second = db.add_run(make_run("candidate", dropout=0.1))
        assert (first.id, second.id) == (1, 2)
        assert db.get_run(first.id) == first
        assert db.get_run(first.id).source.factory_kwargs == {
            "hidden": 64,
            "layers": [2, 2],
            "act": "gelu",
        }
        assert db.get_run(first.id).task == LM_TASK
        assert db.get_run(first.id).created_at.tzinfo is not None
        assert db.list_runs() == [first, second]


def test_unknown_run_is_a_store_error(db_url: str) -> None:
    with ExperimentDB(db_url) as db, pytest.raises(StoreError) as caught:
        db.get_run(7)
    assert caught.value.exit_code == 2
    assert "unknown run id 7" in str(caught.value)
    assert "regress-action runs list" in str(caught.value)


# --- comparisons ---------------------------------------------------------------------------


def test_a_report_without_metrics(db: ExperimentDB) -> None:
    comparison_id = db.create_comparison(report_of([], notes="accuracy: +0.04"))
    record = db.get_comparison(comparison_id)
    assert (record.baseline_run_id, record.candidate_run_id) == (1, 2)
    assert record.notes == "accuracy: +0.04"
    assert record.metrics == []
    assert record.report is not None and record.report["metrics"] == {}


def test_a_report_without_run_ids_is_refused(db: ExperimentDB, db_url: str) -> None:
    report = report_of([], candidate=RunInfo(name="not registered"))
    with pytest.raises(StoreError, match="no baseline or candidate run id"):
        db.create_comparison(report)
    assert count_rows(db_url, comparisons) == 0


def test_comparison_from_report_keeps_full_precision_and_stats(db: ExperimentDB) -> None:
    accuracy = make_metric(
        "accuracy",
        0.1,
        0.1 + 0.2,
        ci_low=1 / 3,
        ci_high=2 / 3,
        p_value=1e-300,
        p_adjusted=0.030000000000000006,
        test="mcnemar_exact",
        n=128,
        n_fixed=9,
        n_broken=2,
        significant=True,
    )
    loss = make_metric("loss", 2.5, 2.25, higher_is_better=False, kind="mean", gated=False)
    report = report_of([accuracy, loss], notes="accuracy: +0.2")
    comparison_id = db.create_comparison(report)

    record = db.get_comparison(comparison_id)
    assert record.metrics == [accuracy, loss]  # the report's order, every field
    assert record.metrics[0].candidate == 0.30000000000000004
    assert record.metrics[0].p_value == 1e-300
    assert (record.report_name, record.dataset, record.fingerprint) == (
        "nightly",
        "lm_tiny",
        "f1ng3r",
    )
    assert (record.n_examples, record.threshold, record.commit) == (128, 0.02, "deadbeef")
    assert record.status == "improved"
    assert record.notes == "accuracy: +0.2"
    assert record.report is not None
    assert record.report["comparison_id"] == comparison_id
    stored = Report.model_validate(record.report)
    assert stored.metrics["accuracy"].candidate == 0.30000000000000004


def test_non_finite_values_round_trip(db: ExperimentDB) -> None:
    broken = make_metric(
        "loss",
        math.nan,
        math.inf,
        delta=-math.inf,
        rel_delta=None,
        status="failed",
        ci_low=-math.inf,
        p_value=math.nan,
    )
    fine = make_metric("accuracy", 0.5, 0.75)
    report = report_of([broken, fine], status="regressed", notes="loss: NaN")
    comparison_id = db.create_comparison(report)

    stored = db.get_comparison(comparison_id).metrics[0]
    assert math.isnan(stored.baseline or 0.0)
    assert stored.candidate == math.inf
    assert stored.delta == -math.inf
    assert stored.rel_delta is None  # a real NULL stays None, not NaN
    assert stored.ci_low == -math.inf
    assert math.isnan(stored.p_value or 0.0)
    assert stored.status == "failed"
    assert db.get_comparison(comparison_id).metrics[1] == fine
    stored_report = db.get_comparison(comparison_id).report
    assert stored_report is not None
    assert stored_report["metrics"]["loss"]["baseline"] == "NaN"
    assert db.trend("nightly", "lm_tiny")[0].metrics["loss"] == math.inf


def test_a_failing_metric_row_rolls_back_the_whole_comparison(
    db: ExperimentDB, db_url: str
) -> None:
    metric = make_metric("accuracy", 0.5, 0.6)
    # Two entries for one metric name: the comparison row is inserted first, then the second
    # metric row breaks the (comparison_id, name) key.
    twice = report_of([]).model_copy(update={"metrics": {"a": metric, "b": metric}})
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        db.create_comparison(twice)
    assert count_rows(db_url, comparisons) == 0
    assert count_rows(db_url, comparison_metrics) == 0
    assert db.list_comparisons() == []
    db.create_comparison(report_of([metric]))  # the DB is still usable
    assert count_rows(db_url, comparison_metrics) == 1


def test_unknown_candidate_writes_nothing(db: ExperimentDB, db_url: str) -> None:
    report = report_of([make_metric("accuracy", 0.5, 0.6)], candidate=RunInfo(run_id=99))
    with pytest.raises(StoreError) as caught:
        db.create_comparison(report)
    assert caught.value.exit_code == 2
    assert "unknown run id 99" in str(caught.value)
    assert count_rows(db_url, comparisons) == 0
    assert count_rows(db_url, comparison_metrics) == 0


def test_unknown_comparison_is_a_store_error(db: ExperimentDB) -> None:
    with pytest.raises(StoreError, match="unknown comparison id 5"):
        db.get_comparison(5)


def test_list_comparisons_filters_newest_first(db: ExperimentDB) -> None:
    ids = {
        (name, dataset): db.create_comparison(
            report_of([], report_name=name, dataset=DatasetInfo(name=dataset, fingerprint="", n=8))
        )
        for name in ("a", "b")
        for dataset in ("lm_tiny", "vision_tiny")
    }
    assert [c.id for c in db.list_comparisons()] == sorted(ids.values(), reverse=True)
    assert [c.id for c in db.list_comparisons(limit=2)] == sorted(ids.values())[:-3:-1]
    by_name = db.list_comparisons(report_name="a")
    assert [c.id for c in by_name] == [ids["a", "vision_tiny"], ids["a", "lm_tiny"]]
    both = db.list_comparisons(report_name="b", dataset="lm_tiny")
    assert [c.id for c in both] == [ids["b", "lm_tiny"]]
    assert db.list_comparisons(dataset="nope") == []


def test_trend_is_oldest_first_and_limited(db: ExperimentDB) -> None:
    ids = []
    for step in range(5):
        metric = make_metric("accuracy", 0.5, 0.5 + step / 100)
        ids.append(db.create_comparison(report_of([metric])))
        other = DatasetInfo(name="other", fingerprint="", n=8)
        db.create_comparison(report_of([metric], dataset=other))  # never in the trend

    points = db.trend("nightly", "lm_tiny", limit=3)
    assert [p.comparison_id for p in points] == ids[-3:]
    assert [p.metrics["accuracy"] for p in points] == [0.5 + s / 100 for s in (2, 3, 4)]
    assert points[0].commit == "deadbeef"
    assert points[0].status == "improved"
    assert db.trend("nightly", "missing") == []


# --- schema versions ---------------------------------------------------------------------------

# Version 1 as the first release wrote it: no statistics columns, no comparisons index.
V1_SCHEMA = """
CREATE TABLE runs (id {pk}, name TEXT NOT NULL, created_at {ts} NOT NULL, task TEXT NOT NULL,
  checkpoint TEXT NOT NULL, format VARCHAR(32) NOT NULL, sha256 VARCHAR(64) NOT NULL,
  factory TEXT, factory_kwargs TEXT NOT NULL, git_sha VARCHAR(64));
CREATE TABLE comparisons (id {pk}, created_at {ts} NOT NULL,
  baseline_run_id INTEGER NOT NULL REFERENCES runs (id),
  candidate_run_id INTEGER NOT NULL REFERENCES runs (id),
  report_name TEXT NOT NULL, dataset TEXT NOT NULL, fingerprint TEXT NOT NULL,
  n_examples INTEGER NOT NULL, threshold DOUBLE PRECISION NOT NULL, status VARCHAR(16) NOT NULL,
  notes TEXT NOT NULL, "commit" VARCHAR(64), report_json TEXT);
CREATE TABLE comparison_metrics (comparison_id INTEGER NOT NULL REFERENCES comparisons (id),
  name TEXT NOT NULL, position INTEGER NOT NULL, higher_is_better BOOLEAN NOT NULL,
  kind VARCHAR(16) NOT NULL, baseline DOUBLE PRECISION, candidate DOUBLE PRECISION,
  delta DOUBLE PRECISION, rel_delta DOUBLE PRECISION, tolerance DOUBLE PRECISION,
  status VARCHAR(16) NOT NULL, gated BOOLEAN NOT NULL, reason TEXT NOT NULL, nonfinite TEXT,
  PRIMARY KEY (comparison_id, name));
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
INSERT INTO runs (name, created_at, task, checkpoint, format, sha256, factory_kwargs) VALUES
  ('old-a', '{when}', '{task}', 'a.pt2', 'export', 'aa', '{{}}'),
  ('old-b', '{when}', '{task}', 'b.pt2', 'export', 'bb', '{{}}');
INSERT INTO comparisons (created_at, baseline_run_id, candidate_run_id, report_name, dataset,
  fingerprint, n_examples, threshold, status, notes, "commit") VALUES
  ('{when}', 1, 2, 'default', 'lm_tiny', 'fp', 64, 0.01, 'regressed', 'loss: +0.5', 'abc123');
INSERT INTO comparison_metrics (comparison_id, name, position, higher_is_better, kind, baseline,
  candidate, delta, rel_delta, tolerance, status, gated, reason) VALUES
  (1, 'loss', 0, FALSE, 'mean', 2.0, 2.5, 0.5, 0.25, 0.01, 'regressed', TRUE, 'worse');
"""


def write_sql(url: str, script: str) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in script.split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def build_v1_database(url: str) -> None:
    sqlite = url.startswith("sqlite")
    write_sql(
        url,
        V1_SCHEMA.format(
            pk="INTEGER PRIMARY KEY AUTOINCREMENT" if sqlite else "SERIAL PRIMARY KEY",
            ts="DATETIME" if sqlite else "TIMESTAMP WITH TIME ZONE",
            when="2024-05-01 12:00:00" if sqlite else "2024-05-01 12:00:00+00",
            task=LM_TASK.model_dump_json(),
        ),
    )


def test_version_1_database_is_upgraded_in_place(db_url: str) -> None:
    build_v1_database(db_url)
    with ExperimentDB(db_url) as db:
        old = db.get_comparison(1)
        assert (old.notes, old.status, old.commit) == ("loss: +0.5", "regressed", "abc123")
        assert old.created_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
        assert old.metrics[0].candidate == 2.5
        assert old.metrics[0].higher_is_better is False
        assert old.metrics[0].p_value is None
        assert old.metrics[0].mde is None and old.metrics[0].underpowered is False
        assert db.get_run(2).name == "old-b"

        new_metric = make_metric(
            "loss", 2.0, 1.5, ci_low=-0.6, ci_high=-0.4, significant=True, ci_level=0.975,
            se=0.05, mde=0.14, underpowered=True, clusters=12,
        )  # fmt: skip
        new_id = db.create_comparison(report_of([new_metric], report_name="default"))
        assert db.get_comparison(new_id).metrics == [new_metric]
        assert [p.comparison_id for p in db.trend("default", "lm_tiny")] == [1, new_id]

    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(select(schema_version.c.version)).scalars().all()
            assert versions == [SCHEMA_VERSION]
            columns = {c["name"] for c in inspect(conn).get_columns("comparison_metrics")}
            indexes = {i["name"] for i in inspect(conn).get_indexes("comparisons")}
    finally:
        engine.dispose()
    assert set(STATS_COLUMNS) | set(POWER_COLUMNS) <= columns
    assert "ix_comparisons_report_dataset_id" in indexes
    with ExperimentDB(db_url) as db:  # version 4: the evaluations table
        evaluation_id = db.create_evaluation(evaluation_of(2), records_to_npz(_records()))
        assert db.get_evaluation(evaluation_id).run.run_id == 2


def evaluation_of(run_id: int, **fields: Any) -> EvaluationReport:
    loss = MetricValue(name="loss", value=2.5, higher_is_better=False, kind="ratio")
    values: dict[str, Any] = {
        "task": LM_TASK,
        "dataset": DatasetInfo(name="lm_tiny", fingerprint="fp", n=3),
        "run": RunInfo(run_id=run_id, name="b"),
        "metrics": {"loss": loss},
        "cache_key": "k" * 64,
        "device": "cpu",
    }
    return EvaluationReport(**(values | fields))


def _records() -> Records:
    columns = {"nll_sum": np.array([1.5, np.nan, 2.0], np.float32), "tokens": np.arange(3)}
    return Records(np.array([0, 1, 2], np.int64), columns)  # type: ignore[dict-item]


def test_an_evaluation_keeps_its_report_and_records(db_url: str) -> None:
    with ExperimentDB(db_url) as db:
        run = db.add_run(make_run("m"))
        first = db.create_evaluation(evaluation_of(run.id), records_to_npz(_records()))
        second = db.create_evaluation(evaluation_of(run.id, cache_key="j" * 64), None)
        stored = db.get_evaluation(first)
        assert stored.evaluation_id == first and stored.records_stored
        assert stored.metrics["loss"].value == 2.5
        records = db.evaluation_records(first)
        assert records is not None
        back = records_from_npz(records)
        assert back.example_ids.tolist() == [0, 1, 2]
        assert back.columns["nll_sum"].dtype == np.float32
        assert back.columns["nll_sum"].tobytes() == _records().columns["nll_sum"].tobytes()
        assert db.evaluation_records(second) is None
        assert not db.get_evaluation(second).records_stored
        assert [e.evaluation_id for e in db.list_evaluations()] == [second, first]
        assert [e.evaluation_id for e in db.list_evaluations(cache_key="k" * 64)] == [first]
        assert db.list_evaluations(run_id=run.id + 1) == []
        with pytest.raises(StoreError, match="unknown evaluation id 99"):
            db.get_evaluation(99)
        with pytest.raises(StoreError, match="unknown run id"):
            db.create_evaluation(evaluation_of(run.id + 5), None)
        assert len(db.list_evaluations()) == 2  # nothing written by the refused one


def test_newer_schema_is_refused(db_url: str) -> None:
    ExperimentDB(db_url).close()
    write_sql(db_url, "UPDATE schema_version SET version = 9")
    with pytest.raises(StoreError) as caught:
        ExperimentDB(db_url)
    message = str(caught.value)
    assert f"schema version 9, newer than this regress-action ({SCHEMA_VERSION})" in message
    assert "upgrade regress-action" in message


@pytest.mark.postgres
def test_schema_creation_waits_for_the_advisory_lock(fresh_postgres_url: str) -> None:
    opened: list[int] = []

    def open_db() -> None:
        with ExperimentDB(fresh_postgres_url) as db:
            opened.append(len(db.list_runs()))

    engine = sqlalchemy.create_engine(fresh_postgres_url)
    try:
        with engine.connect() as holder:
            lock = sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)")
            holder.execute(lock, {"key": PG_UPGRADE_LOCK_KEY})  # as if a parallel run upgraded
            opener = threading.Thread(target=open_db)
            opener.start()
            opener.join(timeout=1.0)
            # Without the lock, creating the schema takes milliseconds and the thread is done.
            assert opener.is_alive()
            assert opened == []
            holder.rollback()
        opener.join(timeout=30)
    finally:
        engine.dispose()
    assert opened == [0]


# --- URLs and connection errors -------------------------------------------------------------


@pytest.mark.postgres
def test_unreachable_postgres_fails_fast_with_password_masked() -> None:
    url = f"postgresql://ci:s3cr3t-pw@127.0.0.1:{free_port()}/experiments"
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        ExperimentDB(url)
    # A hang guard, not a benchmark: a refused port must not wait for retries or timeouts.
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "s3cr3t" not in message
    assert "postgresql+psycopg://ci:***@127.0.0.1" in message
    assert "--db / REGRESS_DB" in message
    assert "\n" not in message


@pytest.mark.postgres
def test_postgres_scheme_is_normalised_and_password_masked(fresh_postgres_url: str) -> None:
    # trust authentication accepts any password, so this one is only there to be masked.
    url = fresh_postgres_url.replace("postgresql+psycopg://postgres@", "postgres://postgres:pw@")
    with ExperimentDB(url) as db:
        assert db.url_display.startswith("postgresql+psycopg://postgres:***@127.0.0.1:")
        assert db.add_run(make_run("a")).id == 1


def test_unknown_dialect_and_unwritable_path_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"invalid database URL nosuchdb://u:\*\*\*@h/db"):
        ExperimentDB("nosuchdb://u:pw@h/db")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=r"cannot use database .*check --db / REGRESS_DB"):
        ExperimentDB(blocker / "regress.db")


def test_url_defaults_and_shorthands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGRESS_DB", raising=False)
    assert resolve_url(None) == "sqlite:///regress.db"
    assert resolve_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_url(Path("/x/r.db")) == "sqlite:////x/r.db"
    monkeypatch.chdir(tmp_path)
    with ExperimentDB() as db:
        db.add_run(make_run("a"))
    assert (tmp_path / "regress.db").is_file()
    monkeypatch.setenv("REGRESS_DB", str(tmp_path / "nested" / "env.db"))
    with ExperimentDB() as db:
        assert db.url_display == f"sqlite:///{tmp_path / 'nested' / 'env.db'}"
        assert db.list_runs() == []


# --- several processes ------------------------------------------------------------------------

WRITERS = 4
COMPARISONS_PER_WRITER = 10


def _open_and_write(url: str, barrier: Barrier, writer: int) -> None:
    barrier.wait(timeout=60)  # all open a brand-new database at once: the first-run race
    with ExperimentDB(url) as db:
        baseline = db.add_run(make_run(f"baseline-{writer}"))
        candidate = db.add_run(make_run(f"candidate-{writer}"))
        for step in range(COMPARISONS_PER_WRITER):
            metric = make_metric("accuracy", 0.5, 0.5 + step / 1000)
            report = report_of(
                [metric],
                notes=f"writer {writer} step {step}",
                baseline=RunInfo(run_id=baseline.id),
                candidate=RunInfo(run_id=candidate.id),
            )
            db.create_comparison(report)


def test_parallel_first_runs_and_writers_lose_nothing(db_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    processes = [
        context.Process(target=_open_and_write, args=(db_url, barrier, writer))
        for writer in range(WRITERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * WRITERS

    with ExperimentDB(db_url) as db:
        run_names = {run.id: run.name for run in db.list_runs()}
        recorded = db.list_comparisons(limit=1000)
    assert len(run_names) == 2 * WRITERS
    assert len(recorded) == WRITERS * COMPARISONS_PER_WRITER
    for record in recorded:
        writer = record.notes.split()[1]
        assert run_names[record.baseline_run_id] == f"baseline-{writer}"
        assert run_names[record.candidate_run_id] == f"candidate-{writer}"
        assert len(record.metrics) == 1
    expected = {
        f"writer {w} step {s}" for w in range(WRITERS) for s in range(COMPARISONS_PER_WRITER)
    }
    assert {record.notes for record in recorded} == expected
    # Exactly one version row: the losers of the race saw the schema and did not recreate it.
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(select(schema_version.c.version)).scalars().all()
            assert versions == [SCHEMA_VERSION]
    finally:
        engine.dispose()


def test_masking_a_short_password_does_not_mangle_the_message() -> None:
    from regress_action.store_schema import first_line

    url = "postgresql+psycopg://user:p@127.0.0.1:1/db"
    message = 'connection to server at "127.0.0.1", port 1 failed: password=p rejected'
    masked = first_line(RuntimeError(message), url)
    assert masked == message.replace("password=p", "password=***")


def test_a_password_in_the_query_string_is_masked() -> None:
    from regress_action.store_schema import mask_password

    url = "postgresql+psycopg://u@127.0.0.1:1/db?sslmode=disable&password=hunter2"
    assert "hunter2" not in mask_password(url) and "sslmode=disable" in mask_password(url)
    with pytest.raises(StoreError) as caught:
        ExperimentDB(url)
    assert "hunter2" not in str(caught.value)
