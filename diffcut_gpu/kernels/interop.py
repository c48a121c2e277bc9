"""torch <-> CuPy without copies, and kernel launches on torch's current stream.

This module owns the stream and memory policy of the CUDA backend:

* every buffer is allocated by torch (``torch.empty``), so torch's caching allocator owns all memory;
* tensors reach CuPy as DLPack views (``cupy.from_dlpack``): same memory, no copy;
* kernels launch on ``torch.cuda.current_stream(device)`` (wrapped as ``cupy.cuda.ExternalStream``),
  so they are ordered with the surrounding torch work: no ``synchronize`` and no host copy anywhere.

fp16 / bf16 tensors are handed over as int16 views and bool tensors as uint8 views: the kernels read
raw storage, and older CuPy versions have no bfloat16 or DLPack-bool support. Tensors that require
grad are detached first (DLPack refuses to export them; the kernels never feed autograd).

``launch`` also owns the launch limits: it refuses a grid beyond CUDA's limits (the wrappers split
their batches with ``_common.batch_chunks``) and a block needing more shared memory than the device
allows, and opts a kernel into more than 48 KiB of shared memory when static + dynamic exceed it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from . import _common, limits

__all__ = [
    "DEFAULT_SMEM_BYTES",
    "as_cupy",
    "as_torch",
    "cupy_args",
    "dlpack_view",
    "f32",
    "i32",
    "i64",
    "launch",
    "on_torch_stream",
    "prepare_shared_memory",
]

DEFAULT_SMEM_BYTES = limits.DEFAULT_SMEM_BYTES
"""Shared memory (static + dynamic) per block a kernel may use without opting in: by default
cudaFuncAttributeMaxDynamicSharedMemorySize is 48 KiB minus the kernel's static shared memory."""

_RAW_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.bool: torch.uint8}


def _cupy():
    from .dispatch import cupy_status

    usable, reason = cupy_status()
    if not usable:
        raise ImportError(f"CUDA kernels need CuPy: {reason}")
    import cupy

    return cupy


def i32(value: int) -> np.int32:
    """A kernel ``int`` argument."""
    return np.int32(value)


def i64(value: int) -> np.int64:
    """A kernel ``long long`` argument."""
    return np.int64(value)


def f32(value: float) -> np.float32:
    """A kernel ``float`` argument."""
    return np.float32(value)


def dlpack_view(t: Tensor) -> Tensor:
    """The tensor handed to DLPack for ``t``: detached (export refuses tensors that require grad), fp16 /
    bf16 reinterpreted as int16 and bool as uint8. Same memory, no copy."""
    t = t.detach()
    raw = _RAW_VIEW.get(t.dtype)
    return t.view(raw) if raw is not None else t


def as_cupy(t: Tensor):
    """Zero-copy CuPy view of a CUDA tensor (see ``dlpack_view``). Call it inside ``on_torch_stream``
    so that DLPack's stream hand-shake is a no-op."""
    if not t.is_cuda:
        raise ValueError(f"t: expected a CUDA tensor, got a tensor on {t.device}")
    return _cupy().from_dlpack(dlpack_view(t))


def as_torch(a) -> Tensor:
    """Zero-copy torch view of a CuPy array."""
    return torch.from_dlpack(a)


@contextmanager
def on_torch_stream(device: torch.device) -> Iterator[None]:
    """Make torch's current stream on ``device`` CuPy's current stream (and ``device`` its device)."""
    cupy = _cupy()
    index = torch.cuda.current_device() if device.index is None else device.index
    stream = torch.cuda.current_stream(index)
    with cupy.cuda.Device(index), cupy.cuda.ExternalStream(stream.cuda_stream, index):
        yield


def cupy_args(args: Sequence[object]) -> tuple:
    """Kernel arguments with tensors replaced by CuPy views (numpy scalars and CuPy arrays pass through)."""
    out = []
    for a in args:
        if isinstance(a, Tensor):
            out.append(as_cupy(a))
        elif isinstance(a, (bool, int, float)):
            raise TypeError(
                f"args: expected numpy scalars (i32 / i64 / f32) or tensors, got Python {type(a).__name__}"
            )
        else:
            out.append(a)
    return tuple(out)


_opted_in: dict[int, int] = {}  # id(kernel) -> dynamic shared memory it was opted into (kernels live forever)


def prepare_shared_memory(kernel, shared_mem: int, device: torch.device) -> None:
    """Check a launch's shared memory against the device and opt the kernel in when needed.

    The need is the kernel's static shared memory (``kernel.shared_size_bytes``) plus ``shared_mem``
    dynamic bytes. Above the device's opt-in limit: ``ValueError``. Above 48 KiB (even when
    ``shared_mem`` alone is below it): raise the kernel's dynamic limit to ``shared_mem``, once.
    """
    static = int(getattr(kernel, "shared_size_bytes", 0) or 0)
    total = static + shared_mem
    if total <= DEFAULT_SMEM_BYTES:
        return
    name = getattr(kernel, "name", None) or "kernel"
    limit = _common.device_limits(_common.device_index_of(device))[1]
    reason = limits.shared_memory_reason(f"{name} ({static} static + {shared_mem} dynamic)", total, limit)
    if reason is not None:
        raise ValueError(f"launch: {reason}; use backend='torch' for this size")
    if _opted_in.get(id(kernel), -1) < shared_mem:
        kernel.max_dynamic_shared_size_bytes = shared_mem
        _opted_in[id(kernel)] = shared_mem


def check_grid(grid: Sequence[int], block: Sequence[int]) -> None:
    """Raise unless ``grid`` and ``block`` are within CUDA's launch limits."""
    caps = (limits.MAX_GRID_X, limits.MAX_GRID_YZ, limits.MAX_GRID_YZ)
    if len(grid) > 3 or any(g > cap for g, cap in zip(grid, caps)):
        raise ValueError(
            f"grid: expected at most {caps[0]} x {caps[1]} x {caps[2]} blocks, got {tuple(grid)}; "
            "split the batch with _common.batch_chunks"
        )
    threads = 1
    for b in block:
        threads *= b
    if len(block) > 3 or threads > 1024 or threads < 1:
        raise ValueError(f"block: expected 1 to 1024 threads, got {tuple(block)}")


def launch(
    kernel,
    grid: tuple[int, ...],
    block: tuple[int, ...],
    args: Sequence[object],
    *,
    device: torch.device,
    shared_mem: int = 0,
) -> None:
    """Launch ``kernel`` on torch's current stream of ``device``; returns at once (asynchronous).

    Checks the grid and the shared memory first (``check_grid``, ``prepare_shared_memory``). Launches
    with an empty grid are skipped.
    """
    if min(grid) <= 0:
        return
    check_grid(grid, block)
    with on_torch_stream(device):
        prepare_shared_memory(kernel, shared_mem, device)
        kernel(tuple(grid), tuple(block), cupy_args(args), shared_mem=shared_mem)
