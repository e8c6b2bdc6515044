"""The ExperimentDB's plumbing: URLs, engines per backend, tables, schema versions, upgrades.

Owns the database URL rules (`resolve_url`, `mask_password`), the engine set-up per backend
(`make_engine`), the table definitions, `SCHEMA_VERSION`, and `ensure_schema`, which creates a
new database or upgrades an older one under a lock so that parallel first runs do not race.
Imports SQLAlchemy and `errors` only; never torch, PyGithub or jinja2.

- URL: None -> env REGRESS_DB -> `sqlite:///regress.db` (in the cwd); a plain path -> SQLite;
  `postgresql://` / `postgres://` -> `postgresql+psycopg://`. Passwords never appear in messages.
- SQLite: WAL journal, 30 s busy timeout, foreign keys on, write transactions BEGIN IMMEDIATE,
  so concurrent CI jobs writing one file queue instead of losing rows.
- PostgreSQL: 5 s connect timeout; schema upgrades under an advisory lock.

Versions:
1. `runs`, `comparisons`, `comparison_metrics` (values, delta, status, `nonfinite`) and
   `schema_version`.
2. adds the paired-statistics columns of `comparison_metrics` (`ci_low` .. `significant`) and the
   index on `comparisons (report_name, dataset, id)` that the trend query walks.
3. adds each metric's interval level, standard error, minimum detectable effect, `underpowered`
   flag and cluster count (`ci_level` .. `clusters`).
4. adds `evaluations`: one model on one eval set (`regress-action evaluate`), its report as JSON
   and its per-example records (a compressed `.npz`), under the key of everything that can
   change them (`cache_key`, indexed).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy import exc as sa_exc

from .errors import StoreError

SCHEMA_VERSION = 4
DEFAULT_URL = "sqlite:///regress.db"
SQLITE_BUSY_TIMEOUT_S = 30
PG_CONNECT_TIMEOUT_S = 5

# Any constant works; it only has to be the same in every regress-action process.
PG_UPGRADE_LOCK_KEY = 0x7265_6772_6573_73  # "regress"

# Execution option read by the SQLite "begin" hook: write transactions start with
# BEGIN IMMEDIATE, so two writers queue on the busy timeout instead of one failing with
# SQLITE_BUSY when it upgrades a read lock that another writer has since invalidated.
WRITE_OPTION = "regress_write"


def resolve_url(url: str | Path | None) -> str:
    """The SQLAlchemy URL for `url`, applying the default and the shorthand rules."""
    if url is None:
        url = os.environ.get("REGRESS_DB", "").strip() or DEFAULT_URL
    if isinstance(url, Path):
        return f"sqlite:///{url}"
    url = url.strip()
    if "://" not in url:
        return f"sqlite:///{url}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def mask_password(url: str) -> str:
    """`url` with the password (if any) replaced by ***; works on unparsable URLs too."""
    # Greedy up to the last '@': a password may hold an unencoded '@'; over-masking is safe.
    # libpq also takes `?password=...` in the query string.
    url = re.sub(r"(://[^:/@]*:).+@", r"\1***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling defers BEGIN; turn it off and let the "begin"
    # hook emit BEGIN / BEGIN IMMEDIATE (SQLAlchemy's documented pysqlite recipe).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, display: str) -> Engine:
    """An engine for `url` with the per-backend set-up; a bad URL is a StoreError naming it."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            _make_sqlite_folder(parsed.database)
            engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        return create_engine(parsed, connect_args=connect_args)
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise StoreError(
            f"invalid database URL {display} ({first_line(exc, url)}); check --db / REGRESS_DB "
            "(e.g. sqlite:///regress.db or postgresql://user@host/db)"
        ) from None


def _make_sqlite_folder(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    # On failure sqlite3 cannot open the file either, and that error names the path.
    with contextlib.suppress(OSError):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def first_line(exc: BaseException, url: str) -> str:
    """The driver's first message line, with the URL's password (if any) masked."""
    original = getattr(exc, "orig", None) or exc
    line = (str(original).strip().splitlines() or [type(original).__name__])[0]
    try:
        parsed = make_url(url)
        password = parsed.password or parsed.query.get("password")
    except sa_exc.ArgumentError:
        password = None
    if not password:
        return line
    # Mask the password only where it stands as a whole token (a quoted value, after a '=' or
    # ':', before '@'): a blind replace of a short password would mangle host names and words.
    token = re.escape(str(password))
    return re.sub(rf"(?<=[=:'\"]){token}(?=[@'\"\s]|$)", "***", line)


metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("task", Text, nullable=False),  # TaskSpec JSON
    Column("checkpoint", Text, nullable=False),
    Column("format", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("factory", Text),
    Column("factory_kwargs", Text, nullable=False),  # JSON object
    Column("git_sha", String(64)),
    sqlite_autoincrement=True,  # never reuse an id: reports and PR comments cite them
)

comparisons = Table(
    "comparisons",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("baseline_run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("candidate_run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("report_name", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("n_examples", Integer, nullable=False),
    Column("threshold", Double, nullable=False),
    Column("status", String(16), nullable=False),
    Column("notes", Text, nullable=False),
    Column("commit", String(64)),
    Column("report_json", Text),
    Index("ix_comparisons_report_dataset_id", "report_name", "dataset", "id"),
    sqlite_autoincrement=True,
)

comparison_metrics = Table(
    "comparison_metrics",
    metadata,
    Column("comparison_id", Integer, ForeignKey("comparisons.id"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("position", Integer, nullable=False),  # the report's metric order
    Column("higher_is_better", Boolean, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("baseline", Double),
    Column("candidate", Double),
    Column("delta", Double),
    Column("rel_delta", Double),
    Column("tolerance", Double),
    Column("status", String(16), nullable=False),
    Column("gated", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    # JSON {column: "NaN" | "Infinity" | "-Infinity"} for the float columns stored as NULL.
    Column("nonfinite", Text),
    # --- version 2 ---
    Column("ci_low", Double),
    Column("ci_high", Double),
    Column("p_value", Double),
    Column("p_adjusted", Double),
    Column("test", String(64)),
    Column("n", Integer),
    Column("n_fixed", Integer),
    Column("n_broken", Integer),
    Column("significant", Boolean),
    # --- version 3 ---
    Column("ci_level", Double),
    Column("se", Double),
    Column("mde", Double),
    Column("underpowered", Boolean),  # NULL in rows written before version 3: False
    Column("clusters", Integer),
)

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("dataset", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("n_examples", Integer, nullable=False),
    Column("cache_key", String(64), nullable=False),
    Column("engine_version", String(32), nullable=False),
    Column("device", String(32)),
    Column("precision", String(8), nullable=False),
    Column("commit", String(64)),
    Column("report_json", Text, nullable=False),
    Column("records", LargeBinary),  # numpy .npz (compressed); NULL: not stored
    Index("ix_evaluations_cache_key", "cache_key", "id"),
    sqlite_autoincrement=True,
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

STATS_COLUMNS = (
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "test",
    "n",
    "n_fixed",
    "n_broken",
    "significant",
)

POWER_COLUMNS = ("ci_level", "se", "mde", "underpowered", "clusters")

FLOAT_METRIC_COLUMNS = (
    "baseline",
    "candidate",
    "delta",
    "rel_delta",
    "tolerance",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "ci_level",
    "se",
    "mde",
)


def _add_metric_columns(conn: Connection, names: tuple[str, ...]) -> None:
    for name in names:
        column_type = comparison_metrics.c[name].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE comparison_metrics ADD COLUMN {name} {column_type}")


def _upgrade_to_2(conn: Connection) -> None:
    _add_metric_columns(conn, STATS_COLUMNS)
    for index in comparisons.indexes:
        index.create(conn)


def _upgrade_to_3(conn: Connection) -> None:
    _add_metric_columns(conn, POWER_COLUMNS)


def _upgrade_to_4(conn: Connection) -> None:
    evaluations.create(conn)


# UPGRADES[v] takes a database at version v - 1 to version v.
UPGRADES: dict[int, Callable[[Connection], None]] = {
    2: _upgrade_to_2,
    3: _upgrade_to_3,
    4: _upgrade_to_4,
}


def read_version(conn: Connection) -> int | None:
    """The stored schema version; None for a database without regress-action tables."""
    if not inspect(conn).has_table("schema_version"):
        return None
    version = conn.execute(select(func.max(schema_version.c.version))).scalar_one_or_none()
    return None if version is None else int(version)


def _too_new(display: str, version: int) -> StoreError:
    return StoreError(
        f"database {display} has schema version {version}, newer than this regress-action "
        f"({SCHEMA_VERSION}); upgrade regress-action"
    )


def ensure_schema(engine: Engine, display: str) -> None:
    """Create or upgrade the schema; a no-op (one cheap read) when it is already current."""
    with engine.connect() as conn:
        version = read_version(conn)
        conn.rollback()
    if version == SCHEMA_VERSION:
        return
    if version is not None and version > SCHEMA_VERSION:
        raise _too_new(display, version)
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                # Released at commit/rollback; a parallel first run waits here, then re-reads.
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_UPGRADE_LOCK_KEY}
                )
            _create_or_upgrade(conn, display)


def _create_or_upgrade(conn: Connection, display: str) -> None:
    # Re-read under the lock: another process may have created or upgraded it meanwhile.
    version = read_version(conn)
    if version is None:
        if inspect(conn).has_table("runs"):
            raise StoreError(
                f"database {display} has a `runs` table but no regress-action schema version; "
                "point --db / REGRESS_DB at a regress-action database or a new one"
            )
        metadata.create_all(conn)
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
        return
    if version > SCHEMA_VERSION:
        raise _too_new(display, version)
    for target in range(version + 1, SCHEMA_VERSION + 1):
        UPGRADES[target](conn)
    if version < SCHEMA_VERSION:
        conn.execute(schema_version.update().values(version=SCHEMA_VERSION))
