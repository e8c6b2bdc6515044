"""Pytest plugin: a throwaway PostgreSQL server for the tests, and per-test database URLs.

Fixtures:
- `postgres_server` (session): starts `initdb` + `pg_ctl` in a temp dir on a free port of
  127.0.0.1; stopped (`pg_ctl stop -m fast`) and deleted at session end, even on failure;
- `postgres_url` (session): `postgresql+psycopg://postgres@127.0.0.1:PORT/postgres`;
- `fresh_postgres_url` (function): a new, uniquely named database, dropped after the test;
- `db_url` (function, parametrized `sqlite` / `postgresql`): a fresh database of each backend.

The server starts only when a test asks for it, so SQLite-only runs never need PostgreSQL.
Imports pytest, psycopg and the standard library only (nothing from regress_action).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

PG_USER = "postgres"  # the OS user that owns the data dir, and the superuser role initdb creates


@dataclass(frozen=True)
class PostgresServer:
    port: int
    data_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname={database}"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _find_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    # Debian/Ubuntu keep the server binaries off PATH, one folder per major version.
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    pytest.fail(
        f"PostgreSQL's {name!r} was not found on PATH nor in /usr/lib/postgresql/*/bin; "
        "install the server with `apt-get install -y postgresql`",
        pytrace=False,
    )


def _as_postgres() -> list[str]:
    # initdb and the server refuse to run as root: drop to the `postgres` OS user.
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", PG_USER, "--"]
    return ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", "--"]


def _run(args: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        pytest.fail(
            f"{what} failed (exit {done.returncode}): {done.stderr.strip()}\n{tail}", pytrace=False
        )


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user=PG_USER, group=PG_USER)


def _start(pg_ctl: str, root: Path, data_dir: Path) -> int:
    """Start the server on a free port; retry when another process grabbed the port first."""
    sock_dir, log = root / "sock", root / "server.log"
    for _attempt in range(3):
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {sock_dir} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        args = [*_as_postgres(), pg_ctl, "-w", "-t", "60", "-D", str(data_dir)]
        done = subprocess.run(
            [*args, "-l", str(log), "-o", options, "start"],
            capture_output=True,
            text=True,
            check=False,
            timeout=90,
        )
        if done.returncode == 0:
            return port
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    pytest.fail(f"pg_ctl start failed: {done.stderr.strip()}\n{tail}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    initdb, pg_ctl = _find_binary("initdb"), _find_binary("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="regress-pg-"))
    data_dir = root / "data"
    started = False
    try:
        (root / "sock").mkdir()
        for path in (root, root / "sock"):
            _chown_to_postgres(path)
        # --no-sync: a throwaway cluster need not survive a power cut, and fsync is slow.
        init = [initdb, "--auth=trust", "-U", PG_USER, "-E", "UTF8", "--locale=C", "--no-sync"]
        _run([*_as_postgres(), *init, "-D", str(data_dir)], "initdb")
        port = _start(pg_ctl, root, data_dir)
        started = True
        yield PostgresServer(port=port, data_dir=data_dir)
    finally:
        if started:
            subprocess.run(
                [*_as_postgres(), pg_ctl, "stop", "-m", "fast", "-w", "-D", str(data_dir)],
                capture_output=True,
                check=False,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.url()


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
            # FORCE (PostgreSQL 13+) ends connections a failed test may have left open.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'regress.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url
