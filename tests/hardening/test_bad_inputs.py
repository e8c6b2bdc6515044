"""Bad input, one table: every case exits 2 (the API: raises its UserError subclass) with one
error line naming the input, never a traceback; the ExperimentDB keeps its row counts (runs,
comparisons, evaluations) and no file appears, changes or is left half-written (`.tmp`).

The three front ends share one workspace made once for the module: tiny LM checkpoints
registered as runs 1-4 (3 raises KeyError in its forward, 4 answers a batch with one row too
few), malformed data files, and a second database whose stored reports are corrupt. The CLI
runs in this process (`cli.main`), the Action in this process too, in the environment the
runner gives a container step (`tests.e2e.test_action_e2e.Runner`), the API is called.
"""

from __future__ import annotations

import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy
import torch
from torch.utils.data import TensorDataset

from regress_action.api import compare_models
from regress_action.errors import ConfigError, DataError, ModelOutputError, StoreError, UserError
from regress_action.models import save_checkpoint
from regress_action.spec import EvalConfig, TaskSpec, VerdictConfig
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_lm
from tests.e2e.test_action_e2e import Runner
from tests.e2e.test_cli import run_main
from tests.gh_server import FakeGitHub
from tests.hardening.test_action_failures import row_counts
from tests.report_factory import make_report

BAD_MODELS = """
from regress_action.zoo import TinyLM


class RaisesKeyError(TinyLM):
    # Registration runs a (1, 8) probe batch, which passes; real batches raise.
    def forward(self, input_ids):
        if input_ids.shape[0] > 1:
            raise KeyError("hidden_states")
        return super().forward(input_ids)


class DropsARow(TinyLM):
    def forward(self, input_ids):
        out = super().forward(input_ids)
        return out if input_ids.shape[0] == 1 else out[:-1]


def raises():
    return RaisesKeyError(256, 64, 32, 2)


def drops_a_row():
    return DropsARow(256, 64, 32, 2)


def slice_raises(index, input, target):
    raise KeyError("weather")


def slice_none(index, input, target):
    return None
"""

HUGE = "9223372036854775808"  # 2**63: one past SQLite's and PostgreSQL's largest integer
HUGER = "99999999999999999999"
LM = TaskSpec(modality="text", task="lm", vocab_size=256)
VISION3 = TaskSpec(modality="vision", task="classification", num_classes=3)


@dataclass(frozen=True)
class World:
    ws: Path  # the user's repository (the Action's workspace); the ExperimentDB is in it
    home: Path  # the runner's files (event payload, GITHUB_OUTPUT, summary)

    @property
    def db(self) -> Path:
        return self.ws / "regress.db"

    @property
    def corrupt_db(self) -> Path:
        return self.ws / "corrupt.db"


# ------------------------------------------------------------------------ the bad files


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buffer = BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _huge_npz(path: Path) -> None:
    """An .npz whose `images` header declares 8 TiB, with 16 bytes of data behind it."""
    labels = BytesIO()
    np.save(labels, np.zeros(4, dtype=np.int64))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", _npy_header((2**20, 2**20)) + b"\0" * 16)
        archive.writestr("labels.npy", labels.getvalue())


def _forged_size_npz(path: Path) -> None:
    """A deflated .npz member whose zip directory claims 8 TiB for 1 KiB of compressed data."""
    _huge_npz(path)
    data = bytearray(path.read_bytes())
    # The central directory's uncompressed size of the first member (offset 24 in its entry).
    at = data.index(b"PK\x01\x02")
    data[at + 24 : at + 28] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(data))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_bomb(width: int, height: int) -> bytes:
    """A PNG whose well-formed IHDR declares width x height gray pixels (no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )


def _bmp_bomb(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


def _small_png() -> bytes:
    from PIL import Image

    buffer = BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_folder(root: Path, name: str, content: bytes, suffix: str = ".png") -> None:
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / f"{name}{suffix}").write_bytes(content)


DEEP = "[" * 100_000 + "]" * 100_000


def _data_files(data: Path) -> None:
    data.mkdir()
    _huge_npz(data / "huge.npz")
    _forged_size_npz(data / "forged.npz")
    np.savez(data / "nokeys.npz", x=np.zeros(3))
    _image_folder(data / "bomb", "huge", _png_bomb(100_000, 100_000))
    _image_folder(data / "warnbomb", "big", _png_bomb(10_000, 10_000))
    _image_folder(data / "bmpbomb", "huge", _bmp_bomb(60_000, 60_000), ".bmp")
    (data / "oneclass" / "cat").mkdir(parents=True)
    (data / "oneclass" / "cat" / "a.png").write_bytes(_small_png())
    (data / "deep.jsonl").write_text(DEEP + "\n")
    (data / "deep2.jsonl").write_text('{"text": "hello there"}\n{"text": ' + DEEP + "}\n")
    (data / "deeplabel.jsonl").write_text('{"text": "hi", "label": 0}\n' + DEEP + "\n")
    (data / "broken.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    (data / "empty.jsonl").write_text("")
    (data / "outdir").mkdir()
    (data / "invalid-event.json").write_text("{")
    (data / "deep-event.json").write_text(DEEP)


def _corrupt_db(path: Path) -> None:
    """Comparisons 1-3 whose stored report JSON is corrupt: not JSON, not an object, not a
    report."""
    from tests.hardening.test_store_hardening import make_run

    with ExperimentDB(path) as db:
        run = db.add_run(make_run())
        for _ in range(3):
            report = make_report("lm")
            report.baseline.run_id = report.candidate.run_id = run.id
            db.create_comparison(report)
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            for comparison_id, text in ((1, "{"), (2, "[1, 2]"), (3, '{"metrics": 5}')):
                conn.exec_driver_sql(
                    "UPDATE comparisons SET report_json = ? WHERE id = ?", (text, comparison_id)
                )
    finally:
        engine.dispose()


def _cli(world: World, *args: str) -> tuple[int, str, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REGRESS_DB", f"sqlite:///{world.db}")
        patch.chdir(world.ws)
        result = run_main(list(args))
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bad-inputs")
    world = World(root / "ws", root / "home")
    world.ws.mkdir()
    world.home.mkdir()
    torch.manual_seed(0)
    for name in ("lm_a", "lm_b"):
        save_checkpoint(tiny_lm().eval(), world.ws / f"{name}.safetensors", "safetensors")
    for name in ("raises", "short"):
        shutil.copy(world.ws / "lm_b.safetensors", world.ws / f"{name}.safetensors")
    torch.save(tiny_lm().eval(), world.ws / "pickled.pt")
    (world.ws / "corrupt.safetensors").write_bytes(b"\x00garbage" * 10)
    (world.ws / "bad_input_models.py").write_text(BAD_MODELS)
    _data_files(world.ws / "data")
    lm = ("--task", "lm", "--factory")
    for checkpoint, factory in (
        ("lm_a", "regress_action.zoo:tiny_lm"),
        ("lm_b", "regress_action.zoo:tiny_lm"),
        ("raises", "bad_input_models:raises"),
        ("short", "bad_input_models:drops_a_row"),
    ):
        code, _, err = _cli(world, "runs", "add", f"{checkpoint}.safetensors", *lm, factory)
        assert code == 0, err
    _corrupt_db(world.corrupt_db)
    yield world


# ------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    """One bad input. `args` (CLI) and the values of `inputs` / `env` (Action) may hold
    `{ws}`, `{home}` and `{db}`; `api` is called with the World."""

    id: str
    named: tuple[str, ...]  # what the one error line must say
    args: tuple[str, ...] = ()
    inputs: dict[str, str] | None = None  # the Action: inputs over ACTION_INPUTS
    env: dict[str, str] = field(default_factory=dict)
    payload: Any = None  # the Action's event payload (None: a pull_request of PR 7)
    event: str = "pull_request"
    api: Callable[[World], object] | None = None
    error: type[UserError] = UserError  # the API's exception class

    @property
    def front(self) -> str:
        return "api" if self.api else "action" if self.inputs is not None else "cli"


def _fill(text: str, world: World) -> str:
    for name, value in (("{ws}", world.ws), ("{home}", world.home), ("{db}", world.db)):
        text = text.replace(name, str(value))
    return text


COMPARE = ("compare", "--device", "cpu", "--max-examples", "16", "--json-out", "r.json",
           "--markdown-out", "r.md")  # fmt: skip


def compare(base: str, cand: str, dataset: str = "lm_tiny", *extra: str) -> tuple[str, ...]:
    return (*COMPARE, "--baseline-run-id", base, "--candidate-run-id", cand,
            "--dataset", dataset, *extra)  # fmt: skip


def register(checkpoint: str, *extra: str) -> tuple[str, ...]:
    return ("runs", "add", checkpoint, "--task", "lm", *extra)


CLI_CASES = [
    # run and comparison ids past the database's integers
    Case("cli-baseline-id-2^63", (HUGE, "unknown run id"), compare(HUGE, "2")),
    Case("cli-candidate-id-huge", (HUGER, "unknown run id"), compare("1", HUGER)),
    Case("cli-evaluate-id-2^63", (HUGE, "unknown run id"),
         ("evaluate", "--run-id", HUGE, "--dataset", "lm_tiny", "--device", "cpu")),
    Case("cli-show-comparison-huge", (HUGER, "unknown comparison id"),
         ("comparisons", "show", HUGER)),
    # a model failing inside its own forward, or answering with another batch size
    Case("cli-forward-raises-keyerror", ("run 3", "raises.safetensors", "KeyError",
                                          "hidden_states"), compare("1", "3")),
    Case("cli-output-batch-size", ("run 4", "short.safetensors", "batch of 16", "15"),
         compare("1", "4")),
    # eval data that would exhaust memory or the stack
    Case("cli-npz-8-tib-header", ("huge.npz", "images", "8 TiB"),
         compare("1", "2", "data/huge.npz")),
    Case("cli-npz-forged-zip-size", ("forged.npz", "images"),
         compare("1", "2", "data/forged.npz")),
    Case("cli-png-bomb", ("huge.png", "100000x100000"), compare("1", "2", "data/bomb")),
    Case("cli-png-over-the-pixel-limit", ("big.png", "10000x10000"),
         compare("1", "2", "data/warnbomb")),
    Case("cli-bmp-bomb", ("huge.bmp",), compare("1", "2", "data/bmpbomb")),
    Case("cli-jsonl-nested-100k-deep", ("deep.jsonl:1", "nested"),
         compare("1", "2", "data/deep.jsonl")),
    Case("cli-jsonl-nested-on-line-2", ("deep2.jsonl:2", "nested"),
         compare("1", "2", "data/deep2.jsonl")),
    Case("cli-labelled-jsonl-nested", ("deeplabel.jsonl:2", "nested"),
         compare("1", "2", "data/deeplabel.jsonl")),
    # corrupt rows of the ExperimentDB
    Case("cli-stored-report-not-json", ("comparison 1", "corrupt.db"),
         ("comparisons", "show", "1", "--db", "sqlite:///{ws}/corrupt.db")),
    Case("cli-stored-report-not-an-object", ("comparison 2",),
         ("comparisons", "show", "2", "--db", "sqlite:///{ws}/corrupt.db")),
    Case("cli-stored-report-wrong-shape", ("comparison 3",),
         ("comparisons", "show", "3", "--db", "sqlite:///{ws}/corrupt.db")),
    Case("cli-list-with-a-corrupt-report", ("comparison 2", "corrupt"),
         ("comparisons", "list", "--db", "sqlite:///{ws}/corrupt.db")),
    # database URLs
    Case("cli-postgres-port-notaport", ("--db",),
         ("runs", "list", "--db", "postgresql://ci:pw@127.0.0.1:notaport/db")),
    Case("cli-db-not-a-database", ("--db",),
         ("runs", "list", "--db", "sqlite:///{ws}/lm_a.safetensors")),
    Case("cli-db-missing-file", ("nope.db",), compare("1", "2", "lm_tiny", "--db", "nope.db")),
    # the scattered classics
    Case("cli-negative-threshold", ("--threshold",),
         compare("1", "2", "lm_tiny", "--threshold", "-1")),
    Case("cli-nan-threshold", ("--threshold",), compare("1", "2", "lm_tiny", "--threshold", "nan")),
    Case("cli-unknown-metric", ("nope",), compare("1", "2", "lm_tiny", "--metrics", "nope")),
    Case("cli-gate-not-reported", ("perplexity", "--metrics"),
         compare("1", "2", "lm_tiny", "--metrics", "loss", "--gate", "perplexity")),
    Case("cli-bad-tolerance", ("--tolerance",),
         compare("1", "2", "lm_tiny", "--tolerance", "loss=x")),
    Case("cli-alpha-above-1", ("--alpha",), compare("1", "2", "lm_tiny", "--alpha", "2")),
    Case("cli-unknown-run-id", ("unknown run id 99",), compare("1", "99")),
    Case("cli-unknown-comparison-id", ("unknown comparison id 99",),
         ("comparisons", "show", "99")),
    Case("cli-missing-dataset", ("data/missing.jsonl",), compare("1", "2", "data/missing.jsonl")),
    Case("cli-unknown-dataset-name", ("lm_tiy", "lm_tiny"), compare("1", "2", "lm_tiy")),
    Case("cli-dataset-of-another-task", ("vision_tiny",), compare("1", "2", "vision_tiny")),
    Case("cli-malformed-jsonl", ("broken.jsonl:2",), compare("1", "2", "data/broken.jsonl")),
    Case("cli-empty-jsonl", ("empty.jsonl",), compare("1", "2", "data/empty.jsonl")),
    Case("cli-npz-without-arrays", ("nokeys.npz",), compare("1", "2", "data/nokeys.npz")),
    Case("cli-image-folder-one-class", ("oneclass",), compare("1", "2", "data/oneclass")),
    Case("cli-fp16-on-cpu", ("fp16",), compare("1", "2", "lm_tiny", "--precision", "fp16")),
    Case("cli-json-out-is-a-folder", ("data/outdir",),
         compare("1", "2", "lm_tiny", "--json-out", "data/outdir")),
    Case("cli-json-out-is-the-db", ("regress.db",),
         compare("1", "2", "lm_tiny", "--json-out", "regress.db")),
    Case("cli-missing-tokenizer", ("missing-tokenizer.json",),
         compare("1", "2", "lm_tiny", "--tokenizer", "missing-tokenizer.json")),
    Case("cli-missing-metrics-module", ("nosuch_metrics",),
         compare("1", "2", "lm_tiny", "--metrics-module", "nosuch_metrics")),
    Case("cli-missing-checkpoint", ("nope.safetensors",),
         register("nope.safetensors", "--factory", "regress_action.zoo:tiny_lm")),
    Case("cli-corrupt-checkpoint", ("corrupt.safetensors",), register("corrupt.safetensors")),
    Case("cli-pickle-without-opt-in", ("pickled.pt", "--allow-pickle"), register("pickled.pt")),
    Case("cli-factory-kwargs-not-json", ("--factory-kwargs",),
         register("lm_a.safetensors", "--factory", "regress_action.zoo:tiny_lm",
                  "--factory-kwargs", "{dim: 3")),
    Case("cli-classification-without-classes", ("--num-classes",),
         ("runs", "add", "lm_a.safetensors", "--task", "classification")),
    Case("cli-publish-missing-report", ("missing.json",),
         ("publish", "--report", "missing.json", "--comment", "off")),
    Case("cli-publish-report-not-json", ("bad_input_models.py",),
         ("publish", "--report", "bad_input_models.py", "--comment", "off")),
    Case("cli-publish-comment-on", ("argument --comment-on: invalid choice", "sometimes"),
         ("publish", "--report", "missing.json", "--comment-on", "sometimes")),
    Case("cli-publish-on-clean", ("argument --on-clean: invalid choice", "purge"),
         ("publish", "--report", "missing.json", "--on-clean", "purge")),
    # floors and ceilings
    Case("cli-bound-unknown-metric", ("acuracy", "token_accuracy"),
         compare("1", "2", "lm_tiny", "--bound", "acuracy>=0.9")),
    Case("cli-bound-floor-above-ceiling", ("--bound", "floor 0.9 is above ceiling 0.1"),
         compare("1", "2", "lm_tiny", "--bound", "loss>=0.9,loss<=0.1")),
    Case("cli-bound-not-finite", ("--bound", "not a finite number"),
         compare("1", "2", "lm_tiny", "--bound", "loss<=inf")),
    Case("cli-evaluate-bound-unknown-metric", ("accuracy", "token_accuracy"),
         ("evaluate", "--run-id", "1", "--dataset", "lm_tiny", "--device", "cpu",
          "--bound", "accuracy>=0.5")),
    # slices computed by the user's function
    Case("cli-slice-fn-misspelt", ("--slice-fn", "package.module:callable"),
         compare("1", "2", "lm_tiny", "--slice-fn", "bad_input_models.slice_none")),
    Case("cli-slice-fn-raises", ("--slice-fn", "example 0", "KeyError", "weather"),
         compare("1", "2", "lm_tiny", "--slice-fn", "bad_input_models:slice_raises")),
    Case("cli-slice-fn-returns-none", ("--slice-fn", "example 0", "None"),
         compare("1", "2", "lm_tiny", "--slice-fn", "bad_input_models:slice_none")),
    Case("cli-slice-fn-missing-module", ("--slice-fn", "cannot import", "no_such_slicing"),
         compare("1", "2", "lm_tiny", "--slice-fn", "no_such_slicing:fn")),
]  # fmt: skip

ACTION_INPUTS = {
    "baseline-run-id": "1",
    "candidate-run-id": "2",
    "dataset": "lm_tiny",
    "db-url": "sqlite:///{db}",
    "device": "cpu",
    "significance": "off",
    "max-examples": "16",
    "comment": "off",
}
CHECKPOINTS = {
    "baseline-run-id": "",
    "candidate-run-id": "",
    "baseline-checkpoint": "lm_a.safetensors",
    "candidate-checkpoint": "lm_b.safetensors",
    "model-factory": "regress_action.zoo:tiny_lm",
    "task": "lm",
}

ACTION_CASES = [
    # malformed event payloads
    Case("action-pull-request-not-an-object", ("GITHUB_EVENT_PATH", "pull_request"), inputs={},
         payload={"pull_request": "x"}),
    Case("action-pr-number-not-a-number", ("GITHUB_EVENT_PATH", "pull_request.number", "abc"),
         inputs={}, payload={"pull_request": {"number": "abc"}}),
    Case("action-pr-head-not-an-object", ("GITHUB_EVENT_PATH", "pull_request.head"), inputs={},
         payload={"pull_request": {"number": 7, "head": "c0ffee"}}),
    Case("action-pr-head-sha-not-a-string", ("GITHUB_EVENT_PATH", "pull_request.head.sha"),
         inputs={}, payload={"pull_request": {"number": 7, "head": {"sha": 12}}}),
    Case("action-payload-not-an-object", ("GITHUB_EVENT_PATH", "not a JSON object"), inputs={},
         payload=[1, 2]),
    Case("action-payload-invalid-json", ("GITHUB_EVENT_PATH", "invalid-event.json"), inputs={},
         env={"GITHUB_EVENT_PATH": "{ws}/data/invalid-event.json"}),
    Case("action-payload-nested-100k-deep", ("GITHUB_EVENT_PATH", "deep-event.json"),
         inputs={}, env={"GITHUB_EVENT_PATH": "{ws}/data/deep-event.json"}),
    Case("action-issue-not-an-object", ("GITHUB_EVENT_PATH", "issue"), inputs={},
         event="issue_comment", payload={"issue": ["x"]}),
    Case("action-workflow-run-pulls-not-a-list", ("GITHUB_EVENT_PATH", "pull_requests"),
         inputs={}, event="workflow_run",
         payload={"workflow_run": {"head_sha": "c" * 40, "pull_requests": "x"}}),
    # the runner's files
    Case("action-github-output-is-a-folder", ("GITHUB_OUTPUT", "outdir"), inputs={},
         env={"GITHUB_OUTPUT": "{ws}/data/outdir"}),
    Case("action-github-output-under-a-file", ("GITHUB_OUTPUT",), inputs={},
         env={"GITHUB_OUTPUT": "{ws}/lm_a.safetensors/output"}),
    # ids past the database's integers
    Case("action-baseline-run-id-2^63", ("baseline-run-id", HUGE),
         inputs={"baseline-run-id": HUGE}),
    Case("action-candidate-run-id-huge", ("candidate-run-id", HUGER),
         inputs={"candidate-run-id": HUGER}),
    # models and data
    Case("action-forward-raises-keyerror", ("KeyError", "hidden_states", "raises.safetensors"),
         inputs={**CHECKPOINTS, "candidate-checkpoint": "raises.safetensors",
                 "candidate-model-factory": "bad_input_models:raises"}),
    Case("action-output-batch-size", ("short.safetensors", "batch of 16", "15"),
         inputs={"candidate-run-id": "4"}),
    Case("action-npz-8-tib-header", ("huge.npz", "8 TiB"), inputs={"dataset": "data/huge.npz"}),
    Case("action-png-bomb", ("huge.png",), inputs={"dataset": "data/bomb"}),
    Case("action-jsonl-nested", ("deep.jsonl:1",), inputs={"dataset": "data/deep.jsonl"}),
    Case("action-malformed-jsonl", ("broken.jsonl:2",), inputs={"dataset": "data/broken.jsonl"}),
    Case("action-missing-dataset", ("input dataset", "nope.jsonl"),
         inputs={"dataset": "data/nope.jsonl"}),
    # the scattered classics
    Case("action-postgres-port-notaport", ("db-url",),
         inputs={"db-url": "postgresql://ci:pw@127.0.0.1:notaport/db"}),
    Case("action-negative-threshold", ("input threshold",), inputs={"threshold": "-1"}),
    Case("action-unknown-metric", ("input metrics", "nope"), inputs={"metrics": "nope"}),
    Case("action-unknown-run-id", ("candidate-run-id", "99"), inputs={"candidate-run-id": "99"}),
    Case("action-run-id-and-checkpoint", ("baseline-run-id", "baseline-checkpoint"),
         inputs={"baseline-checkpoint": "lm_a.safetensors"}),
    Case("action-fp16-on-cpu", ("precision", "fp16"), inputs={"precision": "fp16"}),
    Case("action-json-path-is-a-folder", ("input json-path", "outdir"),
         inputs={"json-path": "data/outdir"}),
    Case("action-json-path-outside", ("input json-path", "outside the workspace"),
         inputs={"json-path": "../x.json"}),
    Case("action-report-name-with-dashes", ("input report-name",),
         inputs={"report-name": "x --> y"}),
    Case("action-comment-mode", ("input comment",), inputs={"comment": "maybe"}),
    Case("action-model-kwargs-not-json", ("input model-kwargs",),
         inputs={**CHECKPOINTS, "model-kwargs": "{dim: 3"}),
    Case("action-task-missing", ("input task",), inputs={**CHECKPOINTS, "task": ""}),
    Case("action-pickle-without-opt-in", ("candidate-checkpoint", "allow-pickle"),
         inputs={**CHECKPOINTS, "candidate-checkpoint": "pickled.pt"}),
    Case("action-corrupt-checkpoint", ("candidate-checkpoint", "corrupt.safetensors"),
         inputs={**CHECKPOINTS, "candidate-checkpoint": "corrupt.safetensors"}),
    Case("action-missing-checkpoint", ("candidate-checkpoint", "gone.safetensors"),
         inputs={**CHECKPOINTS, "candidate-checkpoint": "gone.safetensors"}),
    # floors and ceilings
    Case("action-bound-floor-above-ceiling", ("input metric-bounds", "floor 2 is above ceiling 1"),
         inputs={"metric-bounds": "loss<=1, loss>=2"}),
    Case("action-bound-unknown-metric", ("acuracy", "token_accuracy"),
         inputs={"metric-bounds": "acuracy>=0.9"}),
    # the comment's lifecycle
    Case("action-comment-on", ("input comment-on",), inputs={"comment-on": "sometimes"}),
    Case("action-on-clean", ("input on-clean",), inputs={"on-clean": "purge"}),
    Case("action-hide-previous", ("input hide-previous",), inputs={"hide-previous": "maybe"}),
    Case("action-commit-comment", ("input commit-comment",),
         inputs={"commit-comment": "perhaps"}),
    # slices computed by the user's function
    Case("action-slice-fn-misspelt", ("slice-fn", "package.module:callable"),
         inputs={"slice-fn": "bad_input_models.slice_none"}),
    Case("action-slice-fn-raises", ("slice-fn", "example 0", "KeyError"),
         inputs={"slice-fn": "bad_input_models:slice_raises"}),
]  # fmt: skip


# ------------------------------------------------------------------------ the API's cases


def _tokens(n: int = 8, length: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (n, length + 1), generator=generator)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def _lm_call(world: World, targets: torch.Tensor, **kw: Any) -> object:
    inputs, _ = _tokens()
    return compare_models(
        tiny_lm().eval(),
        tiny_lm().eval(),
        None,
        LM,
        EvalConfig(dataset=TensorDataset(inputs, targets), device="cpu"),
        json_path=world.ws / "api.json",
        **kw,
    )


def _images(n: int = 8) -> torch.Tensor:
    return torch.rand((n, 1, 4, 4), generator=torch.Generator().manual_seed(0))


def _classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))


def _vision_call(world: World, labels: torch.Tensor, model: Any = None, **kw: Any) -> object:
    return compare_models(
        model or _classifier(),
        _classifier(),
        None,
        VISION3,
        EvalConfig(dataset=TensorDataset(_images(len(labels)), labels), device="cpu"),
        json_path=world.ws / "api.json",
        **kw,
    )


def api_lm_target_above_vocab(world: World) -> object:
    _, targets = _tokens()
    targets[3, 5] = 300
    return _lm_call(world, targets)


def api_lm_target_negative(world: World) -> object:
    _, targets = _tokens()
    targets[0, 0] = -7
    return _lm_call(world, targets)


def api_lm_float_targets(world: World) -> object:
    _, targets = _tokens()
    return _lm_call(world, targets.float())


def api_labels_b_by_1(world: World) -> object:
    return _vision_call(world, torch.tensor([[0], [1], [2], [0], [1], [2], [0], [1]]))


def api_float_labels(world: World) -> object:
    return _vision_call(world, torch.tensor([0.0, 1.7, 2.0, 0.2, 1.0, 2.0, 0.0, 1.0]))


def api_label_above_classes(world: World) -> object:
    return _vision_call(world, torch.tensor([0, 1, 2, 3, 0, 1, 2, 0]))


class _Counting(torch.nn.Module):
    """A classifier that counts its forward calls (a check that must come first)."""

    calls = 0

    def __init__(self) -> None:
        super().__init__()
        self.inner = _classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _Counting.calls += 1
        out: torch.Tensor = self.inner(x)
        return out


def api_invalid_comparison_name(world: World) -> object:
    _Counting.calls = 0
    try:
        return _vision_call(
            world, torch.tensor([0, 1, 2, 0]), model=_Counting(), comparison_name="x --> y"
        )
    finally:
        assert _Counting.calls == 0, "the name must be checked before the models run"


class _KeyErrorModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise KeyError("pixel_values")


def api_forward_raises_keyerror(world: World) -> object:
    return _vision_call(world, torch.tensor([0, 1, 2, 0]), model=_KeyErrorModel())


class _DropsARow(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return out[:-1]


def api_output_batch_size(world: World) -> object:
    return _vision_call(world, torch.tensor([0, 1, 2, 0]), model=_DropsARow())


def api_threshold_and_verdict(world: World) -> object:
    _, targets = _tokens()
    return _lm_call(world, targets, threshold=0.1, verdict=VerdictConfig())


def api_huge_run_id(world: World) -> object:
    _, targets = _tokens()
    return _lm_call(
        world, targets, db=f"sqlite:///{world.db}", baseline_run_id=2**63, candidate_run_id=2
    )


def api_json_path_is_a_folder(world: World) -> object:
    inputs, targets = _tokens()
    return compare_models(
        tiny_lm(), tiny_lm(), None, LM,
        EvalConfig(dataset=TensorDataset(inputs, targets), device="cpu"),
        json_path=world.ws / "data" / "outdir",
    )  # fmt: skip


API_CASES = [
    Case("api-lm-target-above-vocab", ("targets", "300", "0..255"), api=api_lm_target_above_vocab,
         error=DataError),
    Case("api-lm-target-negative", ("targets", "-7", "-100"), api=api_lm_target_negative,
         error=DataError),
    Case("api-lm-float-targets", ("targets", "float32", "integer"), api=api_lm_float_targets,
         error=DataError),
    Case("api-labels-shaped-b-by-1", ("labels", "(8, 1)", "(N,)"), api=api_labels_b_by_1,
         error=DataError),
    Case("api-float-labels", ("labels", "float32", "integer"), api=api_float_labels,
         error=DataError),
    Case("api-label-above-classes", ("label 3",), api=api_label_above_classes, error=DataError),
    Case("api-invalid-comparison-name", ("comparison_name", "x --> y"),
         api=api_invalid_comparison_name, error=ConfigError),
    Case("api-forward-raises-keyerror", ("baseline", "KeyError", "pixel_values"),
         api=api_forward_raises_keyerror, error=ModelOutputError),
    Case("api-output-batch-size", ("baseline", "batch of 4", "3"),
         api=api_output_batch_size, error=ModelOutputError),
    Case("api-threshold-and-verdict", ("threshold",), api=api_threshold_and_verdict,
         error=ConfigError),
    Case("api-run-id-2^63", (HUGE, "unknown run id"), api=api_huge_run_id, error=StoreError),
    Case("api-json-path-is-a-folder", ("json_path", "outdir"), api=api_json_path_is_a_folder,
         error=ConfigError),
]  # fmt: skip

# The repository's config file (`--config`, input config).
CLI_CASES += [
    Case("cli-config-missing", ("--config", "nope.yml"), compare("1", "2", "lm_tiny", "--config",
         "nope.yml")),
    Case("cli-config-not-yaml", ("invalid-event.json:", "not valid YAML"),
         compare("1", "2", "lm_tiny", "--config", "data/invalid-event.json")),
    Case("cli-config-nested-too-deeply", ("deep-event.json", "nested too deeply"),
         compare("1", "2", "lm_tiny", "--config", "data/deep-event.json")),
    Case("cli-config-is-a-folder", ("--config", "outdir", "folder"),
         compare("1", "2", "lm_tiny", "--config", "data/outdir")),
    Case("cli-config-check-not-yaml", ("broken.jsonl:", "not valid YAML"),
         ("config", "check", "--config", "data/broken.jsonl")),
]  # fmt: skip
ACTION_CASES += [
    Case("action-config-outside", ("input config", "outside the workspace"),
         inputs={"config": "{home}/event.json"}),
    Case("action-config-missing", ("input config", "gone.yml"), inputs={"config": "gone.yml"}),
    Case("action-config-not-yaml", ("broken.jsonl:", "not valid YAML"),
         inputs={"config": "data/broken.jsonl"}),
]  # fmt: skip

CASES = [*CLI_CASES, *ACTION_CASES, *API_CASES]


def test_the_table_is_wide_enough() -> None:
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


# ------------------------------------------------------------------------ the checks


def _state(world: World) -> dict[str, object]:
    """Row counts of both databases and every other file of the workspace (size, mtime)."""
    files: dict[str, object] = {}
    for path in world.ws.rglob("*"):
        name = path.relative_to(world.ws).as_posix()
        if "__pycache__" in name or path.name.startswith(("regress.db", "corrupt.db")):
            continue
        stat = path.lstat()
        files[name] = (0, 0) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return {
        "db": row_counts(world.db),
        "corrupt_db": row_counts(world.corrupt_db),
        "files": files,
    }


def _error_line(case: Case, world: World) -> str:
    """Run the case; the one error line it printed (the API: its exception's message)."""
    if case.front == "api":
        assert case.api is not None
        with pytest.raises(UserError) as info:
            case.api(world)
        assert type(info.value) is case.error, repr(info.value)
        return str(info.value)
    if case.front == "cli":
        code, out, err = _cli(world, *(_fill(arg, world) for arg in case.args))
        log = out + err
        assert code == 2, log
        assert "Traceback" not in log, log
        # `publish` speaks the runner's protocol: its error is an `::error` line on stdout.
        lines = [line for line in err.splitlines() if line.strip()]
        lines += [line for line in out.splitlines() if line.startswith("::error")]
        assert len(lines) == 1, log
        assert "error" in lines[0], log
        return lines[0]
    runner = Runner(FakeGitHub(), world.ws, world.home)
    given = {**ACTION_INPUTS, **(case.inputs or {})}
    inputs = {name: _fill(value, world) for name, value in given.items()}
    env = {name: _fill(value, world) for name, value in case.env.items()}
    result = runner.run("action", inputs=inputs, env=env, event=case.event, payload=case.payload)
    log = result.stdout + result.stderr
    assert result.rc == 2, log
    assert "Traceback" not in log, log
    assert [line for line in result.stderr.splitlines() if line.strip()] == [], log
    (line,) = result.lines("::error")
    return line


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_is_one_line_naming_it_and_changes_nothing(world: World, case: Case) -> None:
    before = _state(world)
    line = _error_line(case, world)
    assert "\n" not in line.strip()
    for needle in case.named:
        assert _fill(needle, world) in line, line
    assert "internal error" not in line and "Traceback" not in line, line
    assert _state(world) == before
    assert [p.name for p in world.ws.rglob("*.tmp")] == []


# ------------------------------------------------------------------------ beside the table


def test_ids_past_2_63_name_no_row_on_either_backend(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.cli_runner import run_cli

    huge, huger = 2**63, 10**20
    with ExperimentDB(db_url) as db:
        for read in (db.get_run, db.get_comparison, db.get_evaluation, db.evaluation_records):
            for value in (huge, huger):
                with pytest.raises(StoreError, match=f"unknown .*id {value}"):
                    read(value)
        assert db.list_evaluations(run_id=huge) == []
        assert db.list_comparisons(limit=huger) == []
        report = make_report("lm")
        report.baseline.run_id = report.candidate.run_id = huge
        with pytest.raises(StoreError, match=f"unknown run id {huge}"):
            db.create_comparison(report)
    for args in (["comparisons", "show", str(huger)], ["comparisons", "list", "--limit", HUGER]):
        code, out, err = run_cli([*args, "--db", db_url], tmp_path, monkeypatch)
        assert "Traceback" not in out + err
        if args[1] == "show":
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"unknown comparison id {huger}" in err
        else:
            assert code == 0, err


def test_a_corrupt_stored_report_does_not_stop_the_trend(world: World) -> None:
    report = make_report("lm")
    with ExperimentDB(world.corrupt_db) as db:
        points = db.trend(report.report_name, report.dataset.name)
    assert [point.comparison_id for point in points] == [1, 2, 3]
