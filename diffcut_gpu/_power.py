"""P^k by repeated squaring: the one implementation the torch path and the CUDA twin share.

A leaf module (it imports only torch), so that ``kernels.power`` can run it with its fused row
renormalisation without importing ``spectral`` (which imports the kernels' dispatch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def power_by_squaring(P: Tensor, k: int, renormalize: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """P^k (B, N, N) by repeated squaring in the compute dtype (float32, or float64 for float64 input),
    ``renormalize`` applied after every product (default: rows divided by their sums; the CUDA backend
    passes its fused kernel). No checks."""
    renormalize = _renormalize_rows if renormalize is None else renormalize
    base = P.to(torch.float64 if P.dtype == torch.float64 else torch.float32)
    result: Tensor | None = None
    while True:
        if k & 1:
            result = base if result is None else renormalize(torch.bmm(result, base))
        k >>= 1
        if not k:
            break
        base = renormalize(torch.bmm(base, base))
    return result.clone() if result is P else result


def _renormalize_rows(P: Tensor) -> Tensor:
    return P / P.sum(-1, keepdim=True).clamp_min(torch.finfo(P.dtype).tiny)
