"""requirements.lock: every package the action's image installs, pinned with its hashes.

    python scripts/lock.py            # (make lock) resolve again with pip-compile, keeping the pins
    python scripts/lock.py --check    # (make lint, tests) the lock matches what it was made from

The image installs it with `pip install --require-hashes --no-deps`, so two builds of one commit
get the same packages, byte for byte, whatever PyPI has published since. It holds the package's
dependencies with the `hf` and `arrow` extras, the build backend (`pip install .` runs without
build isolation) and the CPU build of the torch that requirements-torch.txt pins, for CPython 3.11
on Linux x86_64 (the image's platform).

pip-compile keeps the pins a lock already has; `make lock` changes only what the inputs force.
The lock's second line records a fingerprint of those inputs (the requirements in
pyproject.toml, requirements-torch.txt): `--check` fails, offline, when they changed since the
lock was made, or when a pin no longer satisfies a requirement.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = "requirements.lock"
TORCH = "requirements-torch.txt"
EXTRAS = ("hf", "arrow")
FINGERPRINT = re.compile(r"^# inputs: sha256:([0-9a-f]{64})$", re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


def inputs(root: Path) -> dict[str, list[str]]:
    """What the lock is made from: the requirements pip-compile reads."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    torch = [
        line.strip()
        for line in (root / TORCH).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return {
        "dependencies": list(project["dependencies"]),
        **{f"extra {name}": list(project["optional-dependencies"][name]) for name in EXTRAS},
        "build-system": list(pyproject["build-system"]["requires"]),
        "torch": torch,
    }


def fingerprint(root: Path) -> str:
    text = json.dumps(inputs(root), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make(root: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "piptools",
        "compile",
        "--quiet",
        "--generate-hashes",
        "--allow-unsafe",  # setuptools: the image builds the package without build isolation
        "--strip-extras",
        *[arg for name in EXTRAS for arg in ("--extra", name)],
        "--build-deps-for",
        "wheel",
        "--no-emit-find-links",
        "--no-emit-index-url",
        "--constraint",
        TORCH,
        "--output-file",
        LOCK,
        "pyproject.toml",
    ]
    env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}
    subprocess.run(command, cwd=root, env=env, check=True)
    lock = root / LOCK
    text = lock.read_text(encoding="utf-8")
    text = FINGERPRINT.sub("", text).lstrip("\n")
    lock.write_text(f"# inputs: sha256:{fingerprint(root)}\n{text}", encoding="utf-8")


def problems(root: Path) -> list[str]:
    """Why the lock does not match its inputs; empty when it does."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    path = root / LOCK
    if not path.is_file():
        return [f"{LOCK} is missing: run `make lock`"]
    text = path.read_text(encoding="utf-8")
    found = FINGERPRINT.search(text)
    if found is None or found[1] != fingerprint(root):
        return [
            f"{LOCK} was made from other requirements than pyproject.toml and {TORCH} "
            "now hold: run `make lock` and commit it"
        ]
    pins = {canonicalize_name(name): Version(version) for name, version in PIN.findall(text)}
    out = []
    for group, requirements in inputs(root).items():
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(
                {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}
            ):
                continue
            pinned = pins.get(canonicalize_name(requirement.name))
            if pinned is None:
                out.append(f"{LOCK} does not pin {requirement.name} ({group}): run `make lock`")
            elif not requirement.specifier.contains(pinned, prereleases=True):
                out.append(
                    f"{LOCK} pins {requirement.name}=={pinned}, outside {requirement} "
                    f"({group}): run `make lock`"
                )
    hashless = [
        block.split("==")[0]
        for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1])
        if PIN.match(block) and "--hash=sha256:" not in block
    ]
    out += [f"{LOCK} pins {name} without a hash: run `make lock`" for name in hashless]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the lock; change nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.check:
        make(args.root)
    found = problems(args.root)
    for line in found:
        print(f"lock: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
