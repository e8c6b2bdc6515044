"""Release regress-action: a tag whose action.yml runs the prebuilt image on GHCR, while the
default branch keeps building the action from the Dockerfile.

    python3 scripts/release.py prepare 1.2.0 --image ghcr.io/OWNER/regress-action
        (make release VERSION=1.2.0 IMAGE=ghcr.io/OWNER/regress-action) in a clean checkout:
        commit "Release 1.2.0" (pyproject's version 1.2.0, action.yml's runs.image
        docker://ghcr.io/owner/regress-action:1.2.0), tag it v1.2.0, then commit action.yml
        back to `image: Dockerfile`. Nothing is pushed: it prints the `git push` to run.
    python3 scripts/release.py check v1.2.0 --image ghcr.io/OWNER/regress-action
        (the release workflow, on the tag): pyproject's version and action.yml's image are the
        tag's; prints the image reference the workflow builds and pushes.
    python3 scripts/release.py moving-tags v1.2.0
        (the release workflow): of 1.2 and 1, those that v1.2.0 is the newest release of, a
        line each: the image tags and the v1 git tag that move to it.

Bad input is one line on stderr naming the input and the fix, exit 2. Standard library only:
the release workflow runs it with the runner's python3, before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

VERSION = re.compile(r"\d+\.\d+\.\d+")
TAG = re.compile(r"v(\d+\.\d+\.\d+)")
# registry/owner/name[/more], without a tag or a digest: the registry is a host name (a dot or
# localhost, an optional port), every path component lowercase-able name characters.
IMAGE = re.compile(
    r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|localhost)(?::\d+)?"
    r"(?:/[A-Za-z0-9]+(?:[._-]+[A-Za-z0-9]+)*){2,}"
)
# action.yml's runs.image line as the default branch has it.
DOCKERFILE_LINE = re.compile(r"^(?P<indent>[ \t]+)image:[ \t]*[\"']?Dockerfile[\"']?[ \t]*$", re.M)
# pyproject.toml's table headers and the version key.
TABLE = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(?:#.*)?$")
VERSION_LINE = re.compile(r"^(?P<key>\s*version\s*=\s*)(?P<quote>[\"'])[^\"']*(?P=quote)")


class ReleaseError(Exception):
    """Bad input: one line naming the input and the fix (exit 2)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="release.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare_parser = commands.add_parser("prepare", help="commit and tag release X.Y.Z")
    prepare_parser.add_argument("version", help="X.Y.Z, greater than pyproject's version")
    prepare_parser.add_argument("--image", required=True, help="ghcr.io/OWNER/NAME, no tag")
    check_parser = commands.add_parser("check", help="verify the checkout is release vX.Y.Z")
    check_parser.add_argument("tag", help="vX.Y.Z, e.g. $GITHUB_REF_NAME")
    check_parser.add_argument("--image", required=True, help="ghcr.io/OWNER/NAME, no tag")
    moving_parser = commands.add_parser(
        "moving-tags", help="the X.Y and X names release vX.Y.Z is the newest of, a line each"
    )
    moving_parser.add_argument("tag", help="vX.Y.Z, e.g. $GITHUB_REF_NAME")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args.version, args.image)
        elif args.command == "moving-tags":
            tags = git("tag", "--list", "v*", cwd=Path.cwd()).splitlines()
            print("\n".join(moving_tags(args.tag, tags)))
        else:
            print(check(args.tag, args.image))
    except ReleaseError as error:
        print(f"release.py: {error}", file=sys.stderr)
        return 2
    return 0


def image_name(image: str) -> str:
    """The image repository, lowercased (GHCR refuses uppercase names)."""
    if not IMAGE.fullmatch(image):
        raise ReleaseError(
            f"--image {image!r}: give the image as registry/owner/name without a tag or digest, "
            "e.g. ghcr.io/OWNER/regress-action"
        )
    return image.lower()


def prepare(version: str, image: str) -> None:
    if not VERSION.fullmatch(version):
        raise ReleaseError(f"VERSION {version!r}: give X.Y.Z in digits, e.g. 1.2.0")
    image = image_name(image)
    root = Path(git("rev-parse", "--show-toplevel", cwd=Path.cwd(), what="the checkout"))
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=root)
    if dirty:
        first = dirty.splitlines()[0][3:]
        raise ReleaseError(
            f"the checkout {root} has uncommitted changes ({first}, ...): commit them or "
            "release from a clean clone"
        )
    pyproject_path, action_path = root / "pyproject.toml", root / "action.yml"
    pyproject, action = read(pyproject_path), read(action_path)
    current = project_version(pyproject)
    if parse(version) <= parse(current):
        raise ReleaseError(
            f"VERSION {version}: pyproject.toml is at {current} already; give a greater version"
        )
    tag = f"v{version}"
    if git("tag", "--list", tag, cwd=root):
        raise ReleaseError(f"VERSION {version}: tag {tag} exists already; give a greater version")
    lines = DOCKERFILE_LINE.findall(action)
    if len(lines) != 1:
        raise ReleaseError(
            f"{action_path.name}: runs.image is not `image: Dockerfile`; release from a commit "
            "whose action.yml builds the Dockerfile"
        )
    reference = f"{image}:{version}"
    write(pyproject_path, with_version(pyproject, version))
    write(action_path, DOCKERFILE_LINE.sub(rf"\g<indent>image: docker://{reference}", action))
    commit(root, f"Release {version}: the action runs the prebuilt image {reference}")
    git("tag", "--annotate", tag, "--message", f"regress-action {version}", cwd=root)
    write(action_path, action)  # byte for byte what the default branch had
    commit(root, f"Build the action from the Dockerfile again after {version}")
    print(f"Tagged {tag}: its action.yml runs docker://{reference}; HEAD builds the Dockerfile.")
    print("Publish the release (the tag's workflow builds and pushes the image):")
    print(f"    git push origin HEAD {tag}")


def check(tag: str, image: str) -> str:
    found = TAG.fullmatch(tag)
    if found is None:
        raise ReleaseError(f"tag {tag!r}: give the release tag vX.Y.Z, e.g. v1.2.0")
    version, image = found[1], image_name(image)
    reference = f"{image}:{version}"
    root = Path.cwd()
    current = project_version(read(root / "pyproject.toml"))
    if current != version:
        raise ReleaseError(
            f"pyproject.toml: version is {current}, not {version} of tag {tag}; tag the commit "
            f"`make release VERSION={version}` made"
        )
    runs_image = action_image(read(root / "action.yml"))
    if runs_image != f"docker://{reference}":
        raise ReleaseError(
            f"action.yml: runs.image is {runs_image}, not docker://{reference}; tag the commit "
            f"`make release VERSION={version} IMAGE={image}` made"
        )
    return reference


def moving_tags(tag: str, tags: list[str]) -> list[str]:
    """Of X.Y and X, the names release `tag` (vX.Y.Z) is the newest release of among `tags`:
    the ones that move to it. A patch to an older line (1.1.5 after 1.2.0) moves 1.1, not 1."""
    found = TAG.fullmatch(tag)
    if found is None:
        raise ReleaseError(f"tag {tag!r}: give the release tag vX.Y.Z, e.g. v1.2.0")
    version = parse(found[1])
    releases = [parse(m[1]) for m in map(TAG.fullmatch, tags) if m is not None]
    return [
        ".".join(map(str, version[:width]))
        for width in (2, 1)
        if all(other <= version for other in releases if other[:width] == version[:width])
    ]


def project_version(pyproject: str) -> str:
    try:
        version = tomllib.loads(pyproject).get("project", {}).get("version")
    except tomllib.TOMLDecodeError as error:
        raise ReleaseError(f"pyproject.toml: not valid TOML ({error}); fix the file") from None
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise ReleaseError(
            f"pyproject.toml: [project] version {version!r} is not X.Y.Z; set it to one"
        )
    return version


def parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def with_version(pyproject: str, version: str) -> str:
    """pyproject.toml with its [project] table's version line set, nothing else touched."""
    lines = pyproject.splitlines(keepends=True)
    table = None
    for i, line in enumerate(lines):
        header = TABLE.match(line)
        if header is not None:
            table = header["name"]
            continue
        found = VERSION_LINE.match(line) if table == "project" else None
        if found is not None:
            quote = found["quote"]
            lines[i] = f"{found['key']}{quote}{version}{quote}{line[found.end() :]}"
            return "".join(lines)
    raise ReleaseError('pyproject.toml: no `version = "X.Y.Z"` line in [project]; add one')


def action_image(action: str) -> str:
    """action.yml's runs.image, read as text (no YAML parser in the runner's python3)."""
    in_runs = False
    for line in action.splitlines():
        if re.match(r"runs:\s*(?:#.*)?$", line):
            in_runs = True
        elif line.strip() and not line[0].isspace() and not line.startswith("#"):
            in_runs = False
        elif in_runs and (found := re.match(r"\s+image:\s*(.*?)\s*(?:\s#.*)?$", line)):
            return found[1].strip("\"'")
    raise ReleaseError("action.yml: no runs.image; tag the commit `make release` made")


def commit(root: Path, message: str) -> None:
    git("commit", "--quiet", "--message", message, "--", "pyproject.toml", "action.yml", cwd=root)


def git(*args: str, cwd: Path, what: str = "") -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["failed"]
        if what:
            raise ReleaseError(f"{what} {cwd}: not a git checkout ({detail[0]}); run it in one")
        raise ReleaseError(f"git {args[0]} in {cwd}: {detail[0]}; fix the checkout and retry")
    return result.stdout.rstrip()


def read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as error:
        raise ReleaseError(
            f"{path.name}: cannot be read ({error.strerror}); run it in the repository"
        ) from None


def write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))


if __name__ == "__main__":
    sys.exit(main())
