"""The Action's baseline checkpoint is read from the pull request's base commit, not from the
checkout the pull request controls (`baseline-checkpoint-ref`).

A real git repository in tmp_path: the base commit holds the baseline; the PR commit replaces
it with the candidate's weights (which would make the gate neutral) and is what the workspace
has checked out. The Action runs as the runner runs it (`Runner`), with a pull_request payload
carrying `pull_request.base.sha`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from regress_action.errors import ConfigError
from regress_action.gha import event_context
from regress_action.gitref import baseline_ref, check_ref
from regress_action.report import Report
from regress_action.store import ExperimentDB
from tests.e2e.test_action_e2e import HEAD, PR, Result, Runner
from tests.gh_server import BOT_TOKEN, FakeGitHub

pytestmark = pytest.mark.slow


def git(cwd: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com"]
    command += ["-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]
    proc = subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Weights:
    """Two tiny_lm state dicts that differ: the base's baseline and the PR's candidate."""

    base: Path
    pr: Path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Weights:
    import torch

    from regress_action.models import save_checkpoint
    from regress_action.zoo import tiny_lm

    folder = tmp_path_factory.mktemp("weights")
    paths = []
    for seed, name in ((0, "base"), (1, "pr")):
        torch.manual_seed(seed)
        path = folder / f"{name}.safetensors"
        save_checkpoint(tiny_lm().eval(), path, "safetensors")
        paths.append(path)
    return Weights(*paths)


@dataclass
class Repo:
    runner: Runner
    base: str
    head: str

    def payload(self, base: str | None = None) -> dict[str, object]:
        pull = {"number": PR, "head": {"sha": HEAD}, "base": {"sha": base or self.base}}
        return {"pull_request": pull}

    def run(self, base: str | None = None, **more: str) -> Result:
        inputs = {
            "baseline-checkpoint": "models/baseline.safetensors",
            "candidate-checkpoint": "models/candidate.safetensors",
            "model-factory": "regress_action.zoo:tiny_lm",
            "task": "lm",
            "dataset": "lm_tiny",
            "max-examples": "16",
            "github-token": BOT_TOKEN,
            "device": "cpu",
            "significance": "off",
            "fail-on-regression": "false",
            **more,
        }
        return self.runner.run("action", inputs=inputs, payload=self.payload(base))

    def runs(self) -> list[str]:
        database = self.runner.workspace / "regress-action.db"
        if not database.exists():
            return []
        with ExperimentDB(database) as db:
            return [run.name for run in db.list_runs()]


def make_repo(tmp_path: Path, server: FakeGitHub, weights: Weights) -> Repo:
    """Base commit: the baseline; PR commit: the baseline replaced by the candidate's weights,
    and a file only the PR has. The workspace is the PR commit's checkout."""
    workspace, home = tmp_path / "workspace", tmp_path / "home"
    models = workspace / "models"
    models.mkdir(parents=True)
    home.mkdir()
    git(workspace, "init", "-q")
    shutil.copyfile(weights.base, models / "baseline.safetensors")
    shutil.copyfile(weights.base, models / "candidate.safetensors")
    base = commit_all(workspace, "base")
    shutil.copyfile(weights.pr, models / "baseline.safetensors")
    shutil.copyfile(weights.pr, models / "candidate.safetensors")
    shutil.copyfile(weights.pr, models / "new.safetensors")
    head = commit_all(workspace, "the PR")
    return Repo(Runner(server, workspace, home), base, head)


@pytest.fixture
def repo(gh_server: FakeGitHub, tmp_path: Path, weights: Weights) -> Repo:
    return make_repo(tmp_path, gh_server, weights)


def report_of(repo: Repo, result: Result) -> Report:
    assert result.rc == 0, result.stdout + result.stderr
    return Report.load(repo.runner.workspace / result.outputs["report-json"])


def error_line(result: Result) -> str:
    assert result.rc == 2, result.stdout + result.stderr
    (line,) = result.lines("::error")
    assert "Traceback" not in result.stdout + result.stderr
    return line


def test_the_prs_replaced_baseline_is_not_used(repo: Repo, weights: Weights) -> None:
    result = repo.run()
    report = report_of(repo, result)
    assert report.baseline.sha256 == sha256(weights.base)  # the base commit's bytes
    assert report.candidate.sha256 == sha256(weights.pr)
    assert report.baseline.checkpoint_ref == repo.base
    assert report.baseline.git_sha == repo.base  # the run records the commit it came from
    assert report.candidate.checkpoint_ref is None
    markdown = (repo.runner.workspace / result.outputs["report-markdown"]).read_text()
    assert f"read from `{repo.base[:7]}`" in markdown
    # The checkout still holds the PR's file, untouched.
    assert sha256(repo.runner.workspace / "models/baseline.safetensors") == sha256(weights.pr)


def test_an_explicit_ref_and_a_branch_name_are_read(repo: Repo, weights: Weights) -> None:
    git(repo.runner.workspace, "branch", "release", repo.base)
    report = report_of(repo, repo.run(**{"baseline-checkpoint-ref": "release"}))
    assert report.baseline.sha256 == sha256(weights.base)
    assert report.baseline.checkpoint_ref == repo.base


def test_worktree_reads_the_checkout_as_before(repo: Repo, weights: Weights) -> None:
    report = report_of(repo, repo.run(**{"baseline-checkpoint-ref": "worktree"}))
    assert report.baseline.sha256 == sha256(weights.pr)
    assert report.baseline.checkpoint_ref is None


def test_mode_evaluate_on_push_reads_a_named_commit(repo: Repo, weights: Weights) -> None:
    """A push has no base commit: the checkout's file, unless the input names one."""
    inputs = {
        "mode": "evaluate",
        "baseline-checkpoint": "models/baseline.safetensors",
        "baseline-checkpoint-ref": repo.base,
        "model-factory": "regress_action.zoo:tiny_lm",
        "task": "lm",
        "dataset": "lm_tiny",
        "max-examples": "16",
        "device": "cpu",
        "significance": "off",
    }
    result = repo.runner.run("action", inputs=inputs, event="push", payload={})
    assert result.rc == 0, result.stdout + result.stderr
    with ExperimentDB(repo.runner.workspace / "regress-action.db") as db:
        (run,) = db.list_runs()
    assert run.source.sha256 == sha256(weights.base) and run.git_sha == repo.base


def test_a_commit_missing_from_a_shallow_checkout_is_one_line(
    gh_server: FakeGitHub, tmp_path: Path, weights: Weights
) -> None:
    full = make_repo(tmp_path / "origin", gh_server, weights)
    workspace, home = tmp_path / "workspace", tmp_path / "home"
    home.mkdir()
    # What actions/checkout does by default: fetch-depth 1, the PR's commit alone.
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{full.runner.workspace}", str(workspace))
    shallow = Repo(Runner(gh_server, workspace, home), full.base, full.head)
    line = error_line(shallow.run())
    assert "input baseline-checkpoint-ref" in line and full.base in line
    assert "fetch-depth: 0" in line and "git fetch --depth=1 origin" in line
    assert shallow.runs() == [] and not (workspace / "regress-action").exists()
    # Fetching the base commit, as the error says, is enough.
    git(workspace, "fetch", "-q", "--depth=1", "origin", full.base)
    report = report_of(shallow, shallow.run())
    assert report.baseline.sha256 == sha256(weights.base)


def test_a_path_absent_at_the_ref_is_one_line(repo: Repo) -> None:
    line = error_line(repo.run(**{"baseline-checkpoint": "models/new.safetensors"}))
    assert "input baseline-checkpoint" in line and "models/new.safetensors" in line
    assert repo.base[:7] in line
    assert repo.runs() == []


@pytest.mark.parametrize(
    "ref", ["--output=/tmp/pwned", "-p", "main..HEAD", "HEAD@{1}", "a b", "x:models/y", ".hidden"]
)
def test_an_option_or_revision_expression_is_refused(repo: Repo, ref: str) -> None:
    line = error_line(repo.run(**{"baseline-checkpoint-ref": ref}))
    assert "input baseline-checkpoint-ref" in line
    assert repo.runs() == [] and not Path("/tmp/pwned").exists()


def test_a_symlink_at_the_ref_is_refused(repo: Repo) -> None:
    workspace = repo.runner.workspace
    (workspace / "models/link.safetensors").symlink_to("candidate.safetensors")
    head = commit_all(workspace, "a link")
    line = error_line(repo.run(head, **{"baseline-checkpoint": "models/link.safetensors"}))
    assert "symbolic link" in line and "models/link.safetensors" in line
    assert repo.runs() == []


def test_a_hugging_face_folder_is_read_from_the_ref(gh_server: FakeGitHub, tmp_path: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from regress_action.hf import fingerprint

    def gpt2(seed: int, folder: Path) -> None:
        torch.manual_seed(seed)
        config = GPT2Config(
            vocab_size=256, n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
            eos_token_id=0,
        )  # fmt: skip
        GPT2LMHeadModel(config).eval().save_pretrained(folder)

    workspace, home = tmp_path / "workspace", tmp_path / "home"
    home.mkdir()
    workspace.mkdir()
    git(workspace, "init", "-q")
    gpt2(0, workspace / "models/base")
    gpt2(1, workspace / "models/cand")
    kept = tmp_path / "kept-base"
    shutil.copytree(workspace / "models/base", kept)
    base = commit_all(workspace, "base")
    shutil.rmtree(workspace / "models/base")
    gpt2(1, workspace / "models/base")  # the PR replaces the baseline folder
    head = commit_all(workspace, "the PR")
    repo = Repo(Runner(gh_server, workspace, home), base, head)
    inputs = {
        "baseline-checkpoint": "models/base",
        "candidate-checkpoint": "models/cand",
        "model-factory": "",
        "vocab-size": "256",
    }
    report = report_of(repo, repo.run(**inputs))
    assert report.baseline.format == "hf"
    assert report.baseline.sha256 == fingerprint(kept)
    assert report.baseline.sha256 != fingerprint(workspace / "models/base")
    assert report.baseline.checkpoint_ref == base


# --------------------------------------------------------------------------- units


def test_the_default_is_the_pull_requests_base_commit() -> None:
    base = "b" * 40
    payload = {"pull_request": {"number": 1, "head": {"sha": "c" * 40}, "base": {"sha": base}}}
    for name in ("pull_request", "pull_request_target"):
        event = event_context(name, payload, "m" * 40)
        assert event.base_sha == base
        assert baseline_ref(None, event.base_sha) == base
    assert event_context("push", {}, "m" * 40).base_sha is None
    assert baseline_ref(None, None) is None
    assert baseline_ref("worktree", base) is None
    assert baseline_ref("v1.2", base) == "v1.2"


@pytest.mark.parametrize("good", ["abc1234", "a" * 40, "main", "release/v1.2", "refs/tags/v1"])
def test_shas_and_ref_names_pass(good: str) -> None:
    assert check_ref(good) == good


@pytest.mark.parametrize(
    "bad", ["-x", "--end-of-options", "a..b", "a~1", "a^", "a:b", "a/", "a.lock", "@"]
)
def test_other_values_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="input baseline-checkpoint-ref"):
        check_ref(bad)


def lfs_pointer(path: Path) -> bytes:
    digest, size = sha256(path), path.stat().st_size
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {size}\n"
    return text.encode()


def test_a_git_lfs_baseline_is_read_from_the_lfs_store(
    gh_server: FakeGitHub, tmp_path: Path, weights: Weights
) -> None:
    """A checkpoint in Git LFS is a pointer in the commit: its object comes from the
    checkout's LFS store (what `git lfs fetch` fills), checked against the pointer."""
    workspace, home = tmp_path / "workspace", tmp_path / "home"
    (workspace / "models").mkdir(parents=True)
    home.mkdir()
    git(workspace, "init", "-q")
    (workspace / "models/baseline.safetensors").write_bytes(lfs_pointer(weights.base))
    shutil.copyfile(weights.pr, workspace / "models/candidate.safetensors")
    base = commit_all(workspace, "base")
    shutil.copyfile(weights.pr, workspace / "models/baseline.safetensors")
    head = commit_all(workspace, "the PR")
    repo = Repo(Runner(gh_server, workspace, home), base, head)
    line = error_line(repo.run())  # the base's LFS object was never fetched
    assert "Git LFS" in line and f"git lfs fetch origin {base}" in line
    assert repo.runs() == []
    oid = sha256(weights.base)
    store = workspace / ".git/lfs/objects" / oid[:2] / oid[2:4]
    store.mkdir(parents=True)
    shutil.copyfile(weights.base, store / oid)
    report = report_of(repo, repo.run())
    assert report.baseline.sha256 == oid and report.baseline.checkpoint_ref == base
