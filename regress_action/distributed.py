"""Data-parallel evaluation under `torchrun` (`torch.distributed`): shard, evaluate, gather.

`torchrun --nproc-per-node N -m regress_action compare ...` (or `evaluate`) starts N processes
with the usual `RANK` / `WORLD_SIZE` / `LOCAL_RANK` / `MASTER_ADDR` variables (multi-node:
torchrun's own rendezvous flags). Each rank evaluates a contiguous, disjoint shard of the eval
set (every example exactly once: no padding, unlike `DistributedSampler`), the records travel to
rank 0, which joins them on example id and alone computes the statistics, writes the database,
the reports and the comment. Every rank then exits with rank 0's code.

The collectives are always the same two, in the same order, whatever fails where, so no rank
waits for a collective another rank will never reach:
1. the **exchange**: every rank sends rank 0 its records, or the error that stopped it (a rank
   that fails before evaluating still takes part, with its error); rank 0 fails the whole run
   with the first error, naming the rank;
2. the **agreement**: every rank shares its exit code; all exit with rank 0's (or, when rank 0
   succeeded and another rank did not, that rank's).
A rank that dies outright makes the others' collectives time out (`REGRESS_ACTION_DIST_TIMEOUT`
seconds, default 1800) instead of hanging.

Backend: `gloo` on CPU; with CUDA, `cpu:gloo,cuda:nccl` (the records travel as host objects over
gloo; nccl serves CUDA tensors), each rank on its own GPU. The Python API uses a process group the
caller initialised. Torch layer: imports torch; never SQL, GitHub or templates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset, TensorDataset

from .errors import EXIT_INTERNAL, ConfigError, FollowerDone, RegressActionError
from .records import PairedRecords, Records, pair

DEFAULT_TIMEOUT_S = 1800
log = logging.getLogger("regress_action")
T = TypeVar("T")


class DistributedError(RegressActionError):
    """A rank failed: the message names it; the exit code is its error's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class _Failure:
    rank: int
    message: str
    exit_code: int


@dataclass
class Session:
    """This process's place in the process group."""

    rank: int
    world_size: int
    local_rank: int
    exchanged: bool = False

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """The contiguous [start, stop) of `n` examples this rank evaluates."""
        return n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size

    def device(self, requested: str) -> str:
        """`auto` is this rank's own GPU (`cuda:LOCAL_RANK`) when there is CUDA."""
        if requested == "auto" and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"  # ranks may share GPUs
        return requested

    def exchange(self, payload: Any) -> list[Any] | None:
        """Collective 1: every rank's payload, in rank order, on rank 0 (None elsewhere)."""
        self.exchanged = True
        gathered: list[Any] | None = [None] * self.world_size if self.leader else None
        try:
            dist.gather_object(payload, gathered, dst=0)
        except RuntimeError as exc:  # a rank died: the collective timed out or broke
            raise _lost(self.rank, exc) from None
        return gathered

    def fail(self, exc: RegressActionError) -> None:
        """Take part in the exchange with the error that stopped this rank before it."""
        if not self.exchanged:
            self.exchange(_Failure(self.rank, str(exc), exc.exit_code))

    def share(self, run: Callable[[], T]) -> T:
        """For the Python API: `run()` on every rank (rank 0 finishes the comparison, the others
        stop at FollowerDone); every rank returns rank 0's result or raises its error."""
        outcome: Any = None
        own: Exception | None = None
        try:
            outcome = run()
        except FollowerDone:
            pass
        except Exception as exc:  # every rank must reach the collective below
            own = exc
            code = exc.exit_code if isinstance(exc, RegressActionError) else EXIT_INTERNAL
            outcome = _Failure(self.rank, str(exc), code)
            if isinstance(exc, RegressActionError):
                self.fail(exc)
        results: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(results, outcome)
        except RuntimeError as exc:
            raise _lost(self.rank, exc) from None
        failure = next((r for r in results if isinstance(r, _Failure)), None)
        if own is not None:
            raise own
        if failure is not None:
            where = "" if failure.rank == 0 else f"rank {failure.rank}: "
            raise DistributedError(f"{where}{failure.message}", failure.exit_code)
        result: T = results[0]
        return result

    def agree(self, code: int) -> int:
        """Collective 2: the exit code every rank returns."""
        codes: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(codes, code)
        except RuntimeError as exc:
            raise _lost(self.rank, exc) from None
        if codes[0] != 0:
            return int(codes[0])
        return max(int(c) for c in codes)


_SESSION: Session | None = None


def current() -> Session | None:
    """The session of this process, or None when it runs alone."""
    return _SESSION


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@contextmanager
def session() -> Iterator[Session | None]:
    """For the CLI: join the process group torchrun describes (initialising it, and destroying it
    at the end), or yield None when not launched by torchrun."""
    global _SESSION
    if not launched_by_torchrun():
        yield None
        return
    owned = not dist.is_initialized()
    if owned:
        backend = _backend()
        dist.init_process_group(backend, timeout=timedelta(seconds=_timeout_s()))
        log.info(
            "rank %d of %d joined the process group (backend %s)",
            dist.get_rank(), dist.get_world_size(), backend,
        )  # fmt: skip
    _SESSION = Session(dist.get_rank(), dist.get_world_size(), _local_rank())
    try:
        yield _SESSION
        if owned:
            _leave_together()
    finally:
        _SESSION = None
        if owned:
            dist.destroy_process_group()


def _backend() -> str:
    """gloo on CPU; with CUDA, gloo for CPU tensors and nccl for CUDA ones. The exchanges are
    Python objects (records held in host memory): over gloo they travel as they are, where an
    nccl-only group would copy them onto this rank's GPU and back. Each rank's current device is
    its own GPU (`cuda:LOCAL_RANK`), as nccl needs one device per rank."""
    if not torch.cuda.is_available():
        return "gloo"
    torch.cuda.set_device(_local_rank() % torch.cuda.device_count())
    return "cpu:gloo,cuda:nccl"


_LEAVE_KEY = "regress-action/left"


def _leave_together() -> None:
    """Every rank reaches the end before any tears the group down: a gloo rank whose peer has
    already closed its connections can abort at exit ("terminate called without an active
    exception"). The barrier's own last message may still be in flight when a rank returns
    from it, so the ranks then meet once more through the rendezvous store, which carries no
    gloo traffic: once every rank has counted itself there, no gloo message is in flight and
    each may close its connections. Bounded, so a peer that died cannot hold the others (they
    have its error)."""
    import time

    if dist.get_backend() != "gloo":
        return
    with suppress(RuntimeError):
        dist.monitored_barrier(timeout=timedelta(seconds=60))
        store = dist.distributed_c10d._get_default_store()
        store.add(_LEAVE_KEY, 1)
        deadline = time.monotonic() + 60
        while store.add(_LEAVE_KEY, 0) < dist.get_world_size() and time.monotonic() < deadline:
            time.sleep(0.01)


@contextmanager
def joined() -> Iterator[Session | None]:
    """For the Python API: a process group the caller initialised (None without one)."""
    global _SESSION
    if _SESSION is not None or not (dist.is_available() and dist.is_initialized()):
        yield _SESSION
        return
    if dist.get_world_size() == 1:
        yield None
        return
    _SESSION = Session(dist.get_rank(), dist.get_world_size(), _local_rank())
    try:
        yield _SESSION
    finally:
        _SESSION = None


def evaluate_sharded(
    session: Session, n: int, evaluate: Callable[[int, int], Any], shared: tuple[str, ...]
) -> tuple[PairedRecords, Any]:
    """Run `evaluate(start, stop)` on this rank's shard (it returns an `engine.EngineResult`),
    gather every shard on rank 0 and join them (`shared`: the adapter's target columns). Rank 0
    gets the records of the whole eval set and its own result; the other ranks raise
    FollowerDone once their records (or the error that stopped them) are sent."""
    gathered, local = _gather(session, n, evaluate)
    return join(gathered, shared), local


def evaluate_sharded_one(
    session: Session, n: int, evaluate: Callable[[int, int], Any]
) -> tuple[Records, Any]:
    """`evaluate_sharded` for one model: `evaluate(start, stop)` returns an
    `engine.EvalResult`; rank 0 gets the model's records over the whole eval set."""
    shards, local = _gather(session, n, evaluate)
    return _concatenate(shards), local


def _gather(session: Session, n: int, evaluate: Callable[[int, int], Any]) -> tuple[list[Any], Any]:
    """Every rank's records of its shard, in rank order, on rank 0 (with rank 0's own result);
    a rank's error fails the run there, naming the rank; the other ranks raise FollowerDone."""
    start, stop = session.shard(n)
    payload: Any
    try:
        local = evaluate(start, stop)
        payload = local.records
    except RegressActionError as exc:
        local, payload = None, _Failure(session.rank, str(exc), exc.exit_code)
    gathered = session.exchange(payload)
    if not session.leader:
        raise FollowerDone  # rank 0 reports this rank's error, if it had one
    assert gathered is not None
    for item in gathered:
        if isinstance(item, _Failure):
            raise DistributedError(f"rank {item.rank}: {item.message}", item.exit_code)
    return gathered, local


def shard_of(dataset: Dataset[Any], start: int, stop: int) -> Dataset[Any]:
    """Items [start, stop) of the eval set: views of a TensorDataset's tensors (which keeps the
    engine's direct slicing path), a Subset otherwise (keeping the dataset's `collate_fn`)."""
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(tensor[start:stop] for tensor in dataset.tensors))
    subset = Subset(dataset, range(start, stop))
    collate = getattr(dataset, "collate_fn", None)
    if collate is not None:  # the dataset's own batching (e.g. an image folder's layout)
        subset.collate_fn = collate  # type: ignore[attr-defined]
    return subset


def join(shards: list[PairedRecords], shared: tuple[str, ...]) -> PairedRecords:
    """The paired records of all shards, joined on example id."""
    first = shards[0]
    sides = [
        _concatenate([Records(s.example_ids, s.side(side)) for s in shards])
        for side in ("baseline", "candidate")
    ]
    return pair(sides[0], sides[1], task=first.task, shared=shared, num_classes=first.num_classes)


def _concatenate(shards: list[Records]) -> Records:
    """The shards' records one after the other (the columns every shard has)."""
    names = [name for name in shards[0].columns if all(name in s.columns for s in shards)]
    return Records(
        np.concatenate([s.example_ids for s in shards]),
        {name: np.concatenate([s.columns[name] for s in shards]) for name in names},
    )


def _lost(rank: int, exc: RuntimeError) -> DistributedError:
    return DistributedError(
        f"rank {rank}: lost contact with the other ranks ({_first_line(exc)}); see the failed "
        "rank's log (REGRESS_ACTION_DIST_TIMEOUT sets how long a rank waits)",
        EXIT_INTERNAL,
    )


def _timeout_s() -> int:
    text = os.environ.get("REGRESS_ACTION_DIST_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"environment variable REGRESS_ACTION_DIST_TIMEOUT={text!r} is not a number of "
            "seconds; set it to e.g. 600"
        )
    return int(text)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
