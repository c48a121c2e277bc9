"""CUDA twin of ``diffcut_gpu.spectral.graph.power_walk``: cuBLAS GEMMs, fused row renormalisation."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_int, check_transition
from .._power import power_by_squaring
from ._common import batch_chunks, cdiv, check_cuda_tensor, require_device
from .interop import i32, i64, launch
from .loader import get_kernel

__all__ = ["power_walk_cuda", "renormalize_rows_cuda"]

_THREADS = 256  # PW_THREADS
_TILE_ROWS = 32  # PW_TILE_ROWS


def supports(dtype: torch.dtype, n: int, batch: int, capability: tuple[int, int], shared_memory: int) -> str | None:
    """None if ``renormalize_rows_cuda`` can run on (B, n, n) ``dtype`` matrices, else why not."""
    from .dispatch import launch_support

    return launch_support(dtype, (torch.float32, torch.float64), capability, batch=batch, shared_need=0,
                          shared_memory=shared_memory)


def renormalize_rows_cuda(P: Tensor) -> Tensor:
    """In place: P[b, r, :] /= max(P[b, r, :].sum(), tiny) for a (B, N, N) float32 / float64 CUDA tensor.

    Returns ``P``. The rows must have unit column stride (a ``bmm`` output has).
    """
    check_cuda_tensor("P", P)
    if P.ndim != 3 or P.dtype not in (torch.float32, torch.float64) or P.stride(2) != 1:
        raise ValueError(
            f"P: expected a (B, N, N) float32 / float64 tensor with unit column stride, got {P.dtype} "
            f"{tuple(P.shape)} strides {P.stride()}"
        )
    b, n, _ = P.shape
    require_device("P", P, "power", P.dtype)
    kernel = get_kernel("renorm_rows", P.dtype, P.device)
    for b0, b1 in batch_chunks(b):  # the batch rides on gridDim.y
        launch(
            kernel,
            (cdiv(n, _TILE_ROWS), b1 - b0),
            (_THREADS,),
            (P[b0:b1], i64(P.stride(0)), i64(P.stride(1)), i32(n)),
            device=P.device,
        )
    return P


def power_walk_cuda(P: Tensor, k: int) -> Tensor:
    """k-step transition matrices P^k by repeated squaring, rows renormalised after every product.

    Same checks, products and result as the reference (float32, or float64 for float64 input); the
    products run in cuBLAS through ``torch.bmm`` and each renormalisation is one kernel, in place.

    Args:
        P: (B, N, N) row-stochastic CUDA tensor.
        k: integer >= 1.
    """
    check_int("k", k, 1)
    check_cuda_tensor("P", P)
    check_transition("P", P, min_nodes=1)
    return power_by_squaring(P, k, renormalize_rows_cuda)
