"""Writing report files so that a failure never leaves a truncated or half-set result, and no
link ever decides where a file is created.

Standard library only. A `StagedFile` reserves a temporary file beside its target up front (so
an unwritable path fails before anything is recorded), is filled later, and replaces the
target atomically; `discard` removes it when the run fails in between.

Where a file goes: the folders on the way are resolved once (a folder link is the user's own
layout; the Action confines them to the workspace first, `confine`), the real folder is held
open, and the temporary file is created in it exclusively, without following a link
(`O_CREAT | O_EXCL | O_NOFOLLOW`), then renamed over the target name in that same folder: a link
planted at the target meanwhile is replaced, never followed. A target that is itself a symlink
is updated in place (the file it points to gets the new content, the link stays) only when it
leads to an existing regular file in the link's own folder or below; anything else is refused.

A run killed while its files are staged leaves `.NAME.HEX.tmp` beside each target. The staging
process holds its file locked (`flock`) while it lives; the next staging of the same target
removes such files that nobody holds and that are older than this process.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from pathlib import Path

from .errors import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so stale files are left alone
    fcntl = None  # type: ignore[assignment]

_STARTED = time.time()
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FOLDER_ATTEMPTS = 20  # a folder removed under a staging run by another run's probe is made again


def _tmp_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(6)}.tmp"


def _is_tmp_of(entry: str, name: str) -> bool:
    return re.fullmatch(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.tmp", entry) is not None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _target(path: Path, what: str) -> tuple[Path, str]:
    """The real folder and the name to write: a directory, device or pipe is refused rather
    than replaced, and a symlink only leads to an existing file at or below its own folder."""
    if path.name in {"", ".", ".."}:
        raise ConfigError(f"{what} {str(path)!r} is a folder; pass a file path")
    folder = Path(os.path.realpath(path.parent))
    name = path.name
    try:
        mode = os.lstat(folder / name).st_mode
    except FileNotFoundError:
        return folder, name
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r}: {exc.strerror}; choose another path") from None
    if stat.S_ISLNK(mode):
        real = Path(os.path.realpath(folder / name))
        if not real.exists():
            raise ConfigError(
                f"{what} {str(path)!r} is a symlink to a missing file; remove the link or "
                "choose another path (a new file is never created through a link)"
            )
        if not _inside(real, folder) or not real.is_file():
            raise ConfigError(
                f"{what} {str(path)!r} is a symlink leading outside its folder ({str(real)!r}); "
                "remove the link or choose another path"
            )
        return real.parent, real.name
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"{what} {str(path)!r} is {kind}; pass a file path")
    return folder, name


def _remove_stale(dir_fd: int, name: str) -> None:
    """Remove our temporary files of `name` left by a killed run: unlocked and older than us."""
    if fcntl is None:
        return
    for entry in os.listdir(dir_fd):
        if not _is_tmp_of(entry, name):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError:  # a link, or gone already
            continue
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_mtime >= _STARTED:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: a live run is staging it
                continue
            if os.stat(entry, dir_fd=dir_fd, follow_symlinks=False).st_ino == status.st_ino:
                os.unlink(entry, dir_fd=dir_fd)
        except OSError:
            continue
        finally:
            os.close(fd)


class StagedFile:
    """A file to be written later, atomically; its temporary twin exists from construction."""

    def __init__(self, path: Path, what: str = "output") -> None:
        folder, name = _target(Path(path), what)
        self.path = folder / name
        for attempt in range(_FOLDER_ATTEMPTS):
            dir_fd = None
            try:
                folder.mkdir(parents=True, exist_ok=True)
                dir_fd = os.open(folder, _DIR_FLAGS)
                _remove_stale(dir_fd, name)
                tmp, fd = self._create(dir_fd, name)
                break
            except OSError as exc:
                if dir_fd is not None:
                    os.close(dir_fd)
                # A concurrent run's `check_writable` removes the empty folders its probe
                # created: one may vanish between our mkdir and our file. Make it again.
                vanished = isinstance(exc, (FileNotFoundError, FileExistsError))
                if vanished and attempt + 1 < _FOLDER_ATTEMPTS:
                    continue
                raise ConfigError(
                    f"cannot write {what} {str(path)!r}: {exc.strerror or exc}; "
                    "choose a writable path"
                ) from None
        self._dir_fd: int | None = dir_fd
        self._fd: int | None = fd
        self._name = name
        self._tmp = tmp

    @staticmethod
    def _create(dir_fd: int, name: str) -> tuple[str, int]:
        for _ in range(100):
            tmp = _tmp_name(name)
            try:
                # 0o666 less the umask: readable like any file the user writes (the action runs
                # as root, the next workflow step as the runner's user).
                fd = os.open(tmp, _CREATE_FLAGS, 0o666, dir_fd=dir_fd)
            except FileExistsError:
                continue
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours: not stale while we live
            return tmp, fd
        raise FileExistsError(f"no free temporary name for {name!r}")

    def commit(self, content: str | bytes) -> Path:
        """Write `content` (text as UTF-8) and atomically replace the target with it."""
        assert self._fd is not None and self._dir_fd is not None, "a staged file is committed once"
        fd, self._fd = self._fd, None
        dir_fd, self._dir_fd = self._dir_fd, None
        data = content.encode("utf-8") if isinstance(content, str) else content
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(self._tmp, self._name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            with contextlib.suppress(OSError):
                os.fsync(dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp, dir_fd=dir_fd)
            raise
        finally:
            os.close(dir_fd)
        return self.path

    def discard(self) -> None:
        if self._fd is not None and self._dir_fd is not None:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(OSError):
                os.unlink(self._tmp, dir_fd=self._dir_fd)
            os.close(self._dir_fd)
            self._dir_fd = None


def check_writable(path: Path | None, what: str) -> None:
    """Fail now (before a slow evaluation) when `path` could not be written later. Tries for
    real (permission bits say little to root: /proc looks writable) and leaves nothing: the
    probe file and any folder it had to create are removed again."""
    if path is None:
        return
    folder, _ = _target(Path(path), what)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        StagedFile(Path(path), what).discard()
    finally:
        for created in missing:  # deepest first
            with contextlib.suppress(OSError):
                created.rmdir()


def outside(path: Path | str, roots: tuple[Path, ...]) -> Path | None:
    """Where `path` really leads (relative to the current folder, every link resolved) when
    that is in none of the (already resolved) `roots`; None when it stays inside one."""
    real = Path(os.path.realpath(path))
    return None if any(_inside(real, root) for root in roots) else real


def check_distinct(paths: dict[str, Path | None], reserved: dict[str, Path]) -> None:
    """Output files must differ from each other and from files the run keeps open (the
    ExperimentDB): replacing the database with a report would lose every recorded run."""
    seen: dict[Path, str] = {Path(os.path.realpath(p)): what for what, p in reserved.items()}
    for what, path in paths.items():
        if path is None:
            continue
        resolved = Path(os.path.realpath(path))
        if resolved in seen:
            raise ConfigError(
                f"{what} {str(path)!r} is also the {seen[resolved]}; choose another path"
            )
        seen[resolved] = what
