"""SIGKILL at every step of a write, on SQLite and PostgreSQL: the ExperimentDB and the report
files are whole or untouched, and the next run succeeds.

How: one helper process (the "zygote") imports regress-action, torch and scipy once, then forks
one `regress-action` per run: the child calls `cli.main(argv)` as the `regress-action` script
does. A child may carry a kill point, the Nth event of its run, where an event is a SQL statement
about to run or just run, a COMMIT about to be sent, a report file staged or renamed into place,
a model loaded, the evaluation begun. At that event the child SIGKILLs itself: no `finally`, no
rollback, no clean-up runs, the database connection is cut by the kernel. A census run (no kill)
lists a run's events; the matrix kills a run at each of them, so every gap between two steps of
a write is hit, deterministically. Forking from a warm process costs ~0.3 s per run instead of
~5 s of imports; only the process start time the staging code keeps (`files._STARTED`) is set
again in the child, as a new process would have it.

The invariants, from store.py, app.py, files.py and the README:
- the database: SQLite's `PRAGMA integrity_check` is ok and no foreign key is broken; on
  PostgreSQL the killed session is gone (no lock left behind); the next run uses the database;
- a new database is created in one transaction: after a kill it has the whole schema or none;
- a comparison is one transaction: after a kill the comparisons table holds the same rows, or
  one more, complete (every metric row, its stored report naming it, both runs registered);
- report files are renamed into place only after the comparison is committed (`write_staged`,
  JSON before Markdown): a file at its final path is the one that was there, untouched, or the
  killed run's, complete, parseable and naming its recorded comparison; a new Markdown comes
  with a new JSON and is that report's rendering. A kill between the commit and the renames
  leaves a recorded comparison without files: the database holds its whole report
  (`comparisons show ID`), and the next run writes the files (a database commit and a rename
  cannot be one atomic step; the database, which the files cite, goes first);
- hidden `.NAME.HEX.tmp` files may remain; the next run writing there removes them;
- runs: `runs add` is insert-or-get on the run's identity, so a killed registration leaves the
  run whole or nothing, and the next registration returns the same id. The Action's provisional
  runs are removed by the step that created them when it fails; a killed step cannot, so its
  runs stay (still marked provisional, used by nothing or by its recorded comparison), and the
  next step registering the same checkpoints reuses and confirms them: killed steps never
  multiply runs.
- a following run succeeds, and the database then has exactly one more comparison.

And at once: eight `compare` processes on one database all succeed, each with its own comparison
id; runs probing and staging reports in one new folder never fail one another.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import select as sql_select

from regress_action.report import Report
from regress_action.store_schema import (
    SCHEMA_VERSION,
    comparison_metrics,
    comparisons,
    metadata,
    runs,
    schema_version,
)

REPO = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 120
ALL_TABLES = set(metadata.tables)
TMP_NAME = re.compile(r"\.(r|default)\.(json|md)\.[0-9a-f]{12}\.tmp")  # hidden, as staged
FACTORY = "regress_action.zoo:tiny_lm"

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- the zygote


class _Events:
    """Counts a run's events; SIGKILLs this process at event number `kill_at`, or at the first
    event of that name."""

    def __init__(self, kill_at: int | str | None) -> None:
        self.kill_at = kill_at
        self.names: list[str] = []

    def hit(self, name: str) -> None:
        self.names.append(name)
        if self.kill_at in (len(self.names), name):
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        from sqlalchemy import Engine, event

        from regress_action import engine, files, models

        def statement(text: str) -> str:
            return " ".join(text.split())[:48]

        def before(_conn: Any, _cursor: Any, text: str, *_rest: Any) -> None:
            self.hit(f"sql< {statement(text)}")

        def after(_conn: Any, _cursor: Any, text: str, *_rest: Any) -> None:
            self.hit(f"sql> {statement(text)}")

        event.listen(Engine, "before_cursor_execute", before)
        event.listen(Engine, "after_cursor_execute", after)
        event.listen(Engine, "commit", lambda _conn: self.hit("commit"))

        staged_init = files.StagedFile.__init__

        def staged(file: Any, path: Path, what: str = "output") -> None:
            staged_init(file, path, what)
            self.hit(f"staged {Path(path).name}")

        files.StagedFile.__init__ = staged  # type: ignore[method-assign]
        replace = os.replace

        def renamed(src: Any, dst: Any, **kwargs: Any) -> None:
            self.hit(f"rename< {dst}")
            replace(src, dst, **kwargs)
            self.hit(f"rename> {dst}")

        os.replace = renamed  # type: ignore[assignment]
        for module, name in ((models, "load_model"), (engine, "evaluate_pair")):
            original = getattr(module, name)

            def wrapped(*args: Any, _f: Any = original, _n: str = name, **kwargs: Any) -> Any:
                self.hit(_n)
                return _f(*args, **kwargs)

            setattr(module, name, wrapped)


def _child(job: dict[str, Any]) -> None:
    """In the forked child: become `regress-action ARGV` in `cwd`; never returns."""
    code = 99
    events = _Events(job.get("kill_at"))
    try:
        os.chdir(job["cwd"])
        for name in list(os.environ):
            if name.startswith(("INPUT_", "GITHUB_", "RUNNER_", "REGRESS_")):
                del os.environ[name]
        os.environ.update(job["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, suffix in ((1, ".out"), (2, ".err")):
            log = os.open(job["log"] + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, fd)
        from regress_action import cli, files

        files._STARTED = time.time()  # a new process: staged files older than it are stale
        events.install()
        code = cli.main(job["argv"])
    except BaseException:
        traceback.print_exc()
    finally:
        if job.get("census"):
            Path(job["log"] + ".events").write_text(json.dumps(events.names))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(pids: list[int]) -> list[dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while len(results) < len(pids):
        for pid in pids:
            if pid in results:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if os.WIFSIGNALED(status):
                    results[pid] = {"signal": os.WTERMSIG(status), "code": None}
                else:
                    results[pid] = {"signal": None, "code": os.WEXITSTATUS(status)}
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                results[pid] = {"signal": None, "code": None, "timeout": True}
        time.sleep(0.005)
    return [results[pid] for pid in pids]


def zygote_main() -> None:
    """Import everything once, then fork one child per job of each request line on stdin."""
    import torch

    torch.set_num_threads(1)  # no OpenMP pool before fork; 2 cores are shared anyway
    for module in ("action", "app", "cli", "compare", "engine", "models", "store", "tasks"):
        importlib.import_module(f"regress_action.{module}")
    from regress_action.render import render_markdown
    from tests.report_factory import make_report

    render_markdown(make_report("lm"))  # the templates are compiled once, here
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        jobs = json.loads(line)
        pids = []
        for job in jobs:
            pid = os.fork()
            if pid == 0:
                _child(job)
            pids.append(pid)
        print(json.dumps(_reap(pids)), flush=True)


@dataclass
class Outcome:
    killed: bool
    code: int | None
    out: str
    err: str
    events: list[str] | None

    def log(self) -> str:
        return f"exit {self.code}, killed {self.killed}\n{self.out[-2000:]}\n{self.err[-4000:]}"


@dataclass
class Job:
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    kill_at: int | str | None = None
    census: bool = False


class Zygote:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.count = 0
        self.stderr = (logs / "zygote.err").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.hardening.test_kill import zygote_main as m; m()"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        assert self._read() == "ready", (logs / "zygote.err").read_text()

    def _read(self) -> Any:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], CHILD_TIMEOUT_S + 60)
        assert ready, "the zygote did not answer"
        line = self.proc.stdout.readline()
        assert line, f"the zygote died: {(self.logs / 'zygote.err').read_text()[-3000:]}"
        return json.loads(line)

    def run_all(self, jobs: list[Job]) -> list[Outcome]:
        """Fork every job at once and wait for all of them."""
        assert self.proc.stdin is not None
        specs = []
        for job in jobs:
            self.count += 1
            specs.append(
                {
                    "argv": job.argv,
                    "cwd": str(job.cwd),
                    "env": job.env,
                    "kill_at": job.kill_at,
                    "census": job.census,
                    "log": str(self.logs / f"run{self.count}"),
                }
            )
        self.proc.stdin.write(json.dumps(specs) + "\n")
        self.proc.stdin.flush()
        outcomes = []
        for spec, result in zip(specs, self._read(), strict=True):
            assert not result.get("timeout"), f"{spec['argv']} ran over {CHILD_TIMEOUT_S} s"
            log = Path(spec["log"])
            events = log.with_suffix(".events")
            outcomes.append(
                Outcome(
                    killed=result["signal"] == signal.SIGKILL,
                    code=result["code"],
                    out=log.with_suffix(".out").read_text(errors="replace"),
                    err=log.with_suffix(".err").read_text(errors="replace"),
                    events=json.loads(events.read_text()) if events.exists() else None,
                )
            )
        return outcomes

    def run(self, job: Job) -> Outcome:
        (outcome,) = self.run_all([job])
        return outcome

    def census(self, job: Job) -> list[str]:
        """The events of `job` run to its end (which must succeed)."""
        job.census = True
        outcome = self.run(job)
        assert outcome.code == 0 and outcome.events, outcome.log()
        return outcome.events

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    started = Zygote(tmp_path_factory.mktemp("zygote"))
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from regress_action.models import save_checkpoint
    from regress_action.zoo import tiny_lm

    folder = tmp_path_factory.mktemp("ckpt")
    for seed, name in ((0, "baseline"), (1, "candidate")):
        torch.manual_seed(seed)
        save_checkpoint(tiny_lm().eval(), folder / f"{name}.safetensors", "safetensors")
    return folder


# --------------------------------------------------------------------------- databases


class Backend:
    """Fresh, empty databases of one backend (PostgreSQL's are dropped after the test)."""

    def __init__(self, name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.name = name
        self.tmp_path = tmp_path
        self.request = request
        self.created: list[str] = []

    def new_url(self) -> str:
        if self.name == "sqlite":
            folder = self.tmp_path / f"db{len(self.created)}"
            self.created.append(str(folder))
            return f"sqlite:///{folder / 'regress.db'}"
        import psycopg

        server = self.request.getfixturevalue("postgres_server")
        database = f"k_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        self.created.append(database)
        return str(server.url(database))

    def drop_all(self) -> None:
        if self.name != "postgresql":
            return
        import psycopg

        server = self.request.getfixturevalue("postgres_server")
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            for database in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = Backend(request.param, tmp_path, request)
    try:
        yield made
    finally:
        made.drop_all()


@dataclass
class DbState:
    """Everything the invariants look at in one database (empty when it was never created)."""

    tables: set[str]
    version: int | None
    runs: dict[int, dict[str, Any]]
    comparisons: dict[int, dict[str, Any]]
    metrics: dict[int, list[str]]  # comparison id -> metric names in position order


def _sqlite_file(url: str) -> Path | None:
    parsed = sqlalchemy.make_url(url)
    return Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None


def _wait_for_other_sessions_to_end(conn: sqlalchemy.Connection) -> None:
    """A killed client's server session ends (its transaction rolled back, its locks freed)."""
    query = sqlalchemy.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    deadline = time.monotonic() + 10
    while conn.execute(query).scalar_one():
        assert time.monotonic() < deadline, "a killed client's session is still open"
        time.sleep(0.02)
        conn.rollback()


def read_db(url: str) -> DbState:
    path = _sqlite_file(url)
    if path is not None and not path.exists():
        return DbState(set(), None, {}, {}, {})
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            if path is not None:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalars().all() == ["ok"]
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            else:
                _wait_for_other_sessions_to_end(conn)
            tables = set(sqlalchemy.inspect(conn).get_table_names()) & ALL_TABLES
            if "schema_version" not in tables:
                return DbState(tables, None, {}, {}, {})
            version = conn.execute(sql_select(schema_version.c.version)).scalars().all()
            run_rows = conn.execute(sql_select(runs)).mappings().all()
            comparison_rows = conn.execute(sql_select(comparisons)).mappings().all()
            metric_rows = conn.execute(
                sql_select(comparison_metrics.c.comparison_id, comparison_metrics.c.name).order_by(
                    comparison_metrics.c.comparison_id, comparison_metrics.c.position
                )
            ).all()
    finally:
        engine.dispose()
    metrics: dict[int, list[str]] = {}
    for comparison_id, name in metric_rows:
        metrics.setdefault(comparison_id, []).append(name)
    assert len(version) == 1, version
    return DbState(
        tables,
        version[0],
        {row["id"]: dict(row) for row in run_rows},
        {row["id"]: dict(row) for row in comparison_rows},
        metrics,
    )


def check_db(state: DbState) -> None:
    """Whole schema or none; every comparison complete; run identities unique."""
    assert state.tables in (set(), ALL_TABLES), f"a partial schema: {sorted(state.tables)}"
    if not state.tables:
        return
    assert state.version == SCHEMA_VERSION
    identities = [run["identity"] for run in state.runs.values()]
    assert None not in identities and len(set(identities)) == len(identities), state.runs
    for comparison_id, row in state.comparisons.items():
        assert row["report_json"], f"comparison {comparison_id} has no stored report"
        report = Report.model_validate_json(row["report_json"])
        assert report.comparison_id == comparison_id
        pair = (report.baseline.run_id, report.candidate.run_id)
        assert pair == (row["baseline_run_id"], row["candidate_run_id"])
        assert set(pair) <= set(state.runs), f"comparison {comparison_id} without its runs"
        assert state.metrics.get(comparison_id, []) == list(report.metrics), (
            f"comparison {comparison_id} has metric rows {state.metrics.get(comparison_id)} "
            f"but its report has {list(report.metrics)}"
        )
    assert set(state.metrics) <= set(state.comparisons), "metric rows without a comparison"


# --------------------------------------------------------------------------- report files


@dataclass
class Files:
    """The report files at their final paths (None: absent) and the hidden staged ones."""

    json: str | None
    markdown: str | None
    staged: list[str]


def read_files(json_path: Path, markdown_path: Path) -> Files:
    def text(path: Path) -> str | None:
        return path.read_text(encoding="utf-8") if path.exists() else None

    staged = []
    for folder in {json_path.parent, markdown_path.parent}:
        if folder.exists():
            staged += [path.name for path in folder.iterdir() if path.name.endswith(".tmp")]
    return Files(text(json_path), text(markdown_path), sorted(staged))


def check_files(before: Files, after: Files, new_ids: set[int]) -> None:
    """A final path holds the file it held, or the killed run's whole, recorded report."""
    from regress_action.render import render_markdown

    for name in after.staged:
        assert TMP_NAME.fullmatch(name), f"a staged file that is not hidden: {name}"
    if after.json != before.json:
        assert after.json, "an empty JSON report at its final path"
        report = Report.model_validate_json(after.json)
        assert report.comparison_id in new_ids, (
            f"the JSON report cites comparison {report.comparison_id}, not recorded by this run"
        )
    if after.markdown != before.markdown:
        assert after.json != before.json and after.json is not None, (
            "a new Markdown report without its JSON"
        )
        assert after.markdown == render_markdown(Report.model_validate_json(after.json)), (
            "the Markdown report is not the whole rendering of its JSON"
        )


def check_killed_comparison(before: DbState, after: DbState) -> set[int]:
    """The kill added one whole comparison or none, and changed nothing else."""
    check_db(after)
    assert after.runs == before.runs
    new_ids = set(after.comparisons) - set(before.comparisons)
    assert set(before.comparisons) <= set(after.comparisons)
    assert all(after.comparisons[i] == row for i, row in before.comparisons.items())
    assert len(new_ids) <= 1, f"one run recorded {len(new_ids)} comparisons"
    return new_ids


# --------------------------------------------------------------------------- the matrices


def runs_add_argv(url: str, checkpoint: Path) -> list[str]:
    return [
        "runs", "add", str(checkpoint), "--task", "lm", "--vocab-size", "256",
        "--factory", FACTORY, "--db", url,
    ]  # fmt: skip


def register_both(zygote: Zygote, url: str, work: Path, checkpoints: Path) -> list[int]:
    ids = []
    for name in ("baseline", "candidate"):
        added = zygote.run(Job(runs_add_argv(url, checkpoints / f"{name}.safetensors"), work))
        assert added.code == 0, added.log()
        ids.append(int(added.out.strip()))
    return ids


def compare_argv(url: str, baseline: int, candidate: int, out: str = "out/r") -> list[str]:
    # --no-cache: every run takes the same steps (a later run would read the baseline from the
    # evaluations an earlier one stored), so the census of the first run holds for all; both
    # sides are still stored, in the comparison's transaction.
    return [
        "compare", "--baseline-run-id", str(baseline), "--candidate-run-id", str(candidate),
        "--dataset", "lm_tiny", "--max-examples", "8", "--device", "cpu", "--workers", "0",
        "--resamples", "200", "--db", url, "--no-cache",
        "--json-out", f"{out}.json", "--markdown-out", f"{out}.md",
    ]  # fmt: skip


def _reads(name: str) -> bool:
    verbs = ("sql> SELECT", "sql> PRAGMA", "sql> BEGIN DEFERRED")
    return name.startswith(verbs) and "pg_advisory" not in name  # a lock is a step


def kill_points(census: list[str], first: int = 1, last: int | None = None) -> list[int]:
    """Event numbers from `first` to `last` to kill at, one per state a kill can leave: just
    after each statement, each file or model step, and each COMMIT (the event after it). Killed
    just before a statement or a COMMIT, a run leaves what the step before it left; killed
    anywhere in a stretch of reads, what the stretch's first read left."""
    last = len(census) if last is None else last
    points: list[int] = []
    reading = False
    for k in range(first, last + 1):
        name = census[k - 1]
        after_commit = k == first or census[k - 2] == "commit"
        as_before = name == "commit" or name.startswith("sql<") or (reading and _reads(name))
        if after_commit or not as_before:
            points.append(k)
        if not name.startswith("sql<"):
            reading = _reads(name)
    return points


def _described(census: list[str], k: int) -> str:
    return f"killed at event {k} of {len(census)} ({census[k - 1]})"


def test_compare_killed_at_every_step_leaves_a_whole_comparison_or_none(
    zygote: Zygote, backend: Backend, checkpoints: Path, tmp_path: Path
) -> None:
    url = backend.new_url()
    ids = register_both(zygote, url, tmp_path, checkpoints)
    argv = compare_argv(url, *ids)
    json_path, markdown_path = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    census = zygote.census(Job(argv, tmp_path))
    for needed in (
        "sql> INSERT INTO comparisons",
        "sql> INSERT INTO comparison_metrics",
        "commit",
        f"rename< {json_path.name}",
        f"rename< {markdown_path.name}",
        "evaluate_pair",
    ):
        assert any(name.startswith(needed) for name in census), (needed, census)

    state, files = read_db(url), read_files(json_path, markdown_path)
    for k in kill_points(census):
        killed = zygote.run(Job(argv, tmp_path, kill_at=k))
        what = _described(census, k)
        assert killed.killed, f"{what}: {killed.log()}"
        after, after_files = read_db(url), read_files(json_path, markdown_path)
        try:
            new_ids = check_killed_comparison(state, after)
            check_files(files, after_files, new_ids)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from exc

        again = zygote.run(Job(argv, tmp_path))
        assert again.code == 0, f"the run after one {what}: {again.log()}"
        state, files = read_db(url), read_files(json_path, markdown_path)
        check_db(state)
        assert len(state.comparisons) == len(after.comparisons) + 1, what
        assert files.staged == [], f"staged files left after the run after one {what}"
        assert files.json is not None and files.markdown is not None
        report = Report.model_validate_json(files.json)
        assert report.comparison_id == max(state.comparisons)
        assert report.to_json() == Report.model_validate_json(again.out).to_json()
        check_files(Files(None, None, []), files, {max(state.comparisons)})


def test_the_first_run_killed_while_creating_the_database_leaves_all_or_nothing(
    zygote: Zygote, backend: Backend, checkpoints: Path, tmp_path: Path
) -> None:
    checkpoint = checkpoints / "baseline.safetensors"
    census = zygote.census(Job(runs_add_argv(backend.new_url(), checkpoint), tmp_path))
    assert any(name.startswith("sql> CREATE TABLE") for name in census), census
    assert any(name.startswith("sql> INSERT INTO runs") for name in census), census
    for k in kill_points(census):
        url = backend.new_url()
        argv = runs_add_argv(url, checkpoint)
        what = _described(census, k)
        killed = zygote.run(Job(argv, tmp_path, kill_at=k))
        assert killed.killed, f"{what}: {killed.log()}"
        after = read_db(url)
        try:
            check_db(after)
            assert len(after.runs) <= 1 and after.comparisons == {}
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from exc
        again = zygote.run(Job(argv, tmp_path))
        assert again.code == 0, f"the registration after one {what}: {again.log()}"
        final = read_db(url)
        check_db(final)
        assert list(final.runs) == [int(again.out.strip())]
        if after.runs:  # the killed registration's run is the run
            assert final.runs == after.runs, what


# --------------------------------------------------------------------------- the Action


def action_job(workspace: Path, url: str, kill_at: int | str | None = None) -> Job:
    inputs = {
        "baseline-checkpoint": "baseline.safetensors",
        "candidate-checkpoint": "candidate.safetensors",
        "model-factory": FACTORY,
        "task": "lm",
        "dataset": "lm_tiny",
        "max-examples": "8",
        "workers": "0",
        "device": "cpu",
        "db-url": url,
        "comment": "off",
        "fail-on-regression": "false",
        "cache": "false",  # every step takes the census's steps (see compare_argv)
    }
    env = {f"INPUT_{name.upper()}": value for name, value in inputs.items()}
    env.update(
        GITHUB_WORKSPACE=str(workspace),
        GITHUB_OUTPUT=str(workspace.parent / "output"),
        GITHUB_STEP_SUMMARY=str(workspace.parent / "summary.md"),
    )
    return Job(["action"], workspace, env, kill_at=kill_at)


def action_kill_points(census: list[str]) -> list[int]:
    """Where a step's provisional runs change: before it registers anything, and before and
    just after each COMMIT that follows (each registration, its comparison, the confirmation
    of its runs)."""
    registered = census.index("load_model") + 1
    commits = [k for k in range(registered, len(census) + 1) if census[k - 1] == "commit"]
    assert len(commits) >= 4, census  # two registrations, the comparison, the confirmation
    return sorted({registered, *commits, *(k + 1 for k in commits if k < len(census))})


def test_a_killed_action_step_never_multiplies_runs_and_the_next_step_confirms_them(
    zygote: Zygote, backend: Backend, checkpoints: Path, tmp_path: Path
) -> None:
    from regress_action.store import ExperimentDB

    def step(index: int) -> tuple[Path, str]:
        """A workspace and a database with the schema (its creation is the test above's)."""
        folder = tmp_path / f"step{index}" / "workspace"
        shutil.copytree(checkpoints, folder)
        url = backend.new_url()
        ExperimentDB(url).close()
        return folder, url

    def reports(folder: Path) -> Files:
        return read_files(*(folder / "regress-action" / f"default.{ext}" for ext in ("json", "md")))

    census = zygote.census(action_job(*step(0)))
    for k in action_kill_points(census):
        folder, url = step(k)
        what = _described(census, k)
        killed = zygote.run(action_job(folder, url, kill_at=k))
        assert killed.killed, f"{what}: {killed.log()}"
        after = read_db(url)
        try:
            check_db(after)
            assert len(after.runs) <= 2 and len(after.comparisons) <= 1
            # Nobody else used them, and the step that created them cannot remove them now.
            assert None not in {run["provisional"] for run in after.runs.values()}
            check_files(Files(None, None, []), reports(folder), set(after.comparisons))
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from exc
        # Killed again once its checkpoints are registered: their runs are reused, not doubled.
        again = zygote.run(action_job(folder, url, kill_at="evaluate_pair"))
        assert again.killed, f"after one {what}: {again.log()}"
        between = read_db(url)
        check_db(between)
        assert len(between.runs) == 2 and set(after.runs) <= set(between.runs), what
        assert between.comparisons == after.comparisons

        (folder.parent / "output").write_text("")
        done = zygote.run(action_job(folder, url))
        assert done.code == 0, f"the step after one {what}: {done.log()}"
        final = read_db(url)
        check_db(final)
        assert final.runs.keys() == between.runs.keys(), f"after one {what}: {final.runs}"
        assert [run["provisional"] for run in final.runs.values()] == [None, None], what
        assert len(final.comparisons) == len(after.comparisons) + 1, what
        newest = final.comparisons[max(final.comparisons)]
        assert {newest["baseline_run_id"], newest["candidate_run_id"]} == set(final.runs)
        output = (folder.parent / "output").read_text()
        assert f"comparison-id={newest['id']}\n" in output, output
        written = reports(folder)
        check_files(Files(None, None, []), written, {newest["id"]})
        assert written.staged == [], f"staged files left after the step after one {what}"


# --------------------------------------------------------------------------- concurrency

COMPARERS = 8
STAGERS, ROUNDS = 4, 150


def _stage_in_new_folders(
    root: Path, me: int, barrier: Barrier, failures: Queue[list[str]]
) -> None:
    """What each compare does with its report path: probe it (`check_writable` removes the
    folders it had to create), then stage and write it; all at once, in a new folder each round."""
    from regress_action.errors import ConfigError
    from regress_action.files import StagedFile, check_writable

    failed = []
    for round_ in range(ROUNDS):
        barrier.wait(timeout=60)
        path = root / str(round_) / "out" / f"r{me}.json"
        try:
            check_writable(path, "--json-out")
            StagedFile(path, "--json-out").commit("{}")
        except ConfigError as exc:
            failed.append(str(exc))
    failures.put(failed)


def test_runs_staging_reports_in_one_new_folder_do_not_fail_each_other(tmp_path: Path) -> None:
    """One run's probe removing the folder it created must not fail another run staging in it."""
    context = multiprocessing.get_context("fork")  # the stagers need the standard library only
    barrier = context.Barrier(STAGERS)
    failures: Queue[list[str]] = context.Queue()
    processes = [
        context.Process(target=_stage_in_new_folders, args=(tmp_path, me, barrier, failures))
        for me in range(STAGERS)
    ]
    for process in processes:
        process.start()
    failed = [line for _ in processes for line in failures.get(timeout=120)]
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0] * STAGERS
    assert failed == []
    written = {path.name for path in tmp_path.glob("*/out/*.json")}
    assert written == {f"r{me}.json" for me in range(STAGERS)}
    assert len(list(tmp_path.glob("*/out/*.json"))) == STAGERS * ROUNDS


def test_concurrent_compares_of_one_database_each_record_one_comparison(
    zygote: Zygote, backend: Backend, checkpoints: Path, tmp_path: Path
) -> None:
    url = backend.new_url()
    ids = register_both(zygote, url, tmp_path, checkpoints)
    jobs = [Job(compare_argv(url, *ids, out=f"out/r{i}"), tmp_path) for i in range(COMPARERS)]
    outcomes = zygote.run_all(jobs)
    assert [o.code for o in outcomes] == [0] * COMPARERS, [o.log() for o in outcomes]
    state = read_db(url)
    check_db(state)
    cited = [Report.model_validate_json(o.out).comparison_id for o in outcomes]
    assert sorted(cited) == sorted(state.comparisons) and len(set(cited)) == COMPARERS
    for index, comparison_id in enumerate(cited):
        out = tmp_path / "out"
        written = read_files(out / f"r{index}.json", out / f"r{index}.md")
        check_files(Files(None, None, []), written, {comparison_id})
        assert written.staged == []
