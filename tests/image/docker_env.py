"""A Docker engine, a Python 3.11 base image and the action's image, for `make image-test` and
benchmarks/bench_image.py.

- `docker_daemon()`: the running engine, or a `dockerd` started for the session (Debian's
  docker.io package) and stopped afterwards.
- `base_image()`: `REGRESS_IMAGE_BASE` if set; else the Dockerfile's pinned base if it can be
  pulled; else Debian bookworm with python3 made by `debootstrap --variant=minbase` and loaded with
  `docker import` (kept in ~/.cache/regress-action so later runs skip debootstrap).
- `build_context()`: the repository's files plus a pip-build/ folder holding this machine's pip
  settings (the CA bundle, http(s) indexes, the wheels of its find-links folders that the lock
  pins), so the build reaches the package registry the way pip here does.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "regress-action"
DEBOOTSTRAP_TAG = "regress-action-base:bookworm-python3"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def docker(*args: str, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload, no-any-return]


def _engine_answers() -> bool:
    try:
        return docker("info", timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def docker_daemon() -> Iterator[None]:
    """The engine for the block: the running one, or `dockerd` started and stopped here."""
    if _engine_answers():
        yield
        return
    if shutil.which("dockerd") is None:
        raise RuntimeError(
            "no Docker engine runs and dockerd is missing: apt-get install docker.io"
        )
    log = tempfile.NamedTemporaryFile("w", prefix="dockerd-", suffix=".log", delete=False)  # noqa: SIM115
    daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not _engine_answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start; see {log.name}")
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()


def pinned_base() -> str:
    """The Dockerfile's default base image (pinned by digest)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    found = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert found, "the Dockerfile declares ARG BASE_IMAGE=<image>@sha256:<digest>"
    return found[1]


def base_image() -> str:
    """A Python 3.11 base image the engine has (see the module's docstring)."""
    chosen = os.environ.get("REGRESS_IMAGE_BASE")
    if chosen:
        return chosen
    pinned = pinned_base()
    if docker("image", "inspect", pinned).returncode == 0:
        return pinned
    if docker("pull", pinned, timeout=300).returncode == 0:
        return pinned
    if docker("image", "inspect", DEBOOTSTRAP_TAG).returncode == 0:
        return DEBOOTSTRAP_TAG
    tarball = CACHE / "bookworm-python3.tar"
    if not tarball.exists():
        _debootstrap(tarball)
    with tarball.open("rb") as stream:
        done = subprocess.run(
            ["docker", "import", "-", DEBOOTSTRAP_TAG], stdin=stream, capture_output=True
        )
    if done.returncode != 0:
        raise RuntimeError(f"docker import failed: {done.stderr.decode(errors='replace')}")
    return DEBOOTSTRAP_TAG


def _debootstrap(tarball: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("set REGRESS_IMAGE_BASE, or apt-get install debootstrap")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-") as rootfs:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm",
                rootfs,
                DEBIAN_MIRROR,
            ],
            check=True,
            capture_output=True,
            timeout=1800,
        )
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", rootfs, "-cf", str(partial), "."], check=True)
        partial.rename(tarball)


def pip_settings() -> dict[str, list[str]]:
    """This machine's pip settings (`pip config list`, environment included): key → values."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        for item in value.strip().strip("'\"").split():
            if item not in settings.setdefault(name, []):
                settings[name].append(item)
    return settings


def _locked_names() -> set[str]:
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    return {m.lower().replace("_", "-") for m in re.findall(r"^([A-Za-z0-9._-]+)==", text, re.M)}


def build_context(folder: Path) -> bool:
    """The repository's files and pip-build/ in `folder`; whether it carries a torch wheel."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    pip = folder / "pip-build"
    (pip / "wheels").mkdir(parents=True)
    settings = pip_settings()
    lines = ["[global]", "find-links = /build/wheels"]
    if settings.get("cert"):
        shutil.copy(settings["cert"][0], pip / "ca.pem")
        lines.append("cert = /build/ca.pem")
    remote = [url for url in settings.get("extra-index-url", []) if url.startswith("http")]
    if remote:
        lines.append("extra-index-url = " + " ".join(remote))
    for key in ("index-url", "trusted-host"):
        if settings.get(key) and settings[key][0].startswith("http"):
            lines.append(f"{key} = {settings[key][0]}")
    locked, torch = _locked_names(), False
    for links in settings.get("find-links", []):
        for wheel in Path(links).glob("*.whl") if Path(links).is_dir() else []:
            if wheel.name.split("-")[0].lower().replace("_", "-") in locked:
                _link_or_copy(wheel, pip / "wheels" / wheel.name)
                torch = torch or wheel.name.startswith("torch-")
    (pip / "pip.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return torch


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def build_image(tag: str, base: str, *, no_cache: bool = False) -> float:
    """Build the action's image as `tag` on `base`; the seconds the build took."""
    with tempfile.TemporaryDirectory(prefix="regress-image-context-") as folder:
        local_torch = build_context(Path(folder))
        args = ["build", "--build-arg", f"BASE_IMAGE={base}", "-t", tag]
        if local_torch:  # the lock's torch file is here: PyTorch's index need not be reached
            args += ["--build-arg", "TORCH_INDEX_URL="]
        if no_cache:
            args.append("--no-cache")
        started = time.perf_counter()
        done = docker(*args, folder, timeout=1800)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"docker build failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}")
    return seconds
