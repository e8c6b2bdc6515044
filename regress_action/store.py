"""The ExperimentDB: registered runs, recorded comparisons and evaluations, on SQLAlchemy Core
(no ORM).

Owns the database URL rules, the connection set-up per backend and every read and write of
runs, comparisons and their per-metric rows. The tables and upgrades live in `store_schema`.
Imports SQLAlchemy, pydantic, `errors`, `spec`, `report`; never torch, PyGithub or jinja2.

- URLs and connection set-up per backend (WAL, busy timeout, BEGIN IMMEDIATE, advisory lock):
  see `store_schema`. `ExperimentDB(None)` reads REGRESS_DB, else `sqlite:///regress.db`.
- One transaction per comparison (the comparison row and all its metric rows, or nothing).
- `add_run` is insert-or-get on the run's identity (unique since schema version 5), so
  concurrent registrations of one checkpoint give one run. Runs registered inside
  `provisional_runs()` (the Action's step) are removed again if the step fails, unless a
  comparison, an evaluation or another registration has used them meanwhile.
- Messages name the URL's source (`--db / REGRESS_DB`, or the Action's `input db-url`) and
  never its password (`store_schema.scrub`).
- Floats keep full precision (8-byte REAL / float8). Non-finite values (NaN, +-inf): SQLite turns
  NaN into NULL, so on both backends a non-finite float column is stored as NULL and its exact
  value ("NaN", "Infinity", "-Infinity") in the row's `nonfinite` JSON column; reads restore it.
  The numeric column then never poisons SQL aggregates, and the stored report JSON keeps the
  values as the strings "NaN" / "Infinity" too.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy.exc
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Connection, Insert, RowMapping, delete, make_url, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from .errors import StoreError
from .report import EvaluationReport, MetricResult, Report, SliceResult, TrendPoint
from .spec import MetricBound, ModelSource, RunCreate, RunRecord, TaskSpec
from .store_schema import (
    DEFAULT_SOURCE,
    FLOAT_METRIC_COLUMNS,
    SCHEMA_VERSION,
    WRITE_OPTION,
    check_schema,
    check_sqlite_file,
    comparison_metrics,
    comparison_slice_metrics,
    comparisons,
    ensure_schema,
    evaluations,
    first_line,
    make_engine,
    mask_password,
    older_readonly,
    resolve_url,
    run_identity,
    runs,
    scrub,
    sqlite_file,
    sqlite_write_problem,
)

# Insert-or-get retries when the run it found is removed (a failed step's) before it is read.
_ADD_RUN_ATTEMPTS = 5
# Ids are 64-bit signed integers on both backends: a larger one names no row (and would not
# fit in the query's parameter).
MAX_ID = 2**63 - 1

_NONFINITE_TEXT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


class ComparisonRecord(BaseModel):
    """A recorded comparison as read back: the row, its metric rows and the stored report."""

    model_config = ConfigDict(frozen=True)

    id: int
    created_at: datetime
    baseline_run_id: int
    candidate_run_id: int
    report_name: str
    dataset: str
    fingerprint: str
    n_examples: int
    threshold: float
    status: str
    notes: str
    commit: str | None
    report: dict[str, Any] | None
    metrics: list[MetricResult]


def _utc(value: datetime) -> datetime:
    # SQLite's DATETIME drops the zone (we always write UTC); PostgreSQL returns session time.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# MetricResult fields that have no column: a metric's bound is in the stored report (its row's
# status, `failed_bound`, and reason say when it was violated), read back by `_with_bounds`.
_NOT_COLUMNS = {"bound"}


def _encode_metric(metric: MetricResult, comparison_id: int, position: int) -> dict[str, Any]:
    row = metric.model_dump(exclude=_NOT_COLUMNS)
    nonfinite: dict[str, str] = {}
    for column in FLOAT_METRIC_COLUMNS:
        value = row[column]
        if value is not None and not math.isfinite(value):
            nonfinite[column] = _NONFINITE_TEXT[repr(float(value))]
            row[column] = None
    row.update(
        comparison_id=comparison_id,
        position=position,
        nonfinite=json.dumps(nonfinite) if nonfinite else None,
    )
    return row


def _encode_slice_metric(
    item: SliceResult, slice_position: int, metric: MetricResult, comparison_id: int, position: int
) -> dict[str, Any]:
    row = _encode_metric(metric, comparison_id, position)
    row.update(
        slice=item.name,
        slice_position=slice_position,
        slice_n=item.n,
        slice_status=item.status,
        slice_gated=item.gated,
        slice_why_not=item.why_not,
        slice_family_size=item.family_size,
    )
    return row


def _decode_metric(row: RowMapping) -> MetricResult:
    values = {key: row[key] for key in MetricResult.model_fields if key not in _NOT_COLUMNS}
    values["underpowered"] = bool(values["underpowered"])  # NULL before schema version 3
    for column, value in json.loads(row["nonfinite"] or "{}").items():
        values[column] = float(value)  # float() reads "NaN", "Infinity", "-Infinity"
    return MetricResult.model_validate(values)


def _require_sqlite_file(url: str, display: str, source: str) -> None:
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        return  # `make_engine` says what is wrong with it, password masked
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or not Path(database).is_file():
        raise StoreError(
            f"no ExperimentDB at {display}; check {source}, or register runs first "
            "with `regress-action runs add`"
        )


@contextmanager
def open_db(
    db: ExperimentDB | str | Path | None, *, create: bool = True, readonly: bool = False
) -> Iterator[ExperimentDB]:
    """The one way to open the ExperimentDB: a URL, a path or None (REGRESS_DB, else
    ./regress.db) is opened here and closed on exit; an open ExperimentDB is used as it is and
    left open for its owner. `create=False`, `readonly=True`: see `ExperimentDB`."""
    if isinstance(db, ExperimentDB):
        yield db
        return
    with ExperimentDB(db, create=create, readonly=readonly) as opened:
        yield opened


class ExperimentDB:
    """Runs and comparisons in SQLite or PostgreSQL; creates / upgrades the schema on open."""

    def __init__(
        self,
        url: str | Path | None = None,
        *,
        create: bool = True,
        readonly: bool = False,
        source: str = DEFAULT_SOURCE,
    ) -> None:
        """Open (creating or upgrading) the database; with `create=False` a SQLite file that
        does not exist, or an empty one, is an error instead of a new empty database (for the
        commands that need recorded runs, where a mistyped --db should not pass as "no runs").
        `readonly=True` (commands that only read, implies `create=False`) opens a SQLite file
        for reading only, so a read-only file or folder works; its schema is then never
        created, and upgraded only where the file can be written. Otherwise a SQLite file this
        process cannot write is refused before any work. `source` names where the URL came
        from in messages (the Action: `input db-url`)."""
        self._url = resolve_url(url)
        self._display = mask_password(self._url)
        self._source = source
        self._provisional: str | None = None
        if not create or readonly:
            _require_sqlite_file(self._url, self._display, source)
        file = sqlite_file(self._url)
        if file is not None:
            check_sqlite_file(file, self._display, source, create=create and not readonly)
        readonly = readonly and file is not None
        self._engine = make_engine(self._url, self._display, source, readonly=readonly)
        try:
            with self._db_errors():
                if readonly:
                    assert file is not None
                    self._open_readonly(file)
                else:
                    self._check_writable(file)
                    ensure_schema(self._engine, self._display)
        except sqlalchemy.exc.IntegrityError:
            self._engine.dispose()
            raise
        except sqlalchemy.exc.SQLAlchemyError as exc:
            # Connecting may fail in other ways (e.g. a driver option SQLAlchemy refuses), and
            # their text may quote the URL: one line, password masked, never a traceback.
            self._engine.dispose()
            line = scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0], self._url)
            raise StoreError(
                f"cannot use database {self._display}: {line}; check {source}"
            ) from None
        except BaseException:
            self._engine.dispose()
            raise

    def _open_readonly(self, file: Path) -> None:
        version = check_schema(self._engine, self._display, self._source)
        if version == SCHEMA_VERSION:
            return
        problem = sqlite_write_problem(file)
        if problem is not None:
            raise older_readonly(self._display, version, problem)
        # Writable after all: upgraded in place, as any command would.
        self._engine.dispose()
        self._engine = make_engine(self._url, self._display, self._source)
        ensure_schema(self._engine, self._display)

    def _check_writable(self, file: Path | None) -> None:
        problem = None if file is None else sqlite_write_problem(file)
        if problem is not None:
            raise StoreError(
                f"cannot write to database {self._display}: {problem}; this command records "
                f"to it: make it writable, or copy it somewhere writable and point "
                f"{self._source} at the copy (`runs list` and `comparisons list / show` read "
                "a read-only database as it is)"
            )

    @property
    def url_display(self) -> str:
        return self._display

    def local_files(self) -> dict[str, Path]:
        """The files a SQLite database lives in (none for a server), which outputs must not
        overwrite."""
        parsed = make_url(self._url)
        database = parsed.database or ""
        if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
            return {}
        return {
            f"ExperimentDB file{suffix}": Path(database + suffix)
            for suffix in ("", "-wal", "-shm", "-journal")
        }

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- connections -------------------------------------------------------------------

    @contextmanager
    def _db_errors(self) -> Iterator[None]:
        """Turn an unreachable / locked / unwritable database into a one-line StoreError."""
        try:
            yield
        except sqlalchemy.exc.IntegrityError:
            raise  # a constraint broken by our own writes is a bug, not the user's database
        except (sqlalchemy.exc.DatabaseError, sqlalchemy.exc.InterfaceError) as exc:
            # DatabaseError covers "file is not a database": a --db pointing at another file.
            raise StoreError(
                f"cannot use database {self._display}: {first_line(exc, self._url)}; "
                f"check {self._source} (the path must be writable, the server reachable)"
            ) from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._db_errors(), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        with self._db_errors(), self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    # --- runs ----------------------------------------------------------------------------

    def add_run(self, run: RunCreate) -> RunRecord:
        """Register `run`, or return the run already registered with its identity (same name,
        task, format, bytes, factory and kwargs, real path): insert-or-get on a unique key, so
        concurrent registrations of one checkpoint all get the one run."""
        created_at = datetime.now(UTC)
        try:
            factory_kwargs = json.dumps(run.source.factory_kwargs, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"factory_kwargs of run {run.name!r} are not JSON ({exc}); "
                "pass only strings, numbers, booleans, lists and objects"
            ) from None
        task = run.task.model_dump_json()
        identity = run_identity(
            name=run.name,
            task_json=task,
            format=run.source.format,
            sha256=run.source.sha256,
            factory=run.source.factory,
            factory_kwargs_json=factory_kwargs,
            checkpoint=run.source.checkpoint,
        )
        values = {
            "name": run.name,
            "created_at": created_at,
            "task": task,
            "checkpoint": run.source.checkpoint,
            "format": run.source.format,
            "sha256": run.source.sha256,
            "factory": run.source.factory,
            "factory_kwargs": factory_kwargs,
            "git_sha": run.git_sha,
            "identity": identity,
            "provisional": self._provisional,
        }
        for _ in range(_ADD_RUN_ATTEMPTS):
            with self._write() as conn:
                statement = _insert_unless_present(conn, values).returning(runs.c.id)
                run_id = conn.execute(statement).scalar_one_or_none()
                if run_id is not None:
                    return RunRecord(id=run_id, created_at=created_at, **run.model_dump())
                # Registered already: lock the row (a failing step may be removing it) and
                # make it permanent, since this registration now relies on it too.
                query = select(runs).where(runs.c.identity == identity).with_for_update()
                row = conn.execute(query).mappings().first()
                if row is None:
                    continue  # removed by the step that created it: insert it again
                if row["provisional"] not in (None, self._provisional):
                    conn.execute(
                        runs.update().where(runs.c.id == row["id"]).values(provisional=None)
                    )
                return self._run_record(row)
        raise StoreError(
            f"run {run.name!r} was removed {_ADD_RUN_ATTEMPTS} times while being registered "
            f"in {self._display}; try again"
        )

    def claim_run(self, run_id: int) -> RunRecord | None:
        """The run `run_id`, made permanent (another step that created it provisionally no
        longer removes it); None if it is gone."""
        with self._write() as conn:
            query = select(runs).where(runs.c.id == run_id).with_for_update()
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            if row["provisional"] not in (None, self._provisional):
                conn.execute(runs.update().where(runs.c.id == run_id).values(provisional=None))
        return self._run_record(row)

    @contextmanager
    def provisional_runs(self) -> Iterator[None]:
        """Runs this ExperimentDB creates inside the block are removed again if the block
        raises, so a failed step leaves the database as it found it.

        Only runs created here are removed, and only while nothing else relies on them: a
        registration of the same checkpoint by another process (which makes the run
        permanent, under the row's lock), a comparison or an evaluation keeps a run.
        """
        token = secrets.token_hex(16)
        self._provisional = token
        try:
            yield
        except BaseException:
            self._provisional = None
            self._discard_provisional(token)
            raise
        self._provisional = None
        self._confirm_provisional(token)

    def _confirm_provisional(self, token: str) -> None:
        with self._write() as conn:
            conn.execute(runs.update().where(runs.c.provisional == token).values(provisional=None))

    def _discard_provisional(self, token: str) -> None:
        used = or_(
            runs.c.id.in_(select(comparisons.c.baseline_run_id)),
            runs.c.id.in_(select(comparisons.c.candidate_run_id)),
            runs.c.id.in_(select(evaluations.c.run_id)),
        )
        try:
            with self._write() as conn:
                conn.execute(delete(runs).where(runs.c.provisional == token, ~used))
        except (StoreError, sqlalchemy.exc.IntegrityError):
            pass  # the step's own error is the one to report; a kept run is still valid
        with suppress(StoreError):
            self._confirm_provisional(token)  # what is left is used by someone: keep it

    def get_run(self, run_id: int) -> RunRecord:
        row = None
        if _is_id(run_id):
            with self._read() as conn:
                row = conn.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
        if row is None:
            raise StoreError(
                f"unknown run id {run_id} in {self._display}; "
                "`regress-action runs list` shows the registered runs"
            )
        return self._run_record(row)

    def list_runs(self) -> list[RunRecord]:
        with self._read() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id)).mappings().all()
        return [self._run_record(row) for row in rows]

    @staticmethod
    def _run_record(row: RowMapping) -> RunRecord:
        source = ModelSource(
            checkpoint=row["checkpoint"],
            format=row["format"],
            sha256=row["sha256"],
            factory=row["factory"],
            factory_kwargs=json.loads(row["factory_kwargs"]),
        )
        return RunRecord(
            id=row["id"],
            created_at=_utc(row["created_at"]),
            name=row["name"],
            task=TaskSpec.model_validate_json(row["task"]),
            source=source,
            git_sha=row["git_sha"],
        )

    # --- comparisons -----------------------------------------------------------------------

    def create_comparison(
        self,
        report: Report,
        evaluations: Sequence[tuple[EvaluationReport, bytes | None]] = (),
    ) -> int:
        """Record a finished report (the comparison row, one row per metric and the report as
        JSON with `comparison_id` set) in one transaction, with the evaluations of its sides
        (each model's records, for a later comparison's cache) in the same one; returns the
        comparison's id.

        Both runs must be registered: a report without run ids, or with unknown ones, is a
        StoreError and nothing is written.
        """
        baseline_run_id, candidate_run_id = report.baseline.run_id, report.candidate.run_id
        if baseline_run_id is None or candidate_run_id is None:
            raise StoreError(
                "a comparison is recorded between two registered runs; this report has no "
                "baseline or candidate run id (register them with `regress-action runs add`)"
            )
        if not math.isfinite(report.threshold):
            raise StoreError(f"threshold {report.threshold!r} is not finite; pass e.g. 0.01")
        values: dict[str, Any] = {
            "created_at": datetime.now(UTC),
            "baseline_run_id": baseline_run_id,
            "candidate_run_id": candidate_run_id,
            "report_name": report.report_name,
            "dataset": report.dataset.name,
            "fingerprint": report.dataset.fingerprint,
            "n_examples": report.dataset.n,
            "threshold": report.threshold,
            "status": report.status,
            "notes": report.notes,
            "commit": report.commit,
        }
        with self._write() as conn:
            self._check_runs_exist(conn, (baseline_run_id, candidate_run_id))
            for evaluation, records in evaluations:
                evaluation.evaluation_id = self._insert_evaluation(conn, evaluation, records)
            comparison_id: int = conn.execute(
                comparisons.insert().values(values).returning(comparisons.c.id)
            ).scalar_one()
            stored = report.model_copy(update={"comparison_id": comparison_id})
            conn.execute(
                comparisons.update()
                .where(comparisons.c.id == comparison_id)
                .values(report_json=stored.model_dump_json())
            )
            metrics = list(report.metrics.values())
            if metrics:
                rows = [_encode_metric(m, comparison_id, i) for i, m in enumerate(metrics)]
                conn.execute(comparison_metrics.insert(), rows)
            slice_rows = [
                _encode_slice_metric(item, position, metric, comparison_id, i)
                for position, item in enumerate(report.slices)
                for i, metric in enumerate(item.metrics.values())
            ]
            if slice_rows:
                conn.execute(comparison_slice_metrics.insert(), slice_rows)
        return comparison_id

    def comparison_slices(self, comparison_id: int) -> list[SliceResult]:
        """The comparison's slices from their rows (one per slice × metric), in the report's
        order; [] for a comparison without slices."""
        table = comparison_slice_metrics
        query = (
            select(table)
            .where(table.c.comparison_id == comparison_id)
            .order_by(table.c.slice_position, table.c.position)
        )
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        slices: dict[str, SliceResult] = {}
        for row in rows:
            item = slices.get(row["slice"])
            if item is None:
                item = slices[row["slice"]] = SliceResult(
                    name=row["slice"],
                    n=row["slice_n"],
                    status=row["slice_status"],
                    gated=bool(row["slice_gated"]),
                    why_not=row["slice_why_not"],
                    family_size=row["slice_family_size"],
                    metrics={},
                )
            item.metrics[row["name"]] = _decode_metric(row)
        return list(slices.values())

    def _check_runs_exist(self, conn: Connection, run_ids: Sequence[int]) -> None:
        valid = [run_id for run_id in run_ids if _is_id(run_id)]
        found = set(conn.execute(select(runs.c.id).where(runs.c.id.in_(valid))).scalars())
        for run_id in run_ids:
            if run_id not in found:
                raise StoreError(
                    f"unknown run id {run_id} in {self._display}; "
                    "`regress-action runs list` shows the registered runs"
                )

    def get_comparison(self, comparison_id: int) -> ComparisonRecord:
        """The comparison, its stored report checked to be a report (a StoreError naming the
        comparison when the row is corrupt)."""
        query = select(comparisons).where(comparisons.c.id == comparison_id)
        records = self._comparison_records(query) if _is_id(comparison_id) else []
        if not records:
            raise StoreError(
                f"unknown comparison id {comparison_id} in {self._display}; "
                "`regress-action comparisons list` shows the recorded comparisons"
            )
        record = records[0]
        if record.report is not None:
            try:
                Report.model_validate(record.report)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error.get("loc", ())) or "the report"
                raise self._corrupt(comparison_id, f"{where}: {error.get('msg')}") from None
        return record

    def _corrupt(self, comparison_id: int, why: str) -> StoreError:
        return StoreError(
            f"comparison {comparison_id} in {self._display} has a corrupt stored report "
            f"({why[:120]}); restore the database from a copy, or delete that comparison's row"
        )

    def list_comparisons(
        self, *, limit: int = 50, report_name: str | None = None, dataset: str | None = None
    ) -> list[ComparisonRecord]:
        """The most recent comparisons, newest first, optionally of one report name / dataset."""
        query = select(comparisons).order_by(comparisons.c.id.desc()).limit(min(limit, MAX_ID))
        if report_name is not None:
            query = query.where(comparisons.c.report_name == report_name)
        if dataset is not None:
            query = query.where(comparisons.c.dataset == dataset)
        return self._comparison_records(query)

    def _comparison_records(self, query: Any, *, reports: bool = True) -> list[ComparisonRecord]:
        """The comparisons `query` selects; `reports=False` leaves their stored reports unread
        (None), so a corrupt one does not stop a reader that does not need it (the trend)."""
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
            metrics = self._metrics_of(conn, [row["id"] for row in rows])
        return [
            _comparison_record(row, metrics.get(row["id"], []), self._stored_report(row, reports))
            for row in rows
        ]

    def _stored_report(self, row: RowMapping, read: bool) -> dict[str, Any] | None:
        text = row["report_json"] if read else None
        if not text:
            return None
        try:
            report = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise self._corrupt(row["id"], f"not JSON: {exc}") from None
        if not isinstance(report, dict):
            raise self._corrupt(row["id"], f"a JSON {type(report).__name__}, not an object")
        return report

    @staticmethod
    def _metrics_of(conn: Connection, ids: list[int]) -> dict[int, list[MetricResult]]:
        result: dict[int, list[MetricResult]] = {}
        if not ids:
            return result
        query = (
            select(comparison_metrics)
            .where(comparison_metrics.c.comparison_id.in_(ids))
            .order_by(comparison_metrics.c.comparison_id, comparison_metrics.c.position)
        )
        for row in conn.execute(query).mappings():
            result.setdefault(row["comparison_id"], []).append(_decode_metric(row))
        return result

    def trend(self, report_name: str, dataset: str, limit: int = 10) -> list[TrendPoint]:
        """The last `limit` comparisons of this report name and dataset, oldest first, each
        with the candidate value of every metric."""
        query = (
            select(comparisons)
            .where(comparisons.c.report_name == report_name, comparisons.c.dataset == dataset)
            .order_by(comparisons.c.id.desc())
            .limit(limit)
        )
        points = [
            TrendPoint(
                comparison_id=record.id,
                created_at=record.created_at,
                status=record.status,
                commit=record.commit,
                fingerprint=record.fingerprint or None,
                metrics={metric.name: metric.candidate for metric in record.metrics},
            )
            for record in self._comparison_records(query, reports=False)
        ]
        return points[::-1]

    # --- evaluations -----------------------------------------------------------------------

    def create_evaluation(self, report: EvaluationReport, records: bytes | None) -> int:
        """Record one model's evaluation (its report and, when given, its per-example records as
        the bytes of a compressed `.npz`) in one transaction; returns the evaluation's id."""
        run_id = report.run.run_id
        if run_id is None:
            raise StoreError(
                "an evaluation is recorded for a registered run; this report has no run id "
                "(register the checkpoint with `regress-action runs add`)"
            )
        with self._write() as conn:
            self._check_runs_exist(conn, (run_id,))
            return self._insert_evaluation(conn, report, records)

    @staticmethod
    def _insert_evaluation(
        conn: Connection, report: EvaluationReport, records: bytes | None
    ) -> int:
        values: dict[str, Any] = {
            "created_at": report.created_at,
            "run_id": report.run.run_id,
            "dataset": report.dataset.name,
            "fingerprint": report.dataset.fingerprint,
            "n_examples": report.dataset.n,
            "cache_key": report.cache_key,
            "engine_version": report.engine_version,
            "device": report.device,
            "precision": report.precision,
            "commit": report.commit,
            "report_json": "",
            "records": records,
        }
        evaluation_id: int = conn.execute(
            evaluations.insert().values(values).returning(evaluations.c.id)
        ).scalar_one()
        stored = report.model_copy(
            update={"evaluation_id": evaluation_id, "records_stored": records is not None}
        )
        conn.execute(
            evaluations.update()
            .where(evaluations.c.id == evaluation_id)
            .values(report_json=stored.model_dump_json())
        )
        return evaluation_id

    def get_evaluation(self, evaluation_id: int) -> EvaluationReport:
        query = select(evaluations.c.report_json).where(evaluations.c.id == evaluation_id)
        text = None
        if _is_id(evaluation_id):
            with self._read() as conn:
                text = conn.execute(query).scalar_one_or_none()
        if text is None:
            raise StoreError(
                f"unknown evaluation id {evaluation_id} in {self._display}; "
                "`regress-action evaluations list` shows the recorded evaluations"
            )
        return EvaluationReport.model_validate_json(text)

    def list_evaluations(
        self, *, limit: int = 50, run_id: int | None = None, cache_key: str | None = None
    ) -> list[EvaluationReport]:
        """The most recent evaluations, newest first, optionally of one run or cache key."""
        query = select(evaluations.c.report_json).order_by(evaluations.c.id.desc())
        query = query.limit(min(limit, MAX_ID))
        if run_id is not None and not _is_id(run_id):
            return []
        if run_id is not None:
            query = query.where(evaluations.c.run_id == run_id)
        if cache_key is not None:
            query = query.where(evaluations.c.cache_key == cache_key)
        with self._read() as conn:
            texts = conn.execute(query).scalars().all()
        return [EvaluationReport.model_validate_json(text) for text in texts]

    def cached_evaluation(self, cache_key: str) -> tuple[EvaluationReport, bytes] | None:
        """The newest evaluation stored under `cache_key` with its records (`.npz` bytes), or
        None when no evaluation under that key kept them."""
        query = (
            select(evaluations.c.report_json, evaluations.c.records)
            .where(evaluations.c.cache_key == cache_key, evaluations.c.records.is_not(None))
            .order_by(evaluations.c.id.desc())
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return EvaluationReport.model_validate_json(row[0]), bytes(row[1])

    def evaluation_records(self, evaluation_id: int) -> bytes | None:
        """The stored per-example records of an evaluation (`.npz` bytes), or None."""
        query = select(evaluations.c.records).where(evaluations.c.id == evaluation_id)
        row = None
        if _is_id(evaluation_id):
            with self._read() as conn:
                row = conn.execute(query).first()
        if row is None:
            raise StoreError(f"unknown evaluation id {evaluation_id} in {self._display}")
        return None if row[0] is None else bytes(row[0])


def _insert_unless_present(conn: Connection, values: dict[str, Any]) -> Insert:
    """INSERT that does nothing when a run with this identity exists (waiting, on
    PostgreSQL, for a concurrent insert of it to commit or roll back)."""
    if conn.dialect.name == "postgresql":
        return (
            postgresql.insert(runs)
            .values(values)
            .on_conflict_do_nothing(index_elements=[runs.c.identity])
        )
    if conn.dialect.name == "sqlite":  # BEGIN IMMEDIATE already serialises the writers
        return (
            sqlite.insert(runs)
            .values(values)
            .on_conflict_do_nothing(index_elements=[runs.c.identity])
        )
    return runs.insert().values(values)  # another backend: a duplicate is an IntegrityError


def _comparison_record(
    row: RowMapping, metrics: list[MetricResult], report: dict[str, Any] | None
) -> ComparisonRecord:
    values = {key: row[key] for key in ComparisonRecord.model_fields if key in row}
    values.update(
        created_at=_utc(row["created_at"]), report=report, metrics=_with_bounds(metrics, report)
    )
    return ComparisonRecord.model_validate(values)


def _with_bounds(metrics: list[MetricResult], report: dict[str, Any] | None) -> list[MetricResult]:
    """The metrics with the bounds their stored report gives them (a bound the report does not
    hold in a valid form is left out: the row's status and reason still say what it decided)."""
    stored = report.get("metrics") if report is not None else None
    if not isinstance(stored, dict):
        return metrics
    result = []
    for metric in metrics:
        entry = stored.get(metric.name)
        bound = entry.get("bound") if isinstance(entry, dict) else None
        if bound is not None:
            with suppress(ValidationError):
                metric = metric.model_copy(update={"bound": MetricBound.model_validate(bound)})
        result.append(metric)
    return result


def _is_id(value: int) -> bool:
    """Whether `value` can be a row id (a positive 64-bit integer): any other names no row."""
    return 0 < value <= MAX_ID
