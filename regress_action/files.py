"""Writing report files so that a failure never leaves a truncated or half-set result.

Standard library only. A `StagedFile` reserves a temporary file beside its target up front (so
an unwritable path fails before anything is recorded), is filled later, and replaces the
target atomically; `discard` removes it when the run fails in between.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from .errors import ConfigError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _target(path: Path, what: str) -> Path:
    """The regular file to write: a symlink is followed (its target gets the new content);
    a directory, device or pipe is refused rather than replaced."""
    resolved = Path(os.path.realpath(path))
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        return resolved
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r}: {exc.strerror}; choose another path") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"{what} {str(path)!r} is {kind}; pass a file path")
    return resolved


class StagedFile:
    """A file to be written later, atomically; its temporary twin exists from construction."""

    def __init__(self, path: Path, what: str = "output") -> None:
        self.path = _target(Path(path), what)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot write {what} {str(path)!r}: {exc.strerror or exc}; choose a writable path"
            ) from None
        # mkstemp creates the file 0600; a report must be readable like any other file the
        # user writes (the action runs as root, the next workflow step as the runner's user).
        os.fchmod(fd, 0o666 & ~_umask())
        self._fd: int | None = fd
        self._tmp = Path(tmp)

    def commit(self, text: str) -> Path:
        """Write `text` and atomically replace the target with it."""
        assert self._fd is not None, "a staged file is committed once"
        fd, self._fd = self._fd, None
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return self.path

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._tmp.unlink(missing_ok=True)


def check_writable(path: Path | None, what: str) -> None:
    """Fail now (before a slow evaluation) when `path` could not be written later. Tries for
    real (permission bits say little to root: /proc looks writable) and leaves nothing: the
    probe file and any folder it had to create are removed again."""
    if path is None:
        return
    target = _target(Path(path), what)
    missing = [folder for folder in target.parents if not folder.exists()]
    try:
        StagedFile(target, what).discard()
    finally:
        for folder in missing:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()


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
