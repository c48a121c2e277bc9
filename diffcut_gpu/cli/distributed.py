"""Scale-out plumbing for ``torchrun``: process group, device per rank, deterministic shards, gathers.

``torchrun --nproc-per-node N -m diffcut_gpu segment ...`` starts N copies with ``WORLD_SIZE``, ``RANK``
and ``LOCAL_RANK`` in the environment. `init_distributed` then joins the process group (NCCL when every
rank has its own GPU, gloo on CPU or when ranks share a GPU) and picks ``cuda:LOCAL_RANK``. Without
``WORLD_SIZE > 1`` it returns a single-process context whose collectives are no-ops, so the caller has
one code path.

Sharding is round-robin over a sorted list: rank ``r`` of ``N`` takes items ``r, r + N, r + 2N, ...``
(`shard`), which keeps every rank's share within one item of the others whatever the list holds.
"""

from __future__ import annotations

import datetime
import hashlib
import os
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
        """Every rank's ``obj``, in rank order (``[obj]`` for a single process)."""
        if not self.enabled:
            return [obj]
        out: list[object] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

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
        """Leave the process group (idempotent)."""
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self.backend = None


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
    kwargs = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
    if backend == "nccl":
        kwargs["device_id"] = dev
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(**kwargs)
    return DistContext(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        device=dev,
        backend=backend,
    )
