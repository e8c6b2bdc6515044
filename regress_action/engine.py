"""The engine: models over an eval set, per-example records keyed by example id.

Torch layer: imports torch, `records`, `errors` and the task protocol; never SQL, GitHub or
templates. `evaluate` is the one-model pass (what a cached baseline or a distributed shard plugs
into); `evaluate_pair` is the same pieces run for two models per batch (one data read, one
host→device copy per batch), paired by a join on example id. The task's adapter owns the forward
call, target dtypes and the record columns: the engine knows no column name. Every pass runs
under `torch.inference_mode()`, and each forward call under `torch.autocast` when the precision
is bf16 / fp16; record columns stay on the device, one buffer each, until the end, where each
moves to numpy once, in the dtype its adapter chose.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from .errors import ConfigError, DataError, ModelOutputError, UserError
from .records import PairedRecords, Records, pair
from .spec import Precision

if TYPE_CHECKING:
    from .tasks import Adapter

SIDES = ("baseline", "candidate")


@dataclass(frozen=True)
class PassOptions:
    """How to run over the eval set."""

    batch_size: int = 64
    device: str = "auto"
    progress: bool | None = None  # None: a progress bar only on a TTY
    precision: Precision = "fp32"  # bf16 / fp16: every forward under torch.autocast
    workers: int | None = None  # DataLoader worker processes; None: default_workers()
    observe: Callable[[Any], None] | None = None  # sees each batch on the host, in order
    # How errors name each side's model beyond "the baseline model": `run 3, ckpt.safetensors`.
    names: Mapping[str, str] = field(default_factory=dict)


@dataclass
class EvalResult:
    """One model's records and where and how long they took."""

    records: Records
    device: str
    duration_s: float


@dataclass
class EngineResult:
    """Two models' paired records and where and how long they took."""

    records: PairedRecords
    device: str
    duration_s: float


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when available; an unavailable CUDA request is a clear error. A CUDA
    device always has its index (`cuda` is the current one, `cuda:0` unless set), so the report
    names the GPU that ran the models."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use cpu or auto")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)"
        )
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return resolved


def evaluate(
    model: torch.nn.Module,
    dataset: Dataset[Any],
    adapter: Adapter,
    options: PassOptions = PassOptions(),
    *,
    first_id: int = 0,
    side: str = "model",
) -> EvalResult:
    """Run one model over `dataset`: its per-example records, keyed by example id (the
    example's index in the eval set: `first_id` for the first item of a shard). `side` names
    the model in errors (`baseline` / `candidate` when it is one side of a comparison)."""
    device = resolve_device(options.device)
    cast = autocast_for(options.precision, device)
    started = time.perf_counter()
    collector = _Collector(_length(dataset))
    with _evaluating(model, device), torch.inference_mode():
        for batch in _batches(dataset, options, device):
            output = _forward(adapter, model, batch, _who(side, options), cast)
            collector.add(adapter.records(output, batch, side))
    return EvalResult(collector.records(first_id), str(device), time.perf_counter() - started)


def evaluate_pair(
    baseline: torch.nn.Module,
    candidate: torch.nn.Module,
    dataset: Dataset[Any],
    adapter: Adapter,
    options: PassOptions = PassOptions(),
    *,
    num_classes: int | None = None,
    first_id: int = 0,
) -> EngineResult:
    """Both models over `dataset` in one pass (each batch read and moved once), paired."""
    device = resolve_device(options.device)
    cast = autocast_for(options.precision, device)
    started = time.perf_counter()
    # The targets are the same batch on both sides: the candidate does not keep a copy.
    collectors = {
        "baseline": _Collector(_length(dataset)),
        "candidate": _Collector(_length(dataset), skip=adapter.shared),
    }
    models = dict(zip(SIDES, (baseline, candidate), strict=True))
    with _evaluating(baseline, device), _evaluating(candidate, device), torch.inference_mode():
        for batch in _batches(dataset, options, device):
            for side, model in models.items():
                output = _forward(adapter, model, batch, _who(side, options), cast)
                collectors[side].add(adapter.records(output, batch, side))
    records = pair(
        collectors["baseline"].records(first_id),
        collectors["candidate"].records(first_id),
        task=adapter.task,
        shared=adapter.shared,
        num_classes=num_classes,
    )
    return EngineResult(records, str(device), time.perf_counter() - started)


class _Collector:
    """Record columns of every batch, kept on the device until `records()`.

    With the eval set's size known (map-style datasets), each column is one buffer of that size,
    filled batch by batch: no per-batch tensors to keep (their bookkeeping cost more than the
    values themselves) and nothing to concatenate at the end. Otherwise the batches' columns
    are kept and concatenated once.
    """

    def __init__(self, size: int | None = None, skip: tuple[str, ...] = ()) -> None:
        self.size = size
        self.skip = skip
        self.buffers: dict[str, torch.Tensor] = {}
        self.chunks: dict[str, list[torch.Tensor]] = {}
        self.n = 0

    def add(self, columns: dict[str, torch.Tensor]) -> None:
        if not columns:
            return
        batch = int(next(iter(columns.values())).shape[0])
        for name, tensor in columns.items():
            if name in self.skip:
                continue
            if self.size is not None and self.n + batch <= self.size:
                if name not in self.buffers:
                    self.buffers[name] = tensor.new_empty((self.size, *tensor.shape[1:]))
                self.buffers[name][self.n : self.n + batch] = tensor
            else:
                self.chunks.setdefault(name, []).append(tensor)
        self.n += batch

    def records(self, first_id: int = 0) -> Records:
        """One numpy array per column, converted one at a time (the peak stays near one copy)."""
        if self.n == 0:
            raise DataError(
                "the eval set has no examples; pass a dataset with at least one example"
            )
        columns: dict[str, Any] = {}
        for name in [*self.buffers, *(c for c in self.chunks if c not in self.buffers)]:
            parts = [self.buffers.pop(name)[: self.n]] if name in self.buffers else []
            parts += self.chunks.pop(name, [])
            tensor = (parts[0] if len(parts) == 1 else torch.cat(parts)).cpu()
            if tensor.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
                tensor = tensor.to(torch.float32)
            columns[name] = tensor.numpy()  # the adapter's dtype: it knows what is exact
            del tensor, parts
        return Records(np.arange(first_id, first_id + self.n, dtype=np.int64), columns)


def _length(dataset: Dataset[Any]) -> int | None:
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:  # an IterableDataset without __len__
        return None


def default_workers() -> int:
    """The DataLoader workers of a pass that names none: min(4, CPUs - 1), leaving one CPU to
    the models (so 0 on a single CPU, 1 on two). CPUs: those this process may run on."""
    return max(0, min(4, _cpus() - 1))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _batches(dataset: Dataset[Any], options: PassOptions, device: torch.device) -> Iterator[Any]:
    """Batches in dataset order, on the device. A TensorDataset (every built-in, .jsonl and .npz
    eval set) is sliced directly: the same batches a DataLoader would collate, without
    per-example indexing. Any other dataset (an image folder, a user's Dataset) is read by a
    DataLoader (`_loader`), whose workers decode ahead of the models and keep the order; on the
    CPU a thread of this process drains them as fast as they decode (`_ReadAhead`), and the
    models, which leave the workers a CPU while they decode (`_cpus_left`), take every CPU back
    as soon as the workers are done. `options.observe` sees each batch on the host before it
    moves to the device."""
    loader: Iterable[Any]
    workers = 0
    ahead: _ReadAhead | None = None
    if isinstance(dataset, TensorDataset):
        size = options.batch_size
        loader = (
            tuple(tensor[start : start + size] for tensor in dataset.tensors)
            for start in range(0, len(dataset), size)
        )
    else:
        data_loader = _loader(dataset, options, device)
        workers = data_loader.num_workers
        loader = data_loader
        if workers and device.type == "cpu":
            loader = ahead = _ReadAhead(data_loader)
    non_blocking = device.type == "cuda"
    try:
        if sys.stderr.isatty() if options.progress is None else options.progress:
            from tqdm import tqdm  # imported only for interactive runs

            loader = tqdm(loader, desc="evaluating", unit="batch", file=sys.stderr, leave=False)
        with _cpus_left(workers) as threads:
            for batch in loader:
                if ahead is not None and ahead.done:
                    threads.restore()  # nothing left to decode: every CPU to the models
                if options.observe is not None:
                    options.observe(batch)
                yield _to_device(batch, device, non_blocking)
    except Exception as exc:
        # The loader re-raises a worker's error from a frame that holds it: a reference cycle
        # keeping the loader's workers alive until the garbage collector, whose arbitrary
        # finalising order can then stall their shutdown for seconds. Freed here instead.
        traceback.clear_frames(exc.__traceback__)
        original = _worker_message(exc) if isinstance(exc, UserError) else None
        if original is None:
            raise
        raise type(exc)(original) from None
    finally:
        if ahead is not None:
            ahead.close()


def _loader(dataset: Dataset[Any], options: PassOptions, device: torch.device) -> DataLoader[Any]:
    """`options.workers` worker processes (None: `default_workers()`), no more than there are
    batches and none for a single batch (starting one would cost more than it saves) or an
    IterableDataset (each worker would yield all of it). On CUDA: pinned batches (asynchronous
    copies), a deeper prefetch queue, and workers that live as long as the loader. A dataset
    with a `collate_fn` attribute batches its own items (an image folder: channels-last)."""
    workers = default_workers() if options.workers is None else options.workers
    if isinstance(dataset, IterableDataset):
        workers = 0
    else:
        batches = -(-len(dataset) // options.batch_size)  # type: ignore[arg-type]
        workers = min(workers, batches) if batches > 1 else 0
    cuda = device.type == "cuda"
    ahead: dict[str, Any] = {"prefetch_factor": 4, "persistent_workers": True}
    return DataLoader(
        dataset,
        batch_size=options.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=getattr(dataset, "collate_fn", None),
        pin_memory=cuda,
        **(ahead if cuda and workers else {}),
    )


# Decoded batches a CPU pass may hold ahead of the models (copied out of shared memory).
AHEAD_BYTES = 256 * 2**20


class _ReadAhead:
    """A worker-fed DataLoader drained by a thread of this process, in order: the workers decode
    as fast as they can instead of two batches ahead of the models, into at most `budget` bytes
    of batches held here (at least one batch), each copied out of shared memory (which a
    container may keep small). `done` is true once every batch is here: the workers are idle
    from then on. A worker's error is raised by `__next__` after the batches before it."""

    def __init__(self, loader: DataLoader[Any], budget: int = AHEAD_BYTES) -> None:
        self._expected = len(loader)
        self._budget = budget
        self._held: collections.deque[tuple[Any, int]] = collections.deque()
        self._bytes = 0
        self._error: BaseException | None = None
        self._stop = False
        self._finished = False  # the reader has returned
        self.done = False
        self._ready = threading.Condition()
        self._iterator: Any = iter(loader)
        self._thread = threading.Thread(target=self._read, name="read-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        received = 0
        try:
            for batch in self._iterator:
                private = _private(batch)
                size = _nbytes(private)
                received += 1
                with self._ready:
                    while self._held and self._bytes + size > self._budget and not self._stop:
                        self._ready.wait()
                    if self._stop:
                        return
                    self._held.append((private, size))
                    self._bytes += size
                    self.done = received >= self._expected
                    self._ready.notify_all()
        except BaseException as exc:  # handed to the consuming thread
            # Its traceback's frames hold the loader's iterator: freed, so that the workers
            # stop when `close` releases it, not when the garbage collector finds the cycle.
            traceback.clear_frames(exc.__traceback__)
            with self._ready:
                self._error = exc
        finally:
            with self._ready:
                self._finished = self.done = True
                self._ready.notify_all()

    def __iter__(self) -> _ReadAhead:
        return self

    def __next__(self) -> Any:
        with self._ready:
            while not self._held and not self._finished:
                self._ready.wait()
            if self._held:
                batch, size = self._held.popleft()
                self._bytes -= size
                self._ready.notify_all()
                return batch
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopIteration

    def __len__(self) -> int:
        return self._expected

    def close(self, wait_s: float = 10.0) -> None:
        """Stop reading (after the batch a worker is decoding) and shut the workers down. A
        worker stuck on its batch for `wait_s` is left behind (an interrupted pass must not
        hang): the reader releases the workers once that batch comes, or the process exits."""
        with self._ready:
            self._stop = True
            self._held.clear()
            self._ready.notify_all()
        self._thread.join(wait_s)
        self._iterator = None  # the loader's iterator shuts its workers down when released


def _private(batch: Any) -> Any:
    """`batch` with every tensor in shared memory copied to this process's own memory."""
    if isinstance(batch, torch.Tensor):
        return batch.clone() if batch.untyped_storage().is_shared() else batch
    if isinstance(batch, tuple | list):
        return type(batch)(_private(item) for item in batch)
    if isinstance(batch, dict):
        return {key: _private(item) for key, item in batch.items()}
    return batch


def _nbytes(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.nelement() * batch.element_size()
    if isinstance(batch, tuple | list):
        return sum(_nbytes(item) for item in batch)
    if isinstance(batch, dict):
        return sum(_nbytes(item) for item in batch.values())
    return 0


class _Threads:
    """The models' intra-op thread count during a pass: `restore()` gives back the count the
    pass started with (idempotent)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def restore(self) -> None:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)


@contextlib.contextmanager
def _cpus_left(workers: int) -> Iterator[_Threads]:
    """While workers decode, the models' intra-op threads leave them one CPU (keeping at least
    one), and get their count back afterwards, or as soon as the workers are done
    (`_Threads.restore`): an OpenMP thread spin-waiting beside a busy worker slows both (on 2
    CPUs, a decode-bound pass with one worker and two threads measured 40 % slower than with
    one thread). Fewer threads than that: left as they are."""
    threads = _Threads(torch.get_num_threads())
    limit = max(1, _cpus() - 1)
    if workers == 0 or threads.threads <= limit:
        yield threads
        return
    torch.set_num_threads(limit)
    try:
        yield threads
    finally:
        threads.restore()


def _worker_message(exc: UserError) -> str | None:
    """The one-line message of a UserError raised in a DataLoader worker, which the loader
    re-raises with the worker's traceback as its message (the original is its last line);
    None for an error raised in this process."""
    text = str(exc).rstrip()
    if not text.startswith(f"Caught {type(exc).__name__} in DataLoader worker"):
        return None
    last = text.splitlines()[-1]
    return last.removeprefix(f"{type(exc).__module__}.{type(exc).__qualname__}: ")


def _to_device(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(item, device, non_blocking) for item in batch)
    if isinstance(batch, dict):
        return {key: _to_device(item, device, non_blocking) for key, item in batch.items()}
    return batch


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """Eval mode on `device` for the pass; the caller's mode and device come back afterwards
    (a training script comparing mid-training must not lose dropout / batch-norm updates)."""
    training = model.training
    first = next(model.parameters(), None)
    home = first.device if first is not None else None
    model.to(device).eval()
    try:
        yield
    finally:
        model.train(training)
        if home is not None and home != device:
            model.to(home)


# A context manager factory each forward call runs under (see `autocast_for`).
Cast = Callable[[], AbstractContextManager[Any]]


def autocast_for(precision: Precision, device: torch.device) -> Cast:
    """What each forward call runs under: nothing for fp32, else `torch.autocast` on the device
    with bfloat16 / float16 (records are taken outside it, from logits the adapters upcast).
    Raises ConfigError for a precision the device cannot run."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise ConfigError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
    if device.type == "cpu" and precision == "fp16":
        raise ConfigError(
            "precision fp16 needs a CUDA device but this pass runs on cpu; "
            "use precision bf16 (or fp32) on CPU, or device cuda"
        )
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
            "use precision fp16 or fp32"
        )
    return functools.partial(torch.autocast, device.type, dtype=dtypes[precision])


def _who(side: str, options: PassOptions) -> str:
    """`baseline`, or `baseline (run 3, ckpt.safetensors)` when the pass knows more."""
    name = options.names.get(side)
    return f"{side} ({name})" if name else side


def _forward(
    adapter: Adapter,
    model: torch.nn.Module,
    batch: Any,
    side: str,
    cast: Cast = contextlib.nullcontext,
) -> Any:
    """The adapter's forward call on `batch`, its output checked to hold one row per example.
    An error of the model's own code is a ModelOutputError naming the model (`side`); the
    same error raised by our code outside the model's call stays a bug."""
    try:
        with cast():
            output = adapter.forward(model, batch)
    except torch.OutOfMemoryError:
        raise ConfigError(
            f"out of memory running the {side} model on a batch of {_size(batch)} examples; "
            "lower --batch-size"
        ) from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        # A shape or dtype mismatch between the data and the model is a user error, not a bug.
        raise ModelOutputError(
            f"the {side} model failed on an input batch of shape {_shape(batch)}: "
            f"{_first_line(exc)}; check that the model fits the eval set"
        ) from None
    except UserError:
        raise
    except Exception as exc:
        if not _raised_in(model, exc):
            raise  # our own code: a bug
        raise ModelOutputError(
            f"the {side} model raised {type(exc).__name__} in its forward on an input batch of "
            f"shape {_shape(batch)}: {_first_line(exc)}; fix the model's code"
        ) from None
    _check_rows(output, batch, side)
    return output


# The frames of a call to an nn.Module: an exception whose traceback holds one of them for the
# model itself was raised by the model's code (its forward, its submodules, its hooks).
_MODULE_CALLS = frozenset(
    getattr(torch.nn.Module, name).__code__
    for name in ("_call_impl", "_wrapped_call_impl")
    if hasattr(getattr(torch.nn.Module, name, None), "__code__")
)


def _raised_in(model: torch.nn.Module, exc: BaseException) -> bool:
    """Whether `exc` was raised inside a call of `model` (its own code, or torch's on its
    behalf), rather than by the adapter around that call."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code in _MODULE_CALLS and frame.f_locals.get("self") is model:
            return True
        tb = tb.tb_next
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_rows(output: Any, batch: Any, side: str) -> None:
    """A ModelOutputError when the output's first tensor (logits, predictions) does not have
    one row per example of the batch."""
    rows = _size(batch)
    found = _first_tensor(output)
    if found is None or not rows or found.ndim == 0 or found.shape[0] == rows:
        return
    raise ModelOutputError(
        f"the {side} model returned {found.shape[0]} rows (output shape {tuple(found.shape)}) "
        f"for a batch of {rows} examples; a model returns one output row per input example"
    )


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor the adapters read first: the output itself, a tuple's first item, a
    mapping's `logits` (else its first tensor) or an object's `logits`."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        return output[0] if output and isinstance(output[0], torch.Tensor) else None
    if isinstance(output, Mapping):
        tensors = [v for v in output.values() if isinstance(v, torch.Tensor)]
        logits = output.get("logits")
        return logits if isinstance(logits, torch.Tensor) else (tensors[0] if tensors else None)
    logits = getattr(output, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


def _shape(batch: Any) -> tuple[int, ...]:
    """The shape of the batch's first tensor (its inputs), for error messages."""
    first = batch
    while isinstance(first, tuple | list) and first:
        first = first[0]
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    return tuple(first.shape) if isinstance(first, torch.Tensor) else ()


def _size(batch: Any) -> int:
    shape = _shape(batch)
    return shape[0] if shape else 0
