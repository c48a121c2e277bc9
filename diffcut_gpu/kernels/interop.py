"""torch <-> CuPy without copies, and kernel launches on torch's current stream.

This module owns the stream and memory policy of the CUDA backend:

* every buffer is allocated by torch (``torch.empty``), so torch's caching allocator owns all memory;
* tensors reach CuPy as DLPack views (``cupy.from_dlpack``): same memory, no copy;
* kernels launch on ``torch.cuda.current_stream(device)`` (wrapped as ``cupy.cuda.ExternalStream``),
  so they are ordered with the surrounding torch work: no ``synchronize`` and no host copy anywhere.

fp16 / bf16 tensors are handed over as int16 views and bool tensors as uint8 views: the kernels read
raw storage, and older CuPy versions have no bfloat16 or DLPack-bool support.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DEFAULT_SMEM_BYTES",
    "as_cupy",
    "as_torch",
    "cupy_args",
    "f32",
    "i32",
    "i64",
    "launch",
    "on_torch_stream",
]

DEFAULT_SMEM_BYTES = 48 * 1024
"""Dynamic shared memory a kernel may use without opting in (cudaFuncAttributeMaxDynamicSharedMemorySize)."""

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


def as_cupy(t: Tensor):
    """Zero-copy CuPy view of a CUDA tensor (fp16 / bf16 as int16, bool as uint8). Call it inside
    ``on_torch_stream`` so that DLPack's stream hand-shake is a no-op."""
    if not t.is_cuda:
        raise ValueError(f"t: expected a CUDA tensor, got a tensor on {t.device}")
    raw = _RAW_VIEW.get(t.dtype)
    return _cupy().from_dlpack(t.view(raw) if raw is not None else t)


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

    Raises the kernel's dynamic shared memory limit first when ``shared_mem`` exceeds the 48 KiB default.
    Launches with an empty grid are skipped.
    """
    if min(grid) <= 0:
        return
    with on_torch_stream(device):
        if shared_mem > DEFAULT_SMEM_BYTES and kernel.max_dynamic_shared_size_bytes < shared_mem:
            kernel.max_dynamic_shared_size_bytes = shared_mem
        kernel(tuple(grid), tuple(block), cupy_args(args), shared_mem=shared_mem)
