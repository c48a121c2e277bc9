"""Scale-out plumbing for ``torchrun``: process group, device per rank, deterministic shards, gathers.

``torchrun --nproc-per-node N -m diffcut_gpu segment ...`` starts N copies with ``WORLD_SIZE``, ``RANK``
and ``LOCAL_RANK`` in the environment. `init_distributed` then joins the process group (NCCL when every
rank has its own GPU, gloo on CPU or when ranks share a GPU) and picks ``cuda:LOCAL_RANK``. Without
``WORLD_SIZE > 1`` it returns a single-process context whose collectives are no-ops, so the caller has
one code path.

Sharding is round-robin over a sorted list: rank ``r`` of ``N`` takes items ``r, r + N, r + 2N, ...``
(`shard`), which keeps every rank's share within one item of the others whatever the list holds.

Small Python objects (input digests, pending indices, per-rank stats) travel through the rendezvous'
c10d key-value store, not ``all_gather_object``: a gloo collective on Python-made tensors hands their
last reference to gloo's worker thread, which must take the GIL to free them; when the main thread goes
straight on to interpreter shutdown, that thread is killed while holding C++ frames and the process
aborts ("terminate called without an active exception", seen 1 run in 6 on two CPU ranks). The process
group itself only runs barriers, whose buffers live in C++.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

__all__ = ["DistContext", "env_world_size", "init_distributed", "resolve_device", "shard"]

T = TypeVar("T")


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE: expected an integer (set by torchrun), got {value!r}") from None


def resolve_device(device: str | None, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device this process computes on.

    ``None`` means CUDA when available, else CPU. A CUDA device without an index becomes
    ``cuda:local_rank`` when several processes run on the node, ``cuda`` otherwise.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or another torch device, got {device!r}") \
            from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "--device: expected a device this machine has, got cuda but CUDA is not available; "
                "pass --device cpu"
            )
        if dev.index is None and world_size > 1:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s round-robin share of ``items``: ``items[rank::world_size]``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size = {world_size}, got {rank}")
    return list(items[rank::world_size])


@dataclass
class DistContext:
    """Where this process sits in the job: rank, world size, local rank, device; collectives on top."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: single process, no process group
    store: torch.distributed.Store | None = None  # the rendezvous' c10d Store (prefixed), None for a single process
    _rounds: int = 0  # all_gather calls so far; every rank makes the same calls in the same order

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _device_ids(self) -> list[int] | None:
        return [self.device.index] if self.backend == "nccl" else None

    def barrier(self) -> None:
        """Wait until every rank got here (no-op for a single process)."""
        if self.enabled:
            torch.distributed.barrier(device_ids=self._device_ids())

    def all_gather(self, obj: object) -> list[object]:
        """Every rank's picklable ``obj``, in rank order (``[obj]`` for a single process).

        Each rank sets its key in the store, then reads every rank's key (``get`` waits for it, up to the
        store timeout).
        """
        if not self.enabled:
            return [obj]
        self._rounds += 1
        key = f"gather/{self._rounds}"
        self.store.set(f"{key}/{self.rank}", pickle.dumps(obj))
        return [pickle.loads(self.store.get(f"{key}/{r}")) for r in range(self.world_size)]

    def check_same(self, name: str, values: Sequence[str]) -> None:
        """Raise unless every rank holds the same list ``values`` (compared by digest)."""
        if not self.enabled:
            return
        digest = hashlib.sha1("\n".join(values).encode("utf-8", "surrogateescape")).hexdigest()
        digests = self.all_gather(digest)
        if len(set(digests)) != 1:
            raise RuntimeError(
                f"{name}: expected every rank to see the same list, got {len(set(digests))} different ones; "
                "run all ranks on the same shared file system with the same arguments"
            )

    def close(self) -> None:
        """Leave the process group (idempotent). Call `barrier` first on the success path, so that no rank
        leaves while another still reads the store."""
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self.backend = None
        self.store = None


def init_distributed(device: str | None = None, *, timeout_s: float = 3600.0) -> DistContext:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``; otherwise a single-process context.

    Args:
        device: the ``--device`` argument (``None``: CUDA when available, else CPU).
        timeout_s: how long a collective (the final barrier) waits for the slowest rank.
    """
    world = env_world_size()
    if world <= 1:
        return DistContext(device=resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, world)
    if not torch.distributed.is_available():  # pragma: no cover - depends on the torch build
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    # NCCL needs one GPU per rank; ranks sharing a GPU (or on CPU) talk over gloo. The collectives here
    # only move a few small Python objects, so gloo costs nothing measurable either way.
    backend = "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        backend = "nccl" if local_world <= torch.cuda.device_count() else "gloo"
    if torch.distributed.is_initialized():
        raise RuntimeError("init_distributed: the default process group already exists; call it once per process")
    timeout = datetime.timedelta(seconds=timeout_s)
    store, rank, world = next(torch.distributed.rendezvous("env://", timeout=timeout))
    store.set_timeout(timeout)
    kwargs = {"backend": backend, "timeout": timeout, "rank": rank, "world_size": world,
              "store": torch.distributed.PrefixStore("default_pg", store)}
    if backend == "nccl":
        kwargs["device_id"] = dev
    torch.distributed.init_process_group(**kwargs)
    # torchrun's agent keeps its store across worker restarts: key this attempt's objects apart.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return DistContext(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        device=dev,
        backend=backend,
        store=torch.distributed.PrefixStore(f"diffcut_gpu/{attempt}", store),
    )
