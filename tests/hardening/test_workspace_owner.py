"""The container runs as root; the files `regress-action action` leaves in the workspace belong to
the workspace's owner (the runner's user), so the job's next steps can change or remove them.

Each case runs in a child process, which gives up root for good. `make image-test` checks the
same in the built image, run the way the runner runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root, as in the container"
)

OWNER = 4321

# Only `os` and what is already imported is used after the switch: the interpreter's own files
# may be unreadable to the workspace's owner outside the image.
CHILD = """
import json, os, sys
from regress_action.gha import run_as_workspace_owner
environ = json.loads(sys.argv[1])
taken = run_as_workspace_owner(environ)
with open(os.path.join(sys.argv[2], "report.json"), "w") as out:
    out.write("{}")
print(json.dumps({"taken": taken, "uid": os.getuid(), "gid": os.getgid(),
                  "groups": os.getgroups(), "home": environ.get("HOME")}))
"""


@pytest.fixture
def workspace() -> Iterator[Path]:
    # Under /tmp itself: pytest's tmp_path lies in a folder only root may enter.
    path = Path(tempfile.mkdtemp(prefix="regress-workspace-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _child(environ: dict[str, str], workspace: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(environ), str(workspace)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_files_in_a_runner_owned_workspace_belong_to_its_owner(workspace: Path) -> None:
    os.chown(workspace, OWNER, OWNER + 1)
    seen = _child({"GITHUB_WORKSPACE": str(workspace), "HOME": "/root"}, workspace)
    assert seen["taken"] == [OWNER, OWNER + 1]
    assert (seen["uid"], seen["gid"], seen["groups"]) == (OWNER, OWNER + 1, [])
    made = (workspace / "report.json").stat()
    assert (made.st_uid, made.st_gid) == (OWNER, OWNER + 1)
    # /root is not the owner's: HOME moves to a folder it can write.
    home = Path(str(seen["home"]))
    assert home != Path("/root") and home.stat().st_uid == OWNER
    shutil.rmtree(home)


def test_a_writable_home_is_kept(workspace: Path) -> None:
    os.chown(workspace, OWNER, OWNER)
    home = workspace / "home"
    home.mkdir()
    os.chown(home, OWNER, OWNER)
    seen = _child({"GITHUB_WORKSPACE": str(workspace), "HOME": str(home)}, workspace)
    assert seen["home"] == str(home)


def test_a_root_owned_workspace_keeps_root(workspace: Path) -> None:
    seen = _child({"GITHUB_WORKSPACE": str(workspace), "HOME": "/root"}, workspace)
    assert seen["taken"] is None and seen["uid"] == 0
    assert (workspace / "report.json").stat().st_uid == 0
