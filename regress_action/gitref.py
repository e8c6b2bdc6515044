"""A checkpoint read from a commit of the workspace's git repository, not from its working tree.

A pull request controls its checkout: a baseline file read from there is whatever the PR put
there. `baseline-checkpoint-ref` (default: the PR's base commit) names the commit the baseline's
bytes are read from instead, with `git -C GITHUB_WORKSPACE` (`ls-tree` and `cat-file`); they are
written to a folder of their own under RUNNER_TEMP (files created exclusively, never through a
link) and registered from there. A file or a folder (a Hugging Face model) is read; a link or a
submodule in the tree at that commit is refused. Imports nothing from the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import ConfigError

# The value that reads the checkpoint from the working tree, as before this input existed.
WORKTREE = "worktree"
INPUT = "input baseline-checkpoint-ref"

_SHA = re.compile(r"[0-9a-fA-F]{7,40}")
# What git's check-ref-format refuses anywhere in a ref name.
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_FETCH = (
    "check out the full history (actions/checkout with fetch-depth: 0) or fetch that commit "
    "(git fetch --depth=1 origin <sha>) before this step"
)


@dataclass(frozen=True)
class AtRef:
    """A checkpoint as it was at a commit: `path` is the private copy to register."""

    ref: str  # as given
    sha: str  # the commit it names
    path: Path


def check_ref(value: str) -> str:
    """`value` if it is a 7–40 digit sha or a ref name git's check-ref-format accepts (never an
    option: no leading `-`); else a ConfigError naming the input."""
    if _SHA.fullmatch(value) or _valid_ref_name(value):
        return value
    raise ConfigError(
        f"{INPUT}: {value!r} is not a commit sha (7 to 40 hex digits) or a ref name; use the "
        f"base commit's sha (the default on pull requests), a branch or tag name, or "
        f"{WORKTREE!r} to read the checkout's file"
    )


def _valid_ref_name(name: str) -> bool:
    if not name or name.startswith(("-", "/")) or name.endswith(("/", ".", ".lock")):
        return False
    if _BAD_REF_CHARS.search(name) or ".." in name or "@{" in name or "//" in name:
        return False
    if name == "@" or len(name) > 255:
        return False
    return all(part and not part.startswith(".") for part in name.split("/"))


def baseline_ref(given: str | None, base_sha: str | None) -> str | None:
    """The ref the baseline checkpoint is read from: the input, else the event's base commit;
    None for `worktree` (the checkout's file) or when there is neither."""
    if given is not None and given.strip().lower() == WORKTREE:
        return None
    value = given or base_sha
    return None if value is None else check_ref(value)


def read_at_ref(workspace: Path, checkpoint: str, ref: str, dest_root: Path | None) -> AtRef:
    """Copy `checkpoint` (a file or a folder, relative to `workspace`) as it is at `ref` into a
    new private folder under `dest_root` (a fresh temporary folder when None)."""
    root = Path(os.path.realpath(workspace))
    rel = _relative(root, checkpoint)
    sha = _commit(root, ref)
    entries = _tree(root, sha, rel, recursive=False)
    if not entries:
        raise ConfigError(
            f"input baseline-checkpoint: {checkpoint!r} is not in commit {sha[:7]} "
            f"({INPUT} {ref!r}); check the path, or set {INPUT} to a commit that has it"
        )
    ((mode, kind, _, _),) = entries
    folder = _private_folder(dest_root, sha)
    target = folder.joinpath(*PurePosixPath(rel).parts)
    if kind == "tree":
        blobs = _tree(root, sha, rel, recursive=True)
        if not blobs:
            raise ConfigError(f"input baseline-checkpoint: folder {checkpoint!r} is empty at {ref}")
    else:
        blobs = [(mode, kind, entries[0][2], rel)]
    for mode, kind, obj, path in blobs:
        if mode == "120000" or kind != "blob":
            what = "a symbolic link" if mode == "120000" else f"a {kind}"
            raise ConfigError(
                f"input baseline-checkpoint: {path!r} is {what} in commit {sha[:7]}; the "
                "baseline is read from regular files only"
            )
        _write(root, folder, path, obj, sha)
    return AtRef(ref, sha, target)


def _relative(root: Path, checkpoint: str) -> str:
    full = os.path.normpath(os.path.join(root, checkpoint))
    rel = os.path.relpath(full, root)
    if rel == "." or rel.startswith(".."):
        raise ConfigError(
            f"input baseline-checkpoint: {checkpoint!r} is not a path inside the workspace "
            f"({root}); use a path relative to the repository root"
        )
    return PurePosixPath(Path(rel)).as_posix()


def _commit(root: Path, ref: str) -> str:
    try:
        spec = f"{ref}^{{commit}}"
        out = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", spec)
    except ConfigError:
        out = b""
    sha = out.decode("ascii", "replace").strip()
    if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        return sha
    raise ConfigError(
        f"{INPUT}: commit {ref!r} is not in the checkout at {root}; {_FETCH} (or set {INPUT}: "
        f"{WORKTREE} to read the checkout's file)"
    )


def _tree(root: Path, sha: str, rel: str, recursive: bool) -> list[tuple[str, str, str, str]]:
    args = ["ls-tree", "-z", *(["-r"] if recursive else []), sha, "--", rel]
    entries = []
    for record in _git(root, *args).split(b"\0"):
        if not record:
            continue
        meta, _, name = record.partition(b"\t")
        mode, kind, obj = meta.decode("ascii").split()
        entries.append((mode, kind, obj, name.decode("utf-8", "surrogateescape")))
    if not recursive:  # a folder's path names the folder itself, not its contents
        entries = [entry for entry in entries if entry[3] == rel]
    return entries


def _git(root: Path, *args: str, stdout: BinaryIO | None = None) -> bytes:
    # The container's user does not own the runner's checkout: git would refuse the folder
    # as of dubious ownership. Only objects are read here, never the working tree.
    command = ["git", "-c", f"safe.directory={root}", "-c", "core.fsmonitor=false"]
    try:
        proc = subprocess.run(
            [*command, "-C", str(root), *args],
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"},
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(
            f"{INPUT}: git is not installed, so the baseline cannot be read from a commit; "
            f"install git, or set {INPUT}: {WORKTREE} to read the checkout's file"
        ) from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ConfigError(
            f"{INPUT}: git {args[0]} failed in {root} ({detail[-1] if detail else proc.returncode}"
            f"); the workspace must be a git checkout: {_FETCH}"
        )
    return proc.stdout or b""


def _private_folder(dest_root: Path | None, sha: str) -> Path:
    """A new folder only this process can read: `regress-action-baseline-SHA` under
    `dest_root` (the same path for the same commit, so registering it again finds the run),
    else a random one when that name is taken."""
    if dest_root is None:
        return Path(tempfile.mkdtemp(prefix="regress-action-baseline-"))
    folder = Path(dest_root) / f"regress-action-baseline-{sha[:12]}"
    try:
        os.mkdir(folder, 0o700)  # fails on anything already there, a link included
    except FileExistsError:
        return Path(tempfile.mkdtemp(prefix="regress-action-baseline-", dir=dest_root))
    return folder


def _write(root: Path, folder: Path, rel: str, obj: str, sha: str) -> None:
    """Blob `obj` into `folder/rel`, streamed (checkpoints are large); a Git LFS pointer is
    replaced by the object it names, from the checkout's LFS store, its sha256 checked."""
    parts = PurePosixPath(rel).parts
    if any(part in {"", ".", ".."} for part in parts):
        raise ConfigError(f"input baseline-checkpoint: {rel!r} is not a plain path in the tree")
    parent = folder
    for part in parts[:-1]:
        parent = parent / part
        # Made by an earlier file of this folder, if there: this process made every entry.
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, 0o700)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(parent / parts[-1], flags, 0o600)
    with os.fdopen(fd, "w+b") as file:
        _git(root, "cat-file", "blob", obj, stdout=file)
        file.seek(0)
        head = file.read(_LFS_MAX_POINTER + 1)
        pointer = _lfs_pointer(head)
        if pointer is not None:
            file.seek(0)
            file.truncate()
            _copy_lfs_object(root, rel, sha, pointer, file)


_LFS_MAX_POINTER = 1024
_LFS_POINTER = re.compile(
    rb"version https://git-lfs\.github\.com/spec/v1\n(?:[a-z0-9.-]+ [^\n]*\n)*?"
    rb"oid sha256:(?P<oid>[0-9a-f]{64})\n(?:[a-z0-9.-]+ [^\n]*\n)*?size (?P<size>\d+)\n"
)


def _lfs_pointer(head: bytes) -> tuple[str, int] | None:
    """The (sha256, size) a Git LFS pointer file names; None for any other content."""
    if len(head) > _LFS_MAX_POINTER:
        return None
    match = _LFS_POINTER.fullmatch(head)
    return None if match is None else (match["oid"].decode(), int(match["size"]))


def _copy_lfs_object(
    root: Path, rel: str, sha: str, pointer: tuple[str, int], out: BinaryIO
) -> None:
    oid, size = pointer
    git_dir = Path(_git(root, "rev-parse", "--git-common-dir").decode().strip())
    store = (root / git_dir if not git_dir.is_absolute() else git_dir) / "lfs" / "objects"
    digest = hashlib.sha256()
    try:
        with open(store / oid[:2] / oid[2:4] / oid, "rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError:
        raise ConfigError(
            f"input baseline-checkpoint: {rel!r} is a Git LFS file in commit {sha[:7]} and its "
            f"object is not in the checkout; fetch it before this step (git lfs fetch origin "
            f"{sha}), or set {INPUT}: {WORKTREE}"
        ) from None
    if digest.hexdigest() != oid or out.tell() != size:
        raise ConfigError(
            f"input baseline-checkpoint: the Git LFS object of {rel!r} in commit {sha[:7]} does "
            f"not match its pointer (sha256 {oid[:12]}); fetch it again (git lfs fetch origin "
            f"{sha})"
        )
