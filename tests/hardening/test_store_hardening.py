"""The ExperimentDB under races, upgrades and hostile URLs: one run per registered checkpoint
however many processes add it at once (SQLite and PostgreSQL), schema version 5 upgraded in
place over a database that already holds duplicates, and database passwords never printed,
whatever the URL's shape."""

from __future__ import annotations

import multiprocessing
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import func, select

from regress_action.report import Report
from regress_action.spec import ModelSource, RunCreate, TaskSpec
from regress_action.store import ExperimentDB
from regress_action.store_schema import SCHEMA_VERSION, runs, schema_version
from tests.cli_runner import run_cli
from tests.report_factory import make_report

LM_TASK = TaskSpec(modality="text", task="lm", vocab_size=256)
ADDERS = 8


def make_run(
    name: str = "same", checkpoint: str = "ckpt/model.safetensors", **kw: object
) -> RunCreate:
    source = ModelSource(
        checkpoint=checkpoint,
        format="safetensors",
        sha256="cd" * 32,
        factory="regress_action.zoo:tiny_lm",
        factory_kwargs=kw,
    )
    return RunCreate(name=name, task=LM_TASK, source=source, git_sha="c0ffee")


def count_runs(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(runs)).scalar_one())
    finally:
        engine.dispose()


# --- concurrent adds of one checkpoint --------------------------------------------------------


def _add_same_run(url: str, barrier: Barrier, ids: Queue[int]) -> None:
    with ExperimentDB(url) as db:
        barrier.wait(timeout=60)  # every process adds the same run at the same moment
        ids.put(db.add_run(make_run()).id)


@pytest.mark.parametrize("trial", range(2), ids=["trial-1", "trial-2"])
def test_concurrent_adds_of_one_checkpoint_make_one_run(db_url: str, trial: int) -> None:
    ExperimentDB(db_url).close()  # the schema exists: the race is on the run, not on creation
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(ADDERS)
    ids: Queue[int] = context.Queue()
    processes = [
        context.Process(target=_add_same_run, args=(db_url, barrier, ids)) for _ in range(ADDERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * ADDERS
    returned = {ids.get(timeout=5) for _ in range(ADDERS)}
    with ExperimentDB(db_url) as db:
        stored = [run.id for run in db.list_runs()]
    assert len(stored) == 1
    assert returned == set(stored)


@pytest.mark.parametrize(
    ("second", "same"),
    [
        (make_run(), True),
        (make_run(checkpoint="ckpt/./sub/../model.safetensors"), True),  # same real path
        (make_run().model_copy(update={"git_sha": "other"}), True),  # git sha is not identity
        (make_run(name="other"), False),
        (make_run(checkpoint="ckpt/other.safetensors"), False),
        (make_run(dim=32), False),
    ],
    ids=[
        "identical",
        "path-spelled-otherwise",
        "other-git-sha",
        "other-name",
        "other-file",
        "other-factory-kwargs",
    ],
)
def test_add_run_is_insert_or_get(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second: RunCreate, same: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt" / "sub").mkdir(parents=True)
    with ExperimentDB(db_url) as db:
        first = db.add_run(make_run())
        again = db.add_run(second)
        assert (again.id == first.id) is same
        assert len(db.list_runs()) == (1 if same else 2)
        if same:
            assert again == first  # the stored run, as registered first


# --- upgrade to version 5 over existing duplicates ---------------------------------------------


def _downgrade_to_4(url: str) -> None:
    """A version-4 database: the same tables without the run identity and provisional columns
    (nor the slices' table of version 6)."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE comparison_slice_metrics")
            conn.exec_driver_sql("DROP INDEX ux_runs_identity")
            conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN identity")
            conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN provisional")
            conn.exec_driver_sql("UPDATE schema_version SET version = 4")
    finally:
        engine.dispose()


def _insert_raw_runs(url: str, rows: list[RunCreate]) -> None:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            for run in rows:
                conn.execute(
                    runs.insert().values(
                        name=run.name,
                        created_at=sqlalchemy.func.now(),
                        task=run.task.model_dump_json(),
                        checkpoint=run.source.checkpoint,
                        format=run.source.format,
                        sha256=run.source.sha256,
                        factory=run.source.factory,
                        factory_kwargs="{}",
                        git_sha=run.git_sha,
                    )
                )
    finally:
        engine.dispose()


def test_version_4_with_duplicates_is_upgraded_keeping_every_run(db_url: str) -> None:
    ExperimentDB(db_url).close()
    _downgrade_to_4(db_url)
    _insert_raw_runs(db_url, [make_run(), make_run(), make_run(name="lone"), make_run()])
    with ExperimentDB(db_url) as db:
        assert [run.id for run in db.list_runs()] == [1, 2, 3, 4]  # nothing merged or lost
        assert db.add_run(make_run()).id == 1  # the oldest of the duplicates is the run
        assert db.add_run(make_run(name="lone")).id == 3
        assert len(db.list_runs()) == 4
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(schema_version.c.version)).scalars().all() == [
                SCHEMA_VERSION
            ]
            keys = dict(conn.execute(select(runs.c.id, runs.c.identity)).all())
    finally:
        engine.dispose()
    assert keys[1] and keys[3] and keys[2] is None and keys[4] is None


# --- passwords in database URLs -----------------------------------------------------------------

# Each password holds characters that break a naive URL parse; none of its pieces may be printed.
SECRET_URLS = [
    ("postgresql://ci:QZ@XK7@127.0.0.1:1/db", "QZ@XK7"),
    ("postgresql://ci:QZ:XK7@127.0.0.1:1/db", "QZ:XK7"),
    ("postgresql://ci:QZ/XK7@127.0.0.1:1/db", "QZ/XK7"),
    ("postgresql://ci:QZ%XK7@127.0.0.1:1/db", "QZ%XK7"),
    ("postgresql://ci:QZ@X/K7@127.0.0.1:1/db", "QZ@X/K7"),
    ("postgres://ci:QZ@XK7@127.0.0.1:notaport/db", "QZ@XK7"),
    ("postgresql://ci:QZXK7@127.0.0.1:notaport/db", "QZXK7"),
    ("postgresql://ci:QZXK7@[::1:1/db", "QZXK7"),
]
SECRET_IDS = [
    "unencoded-at", "colon", "slash", "percent", "at-and-slash", "at-and-bad-port",
    "bad-port", "bad-ipv6-host",
]  # fmt: skip


def pieces(password: str) -> list[str]:
    """The fragments of `password` a broken parse could print (split at URL delimiters)."""
    found = {password}
    for sep in "@:/%":
        found.update(part for part in password.split(sep) if len(part) >= 2)
    return sorted(found)


@pytest.mark.parametrize(("url", "password"), SECRET_URLS, ids=SECRET_IDS)
def test_a_bad_or_unreachable_url_never_prints_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, password: str
) -> None:
    code, out, err = run_cli(["runs", "list", "--db", url], tmp_path, monkeypatch)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "--db" in lines[0]
    for piece in pieces(password):
        assert piece not in out + err
    assert list(tmp_path.iterdir()) == []  # no database file, nothing half-written


# --- provisional runs (the Action's step) -------------------------------------------------------


class StepFailed(Exception):
    pass


def _report_between(first: int, second: int) -> Report:
    report = make_report("lm")
    report.baseline.run_id, report.candidate.run_id = first, second
    return report


def test_a_failed_block_removes_only_the_runs_it_created(db_url: str) -> None:
    with ExperimentDB(db_url) as db, ExperimentDB(db_url) as other:
        kept = db.add_run(make_run("registered-before"))
        with pytest.raises(StepFailed), db.provisional_runs():
            assert db.add_run(make_run("registered-before")).id == kept.id
            db.add_run(make_run("created-here"))
            shared = db.add_run(make_run("also-used-by-another-step"))
            assert other.add_run(make_run("also-used-by-another-step")).id == shared.id
            compared = db.add_run(make_run("compared"))
            db.create_comparison(_report_between(compared.id, compared.id))
            raise StepFailed
        names = [run.name for run in db.list_runs()]
        assert names == ["registered-before", "also-used-by-another-step", "compared"]
        # What is left is permanent: a later failed step does not remove it either.
        with pytest.raises(StepFailed), db.provisional_runs():
            db.add_run(make_run("compared"))
            raise StepFailed
        assert len(db.list_runs()) == 3


def test_a_finished_block_keeps_its_runs(db_url: str) -> None:
    with ExperimentDB(db_url) as db:
        with db.provisional_runs():
            run = db.add_run(make_run())
        with pytest.raises(StepFailed), db.provisional_runs():
            assert db.add_run(make_run()).id == run.id
            raise StepFailed
        assert [r.id for r in db.list_runs()] == [run.id]
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(runs.c.provisional)).scalars().all() == [None]
    finally:
        engine.dispose()
