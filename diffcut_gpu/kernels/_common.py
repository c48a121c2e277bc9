"""Small helpers shared by the kernel wrappers: input checks, row alignment, device limits, batch chunks."""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from . import limits

GRAPH_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_cuda_tensor(name: str, t: object) -> Tensor:
    """Raise unless ``t`` is a tensor on a CUDA device."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise ValueError(f"{name}: expected a CUDA tensor for the CUDA backend, got a tensor on {t.device}")
    return t


def check_graph_storage(name: str, W: object, dtypes: tuple[torch.dtype, ...] = GRAPH_DTYPES) -> Tensor:
    """Raise unless ``W`` is a CUDA (B, N, N) tensor stored in one of ``dtypes``."""
    check_cuda_tensor(name, W)
    if W.ndim != 3 or W.shape[1] != W.shape[2]:
        raise ValueError(f"{name}: expected shape (B, N, N), got {tuple(W.shape)}")
    if W.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(
            f"{name}: expected dtype {allowed} for the CUDA backend, got {W.dtype}; use backend='torch'"
        )
    return W


def aligned_rows(W: Tensor) -> tuple[Tensor, int]:
    """(W', ldw): W with unit column stride and 16-byte aligned rows, and its row stride in elements.

    Returns W itself when it already qualifies (the usual case: N a multiple of 8 for 16-bit storage,
    of 4 for float32); otherwise a copy with rows padded to the next 16-byte boundary. The padding
    columns are never read by the kernels.
    """
    elem = W.element_size()
    per16 = 16 // elem
    ok = (
        W.stride(2) == 1
        and (W.stride(1) * elem) % 16 == 0
        and (W.stride(0) * elem) % 16 == 0
        and W.data_ptr() % 16 == 0
    )
    if ok or W.numel() == 0:
        return W, W.stride(1) if W.numel() else max(1, W.shape[-1])
    b, n, _ = W.shape
    ld = -(-n // per16) * per16
    padded = torch.empty(b, n, ld, dtype=W.dtype, device=W.device)[:, :, :n]
    padded.copy_(W)
    return padded, ld


def sizes_tensor(sizes: Tensor | None, batch: int, n: int, device: torch.device) -> Tensor:
    """(B,) int64 contiguous sizes on ``device``, clamped into [0, N] (no host sync).

    Clamping keeps a kernel inside its matrix; it is also what the torch path does with such values
    (``arange(N) < sizes`` marks all N nodes valid for sizes > N and none for sizes < 0).
    """
    if sizes is None:
        return torch.full((batch,), n, dtype=torch.int64, device=device)
    if not isinstance(sizes, Tensor):
        raise TypeError(f"sizes: expected a torch.Tensor, got {type(sizes).__name__}")
    if sizes.shape != (batch,) or sizes.is_floating_point() or sizes.dtype == torch.bool:
        raise ValueError(
            f"sizes: expected an integer tensor of shape ({batch},), got {sizes.dtype} {tuple(sizes.shape)}"
        )
    return sizes.to(device=device, dtype=torch.int64).clamp(0, n).contiguous()


def check_valid_block(name: str, W: Tensor, sizes: Tensor) -> None:
    """Raise unless every valid block ``W[b, :sizes[b], :sizes[b]]`` is finite and non-negative.

    One pass over W and one host sync: what a kernel must be spared (a NaN degree or Ritz value would
    turn its results into garbage). Padding is not looked at; ``sizes`` is a (B,) int64 tensor.
    """
    if W.numel() == 0:
        return
    n = W.shape[-1]
    valid = torch.arange(n, device=W.device).unsqueeze(0) < sizes.unsqueeze(1)
    block = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    good = (W >= 0) & (W != float("inf"))  # NaN fails the first test
    if not bool((good | ~block).all()):
        raise ValueError(
            f"{name}: expected finite non-negative entries in the valid blocks, got NaN, Inf or negative "
            "values; find them with ~torch.isfinite(W) | (W < 0) and fix the graph"
        )


def check_finite_valid(name: str, x: Tensor, sizes: Tensor) -> None:
    """Raise unless ``x`` (B, N) is finite at the valid nodes ``[:sizes[b]]`` (one host sync)."""
    if x.numel() == 0:
        return
    valid = torch.arange(x.shape[-1], device=x.device).unsqueeze(0) < sizes.unsqueeze(1)
    if not bool((torch.isfinite(x) | ~valid).all()):
        raise ValueError(f"{name}: expected finite values at the valid nodes, got NaN or Inf")


@cache
def device_limits(index: int) -> tuple[int, int]:
    """(number of SMs, opt-in shared memory per block in bytes) of CUDA device ``index``."""
    props = torch.cuda.get_device_properties(index)
    optin = int(getattr(props, "shared_memory_per_block_optin", 0) or 48 * 1024)
    return int(props.multi_processor_count), optin


@cache
def compute_capability(index: int) -> tuple[int, int]:
    """(major, minor) compute capability of CUDA device ``index``."""
    major, minor = torch.cuda.get_device_capability(index)
    return int(major), int(minor)


def device_index(t: Tensor) -> int:
    return device_index_of(t.device)


def device_index_of(device: torch.device) -> int:
    """Index of a CUDA ``device`` (the current device when it has none)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def require_device(what: str, t: Tensor, family: str, dtype: torch.dtype, shared_bytes: int = 0) -> None:
    """Raise before any launch when ``t``'s device cannot run ``family``'s kernel for ``dtype`` storage
    (compute capability) or has less opt-in shared memory per block than ``shared_bytes``."""
    index = device_index(t)
    need = limits.min_compute_capability(family, dtype)
    have = compute_capability(index)
    if have < need:
        raise ValueError(
            f"{what}: the CUDA {family} kernel needs compute capability {need[0]}.{need[1]} or newer for "
            f"{str(dtype).replace('torch.', '')} inputs, this device has {have[0]}.{have[1]}; use backend='torch'"
        )
    reason = limits.shared_memory_reason(f"the CUDA {family} kernel", shared_bytes, device_limits(index)[1])
    if reason is not None:
        raise ValueError(f"{what}: {reason}; use backend='torch' for this size")


def batch_chunks(count: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of at most ``limits.MAX_GRID_YZ`` items: one launch each, when the batch
    rides on gridDim.y or gridDim.z."""
    step = limits.MAX_GRID_YZ
    return [(start, min(start + step, count)) for start in range(0, count, step)]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
