"""The input pipeline: DataLoader workers keep the order (records and fingerprints identical
whatever the count), image folders are decoded in the workers, and a file that fails to decode
there is still a one-line DataError naming it."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from regress_action import compare_models, engine, sources
from regress_action.cli import main
from regress_action.data import load_eval_set
from regress_action.engine import PassOptions, default_workers, evaluate_pair
from regress_action.errors import ConfigError, DataError
from regress_action.models import save_checkpoint
from regress_action.records import PairedRecords
from regress_action.settings import load_inputs
from regress_action.spec import EvalConfig, TaskSpec, VerdictConfig
from regress_action.tasks import adapter_for
from regress_action.zoo import tiny_cnn

# Two or three workers on a machine with fewer CPUs: torch's warning is expected there.
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

TASK = TaskSpec(modality="vision", task="classification", num_classes=3)
# Fingerprints of `_folder` as the eval set was read before decoding moved into the workers
# (every image decoded and stacked up front): recorded comparisons must keep matching.
PINNED = "a890f0d9806eb9a3167adc9b25ea29e233bf0dcdfaac17f26c5af635453bf714"
PINNED_FIRST_7 = "7ccd883249f13033383665c0d7ef2f57155fa3cb0329b88a682d15ed5cfd3f8b"
PINNED_GRAY = "556647c44af332393ad08db97ad00bd1586e224e399cf6f6b618e6abc4fc64a4"


def _folder(root: Path, *, gray: bool = False) -> Path:
    """12 images of 6x5 pixels in 3 classes (3, 4 and 5 files); "bee" is grayscale, so the
    set is 3-channel unless `gray` makes every class grayscale."""
    for label, name in enumerate(("ant", "bee", "cow")):
        for i in range(3 + label):
            pixels = (np.arange(5 * 6 * 3).reshape(5, 6, 3) * (7 + i) + 13 * label) % 256
            image = Image.fromarray(pixels.astype(np.uint8))
            if name == "bee" or gray:
                image = image.convert("L")
            path = root / name / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
    return root


def _cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return tiny_cnn(num_classes=3, width=4)


def _pass(source: Any, workers: int, **kwargs: Any) -> tuple[PairedRecords, str]:
    eval_set = load_eval_set(source, **kwargs)
    options = PassOptions(batch_size=4, device="cpu", workers=workers, observe=eval_set.observe)
    result = evaluate_pair(_cnn(0), _cnn(1), eval_set.dataset, adapter_for(TASK), options)
    return result.records, eval_set.fingerprint


def _same_records(a: PairedRecords, b: PairedRecords) -> None:
    assert np.array_equal(a.example_ids, b.example_ids)
    for side in ("baseline", "candidate"):
        left, right = a.side(side), b.side(side)
        assert left.keys() == right.keys()
        for name in left:
            assert left[name].dtype == right[name].dtype
            assert left[name].tobytes() == right[name].tobytes(), (side, name)


def test_an_image_folder_gives_the_same_records_and_fingerprint_whatever_the_workers(
    tmp_path: Path,
) -> None:
    folder = _folder(tmp_path)
    records, fingerprints = zip(*(_pass(folder, workers) for workers in (0, 2)), strict=True)
    _same_records(*records)
    assert fingerprints == (PINNED, PINNED)
    assert _pass(folder, 2, max_examples=7)[1] == PINNED_FIRST_7


def test_the_fingerprint_is_the_same_without_a_pass(tmp_path: Path) -> None:
    assert load_eval_set(_folder(tmp_path / "rgb")).fingerprint == PINNED
    assert load_eval_set(_folder(tmp_path / "rgb"), max_examples=7).fingerprint == PINNED_FIRST_7
    assert load_eval_set(_folder(tmp_path / "gray", gray=True)).fingerprint == PINNED_GRAY


def test_an_image_folder_is_batched_channels_last_as_before(tmp_path: Path) -> None:
    dataset = load_eval_set(_folder(tmp_path)).dataset
    items = [dataset[i] for i in range(5)]
    images, labels = dataset.collate_fn(items)  # type: ignore[attr-defined]
    assert images.is_contiguous(memory_format=torch.channels_last)  # as when decoded up front
    assert torch.equal(images, torch.stack([x for x, _ in items]))
    assert labels.tolist() == [int(y) for _, y in items]


def test_a_partial_pass_does_not_pass_for_the_whole_fingerprint(tmp_path: Path) -> None:
    eval_set = load_eval_set(_folder(tmp_path))
    first = [eval_set.dataset[i] for i in range(4)]
    eval_set.observe([torch.stack([x for x, _ in first]), torch.stack([y for _, y in first])])
    assert eval_set.fingerprint == PINNED  # read whole on demand


class Squares(Dataset[tuple[torch.Tensor, int]]):
    """A user Dataset of (tensor, python int) pairs."""

    def __len__(self) -> int:
        return 30

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.full((3, 4, 4), index / 30), index % 3


def test_a_user_dataset_gives_the_same_records_and_report_whatever_the_workers() -> None:
    records = [_pass(Squares(), workers, task=TASK)[0] for workers in (0, 2)]
    _same_records(*records)
    verdict = VerdictConfig(significance="off")
    reports = [
        compare_models(
            _cnn(0),
            _cnn(1),
            None,
            TASK,
            EvalConfig(dataset=Squares(), batch_size=8, device="cpu", workers=workers),
            verdict=verdict,
        )
        for workers in (0, 3)
    ]
    for report in reports:
        report.pop("duration_s", None)
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[0]["dataset"] == reports[1]["dataset"]


def test_loading_reads_headers_and_the_workers_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "decoded.txt"
    decode = sources._decode

    def logged(file: Path) -> Any:
        with log.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        return decode(file)

    monkeypatch.setattr(sources, "_decode", logged)
    folder = _folder(tmp_path / "images")
    eval_set = load_eval_set(folder)
    assert not log.exists(), "loading decoded an image"
    options = PassOptions(batch_size=4, device="cpu", workers=2, observe=eval_set.observe)
    evaluate_pair(_cnn(0), _cnn(1), eval_set.dataset, adapter_for(TASK), options)
    pids = log.read_text().split()
    assert len(pids) == 12 and str(os.getpid()) not in pids
    assert eval_set.fingerprint == PINNED and len(log.read_text().split()) == 12  # no re-read


def _truncated_png(path: Path) -> None:
    """A PNG whose header reads (6x5 RGB) but whose pixels are cut short."""
    buffer = io.BytesIO()
    Image.new("RGB", (6, 5), (1, 2, 3)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:50])


def test_an_image_that_fails_to_decode_in_a_worker_is_one_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    broken = folder / "cow" / "04.png"
    _truncated_png(broken)
    eval_set = load_eval_set(folder)  # the header is fine: found when read
    with pytest.raises(DataError) as info:
        _pass(folder, 2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read image {broken} (") and "fix or remove it" in message
    assert not multiprocessing.active_children(), "the workers outlived the failed pass"
    with pytest.raises(DataError, match="cannot read image"):
        assert eval_set.fingerprint


def test_the_cli_exits_2_with_one_line_for_an_image_broken_in_a_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path / "images")
    _truncated_png(folder / "ant" / "02.png")
    db = f"sqlite:///{tmp_path / 'regress.db'}"
    ids = []
    for seed in (0, 1):
        path = tmp_path / f"cnn-{seed}.safetensors"
        save_checkpoint(_cnn(seed), path, "safetensors")
        argv = ["runs", "add", str(path), "--task", "classification", "--num-classes", "3"]
        argv += ["--factory", "regress_action.zoo:tiny_cnn", "--db", db]
        argv += ["--factory-kwargs", json.dumps({"num_classes": 3, "width": 4})]
        assert main(argv) == 0
        ids.append(capsys.readouterr().out.strip())
    argv = ["compare", "--baseline-run-id", ids[0], "--candidate-run-id", ids[1], "--db", db]
    argv += ["--dataset", str(folder), "--batch-size", "4", "--workers", "2", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"cannot read image {folder / 'ant' / '02.png'}" in err


@pytest.mark.parametrize(("cpus", "expected"), [(1, 0), (2, 1), (3, 2), (5, 4), (64, 4)])
def test_the_default_workers_leave_a_cpu_to_the_models(
    monkeypatch: pytest.MonkeyPatch, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert default_workers() == expected


def test_the_loader_pins_and_reads_ahead_only_for_cuda() -> None:
    data = Squares()
    cpu = engine._loader(data, PassOptions(batch_size=4, workers=2), torch.device("cpu"))
    assert (cpu.num_workers, cpu.pin_memory, cpu.prefetch_factor) == (2, False, 2)
    assert not cpu.persistent_workers
    cuda = engine._loader(data, PassOptions(batch_size=4, workers=2), torch.device("cuda"))
    assert (cuda.num_workers, cuda.pin_memory, cuda.prefetch_factor) == (2, True, 4)
    assert cuda.persistent_workers
    one_batch = engine._loader(data, PassOptions(batch_size=64, workers=2), torch.device("cpu"))
    assert one_batch.num_workers == 0  # a single batch: a worker would only add its start-up
    sliced = TensorDataset(torch.zeros(10, 2), torch.zeros(10))  # sliced: no loader, no workers
    options = PassOptions(batch_size=4, workers=2)
    assert [len(x) for x, _ in engine._batches(sliced, options, torch.device("cpu"))] == [4, 4, 2]


class Threads(nn.Module):
    """Records torch's intra-op thread count at each forward call."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 3)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        out: torch.Tensor = self.head(x.mean(dim=(2, 3)))
        return out


class Gated(Squares):
    """Squares whose last item waits (in its worker) until the `gate` file exists."""

    def __init__(self, gate: Path) -> None:
        self.gate = gate

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        deadline = time.monotonic() + 30
        while index == len(self) - 1 and not self.gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().__getitem__(index)


class OpensGate(Threads):
    """Threads that creates `gate` at its first forward call."""

    def __init__(self, gate: Path) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        self.gate.touch()
        return out


def test_the_models_leave_a_cpu_to_busy_workers_and_take_it_back_when_they_are_done(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(engine, "_cpus", lambda: 3)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        model = Threads()
        evaluate_pair(model, model, Squares(), adapter_for(TASK), PassOptions(8, "cpu", workers=0))
        assert model.seen == [3] * 8 and torch.get_num_threads() == 3
        # The last batch is decoded only after the first forward call: the workers are busy
        # until then (one CPU left to them), and done before the last batch's forward calls.
        gated = OpensGate(tmp_path / "gate")
        options = PassOptions(batch_size=8, device="cpu", workers=2)
        evaluate_pair(gated, gated, Gated(tmp_path / "gate"), adapter_for(TASK), options)
        assert gated.seen[:2] == [2, 2] and gated.seen[-2:] == [3, 3]
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_the_read_ahead_keeps_the_order_within_its_budget_in_private_memory() -> None:
    dataset = TensorDataset(torch.arange(40.0).reshape(20, 2), torch.arange(20))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    ahead = engine._ReadAhead(loader, budget=1)  # one batch held at a time
    try:
        batches = list(ahead)
    finally:
        ahead.close()
    assert ahead.done and len(ahead) == 7
    assert torch.equal(torch.cat([x for x, _ in batches]), dataset.tensors[0])
    assert torch.equal(torch.cat([y for _, y in batches]), dataset.tensors[1])
    assert not any(t.is_shared() for batch in batches for t in batch)
    assert not multiprocessing.active_children()


class FailsAt(Squares):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index == 17:
            raise DataError("item 17 is broken")
        return super().__getitem__(index)


def test_the_read_ahead_raises_a_workers_error_after_the_batches_before_it() -> None:
    loader = torch.utils.data.DataLoader(FailsAt(), batch_size=4, num_workers=2)
    ahead = engine._ReadAhead(loader)
    seen = []
    with pytest.raises(DataError, match="item 17 is broken"):
        for x, _ in ahead:
            seen.append(x.shape[0])
    ahead.close()
    assert seen == [4, 4, 4, 4]
    assert not multiprocessing.active_children()


def test_a_pass_stopped_early_shuts_the_read_ahead_workers_down() -> None:
    options = PassOptions(batch_size=4, device="cpu", workers=2)
    batches = engine._batches(Squares(), options, torch.device("cpu"))
    next(batches)
    batches.close()
    assert not multiprocessing.active_children()


def test_a_negative_worker_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("INPUT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("INPUT_BASELINE-RUN-ID", "1")
    monkeypatch.setenv("INPUT_CANDIDATE-RUN-ID", "2")
    monkeypatch.setenv("INPUT_DATASET", "vision_tiny")
    assert load_inputs().workers is None
    monkeypatch.setenv("INPUT_WORKERS", "3")
    assert load_inputs().workers == 3
    monkeypatch.setenv("INPUT_WORKERS", "-1")
    with pytest.raises(ConfigError, match="workers"):
        load_inputs()
    argv = ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--dataset", "vision_tiny", "--workers", "-1"])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="workers"):
        EvalConfig(dataset="vision_tiny", workers=-1)


class Items(Dataset[Any]):
    """A TensorDataset's items, read one at a time (the per-item fingerprint loop)."""

    def __init__(self, dataset: TensorDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]


def test_the_chunked_fingerprint_is_the_per_item_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.rand(11, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    data = TensorDataset(images, torch.arange(11))
    reference = sources.fingerprint_dataset(Items(data), 11)
    for chunk in (1, 300, 2**20):  # a row per update, a few rows, all rows in one
        monkeypatch.setattr(sources, "_FINGERPRINT_CHUNK_BYTES", chunk)
        assert sources.fingerprint_dataset(data, 11) == reference
        assert sources.fingerprint_dataset(data, 7) == sources.fingerprint_dataset(Items(data), 7)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "I;16", "P", "RGB", "RGBA"])
def test_a_png_header_says_what_pillow_opens(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "image.png"
    Image.new(mode, (7, 3)).save(path)
    with Image.open(path) as image:
        expected = image.size, image.mode in sources._GRAY_MODES
    assert sources._png_header(path) == expected


def test_a_header_that_is_not_a_clean_png_ihdr_is_left_to_pillow(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.new("RGB", (6, 5)).save(good)
    data = good.read_bytes()
    bad_crc = tmp_path / "bad_crc.png"
    bad_crc.write_bytes(data[:29] + bytes([data[29] ^ 1]) + data[30:])
    short = tmp_path / "short.png"
    short.write_bytes(data[:20])
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (6, 5)).save(jpeg)
    assert [sources._png_header(p) for p in (bad_crc, short, jpeg)] == [None, None, None]
    for broken in (bad_crc, short):
        with pytest.raises(DataError, match=f"cannot read image {broken}"):
            sources._scan_headers(tmp_path, [broken])
    assert sources._scan_headers(tmp_path, [good, jpeg]) == (3, (6, 5))


class Stuck(Squares):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index == 4:  # the second batch arrives late
            time.sleep(3)
        return super().__getitem__(index)


def test_closing_the_read_ahead_does_not_wait_for_a_stuck_worker() -> None:
    ahead = engine._ReadAhead(torch.utils.data.DataLoader(Stuck(), batch_size=4, num_workers=1))
    next(ahead)
    started = time.monotonic()
    ahead.close(wait_s=0.2)
    assert time.monotonic() - started < 1.5
    ahead._thread.join(30)  # the batch comes: the reader stops and releases the workers
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not multiprocessing.active_children()
