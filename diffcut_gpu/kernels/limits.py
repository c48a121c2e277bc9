"""What each CUDA kernel family needs from a device: compute capability, shared memory, grid size.

One place for the numbers that decide whether a kernel can run a call, read by the wrappers (which
raise a clear error before any launch) and by the dispatch's ``supports`` checks (which fall back to
torch instead). The block and struct sizes mirror the ``#define``s and shared structs of ``csrc/``;
``tests/kernels/test_emulated.py`` checks the static sizes against the compiled structs.

Families: ``"lanczos"`` (fused and tiled strategies), ``"sweep"``, ``"gather"``, ``"power"`` (row
renormalisation), ``"attention"``.
"""

from __future__ import annotations

import torch

__all__ = [
    "FAMILIES",
    "MAX_GRID_X",
    "MAX_GRID_YZ",
    "STATIC_SMEM_BYTES",
    "attention_shared_memory",
    "attention_tile_geometry",
    "gather_shared_memory",
    "lanczos_shared_memory",
    "min_compute_capability",
    "shared_memory_reason",
    "sweep_shared_memory",
]

FAMILIES = ("lanczos", "sweep", "gather", "power", "attention")

MAX_GRID_X = 2**31 - 1
MAX_GRID_YZ = 65_535
"""CUDA's limits on gridDim.x and on gridDim.y / gridDim.z. The 2-D and 3-D launches carry the batch
(or segment) count in y or z; the wrappers split larger batches into several launches."""

_SIXTEEN_BIT = (torch.float16, torch.bfloat16)

BASE_COMPUTE_CAPABILITY = (7, 5)
"""Oldest target of every kernel: the oldest architecture CUDA 13's nvcc accepts, and the oldest one
``.ci/compile_cuda.sh`` compiles for. 16-bit values are read and converted as raw bits (shifts and
``cvt.f32.f16``), so bfloat16 storage needs nothing newer."""

MMA_COMPUTE_CAPABILITY = (8, 0)
"""``mma.sync.m16n8k16`` with fp16 / bf16 inputs (the attention kernel's 16-bit scores) needs sm_80."""

STATIC_SMEM_BYTES: dict[str, int] = {
    "lanczos_fused": 1636,  # struct LzShared
    "lanczos_init": 1636,  # LzShared
    "lanczos_step": 1636 + 36,  # LzShared + LzStepShared
    "sweep_scan": 3 * 32 * 8 + 32 * 4,  # SwScanShared: 3 x 32 doubles + 32 ints
}
"""Static shared memory of the kernels that have any (bytes per block), by entry point without dtype
suffix. On a GPU the launch reads the compiled value (``shared_size_bytes``); these copies let the
strategy choice and ``supports`` decide before anything is compiled."""

DEFAULT_SMEM_BYTES = 48 * 1024
"""Shared memory (static + dynamic) a kernel may use without opting in."""


def min_compute_capability(family: str, dtype: torch.dtype | None = None) -> tuple[int, int]:
    """Oldest compute capability (major, minor) on which ``family``'s kernel runs for ``dtype`` storage.

    Only the attention kernel's 16-bit inputs need sm_80 (tensor-core mma); its float32 entry points
    and every other kernel run from sm_75 (the ``mma`` instructions are compiled only for sm_80+, so the
    module builds everywhere).
    """
    _check_family(family)
    if family == "attention" and dtype in _SIXTEEN_BIT:
        return MMA_COMPUTE_CAPABILITY
    return BASE_COMPUTE_CAPABILITY


def lanczos_shared_memory(n: int, krylov_dim: int, strategy: str) -> int:
    """Shared memory per block (static + dynamic bytes) of the Lanczos kernels for N = ``n`` and Krylov
    dimension m: ``"fused"`` keeps z and d^-1/2 (N floats each, rows rounded up to 4) and three m x m
    matrices; ``"tiled"`` (its step kernel, the largest) two m x m matrices."""
    m = max(1, min(krylov_dim, n - 1))
    if strategy == "fused":
        ldv = -(-n // 4) * 4
        return (2 * ldv + 3 * m * m) * 4 + STATIC_SMEM_BYTES["lanczos_fused"]
    if strategy == "tiled":
        return 2 * m * m * 4 + STATIC_SMEM_BYTES["lanczos_step"]
    raise ValueError(f"strategy: expected 'fused' or 'tiled', got {strategy!r}")


def sweep_shared_memory(n: int) -> int:
    """Shared memory per block of the sweep's row kernel: the N column ranks (int32), rounded up to 16 B."""
    return -(-n // 4) * 16


def gather_shared_memory(n: int) -> int:
    """Shared memory per block of the gather kernel: the n column ids (int32) of one sub-graph."""
    return 4 * n


def attention_tile_geometry(head_dim: int, dtype: torch.dtype) -> tuple[int, int]:
    """(dk, dp) of the attention kernels' Q / K tiles: the head dim padded to the mma K step (16) for
    16-bit inputs (d for float32), and the shared-memory row pitch: dk + 8 elements for 16-bit inputs
    (fragment loads of 8 rows hit 8 different bank groups), odd for float32 (conflict-free columns)."""
    if dtype in _SIXTEEN_BIT:
        dk = -(-head_dim // 16) * 16
        return dk, dk + 8
    return head_dim, head_dim + 1 - (head_dim & 1)


def attention_shared_memory(head_dim: int, dtype: torch.dtype) -> int:
    """Shared memory per block of the attention kernels: a 64-row Q tile and a 64-row K tile
    (128.5 KiB at head dim 256 in float32, 33 KiB in 16-bit)."""
    _, pitch = attention_tile_geometry(head_dim, dtype)
    return 2 * 64 * pitch * (2 if dtype in _SIXTEEN_BIT else 4)


def shared_memory_reason(what: str, need: int, limit: int) -> str | None:
    """None when ``need`` bytes of shared memory per block fit the device's opt-in ``limit``, else a reason."""
    if need <= limit:
        return None
    return (
        f"{what} needs {need} bytes of shared memory per block, the device allows {limit} "
        f"({need / 1024:.1f} KiB > {limit / 1024:.1f} KiB)"
    )


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
