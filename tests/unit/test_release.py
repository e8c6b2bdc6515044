"""scripts/release.py in real git clones of a small repository holding the project's own
pyproject.toml and action.yml: `prepare` tags a commit whose action.yml runs the prebuilt image
and leaves the branch building the Dockerfile; `check` accepts that tag alone; bad input is
one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "release.py"
IMAGE = "ghcr.io/Acme/Regress-Action"  # lowercased by the script: GHCR refuses uppercase
REFERENCE = "ghcr.io/acme/regress-action"


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


def release(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository with one commit: the project's pyproject.toml and action.yml."""
    work = tmp_path_factory.mktemp("work")
    git(work, "init", "--quiet", "--initial-branch", "main")
    for name in ("pyproject.toml", "action.yml"):
        (work / name).write_bytes((ROOT / name).read_bytes())
    git(work, "add", "pyproject.toml", "action.yml")
    git(work, "-c", "user.name=dev", "-c", "user.email=dev@example.com", "commit", "-qm", "init")
    bare = tmp_path_factory.mktemp("origin") / "repo.git"
    git(work, "clone", "--quiet", "--bare", str(work), str(bare))
    return bare


@pytest.fixture
def clone(origin: Path, tmp_path: Path) -> Path:
    path = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(origin), str(path))
    git(path, "config", "user.name", "Maintainer")
    git(path, "config", "user.email", "maintainer@example.com")
    return path


def show(repo: Path, ref: str, name: str) -> bytes:
    return subprocess.run(
        ["git", "show", f"{ref}:{name}"], cwd=repo, capture_output=True, check=True, timeout=60
    ).stdout


def test_prepare_tags_a_commit_running_the_image_and_builds_the_dockerfile_again(
    clone: Path,
) -> None:
    before = git(clone, "rev-parse", "HEAD").strip()
    result = release(clone, "prepare", "1.2.0", "--image", IMAGE)
    assert result.returncode == 0, result.stderr
    assert "git push origin HEAD v1.2.0" in result.stdout

    subjects = git(clone, "log", "--format=%s", f"{before}..HEAD").splitlines()
    assert subjects == [
        "Build the action from the Dockerfile again after 1.2.0",
        f"Release 1.2.0: the action runs the prebuilt image {REFERENCE}:1.2.0",
    ]
    # The tag is annotated, on the first of the two commits.
    assert git(clone, "cat-file", "-t", "v1.2.0").strip() == "tag"
    assert git(clone, "tag", "--list", "v1.2.0", "--format=%(contents:subject)").strip() == (
        "regress-action 1.2.0"
    )
    assert git(clone, "rev-parse", "v1.2.0^{commit}") == git(clone, "rev-parse", "HEAD~1")

    original = (ROOT / "action.yml").read_bytes()
    tagged = show(clone, "v1.2.0", "action.yml")
    changed = [
        (old, new)
        for old, new in zip(original.splitlines(), tagged.splitlines(), strict=True)
        if old != new
    ]
    assert changed == [(b"  image: Dockerfile", f"  image: docker://{REFERENCE}:1.2.0".encode())]
    assert tagged.endswith(b"\n") == original.endswith(b"\n")
    assert show(clone, "HEAD", "action.yml") == original

    original_toml = (ROOT / "pyproject.toml").read_bytes()
    for ref in ("v1.2.0", "HEAD"):
        pyproject = show(clone, ref, "pyproject.toml")
        changed = [
            (old, new)
            for old, new in zip(original_toml.splitlines(), pyproject.splitlines(), strict=True)
            if old != new
        ]
        assert changed == [(_version_line(), b'version = "1.2.0"')]
    # Nothing was pushed: the origin has neither the tag nor the commits.
    assert git(clone, "ls-remote", "origin").count("v1.2.0") == 0
    assert git(clone, "status", "--porcelain") == ""


def _version_line() -> bytes:
    """The [project] table's version line of the project's pyproject.toml."""
    lines = (ROOT / "pyproject.toml").read_bytes().splitlines()
    return next(line for line in lines if line.startswith(b"version = "))


def test_check_passes_on_the_tag_alone(clone: Path) -> None:
    assert release(clone, "prepare", "1.2.0", "--image", IMAGE).returncode == 0

    git(clone, "checkout", "--quiet", "v1.2.0")
    result = release(clone, "check", "v1.2.0", "--image", IMAGE.lower())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{REFERENCE}:1.2.0"

    # The image of another repository, or another tag name, on the same commit.
    other = release(clone, "check", "v1.2.0", "--image", "ghcr.io/someone/else")
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert other.stderr.startswith("release.py: action.yml: runs.image is docker://")
    mismatch = release(clone, "check", "v1.2.1", "--image", IMAGE)
    assert mismatch.returncode == 2 and mismatch.stderr.count("\n") == 1
    assert "pyproject.toml: version is 1.2.0, not 1.2.1 of tag v1.2.1" in mismatch.stderr

    # main after the release builds the Dockerfile: a tag pushed there publishes nothing.
    git(clone, "checkout", "--quiet", "main")
    on_main = release(clone, "check", "v1.2.0", "--image", IMAGE)
    assert on_main.returncode == 2 and on_main.stderr.count("\n") == 1, on_main.stderr
    assert "action.yml: runs.image is Dockerfile, not docker://" in on_main.stderr
    assert "make release VERSION=1.2.0" in on_main.stderr
    # Before any release: pyproject's version is not the tag's.
    git(clone, "checkout", "--quiet", "HEAD~2")
    before = release(clone, "check", "v1.2.0", "--image", IMAGE)
    assert before.returncode == 2 and "pyproject.toml: version is 0.1.0" in before.stderr


def test_check_refuses_a_tag_that_is_not_a_release(clone: Path) -> None:
    result = release(clone, "check", "main", "--image", IMAGE)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "tag 'main': give the release tag vX.Y.Z" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["1.2", "--image", IMAGE], "VERSION '1.2': give X.Y.Z in digits"),
        (["v1.2.0", "--image", IMAGE], "VERSION 'v1.2.0': give X.Y.Z in digits"),
        (["0.1.0", "--image", IMAGE], "VERSION 0.1.0: pyproject.toml is at 0.1.0 already"),
        (["0.0.9", "--image", IMAGE], "VERSION 0.0.9: pyproject.toml is at 0.1.0 already"),
        (["1.2.0", "--image", f"{IMAGE}:1.2.0"], "--image 'ghcr.io/Acme/Regress-Action:1.2.0'"),
        (["1.2.0", "--image", f"{IMAGE}@sha256:00"], "without a tag or digest"),
        (["1.2.0", "--image", "acme/regress-action"], "give the image as registry/owner/name"),
        (["1.2.0", "--image", "ghcr.io/regress-action"], "give the image as registry/owner/name"),
    ],
)
def test_prepare_refuses_bad_input_in_one_line(clone: Path, args: list[str], message: str) -> None:
    head = git(clone, "rev-parse", "HEAD")
    result = release(clone, "prepare", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("release.py: ") and message in result.stderr
    assert git(clone, "rev-parse", "HEAD") == head and git(clone, "tag") == ""


def test_prepare_refuses_a_dirty_checkout(clone: Path) -> None:
    with (clone / "action.yml").open("a", encoding="utf-8") as file:
        file.write("# local edit\n")
    result = release(clone, "prepare", "1.2.0", "--image", IMAGE)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "has uncommitted changes (action.yml, ...): commit them" in result.stderr
    assert git(clone, "tag") == "" and "# local edit" in (clone / "action.yml").read_text()


def test_prepare_refuses_an_existing_tag(clone: Path) -> None:
    git(clone, "tag", "v1.2.0")
    result = release(clone, "prepare", "1.2.0", "--image", IMAGE)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "VERSION 1.2.0: tag v1.2.0 exists already" in result.stderr
    assert git(clone, "status", "--porcelain") == ""


def test_prepare_refuses_a_second_release_from_the_tagged_commit(clone: Path) -> None:
    """The tag's action.yml runs an image already: releasing from it would tag a commit whose
    image is the previous release's."""
    assert release(clone, "prepare", "1.2.0", "--image", IMAGE).returncode == 0
    git(clone, "checkout", "--quiet", "v1.2.0")
    result = release(clone, "prepare", "1.3.0", "--image", IMAGE)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "action.yml: runs.image is not `image: Dockerfile`" in result.stderr
    # From main the next release works and bumps from 1.2.0.
    git(clone, "checkout", "--quiet", "main")
    assert release(clone, "prepare", "1.2.1", "--image", IMAGE).returncode == 0
    assert "v1.2.1" in git(clone, "tag").split()


def test_the_makefile_target_calls_prepare() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\nrelease:\n\t$(PYTHON) scripts/release.py prepare $(VERSION) --image $(IMAGE)\n" in (
        makefile
    )
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:"))
    assert "release" in phony.split()


def test_moving_tags_follow_the_newest_release_of_each_line(clone: Path) -> None:
    for tag in ("v1.1.4", "v1.2.0", "v0.9.0", "v2.0.0-rc1", "v10.0.0"):
        git(clone, "tag", tag)

    def moving(tag: str) -> list[str]:
        result = release(clone, "moving-tags", tag)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    assert moving("v1.2.1") == ["1.2", "1"]
    # A patch to an older line moves that line alone; v10 is not a v1 release.
    assert moving("v1.1.5") == ["1.1"]
    assert moving("v1.1.3") == []
    assert moving("v10.0.1") == ["10.0", "10"]
    refused = release(clone, "moving-tags", "latest")
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
    assert "vX.Y.Z" in refused.stderr
