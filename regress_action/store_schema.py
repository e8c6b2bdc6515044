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
5. adds `runs.identity`, unique: the sha256 of what makes two registrations the same run
   (`run_identity`: name, task, format, sha256, factory and its kwargs, the checkpoint's real
   path), so that concurrent `runs add` of one checkpoint insert one row and all get its id.
   The upgrade keeps every existing run (comparisons, evaluations and PR comments cite their
   ids, so duplicates are not merged): the oldest run of each identity gets the key, later
   duplicates keep NULL (a unique index allows many NULLs) and are never returned by a new
   registration. A relative checkpoint path is resolved against the upgrading process's
   working folder, as registration always resolved it. Also adds `runs.provisional`: the
   token of the Action step that created the run and removes it again if the step fails
   (`ExperimentDB.provisional_runs`); NULL once the run is confirmed or used by anyone else.
6. adds `comparison_slice_metrics`: one row per slice × metric of a comparison whose eval set
   has slices (the columns of `comparison_metrics`, plus the slice's name, size, status and
   whether it gated the job); the whole set's rows stay in `comparison_metrics`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import (
    URL,
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

SCHEMA_VERSION = 6
DEFAULT_URL = "sqlite:///regress.db"
SQLITE_BUSY_TIMEOUT_S = 30
DEFAULT_SOURCE = "--db / REGRESS_DB"  # where the URL came from, named in messages
MIN_BLIND_MASK = 4  # a password this long is masked wherever it appears in a message
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


def _secrets(url: str) -> set[str]:
    """Every spelling of the URL's password(s): as written, decoded, and as parsed."""
    found: set[str] = set()
    for pattern in (r"://[^:/@]*:(.+)@", r"(?i)[?&]password=([^&]*)"):
        for match in re.finditer(pattern, url):
            found.update((match.group(1), unquote(match.group(1))))
    with contextlib.suppress(Exception):  # an unparsable URL has only the raw spellings
        parsed = make_url(url)
        found.update(
            str(value) for value in (parsed.password, parsed.query.get("password")) if value
        )
    return {secret for secret in found if secret}


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


def _sqlite_on_connect_readonly(dbapi_conn: Any, _record: Any) -> None:
    # As `_sqlite_on_connect`, less the journal mode: setting it is a write.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
    finally:
        cursor.close()


def _sqlite_readonly_creator(database: str, display: str, source: str) -> Callable[[], Any]:
    """Connections that never write: `mode=ro`, or, for a WAL database in a folder where its
    `-shm` file cannot be created, `immutable=1` (nothing else can be writing to that folder)."""
    uri = "file:" + quote(os.path.abspath(database))

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            return conn
        except sqlite3.OperationalError:
            conn.close()
        wal = Path(database + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:
            raise StoreError(
                f"cannot read database {display}: it is read-only here and {wal.name} beside it "
                "holds changes not yet written into it; open it once where its folder is "
                f"writable (any regress-action command), or check {source}"
            )
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)

    return connect


def make_engine(
    url: str, display: str, source: str = DEFAULT_SOURCE, *, readonly: bool = False
) -> Engine:
    """An engine for `url` with the per-backend set-up; a bad URL is a StoreError naming it
    (and `source`, where the URL came from) with the password masked. `readonly`: a SQLite
    file is opened for reading only (it may be a read-only file in a read-only folder)."""
    try:
        parsed = make_url(url)
        _check_unambiguous(parsed, display, source)
        if parsed.get_backend_name() == "sqlite" and readonly and _is_file_path(parsed.database):
            assert parsed.database is not None
            creator = _sqlite_readonly_creator(parsed.database, display, source)
            engine = create_engine("sqlite://", creator=creator)
            event.listen(engine, "connect", _sqlite_on_connect_readonly)
            event.listen(engine, "begin", _sqlite_on_begin)
            return engine
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
            f"invalid database URL {display} ({first_line(exc, url)}); check {source} "
            "(e.g. sqlite:///regress.db or postgresql://user@host/db)"
        ) from None
    except (ValueError, TypeError):
        # e.g. a port that is not a number; the parser's own text may quote the URL's pieces.
        raise StoreError(
            f"invalid database URL {display}: a part of it is not valid (a port that is not a "
            "number, a bad query option?); percent-encode @ : / % in the user name and "
            f"password (@ as %40, : as %3A, / as %2F, % as %25); check {source}"
        ) from None


def _check_unambiguous(parsed: URL, display: str, source: str) -> None:
    """Refuse a URL whose password holds an unencoded '@': it would be cut there, and the
    driver would print the rest (a piece of the password) as the host name."""
    host = parsed.host  # None for a SQLite file, whose path may hold an '@'
    if host is not None and ("@" in host or "@" in (parsed.database or "")):
        raise StoreError(
            f"invalid database URL {display}: the password holds an unencoded '@'; "
            f"percent-encode it as %40 (and : as %3A, / as %2F, % as %25); check {source}"
        )


def _is_file_path(database: str | None) -> bool:
    return bool(database) and database != ":memory:" and not str(database).startswith("file:")


_SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for a server, memory, or a `file:` URI)."""
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError, TypeError):
        return None
    if parsed.get_backend_name() != "sqlite" or not _is_file_path(parsed.database):
        return None
    return Path(str(parsed.database))


def check_sqlite_file(path: Path, display: str, source: str, *, create: bool) -> None:
    """Refuse, before SQLite touches it, an existing file that is not an ExperimentDB: one that
    is not a SQLite database, or (unless `create`) an empty one, which SQLite would silently
    take for a new database and give a schema."""
    if not path.is_file():
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(
            f"cannot read database {display}: {exc.strerror or exc}; check {source}"
        ) from None
    if not head:
        if create:
            return  # SQLite's own rule: an empty file is a new database
        raise StoreError(
            f"{path} is an empty file, not an ExperimentDB; delete it or pass a new path "
            f"({source}), or point it at the database holding your runs"
        )
    if head != _SQLITE_HEADER:
        raise StoreError(
            f"{path} is not a SQLite database (nor an ExperimentDB); point {source} at an "
            "ExperimentDB, or at a new path"
        )


def sqlite_write_problem(path: Path) -> str | None:
    """Why a command could not write to the SQLite database at `path` (a read-only file, or a
    read-only folder where its WAL files cannot be created); None when it can."""
    if not path.is_file():
        return None
    if not os.access(path, os.W_OK):
        return f"{path} is read-only"
    folder = path.parent if str(path.parent) else Path(".")
    companions = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    folder_writable = os.access(folder, os.W_OK | os.X_OK)
    if not folder_writable and not all(p.is_file() and os.access(p, os.W_OK) for p in companions):
        return f"its folder {folder} is read-only (SQLite writes {path.name}-wal beside it)"
    return None


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
    return scrub(line, url)


def scrub(text: str, url: str) -> str:
    """`text` with every spelling of `url`'s password masked (also inside a quoted URL)."""
    text = text.replace(url, mask_password(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):
        token = re.escape(secret)
        if len(secret) >= MIN_BLIND_MASK:
            text = text.replace(secret, "***")
        else:
            # Mask a short password only where it stands as a whole token (a quoted value,
            # after a '=' or ':', before '@'): a blind replace would mangle hosts and words.
            text = re.sub(rf"(?<=[=:'\"]){token}(?=[@'\"\s]|$)", "***", text)
    return text


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
    # --- version 5 ---
    Column("identity", String(64)),  # run_identity(); NULL: a duplicate kept by the upgrade
    Column("provisional", String(64)),  # the creating Action step's token until confirmed
    Index("ux_runs_identity", "identity", unique=True),
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

# One row per slice × metric: the metric columns of `comparison_metrics` (version 6).
comparison_slice_metrics = Table(
    "comparison_slice_metrics",
    metadata,
    Column("comparison_id", Integer, ForeignKey("comparisons.id"), primary_key=True),
    Column("slice", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("slice_position", Integer, nullable=False),  # the report's slice order
    Column("slice_n", Integer, nullable=False),
    Column("slice_status", String(16), nullable=False),
    Column("slice_gated", Boolean, nullable=False),
    Column("slice_why_not", Text),
    Column("slice_family_size", Integer, nullable=False),
    *(
        column._copy()
        for column in comparison_metrics.columns
        if column.name not in ("comparison_id", "name")
    ),
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


def _upgrade_to_5(conn: Connection) -> None:
    for name in ("identity", "provisional"):
        column_type = runs.c[name].type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {name} {column_type}")
    seen: set[str] = set()
    for row in conn.execute(select(runs).order_by(runs.c.id)).mappings().all():
        key = run_identity(
            name=row["name"],
            task_json=row["task"],
            format=row["format"],
            sha256=row["sha256"],
            factory=row["factory"],
            factory_kwargs_json=row["factory_kwargs"],
            checkpoint=row["checkpoint"],
        )
        if key not in seen:  # the oldest of each identity; later duplicates stay NULL
            seen.add(key)
            conn.execute(runs.update().where(runs.c.id == row["id"]).values(identity=key))
    for index in runs.indexes:
        index.create(conn)


def _upgrade_to_6(conn: Connection) -> None:
    comparison_slice_metrics.create(conn)


# UPGRADES[v] takes a database at version v - 1 to version v.
UPGRADES: dict[int, Callable[[Connection], None]] = {
    2: _upgrade_to_2,
    3: _upgrade_to_3,
    4: _upgrade_to_4,
    5: _upgrade_to_5,
    6: _upgrade_to_6,
}


def run_identity(
    *,
    name: str,
    task_json: str,
    format: str,
    sha256: str,
    factory: str | None,
    factory_kwargs_json: str,
    checkpoint: str,
) -> str:
    """The key of a run (sha256 hex): two registrations with the same name, task, format,
    bytes, factory and kwargs, at the same file however its path is spelled, are one run.
    The git sha is not part of it: the first registration's is kept."""
    canonical = json.dumps(
        [
            name,
            json.loads(task_json),
            format,
            sha256,
            factory,
            json.loads(factory_kwargs_json),
            os.path.realpath(checkpoint),
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


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


def check_schema(engine: Engine, display: str, source: str) -> int:
    """The schema version of a database opened for reading only, which is never created nor
    upgraded: one without regress-action's tables, or of another version, is a StoreError."""
    with engine.connect() as conn:
        version = read_version(conn)
        conn.rollback()
    if version is None:
        raise StoreError(
            f"database {display} is not an ExperimentDB (no regress-action tables); check {source}"
        )
    if version > SCHEMA_VERSION:
        raise _too_new(display, version)
    return version


def older_readonly(display: str, version: int, problem: str) -> StoreError:
    return StoreError(
        f"database {display} has schema version {version}, older than this regress-action's "
        f"({SCHEMA_VERSION}), and cannot be upgraded here: {problem}; run any regress-action "
        "command on it once with write access to upgrade it in place, or use the "
        "regress-action version that wrote it"
    )


def ensure_schema(engine: Engine, display: str) -> None:
    """Create or upgrade the schema; a no-op (one cheap read) when it is already current.

    Processes opening one new SQLite file at once race to switch it to WAL, and SQLite answers
    a connection caught in that switch "database is locked" without waiting out its busy
    timeout: such an attempt is made again (every step re-reads the version), within the busy
    timeout."""
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            _ensure_schema(engine, display)
            return
        except sa_exc.OperationalError as exc:
            locked = engine.dialect.name == "sqlite" and "database is locked" in str(exc)
            if not locked or time.monotonic() > deadline:
                raise
            engine.dispose()  # no connection of the failed attempt is reused
            time.sleep(0.05)


def _ensure_schema(engine: Engine, display: str) -> None:
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
